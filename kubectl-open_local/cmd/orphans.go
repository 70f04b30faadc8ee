/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package cmd

import (
	"fmt"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// Orphan is storage nobody uses that still holds space, and the exact
// command that resolves it.
type Orphan struct {
	// Kind: LV (an LV no LocalVolume names), LocalVolume (its claim or
	// pod is gone) or Device (a released disk waiting for its wipe).
	Kind string `json:"kind"`
	Node string `json:"node"`
	// Name: vg/lv, the LocalVolume, or the device.
	Name string `json:"name"`
	Size int64  `json:"size"`
	Why  string `json:"why"`
	// Fix is the command that resolves it; Where says where it runs ("" = kubectl).
	Fix   string `json:"fix"`
	Where string `json:"where,omitempty"`
}

// Orphan kinds.
const (
	OrphanLV          = "LV"
	OrphanLocalVolume = "LocalVolume"
	OrphanDevice      = "Device"
)

func (o *options) orphansCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "orphans",
		Short: "LVs no LocalVolume names, LocalVolumes whose claim or pod is gone, quarantined disks; with the command that resolves each",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := o.complete(); err != nil {
				return err
			}
			ctx := c.Context()
			nls, err := o.ol.CsiV1alpha1().NodeLocalStorages().List(ctx, metav1.ListOptions{LabelSelector: o.selector})
			if err != nil {
				return err
			}
			lvs, err := o.ol.CsiV1alpha1().LocalVolumes().List(ctx, metav1.ListOptions{LabelSelector: o.selector})
			if err != nil {
				return err
			}
			// Whether a claim or pod is gone is a cluster-wide question,
			// whatever -n shows.
			pvcs, err := o.kube.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			pods, err := o.kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			pvs, err := o.kube.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			rep := orphans(nls.Items, lvs.Items, pvcs.Items, pods.Items, pvs.Items, o.namespace)
			if done, err := o.structured(rep); done {
				return err
			}
			var rows [][]string
			for _, r := range rep {
				fix := r.Fix
				if r.Where != "" {
					fix += "   # " + r.Where
				}
				rows = append(rows, []string{r.Kind, r.Node, r.Name, qty(r.Size), r.Why, fix})
			}
			return o.table(o.streams.Out, []string{"KIND", "NODE", "NAME", "SIZE", "WHY", "FIX"}, rows)
		},
	}
}

// orphans finds what holds space for nobody. LVs and disks are node
// resources and always shown; LocalVolumes only those of namespace ("": all).
func orphans(nls []v1alpha1.NodeLocalStorage, lvs []v1alpha1.LocalVolume, pvcs []corev1.PersistentVolumeClaim,
	pods []corev1.Pod, pvs []corev1.PersistentVolume, namespace string) []Orphan {
	out := []Orphan{}
	for i := range nls {
		n := &nls[i]
		for _, g := range n.Status.NodeStorageInfo.VolumeGroups {
			for _, lv := range g.LogicalVolumes {
				if !lv.Orphan {
					continue
				}
				vg := lv.VGName
				if vg == "" {
					vg = g.Name
				}
				out = append(out, Orphan{Kind: OrphanLV, Node: nodeName(n), Name: vg + "/" + lv.Name, Size: clamp(lv.Total),
					Why: "looks like open-local's, but no LocalVolume names it: its space is kept out of allocatable",
					Fix: "lvremove " + vg + "/" + lv.Name, Where: "on node " + nodeName(n) + ", once its data is not needed (or adopt it with a LocalVolume)"})
			}
		}
	}
	claims := map[string]*corev1.PersistentVolumeClaim{}
	for i := range pvcs {
		claims[pvcs[i].Namespace+"/"+pvcs[i].Name] = &pvcs[i]
	}
	podOf := map[string]*corev1.Pod{}
	for i := range pods {
		podOf[pods[i].Namespace+"/"+pods[i].Name] = &pods[i]
	}
	pvOf := map[string]*corev1.PersistentVolume{}
	for i := range pvs {
		if c := pvs[i].Spec.CSI; c != nil {
			pvOf[c.VolumeHandle] = &pvs[i]
		}
	}
	for i := range lvs {
		lv := &lvs[i]
		if lv.DeletionTimestamp != nil || (namespace != "" && volumeNamespace(lv) != namespace) {
			continue
		}
		size := lv.Spec.Size.Value()
		if lv.Status.Phase == v1alpha1.PhaseQuarantined {
			id := lv.Status.DeviceIdentity
			out = append(out, Orphan{Kind: OrphanDevice, Node: lv.Spec.NodeName, Name: lv.Spec.Device, Size: size,
				Why:   fmt.Sprintf("released by LocalVolume %s, quarantined until wiped (identity %s)", lv.Name, orNone(id)),
				Fix:   fmt.Sprintf("wipefs --all %s && kubectl annotate localvolume %s %s=%s", lv.Spec.Device, lv.Name, v1alpha1.DeviceWipedAnnotation, id),
				Where: "wipefs on node " + lv.Spec.NodeName + ", after checking the disk is the one of that identity"})
			continue
		}
		var gone string
		switch {
		case lv.Spec.ClaimRef != nil:
			ref := lv.Spec.ClaimRef
			key := ref.Namespace + "/" + ref.Name
			if c := claims[key]; c == nil {
				gone = "claim " + key + " is gone"
			} else if ref.UID != "" && c.UID != ref.UID {
				gone = "claim " + key + " was re-created (uid " + string(c.UID) + ", the volume's is " + string(ref.UID) + ")"
			}
		case lv.Spec.PodRef != nil:
			ref := lv.Spec.PodRef
			key := ref.Namespace + "/" + ref.Name
			if p := podOf[key]; p == nil {
				gone = "pod " + key + " is gone"
			} else if ref.UID != "" && p.UID != ref.UID {
				gone = "pod " + key + " was re-created (uid " + string(p.UID) + ", the volume's is " + string(ref.UID) + ")"
			}
		}
		if gone == "" {
			continue
		}
		o := Orphan{Kind: OrphanLocalVolume, Node: lv.Spec.NodeName, Name: lv.Name, Size: size, Why: gone,
			Fix: "kubectl delete localvolume " + lv.Name, Where: "the agent on " + lv.Spec.NodeName + " then removes its LV"}
		if pv := pvOf[lv.Name]; pv != nil {
			if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
				continue // the provisioner is deleting it
			}
			o.Why += fmt.Sprintf("; PV %s keeps it (reclaim policy Retain)", pv.Name)
			o.Fix = "kubectl delete pv " + pv.Name + " && kubectl delete localvolume " + lv.Name
			o.Where = "only once its data is not needed"
		}
		out = append(out, o)
	}
	return out
}
