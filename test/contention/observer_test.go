/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package contention_test

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	"k8s.io/client-go/tools/cache"

	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// observer checks, at every watch event on the node's LocalVolumes and
// NodeLocalStorage, that what the node has granted fits the VG's
// allocatable, from the API objects alone. Granted is what the agent
// reports carried out: a LocalVolume whose status has a currentSize holds
// an LV of that size (a refused growth keeps the old size, a refused or
// failed creation holds nothing). The sum is the shared ledger's
// (apis/storage/ledger: whole extents, striping), the same counting the
// scheduler, the CSI controller and the agent use.
//
// It also counts what was asked for (every LocalVolume at spec.size, as
// the scheduler's ledger counts them): writers that do not see each
// other's in-flight grants may together ask for more than the VG has for a
// moment, which the agent resolves by refusing the newest. That is
// reported, not asserted.
type observer struct {
	node, vg string

	mu  sync.Mutex
	nls *v1alpha1.NodeLocalStorage
	lvs map[string]*v1alpha1.LocalVolume

	observations int
	maxGranted   int64
	allocatable  int64 // at the observation of maxGranted
	// overAsked counts observations where the LocalVolumes asked for more
	// than the allocatable; maxAsked is the largest sum asked.
	overAsked int
	maxAsked  int64
	// refused are the LocalVolumes seen Failed with ResourceExhausted: the
	// agent's refusals (name -> message).
	refused    map[string]string
	violations []string
}

func newObserver(node, vg string) *observer {
	return &observer{node: node, vg: vg, lvs: map[string]*v1alpha1.LocalVolume{}, refused: map[string]string{}}
}

// handlers are the informers' event handlers: each event is an observation.
func (o *observer) lvHandler() cache.ResourceEventHandler {
	set := func(obj any) {
		lv, ok := obj.(*v1alpha1.LocalVolume)
		if !ok || lv.Spec.NodeName != o.node {
			return
		}
		o.mu.Lock()
		defer o.mu.Unlock()
		o.lvs[lv.Name] = lv
		if lv.Status.Phase == v1alpha1.PhaseFailed && lv.Status.Code == "ResourceExhausted" {
			o.refused[lv.Name] = lv.Status.Message
		}
		o.observe()
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    set,
		UpdateFunc: func(_, obj any) { set(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			lv, ok := obj.(*v1alpha1.LocalVolume)
			if !ok || lv.Spec.NodeName != o.node {
				return
			}
			o.mu.Lock()
			defer o.mu.Unlock()
			delete(o.lvs, lv.Name)
			o.observe()
		},
	}
}

func (o *observer) nlsHandler() cache.ResourceEventHandler {
	set := func(obj any) {
		nls, ok := obj.(*v1alpha1.NodeLocalStorage)
		if !ok || nls.Name != o.node {
			return
		}
		o.mu.Lock()
		defer o.mu.Unlock()
		o.nls = nls
		o.observe()
	}
	return cache.ResourceEventHandlerFuncs{AddFunc: set, UpdateFunc: func(_, obj any) { set(obj) }}
}

// usage is the ledger's account of the VG over vols: used and capacity
// (the NodeLocalStorage allocatable).
func (o *observer) usage(vols []*v1alpha1.LocalVolume) (used, capacity int64) {
	l := ledger.New()
	nls := o.nls.DeepCopy()
	nls.Spec.NodeName = o.node
	l.SetNodeStorage(nls)
	for _, lv := range vols {
		l.SetVolume(lv)
	}
	l.Visit(func(u ledger.VGUsage) {
		if u.Node == o.node && u.VG == o.vg {
			used, capacity = u.Used, u.Capacity
		}
	}, nil)
	return used, capacity
}

// observe checks the current view; the caller holds mu.
func (o *observer) observe() {
	if o.nls == nil {
		return
	}
	o.observations++
	var granted, asked []*v1alpha1.LocalVolume
	for _, lv := range o.lvs {
		if lv.Spec.VGName != o.vg || lv.Spec.VolumeType != v1alpha1.VolumeTypeLVM {
			continue
		}
		asked = append(asked, lv)
		if lv.Status.CurrentSize != nil {
			g := lv.DeepCopy()
			g.Spec.Size = *lv.Status.CurrentSize
			granted = append(granted, g)
		}
	}
	used, capacity := o.usage(granted)
	if used > o.maxGranted {
		o.maxGranted, o.allocatable = used, capacity
	}
	a, _ := o.usage(asked)
	o.maxAsked = max(o.maxAsked, a)
	if a > capacity {
		o.overAsked++
	}
	if used > capacity && len(o.violations) < 5 {
		o.violations = append(o.violations, fmt.Sprintf("observation %d: granted %s > allocatable %s in VG %s: %s",
			o.observations, ledger.Bytes(used), ledger.Bytes(capacity), o.vg, describe(granted)))
	}
}

// describe lists volumes with their granted sizes, for a failure message.
func describe(vols []*v1alpha1.LocalVolume) string {
	var out []string
	for _, lv := range vols {
		out = append(out, fmt.Sprintf("%s=%s", lv.Name, lv.Spec.Size.String()))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// result is a copy of what the observer saw.
type observed struct {
	observations, overAsked           int
	maxGranted, allocatable, maxAsked int64
	refused                           map[string]string
	violations                        []string
}

func (o *observer) result() observed {
	o.mu.Lock()
	defer o.mu.Unlock()
	r := observed{observations: o.observations, overAsked: o.overAsked, maxGranted: o.maxGranted, allocatable: o.allocatable,
		maxAsked: o.maxAsked, refused: map[string]string{}, violations: append([]string(nil), o.violations...)}
	for k, v := range o.refused {
		r.refused[k] = v
	}
	return r
}
