/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package cmd

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/component-helpers/storage/ephemeral"

	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/apis/storage/podvolumes"
	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/config"
	"github.com/open-local/open-local/config/profile"
)

// WhyReport explains a pod's placement from the storage side.
type WhyReport struct {
	Pod           string `json:"pod"`
	Phase         string `json:"phase"`
	SchedulerName string `json:"schedulerName"`
	// Node the pod is bound to, if it is.
	Node string `json:"node,omitempty"`
	// Notes are facts that explain a Pending pod before any capacity
	// (another scheduler, a missing PVC or StorageClass, a refused class).
	Notes   []string    `json:"notes,omitempty"`
	Volumes []WhyVolume `json:"volumes"`
	// PinnedNode is the only node the pod can use (a volume is allocated
	// there or is copied from a source there), PinnedWhy says which.
	PinnedNode string `json:"pinnedNode,omitempty"`
	PinnedWhy  string `json:"pinnedWhy,omitempty"`
	// Nodes: whether the pod's unallocated volumes fit each node together.
	Nodes []NodeFit `json:"nodes"`
	// Closest is the near miss: the node missing the least, and the volume
	// that does not fit there.
	Closest *NodeFit      `json:"closest,omitempty"`
	Events  []EventReport `json:"events"`
}

// WhyVolume is one local volume of the pod.
type WhyVolume struct {
	Name string `json:"name"`
	Desc string `json:"desc"`
	Type string `json:"type"`
	// Where it must go (StorageClass vgName / thinPool / mediaType, or the
	// source's VG).
	VG        string `json:"vg,omitempty"`
	ThinPool  string `json:"thinPool,omitempty"`
	MediaType string `json:"mediaType,omitempty"`
	Size      int64  `json:"size"`
	// Allocated: the node holding its LocalVolume ("" while it needs space).
	Allocated string `json:"allocatedOn,omitempty"`
}

// NodeFit is the ledger's verdict for one node.
type NodeFit struct {
	Node   string `json:"node"`
	Fits   bool   `json:"fits"`
	Reason string `json:"reason,omitempty"`
	// Volume that does not fit (for the closest node).
	Volume string `json:"volume,omitempty"`
	Need   int64  `json:"need,omitempty"`
	Free   int64  `json:"free,omitempty"`
}

// EventReport is one Event of the pod.
type EventReport struct {
	Type    string    `json:"type"`
	Reason  string    `json:"reason"`
	From    string    `json:"from"`
	Count   int32     `json:"count"`
	Last    time.Time `json:"lastTimestamp"`
	Message string    `json:"message"`
}

// maxEvents is how many of the pod's latest events are shown.
const maxEvents = 5

func (o *options) whyCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "why POD",
		Short: "Why a pod is Pending: the fit of its volumes on every node (the scheduler's ledger), the closest node, its latest scheduling events",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if o.allNamespaces {
				return fmt.Errorf("why takes one pod: name its namespace with -n, not -A")
			}
			if err := o.complete(); err != nil {
				return err
			}
			rep, err := o.why(c.Context(), args[0])
			if err != nil {
				return err
			}
			if done, err := o.structured(rep); done {
				return err
			}
			return o.printWhy(rep)
		},
	}
}

