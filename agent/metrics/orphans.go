/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// OrphanLVs is the gauge open_local_orphan_lvs{nodename,vgname}: LVs that
// look like open-local's (tag or name prefix) but that no LocalVolume of the
// node names. The scheduler counts them nowhere, so the agent keeps their
// space out of allocatable; an operator should adopt or remove them.
type OrphanLVs struct {
	g    *prometheus.GaugeVec
	mu   sync.Mutex
	last map[string]bool // VGs set by the last Set
}

// NewOrphanLVs registers the gauge with reg.
func NewOrphanLVs(reg prometheus.Registerer) *OrphanLVs {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "open_local_orphan_lvs",
		Help: "LVs of a VG that look like open-local's (tagged or named local*/csi-*) but that no LocalVolume of the node names: kept out of allocatable until adopted or removed.",
	}, []string{"nodename", "vgname"})
	reg.MustRegister(g)
	return &OrphanLVs{g: g, last: map[string]bool{}}
}

// Set reports the orphan count of every VG of node (VGs with none get 0);
// VGs no longer present lose their series.
func (o *OrphanLVs) Set(node string, byVG map[string]int) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for vg := range o.last {
		if _, ok := byVG[vg]; !ok {
			o.g.DeleteLabelValues(node, vg)
		}
	}
	o.last = map[string]bool{}
	for vg, n := range byVG {
		o.g.WithLabelValues(node, vg).Set(float64(n))
		o.last[vg] = true
	}
}
