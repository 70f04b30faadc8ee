/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package main

import (
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/open-local/open-local/agent/nodestorage"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/test/capability"
)

// TestAgentThinPool: a thin pool configured in resourceToBeInited (the
// only place the agent creates one) is created in the VG the agent made,
// and reported with its overprovision ratio: Allocatable = ratio × size,
// and the VG's own allocatable no longer includes the pool (nor its hidden
// metadata). Without device-mapper lvm refuses thin pools: the agent says
// so in a Warning Event and reports the VG without a pool.
func TestAgentThinPool(t *testing.T) {
	n := newNode(t, 1)
	vg := "olthin-" + n.run
	ratio := resource.MustParse("3")
	n.createConfig(v1alpha1.NodeLocalStorageInitConfigSpec{GlobalConfig: v1alpha1.GlobalConfig{
		ListConfig: v1alpha1.ListConfig{VGs: v1alpha1.VGList{Include: []string{"olthin-.*"}}},
		ResourceToBeInited: v1alpha1.ResourceToBeInited{VGs: []v1alpha1.VGToBeInited{{Name: vg, Devices: []string{n.dev(0)},
			ThinPool: &v1alpha1.ThinPoolToBeInited{Name: "tp", Size: "50%", OverprovisionRatio: &ratio}}}},
	}})
	n.startController()
	n.startAgent("--activation", "auto")

	if dm, _ := capability.Has(capability.DeviceMapper); !dm {
		n.waitEvent(nodestorage.ReasonCreateThinPoolFailed, vg+"/tp", "device-mapper")
		n.waitVG(vg, vgBytes, vgBytes, vgBytes, n.dev(0))
		if v := vgOf(n.nls(), vg); len(v.ThinPools) != 0 {
			t.Errorf("thin pools reported without device-mapper: %+v", v.ThinPools)
		}
		return
	}
	n.waitEvent(nodestorage.ReasonThinPoolCreated, vg+"/tp")
	nls := n.eventually(2*time.Minute, func(nls *v1alpha1.NodeLocalStorage) string {
		v := vgOf(nls, vg)
		if v == nil || len(v.ThinPools) != 1 {
			return fmt.Sprintf("VG %s without its thin pool: %+v", vg, v)
		}
		return ""
	})
	v := vgOf(nls, vg)
	p := v.ThinPools[0]
	// Half the VG, rounded up to whole 4 MiB extents by lvm.
	if p.Name != "tp" || p.Total != 128*4*mib || p.OverprovisionRatio.Cmp(ratio) != 0 || p.Allocatable != 3*p.Total {
		t.Errorf("thin pool = %+v, want tp of 512Mi, ratio 3, allocatable 1536Mi", p)
	}
	// Real fill from lvm: an empty pool's data is 0 %, its metadata holds
	// the pool's superblock and maps (a few percent), both known.
	if p.DataPercent == nil || *p.DataPercent != 0 || p.MetadataPercent == nil || *p.MetadataPercent <= 0 || *p.MetadataPercent >= 50 {
		t.Errorf("fill of an empty pool: data %v, metadata %v; want 0 and a few percent", fmtPercent(p.DataPercent), fmtPercent(p.MetadataPercent))
	}
	t.Logf("empty pool %s/tp: data %s, metadata %s", vg, fmtPercent(p.DataPercent), fmtPercent(p.MetadataPercent))
	// What is left for thick volumes: the VG minus the pool's data and its
	// hidden metadata (and spare), i.e. exactly the free extents.
	if v.Allocatable != v.Available || v.Allocatable >= vgBytes-p.Total {
		t.Errorf("VG allocatable %d, available %d, pool %d: want allocatable = free space < %d", v.Allocatable, v.Available, p.Total, vgBytes-p.Total)
	}
}

func fmtPercent(p *int32) string {
	if p == nil {
		return "unknown"
	}
	return fmt.Sprintf("%d%%", *p)
}
