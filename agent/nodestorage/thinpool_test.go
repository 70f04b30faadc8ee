/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package nodestorage

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/open-local/open-local/agent/discovery"
	listers "github.com/open-local/open-local/apis/client/listers/storage/v1alpha1"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/loopvg"
)

// A thin pool spends VG space like a thick LV: the agent creates the one
// its NodeLocalStorage configures only when it fits the VG's allocatable
// beside every LocalVolume counted there (whole extents, metadata and its
// spare included), and otherwise refuses with a CreateThinPoolFailed
// Event, touching nothing. Real lvm on a loop device; in metadata mode
// (no device-mapper) lvcreate itself refuses thin pools, so a pool that
// fits ends in lvm's own words instead of ThinPoolCreated.
func TestThinPoolCreationIsAdmitted(t *testing.T) {
	const mib = int64(1) << 20
	tests := []struct {
		name      string
		counted   int64 // bytes of LocalVolumes on the VG, no LV made yet
		wantRoom  bool
		wantWords string // in the Event, when refused
	}{
		{name: "room for the pool", counted: 100 * mib, wantRoom: true},
		{name: "LocalVolumes hold the space", counted: 600 * mib,
			wantWords: "counting every LocalVolume of the VG"},
		{name: "a VG full of LocalVolumes", counted: 1000 * mib,
			wantWords: "counting every LocalVolume of the VG"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			capability.Require(t, capability.Root, capability.LoopDevices, capability.LVM)
			ctx := t.Context()
			dev := loopvg.NewDevices(t, 1<<30)[0]
			cfg := loopvg.NewConfig(t, dev.Path)
			var opts []lvm.Option
			if !cfg.FullMode {
				opts = append(opts, lvm.WithAlloc(lvm.AllocContiguous))
			}
			client := lvm.New(&lvm.ExecRunner{SystemDir: cfg.Dir, Env: cfg.Env()}, opts...)
			const vg = "tpadmit"
			if err := client.CreateVG(ctx, vg, []string{dev.Path}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if cfg.FullMode {
					_, _ = cfg.Run(ctx, "vgchange", "--activate", "n", vg)
				}
				if _, err := cfg.Run(ctx, "vgremove", "--force", "--force", "--yes", vg); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			})

			indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
			lv := &v1alpha1.LocalVolume{
				ObjectMeta: metav1.ObjectMeta{Name: "pvc-held", UID: "uid-held"},
				Spec: v1alpha1.LocalVolumeSpec{NodeName: "n1", VolumeType: v1alpha1.VolumeTypeLVM, Kind: v1alpha1.KindVolume,
					VGName: vg, Size: *resource.NewQuantity(tt.counted, resource.BinarySI)},
			}
			if err := indexer.Add(lv); err != nil {
				t.Fatal(err)
			}
			recorder := record.NewFakeRecorder(16)
			c := &Controller{node: "n1", lvm: client, recorder: recorder, volumes: listers.NewLocalVolumeLister(indexer),
				opts: Options{Interval: time.Second, MaxInitBackoff: time.Minute}, now: time.Now, backoffs: map[string]*backoff{}}

			nls := &v1alpha1.NodeLocalStorage{
				ObjectMeta: metav1.ObjectMeta{Name: "n1", Generation: 1},
				Spec: v1alpha1.NodeLocalStorageSpec{NodeName: "n1",
					ListConfig: v1alpha1.ListConfig{VGs: v1alpha1.VGList{Include: []string{vg}}},
					ResourceToBeInited: v1alpha1.ResourceToBeInited{VGs: []v1alpha1.VGToBeInited{
						{Name: vg, Devices: []string{dev.Path}, ThinPool: &v1alpha1.ThinPoolToBeInited{Name: "tp", Size: "50%"}}}}},
			}
			// The status the agent wrote last: allocatable from lvm's report.
			inv, err := c.readInventory(ctx)
			if err != nil {
				t.Fatal(err)
			}
			nls.Status, _ = desiredStatus(nls, observation{inv: inv, accounted: discovery.AccountedBy([]*v1alpha1.LocalVolume{lv})})
			nls.Status.NodeStorageInfo.State.LastHeartbeatTime = &metav1.Time{Time: time.Now()}

			c.initVGs(ctx, nls, inv)
			var events []string
			for len(recorder.Events) > 0 {
				events = append(events, <-recorder.Events)
			}
			if len(events) != 1 {
				t.Fatalf("events = %q, want one", events)
			}
			ev := events[0]
			refused := strings.Contains(ev, ReasonCreateThinPoolFailed) && strings.Contains(ev, "allocatable")
			switch {
			case tt.wantRoom && refused:
				t.Errorf("event %q: refused a pool that fits", ev)
			case !tt.wantRoom && !refused:
				t.Errorf("event %q: want %s saying the VG's allocatable lacks room", ev, ReasonCreateThinPoolFailed)
			case !tt.wantRoom && !strings.Contains(ev, tt.wantWords):
				t.Errorf("event %q: want the words %q", ev, tt.wantWords)
			}
			if !tt.wantRoom {
				lvs, err := client.ListLVs(ctx, vg)
				if err != nil {
					t.Fatal(err)
				}
				if len(lvs) != 0 {
					t.Errorf("LVs after a refusal = %+v, want none", lvs)
				}
			}
			t.Logf("event: %s", ev)
		})
	}
}

func TestThinPoolTake(t *testing.T) {
	const mib = uint64(1) << 20
	tests := []struct {
		data, extent           uint64
		wantData, wantMetadata uint64
	}{
		{data: 510 * mib, extent: 4 * mib, wantData: 512 * mib, wantMetadata: 4 * mib},
		{data: 100 * gib, extent: 4 * mib, wantData: 100 * gib, wantMetadata: 100 * mib},
		{data: 4096 * gib, extent: 4 * mib, wantData: 4096 * gib, wantMetadata: 128 * mib},
		{data: 10 * mib, extent: 32 * mib, wantData: 32 * mib, wantMetadata: 32 * mib},
		{data: 10 * mib, extent: 0, wantData: 10 * mib, wantMetadata: 4 * mib},
	}
	for _, tt := range tests {
		d, m := thinPoolTake(tt.data, tt.extent)
		if d != tt.wantData || m != tt.wantMetadata {
			t.Errorf("thinPoolTake(%d, %d) = %d, %d; want %d, %d", tt.data, tt.extent, d, m, tt.wantData, tt.wantMetadata)
		}
	}
}
