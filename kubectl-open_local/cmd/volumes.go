/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package cmd

import (
	"context"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/component-helpers/storage/ephemeral"

	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// VolumeReport is one LocalVolume: its claim (or inline pod), the pods
// using it, where it lives and its phase.
type VolumeReport struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Claim is namespace/name of the PVC; Pods are the pods mounting it (an
	// inline volume's own pod).
	Claim    string      `json:"claim,omitempty"`
	Pods     []string    `json:"pods,omitempty"`
	Node     string      `json:"node"`
	VG       string      `json:"vg,omitempty"`
	ThinPool string      `json:"thinPool,omitempty"`
	Device   string      `json:"device,omitempty"`
	Size     int64       `json:"size"`
	Counted  int64       `json:"counted"`
	Phase    string      `json:"phase"`
	Message  string      `json:"message,omitempty"`
	Created  metav1.Time `json:"creationTimestamp"`
	Deleting bool        `json:"deleting,omitempty"`
}

func (o *options) volumesCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "volumes",
		Short: "LocalVolumes with claim, pod, node, VG or device, size, phase and age (-n: of claims or pods in the namespace; -A: all)",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := o.complete(); err != nil {
				return err
			}
			ctx := c.Context()
			lvs, err := o.ol.CsiV1alpha1().LocalVolumes().List(ctx, metav1.ListOptions{LabelSelector: o.selector})
			if err != nil {
				return err
			}
			pods, err := o.pods(ctx)
			if err != nil {
				return err
			}
			pvcs, err := o.kube.CoreV1().PersistentVolumeClaims(o.namespace).List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			rep := volumeReports(lvs.Items, pvcs.Items, pods, o.namespace)
			if done, err := o.structured(rep); done {
				return err
			}
			return o.printVolumes(rep)
		},
	}
}

// pods lists the pods of the namespace (all with -A).
func (o *options) pods(ctx context.Context) ([]corev1.Pod, error) {
	l, err := o.kube.CoreV1().Pods(o.namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

// volumeNamespace is the namespace a LocalVolume belongs to: its claim's,
// else its inline pod's; "" for snapshots and records of neither.
func volumeNamespace(lv *v1alpha1.LocalVolume) string {
	switch {
	case lv.Spec.ClaimRef != nil:
		return lv.Spec.ClaimRef.Namespace
	case lv.Spec.PodRef != nil:
		return lv.Spec.PodRef.Namespace
	}
	return ""
}

func volumeReports(lvs []v1alpha1.LocalVolume, pvcs []corev1.PersistentVolumeClaim, pods []corev1.Pod, namespace string) []VolumeReport {
	// A claim re-created under the same name is another claim: its pods
	// do not use this volume.
	claimUID := map[string]string{}
	for i := range pvcs {
		claimUID[pvcs[i].Namespace+"/"+pvcs[i].Name] = string(pvcs[i].UID)
	}
	// Pods by the claims they mount.
	users := map[string][]string{}
	for i := range pods {
		p := &pods[i]
		for j := range p.Spec.Volumes {
			v := &p.Spec.Volumes[j]
			claim := ""
			switch {
			case v.PersistentVolumeClaim != nil:
				claim = v.PersistentVolumeClaim.ClaimName
			case v.Ephemeral != nil:
				claim = ephemeral.VolumeClaimName(p, v)
			default:
				continue
			}
			k := p.Namespace + "/" + claim
			users[k] = append(users[k], p.Namespace+"/"+p.Name)
		}
	}
	slices.SortFunc(lvs, func(a, b v1alpha1.LocalVolume) int { return strings.Compare(a.Name, b.Name) })
	out := []VolumeReport{}
	for i := range lvs {
		lv := &lvs[i]
		if namespace != "" && volumeNamespace(lv) != namespace {
			continue
		}
		r := VolumeReport{Name: lv.Name, Kind: string(lv.Spec.Kind), Node: lv.Spec.NodeName, VG: lv.Spec.VGName,
			ThinPool: lv.Spec.ThinPool, Device: lv.Spec.Device, Size: lv.Spec.Size.Value(), Counted: lv.CountedSize(),
			Phase: string(lv.Status.Phase), Message: lv.Status.Message, Created: lv.CreationTimestamp,
			Deleting: lv.DeletionTimestamp != nil}
		if r.Kind == "" {
			r.Kind = string(v1alpha1.KindVolume)
		}
		if r.Phase == "" {
			r.Phase = string(v1alpha1.PhasePending)
		}
		if c := lv.Spec.ClaimRef; c != nil {
			r.Claim = c.Namespace + "/" + c.Name
			if uid, ok := claimUID[r.Claim]; ok && (c.UID == "" || string(c.UID) == uid) {
				r.Pods = users[r.Claim]
			}
		}
		if p := lv.Spec.PodRef; p != nil {
			r.Pods = []string{p.Namespace + "/" + p.Name}
		}
		out = append(out, r)
	}
	return out
}

func (o *options) printVolumes(rep []VolumeReport) error {
	header := []string{"NAME", "CLAIM", "POD", "NODE", "VG/DEVICE", "SIZE", "PHASE", "AGE", "+KIND", "+COUNTED", "+MESSAGE"}
	var rows [][]string
	for _, r := range rep {
		where := r.VG
		if r.ThinPool != "" {
			where += "/" + r.ThinPool
		}
		if r.Device != "" {
			where = r.Device
		}
		phase := r.Phase
		if r.Deleting {
			phase += " (deleting)"
		}
		rows = append(rows, []string{r.Name, orNone(r.Claim), orNone(strings.Join(r.Pods, ",")), r.Node, orNone(where),
			qty(r.Size), phase, age(r.Created.Time), r.Kind, qty(r.Counted), orNone(r.Message)})
	}
	return o.table(o.streams.Out, header, rows)
}
