/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package nodestorage

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"

	"github.com/open-local/open-local/agent/discovery"
	agentmetrics "github.com/open-local/open-local/agent/metrics"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
)

// TestDesiredStatusOrphans: LVs no LocalVolume of the node names are kept
// out of allocatable; those that look like open-local's are flagged.
func TestDesiredStatusOrphans(t *testing.T) {
	inv := inventory{
		vgs: []lvm.VG{{Name: "pool-0", Size: 10 * gib, Free: 4 * gib}},
		lvs: []lvm.LV{
			{Name: "pvc-live", VG: "pool-0", Size: 1 * gib, Tags: []string{lvm.OwnedTag}},
			{Name: "localbackup", VG: "pool-0", Size: 2 * gib},
			{Name: "local-0b6c1d4e-6a0f-4a53-9d8e-3f1f7c2a9b10", VG: "pool-0", Size: 1 * gib},
			{Name: "admin", VG: "pool-0", Size: 2 * gib},
		},
	}
	live := &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-live"},
		Spec: v1alpha1.LocalVolumeSpec{NodeName: "n1", VolumeType: v1alpha1.VolumeTypeLVM, VGName: "pool-0", Size: resource.MustParse("1Gi")}}
	nls := &v1alpha1.NodeLocalStorage{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	obs := observation{inv: inv, ownership: discovery.Ownership{LegacyPrefix: "local"},
		accounted: discovery.AccountedBy([]*v1alpha1.LocalVolume{live})}
	st, _ := desiredStatus(nls, obs)
	vg := st.NodeStorageInfo.VolumeGroups[0]
	// 10 − localbackup 2 − local-<uuid> 1 − admin 2; pvc-live is the ledger's.
	if vg.Allocatable != 5*gib {
		t.Errorf("allocatable = %d MiB, want 5 GiB", vg.Allocatable>>20)
	}
	orphans := map[string]bool{}
	for _, lv := range vg.LogicalVolumes {
		orphans[lv.Name] = lv.Orphan
	}
	want := map[string]bool{"pvc-live": false, "localbackup": true, "local-0b6c1d4e-6a0f-4a53-9d8e-3f1f7c2a9b10": true, "admin": false}
	if !reflect.DeepEqual(orphans, want) {
		t.Errorf("orphan flags = %v, want %v", orphans, want)
	}
}

// TestReportOrphans: an orphan is reported (Event, gauge) once it was one
// in two passes in a row, with one Event while it lasts, and again when it
// comes back.
func TestReportOrphans(t *testing.T) {
	reg := prometheus.NewRegistry()
	rec := record.NewFakeRecorder(100)
	c := &Controller{node: "n1", recorder: rec, reported: map[string]bool{}, suspects: map[string]bool{},
		orphanLVs: agentmetrics.NewOrphanLVs(reg)}
	nls := &v1alpha1.NodeLocalStorage{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	status := func(orphans ...string) []v1alpha1.VolumeGroup {
		vg := v1alpha1.VolumeGroup{Name: "vg"}
		vg.LogicalVolumes = append(vg.LogicalVolumes, v1alpha1.LogicalVolume{Name: "pvc-live", VGName: "vg", Total: gib})
		for _, o := range orphans {
			vg.LogicalVolumes = append(vg.LogicalVolumes, v1alpha1.LogicalVolume{Name: o, VGName: "vg", Total: gib, Orphan: true})
		}
		return []v1alpha1.VolumeGroup{vg, {Name: "empty"}}
	}
	passes := []struct {
		name       string
		orphans    []string
		wantEvents []string // LVs named by new Events
		wantGauge  float64  // of vg
	}{
		{"first seen: a suspect only", []string{"localbackup"}, nil, 0},
		{"second pass: reported", []string{"localbackup"}, []string{"vg/localbackup"}, 1},
		{"still there: no new Event", []string{"localbackup"}, nil, 1},
		{"a second one, first seen", []string{"localbackup", "local-x"}, nil, 1},
		{"both", []string{"localbackup", "local-x"}, []string{"vg/local-x"}, 2},
		{"one adopted", []string{"local-x"}, nil, 1},
		{"all gone", nil, nil, 0},
		{"back: a suspect again", []string{"local-x"}, nil, 0},
		{"back: reported again", []string{"local-x"}, []string{"vg/local-x"}, 1},
	}
	for _, p := range passes {
		c.reportOrphans(nls, status(p.orphans...))
		var got []string
		for len(rec.Events) > 0 {
			e := <-rec.Events
			if !strings.HasPrefix(e, "Warning "+ReasonOrphanLV+" LV ") {
				t.Errorf("%s: event %q", p.name, e)
			}
			got = append(got, strings.Fields(e)[3])
		}
		if !reflect.DeepEqual(got, p.wantEvents) {
			t.Errorf("%s: Events for %v, want %v", p.name, got, p.wantEvents)
		}
		want := fmt.Sprintf(`# HELP open_local_orphan_lvs %s
# TYPE open_local_orphan_lvs gauge
open_local_orphan_lvs{nodename="n1",vgname="empty"} 0
open_local_orphan_lvs{nodename="n1",vgname="vg"} %v
`, orphanHelp(t, reg), p.wantGauge)
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "open_local_orphan_lvs"); err != nil {
			t.Errorf("%s: %v", p.name, err)
		}
	}
	if !c.isSuspect("vg/local-x") || c.isSuspect("vg/localbackup") {
		t.Errorf("suspects = %v, want vg/local-x only", c.suspects)
	}
}

func orphanHelp(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 {
		t.Fatalf("gather: %v, %d families", err, len(mfs))
	}
	return mfs[0].GetHelp()
}