func (o *options) why(ctx context.Context, name string) (*WhyReport, error) {
	pod, err := o.kube.CoreV1().Pods(o.namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	nls, lvs, err := o.storage(ctx)
	if err != nil {
		return nil, err
	}
	l := newLedger(nls, lvs)
	rep := &WhyReport{Pod: pod.Namespace + "/" + pod.Name, Phase: string(pod.Status.Phase), SchedulerName: pod.Spec.SchedulerName,
		Node: pod.Spec.NodeName, Volumes: []WhyVolume{}, Nodes: []NodeFit{}, Events: []EventReport{}}
	if pod.Spec.SchedulerName != profile.SchedulerName {
		rep.Notes = append(rep.Notes, fmt.Sprintf("schedulerName is %q: open-local's scheduler (%s) does not place this pod, so nothing reserves its local volumes", pod.Spec.SchedulerName, profile.SchedulerName))
	}
	byName := map[string]*v1alpha1.LocalVolume{}
	for i := range lvs {
		byName[lvs[i].Name] = &lvs[i]
	}
	var vols []ledger.Volume
	pin := func(node, why string) {
		if rep.PinnedNode == "" {
			rep.PinnedNode, rep.PinnedWhy = node, why
		} else if rep.PinnedNode != node {
			rep.Notes = append(rep.Notes, fmt.Sprintf("volumes pin the pod to two nodes: %s (%s) and %s (%s)", rep.PinnedNode, rep.PinnedWhy, node, why))
		}
	}
	for i := range pod.Spec.Volumes {
		v, err := o.podVolume(ctx, pod, &pod.Spec.Volumes[i], rep)
		if err != nil {
			return nil, err
		}
		if v == nil {
			continue
		}
		wv := WhyVolume{Name: v.vol.Name, Desc: v.vol.Desc, Type: string(v.vol.Type), VG: v.vol.VG, ThinPool: v.vol.ThinPool, MediaType: v.vol.MediaType, Size: v.vol.Size}
		if lv := byName[v.vol.Name]; lv != nil {
			// Held: it pins the pod, needs nothing more.
			wv.Allocated, wv.VG, wv.ThinPool, wv.Size = lv.Spec.NodeName, lv.Spec.VGName, lv.Spec.ThinPool, lv.Spec.Size.Value()
			if lv.Spec.Device != "" {
				wv.VG = lv.Spec.Device
			}
			rep.Volumes = append(rep.Volumes, wv)
			pin(lv.Spec.NodeName, v.vol.Desc+" is allocated there")
			continue
		}
		if v.boundTo != "" {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s is bound to PV %s but no LocalVolume %s exists: its PV's node affinity places the pod", v.vol.Desc, v.boundTo, v.vol.Name))
			continue
		}
		if v.source != "" {
			src := byName[v.source]
			if src == nil {
				rep.Notes = append(rep.Notes, fmt.Sprintf("%s: source LocalVolume %s not found", v.vol.Desc, v.source))
			} else {
				v.vol.VG, wv.VG = src.Spec.VGName, src.Spec.VGName
				pin(src.Spec.NodeName, fmt.Sprintf("%s is copied from %s there", v.vol.Desc, v.source))
			}
		}
		rep.Volumes = append(rep.Volumes, wv)
		vols = append(vols, v.vol)
	}
	if len(rep.Volumes) == 0 {
		rep.Notes = append(rep.Notes, "the pod has no open-local volumes: its placement is not about local storage")
	}
	req := ledger.NewRequest(vols)
	var names []string
	for i := range nls {
		names = append(names, nodeName(&nls[i]))
	}
	if !req.Empty() {
		for _, n := range names {
			f := NodeFit{Node: n, Fits: true}
			if rep.PinnedNode != "" && n != rep.PinnedNode {
				f.Fits, f.Reason = false, "the pod is pinned to "+rep.PinnedNode+" ("+rep.PinnedWhy+")"
			} else if sf := l.Fit(n, req, ledger.Binpack); sf != nil {
				f.Fits, f.Reason = false, sf.Detail()
			}
			rep.Nodes = append(rep.Nodes, f)
		}
		candidates := names
		if rep.PinnedNode != "" {
			candidates = []string{rep.PinnedNode}
		}
		if sf := l.Closest(candidates, req, ledger.Binpack); sf != nil {
			rep.Closest = &NodeFit{Node: sf.Node, Reason: sf.Detail(), Volume: sf.Volume.Desc, Need: sf.Need, Free: sf.Free}
		}
	}
	evs, err := o.kube.CoreV1().Events(pod.Namespace).List(ctx, metav1.ListOptions{FieldSelector: fields.Set{
		"involvedObject.kind": "Pod", "involvedObject.name": pod.Name, "involvedObject.uid": string(pod.UID)}.String()})
	if err != nil {
		return nil, err
	}
	for i := range evs.Items {
		e := &evs.Items[i]
		from := e.Source.Component
		if from == "" {
			from = e.ReportingController
		}
		last := e.LastTimestamp.Time
		if last.IsZero() {
			last = e.EventTime.Time
		}
		if last.IsZero() {
			last = e.CreationTimestamp.Time
		}
		rep.Events = append(rep.Events, EventReport{Type: e.Type, Reason: e.Reason, From: from, Count: max(e.Count, 1), Last: last, Message: e.Message})
	}
	slices.SortStableFunc(rep.Events, func(a, b EventReport) int { return a.Last.Compare(b.Last) })
	if len(rep.Events) > maxEvents {
		rep.Events = rep.Events[len(rep.Events)-maxEvents:]
	}
	return rep, nil
}

// podVolume is a pod volume that open-local provides: what the ledger
// counts for it (podvolumes, the scheduler's own rule) and, for a clone,
// the LocalVolume it is copied from.
type podVolume struct {
	vol    ledger.Volume
	source string
	// boundTo is the PV of a bound claim: counted through its LocalVolume.
	boundTo string
}

// apiLookup gives podvolumes the API server.
type apiLookup struct {
	ctx context.Context
	o   *options
}

func (l apiLookup) Claim(namespace, name string) (*corev1.PersistentVolumeClaim, error) {
	return l.o.kube.CoreV1().PersistentVolumeClaims(namespace).Get(l.ctx, name, metav1.GetOptions{})
}

func (l apiLookup) Class(name string) (*storagev1.StorageClass, error) {
	return l.o.kube.StorageV1().StorageClasses().Get(l.ctx, name, metav1.GetOptions{})
}

func ours(driver string) bool {
	return driver == config.ProvisionerName || driver == config.LegacyProvisionerName
}

// podVolume maps one pod volume to what the scheduler counts for it. nil:
// not ours, or nothing to count; problems are notes.
func (o *options) podVolume(ctx context.Context, pod *corev1.Pod, vol *corev1.Volume, rep *WhyReport) (*podVolume, error) {
	note := func(format string, a ...any) { rep.Notes = append(rep.Notes, fmt.Sprintf(format, a...)) }
	// The scheduler's defaultInlineVolumeSize may differ from this default.
	need, skip, err := podvolumes.Of(pod, vol, apiLookup{ctx, o}, ours, parameters.DefaultInlineSize)
	switch {
	case podvolumes.IsRefusal(err):
		note("%v", err)
		return nil, nil
	case err != nil:
		return nil, err
	case need == nil && skip.BoundTo != "":
		pv, err := o.kube.CoreV1().PersistentVolumes().Get(ctx, skip.BoundTo, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, err
		}
		if pv != nil && pv.Spec.CSI != nil && !ours(pv.Spec.CSI.Driver) {
			return nil, nil
		}
		return &podVolume{vol: ledger.Volume{Name: skip.Claim, Desc: fmt.Sprintf("pvc %s/%s", pod.Namespace, claimName(pod, vol))},
			boundTo: skip.BoundTo}, nil
	case need == nil:
		if skip.Reason != "" {
			note("%s", skip.Reason)
		}
		return nil, nil
	}
	v := &podVolume{vol: need.Volume}
	if need.Source != nil {
		v.source = need.Source.Volume
	}
	if need.Snapshot != "" {
		note("%s is restored from VolumeSnapshot %s: it goes to its snapshot's node and VG (not resolved here)", need.Desc, need.Snapshot)
	}
	return v, nil
}

func claimName(pod *corev1.Pod, vol *corev1.Volume) string {
	if vol.Ephemeral != nil {
		return ephemeral.VolumeClaimName(pod, vol)
	}
	return vol.PersistentVolumeClaim.ClaimName
}

func (o *options) printWhy(r *WhyReport) error {
	w := o.streams.Out
	fmt.Fprintf(w, "Pod %s: %s", r.Pod, r.Phase)
	if r.Node != "" {
		fmt.Fprintf(w, " on node %s", r.Node)
	}
	fmt.Fprintf(w, " (scheduler %s)\n", r.SchedulerName)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "Note: %s\n", n)
	}
	if len(r.Volumes) > 0 {
		fmt.Fprintln(w, "\nVolumes:")
		var rows [][]string
		for _, v := range r.Volumes {
			where := v.VG
			if v.ThinPool != "" {
				where = strings.TrimPrefix(where+"/"+v.ThinPool, "/")
			}
			if v.MediaType != "" {
				where = v.MediaType + " device"
			}
			state := "needs space"
			if v.Allocated != "" {
				state = "allocated on " + v.Allocated
			}
			if where == "" {
				where = "any"
			}
			rows = append(rows, []string{v.Name, v.Desc, v.Type, where, qty(v.Size), state})
		}
		if err := o.table(w, []string{"NAME", "VOLUME", "TYPE", "VG", "SIZE", "STATE"}, rows); err != nil {
			return err
		}
	}
	if r.PinnedNode != "" {
		fmt.Fprintf(w, "\nPinned to node %s: %s\n", r.PinnedNode, r.PinnedWhy)
	}
	if len(r.Nodes) > 0 {
		fmt.Fprintln(w, "\nNodes (the scheduler's ledger, without reservations in flight):")
		var rows [][]string
		for _, n := range r.Nodes {
			fits := "yes"
			if !n.Fits {
				fits = "no"
			}
			rows = append(rows, []string{n.Node, fits, orNone(n.Reason)})
		}
		if err := o.table(w, []string{"NODE", "FITS", "WHY NOT"}, rows); err != nil {
			return err
		}
	}
	if c := r.Closest; c != nil {
		fmt.Fprintf(w, "\nClosest fit: node %s, %s short: %s\n", c.Node, qty(c.Need-c.Free), c.Reason)
	}
	fmt.Fprintln(w, "\nEvents:")
	if len(r.Events) == 0 {
		fmt.Fprintln(w, "  <none>")
		return nil
	}
	var rows [][]string
	for _, e := range r.Events {
		when := age(e.Last)
		if e.Count > 1 {
			when += fmt.Sprintf(" (x%d)", e.Count)
		}
		rows = append(rows, []string{when, e.Type, e.Reason, orNone(e.From), e.Message})
	}
	return o.table(w, []string{"AGE", "TYPE", "REASON", "FROM", "MESSAGE"}, rows)
}
