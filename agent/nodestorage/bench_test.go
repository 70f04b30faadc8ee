/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package nodestorage

import (
	"fmt"
	"testing"

	"github.com/open-local/open-local/agent/discovery"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
)

// BenchmarkStatusPass is the CPU side of one discovery pass on a busy node
// (4 VGs, 2000 LVs, 24 devices): computing the status and comparing it with
// the current one, which every pass does even when nothing is written.
func BenchmarkStatusPass(b *testing.B) {
	var inv inventory
	for v := range 4 {
		vg := fmt.Sprintf("open-local-pool-%d", v)
		inv.vgs = append(inv.vgs, lvm.VG{Name: vg, Size: 10 << 40, Free: 1 << 40})
		inv.pvs = append(inv.pvs, lvm.PV{Name: fmt.Sprintf("/dev/sd%c", 'b'+v), VG: vg})
		for l := range 500 {
			inv.lvs = append(inv.lvs, lvm.LV{Name: fmt.Sprintf("pvc-%04d-%d", l, v), VG: vg, Size: 10 << 30, Tags: []string{lvm.OwnedTag}})
		}
	}
	var devs []v1alpha1.DeviceInfo
	for d := range 24 {
		devs = append(devs, v1alpha1.DeviceInfo{Name: fmt.Sprintf("/dev/sd%c", 'a'+d), Total: 1 << 40, MediaType: "ssd"})
	}
	nls := &v1alpha1.NodeLocalStorage{Spec: v1alpha1.NodeLocalStorageSpec{ListConfig: v1alpha1.ListConfig{
		VGs: v1alpha1.VGList{Include: []string{"open-local-pool-[0-9]+"}}, Devices: v1alpha1.DeviceList{Include: []string{"/dev/sd[a-z]"}}}}}
	obs := observation{inv: inv, devices: devs, ownership: discovery.Ownership{LegacyPrefix: "local"}, accounted: accountedAll(inv.lvs)}
	nls.Status, _ = desiredStatus(nls, obs)
	b.ReportAllocs()
	for b.Loop() {
		st, _ := desiredStatus(nls, obs)
		if changed(&st, &nls.Status) {
			b.Fatal("unchanged inventory reported as changed")
		}
	}
}

// accountedAll: every LV has its LocalVolume.
func accountedAll(lvs []lvm.LV) discovery.Accounted {
	a := discovery.Accounted{}
	for _, lv := range lvs {
		if a[lv.VG] == nil {
			a[lv.VG] = map[string]bool{}
		}
		a[lv.VG][lv.Name] = lv.IsThin()
	}
	return a
}
