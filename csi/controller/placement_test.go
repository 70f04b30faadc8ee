/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package controller

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

func TestLVNameFor(t *testing.T) {
	tests := []struct{ id, want string }{
		{id: "pvc-0b1e2a4c-8d1f-4a55-9a0e-3c2d1e0f9a7b", want: ""},
		{id: "sanity-volume", want: ""},
		// lvm refuses LV names starting with "snapshot" or "pvmove".
		{id: "snapshot", want: "lv-"},
		{id: "pvmove-x", want: "lv-"},
		{id: "snap-0b1e2a4c-8d1f-4a55-9a0e-3c2d1e0f9a7b", want: ""},
		{id: string(make([]byte, 0)) + "a-very-long-name-" + fmt.Sprintf("%0100d", 0), want: "lv-"},
	}
	for _, tt := range tests {
		got := lvNameFor(tt.id)
		if (tt.want == "") != (got == "") || (tt.want != "" && len(got) != 35) {
			t.Errorf("lvNameFor(%q) = %q", tt.id, got)
		}
		if got != lvNameFor(tt.id) {
			t.Errorf("lvNameFor(%q) is not stable", tt.id)
		}
	}
}

// node with vgs VGs of 100 GiB and n volumes spread over them.
func benchNode(vgs, n int) *nodeStorage {
	ns := &nodeStorage{name: "n", nls: &v1alpha1.NodeLocalStorage{}}
	for i := range vgs {
		name := fmt.Sprintf("vg%d", i)
		ns.nls.Status.NodeStorageInfo.VolumeGroups = append(ns.nls.Status.NodeStorageInfo.VolumeGroups,
			v1alpha1.VolumeGroup{Name: name, Allocatable: 100 << 30})
		ns.nls.Status.FilteredStorageInfo.VolumeGroups = append(ns.nls.Status.FilteredStorageInfo.VolumeGroups, name)
	}
	for i := range n {
		ns.volumes = append(ns.volumes, &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("v%d", i)},
			Spec: v1alpha1.LocalVolumeSpec{NodeName: "n", VolumeType: v1alpha1.VolumeTypeLVM, VGName: fmt.Sprintf("vg%d", i%vgs),
				Size: *resource.NewQuantity(1<<20, resource.BinarySI)}})
	}
	return ns
}

func TestPlaceSpreadsToMostFree(t *testing.T) {
	ns := benchNode(3, 5) // vg0 and vg1 hold two volumes, vg2 one
	l := New(nil, nil).ledgerOf(ns)
	p, err := ns.place(l, "new", parameters.Params{VolumeType: v1alpha1.VolumeTypeLVM}, 1<<30)
	if err != nil || p.vg != "vg2" {
		t.Fatalf("place = %+v, %v; want vg2", p, err)
	}
	// Each 1 MiB volume takes a whole extent (LVM's default 4 MiB: the
	// NLS gives no extent size).
	total, maxVol := ns.capacity(l, parameters.Params{VolumeType: v1alpha1.VolumeTypeLVM})
	if total != 300<<30-5*(4<<20) || maxVol != 100<<30-4<<20 {
		t.Fatalf("capacity = %d, %d", total, maxVol)
	}
}

// The controller's arithmetic is the scheduler's ledger: the cases where
// the old hand-written copy (placement.go's vgs/place) disagreed with it.
func TestControllerCountsLikeTheLedger(t *testing.T) {
	const mi = int64(1) << 20
	lvmClass := parameters.Params{VolumeType: v1alpha1.VolumeTypeLVM}
	node := func(alloc int64, mutate func(*v1alpha1.NodeLocalStorage), sizes ...int64) *nodeStorage {
		ns := &nodeStorage{name: "n", nls: &v1alpha1.NodeLocalStorage{ObjectMeta: metav1.ObjectMeta{Name: "n"}}}
		ns.nls.Status.NodeStorageInfo.VolumeGroups = []v1alpha1.VolumeGroup{{Name: "vg0", Allocatable: uint64(alloc), Condition: v1alpha1.StorageReady}}
		ns.nls.Status.FilteredStorageInfo.VolumeGroups = []string{"vg0"}
		for i, sz := range sizes {
			ns.volumes = append(ns.volumes, &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("v%d", i)},
				Spec: v1alpha1.LocalVolumeSpec{NodeName: "n", VolumeType: v1alpha1.VolumeTypeLVM, VGName: "vg0",
					Size: *resource.NewQuantity(sz, resource.BinarySI)}})
		}
		if mutate != nil {
			mutate(ns.nls)
		}
		return ns
	}
	tests := []struct {
		name              string
		ns                *nodeStorage
		size              int64
		wantTotal, wantMx int64
		wantErr           string // "" = placed
	}{
		{name: "healthy VG", ns: node(100*mi, nil), size: 8 * mi, wantTotal: 100 * mi, wantMx: 100 * mi},
		{name: "StorageFault VG is not free", ns: node(100*mi, func(o *v1alpha1.NodeLocalStorage) {
			o.Status.NodeStorageInfo.VolumeGroups[0].Condition = v1alpha1.StorageFault
		}), size: 8 * mi, wantErr: "no VG has 8Mi free for volume new (largest free 0)"},
		{name: "DiskFault node takes nothing", ns: node(100*mi, func(o *v1alpha1.NodeLocalStorage) {
			o.Status.NodeStorageInfo.State = v1alpha1.StorageState{Type: v1alpha1.StorageFault, Reason: "DiscoveryFailed"}
		}), size: 8 * mi, wantErr: "NodeLocalStorage state DiskFault (DiscoveryFailed)"},
		{name: "silent agent takes nothing", ns: node(100*mi, func(o *v1alpha1.NodeLocalStorage) {
			old := metav1.NewTime(time.Now().Add(-time.Hour))
			o.Status.NodeStorageInfo.State = v1alpha1.StorageState{Type: v1alpha1.StorageReady, LastHeartbeatTime: &old}
		}), size: 8 * mi, wantErr: "has not reported for 1h"},
		// 10 MiB allocatable holds two 4 MiB extents: a 9 MiB LV needs
		// three. The old check compared the bare size to the free bytes.
		{name: "request rounded to extents", ns: node(10*mi, nil), size: 9 * mi, wantTotal: 10 * mi, wantMx: 8 * mi,
			wantErr: "no VG has 9Mi free for volume new (largest free 10Mi)"},
		{name: "odd sizes do not over-commit", ns: node(16*mi, nil, 5*mi), size: 5 * mi, wantTotal: 8 * mi, wantMx: 8 * mi},
		{name: "odd sizes do not over-commit, full", ns: node(16*mi, nil, 5*mi, 5*mi), size: 1, wantErr: "free 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New(nil, nil).ledgerOf(tt.ns)
			total, mx := tt.ns.capacity(l, lvmClass)
			if total != tt.wantTotal || mx != tt.wantMx {
				t.Errorf("capacity = %d, %d; want %d, %d", total, mx, tt.wantTotal, tt.wantMx)
			}
			pl, err := tt.ns.place(l, "new", lvmClass, tt.size)
			if tt.wantErr == "" {
				if err != nil || pl.vg != "vg0" {
					t.Fatalf("place = %+v, %v; want vg0", pl, err)
				}
				return
			}
			if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("place = %+v, %v; want ResourceExhausted mentioning %q", pl, err, tt.wantErr)
			}
		})
	}
}

// BenchmarkPlace: the controller's placement on a node with 4 VGs and
// 1000 volumes, building the one-node ledger included (the API reads
// around it are not).
func BenchmarkPlace(b *testing.B) {
	ns := benchNode(4, 1000)
	p := parameters.Params{VolumeType: v1alpha1.VolumeTypeLVM}
	for b.Loop() {
		if _, err := ns.place(New(nil, nil).ledgerOf(ns), "new", p, 1<<30); err != nil {
			b.Fatal(err)
		}
	}
}

// Snapshot IDs are deterministic LocalVolume names that start with snap-
// (lvm refuses LV names starting with "snapshot"), and volume IDs never do.
func TestSnapshotID(t *testing.T) {
	tests := []struct{ name, want string }{
		{name: "snapshot-0b1e2a4c-8d1f-4a55-9a0e-3c2d1e0f9a7b", want: "snap-0b1e2a4c-8d1f-4a55-9a0e-3c2d1e0f9a7b"},
		{name: "CreateSnapshot-snapshot-1-7C0A2B3F", want: "snap-"},
		{name: "snapshot-Upper", want: "snap-"},
		{name: "my-snap", want: "snap-"},
	}
	for _, tt := range tests {
		got := v1alpha1.SnapshotVolumeName(tt.name)
		if tt.want == "snap-" {
			if len(got) != len("snap-")+40 || got[:5] != "snap-" || got != v1alpha1.SnapshotVolumeName(tt.name) {
				t.Errorf("v1alpha1.SnapshotVolumeName(%q) = %q, want a stable snap-<hash>", tt.name, got)
			}
		} else if got != tt.want {
			t.Errorf("v1alpha1.SnapshotVolumeName(%q) = %q, want %q", tt.name, got, tt.want)
		}
		if lvNameFor(got) != "" {
			t.Errorf("snapshot ID %q is not usable as an LV name", got)
		}
	}
	s := &Server{}
	if id, _, err := s.volumeID(t.Context(), "snap-x", parameters.Params{}); err != nil || id[:4] != "csi-" {
		t.Errorf("volumeID(snap-x) = %q, %v: a volume must not take a snapshot's name", id, err)
	}
	// A volume may be called snapshot-x; its LV may not.
	if id, _, err := s.volumeID(t.Context(), "snapshot-x", parameters.Params{}); err != nil || id != "snapshot-x" || lvNameFor(id) == "" {
		t.Errorf("volumeID(snapshot-x) = %q, %v (LV name %q)", id, err, lvNameFor(id))
	}
}

// The controller refuses a thin pool filled past a threshold as the
// scheduler does (one rule: the ledger's), with its own thresholds (the
// flags the chart sets to the scheduler's args): ResourceExhausted naming
// the pool and its fill, so csi-provisioner reschedules.
func TestControllerThinPoolFill(t *testing.T) {
	pct := func(v int32) *int32 { return &v }
	ns := &nodeStorage{name: "n", nls: &v1alpha1.NodeLocalStorage{ObjectMeta: metav1.ObjectMeta{Name: "n"}}}
	ns.nls.Status.NodeStorageInfo.VolumeGroups = []v1alpha1.VolumeGroup{{Name: "vg0", Allocatable: 100 << 30, Condition: v1alpha1.StorageReady,
		ThinPools: []v1alpha1.ThinPool{{Name: "tp", Total: 10 << 30, Allocatable: 10 << 30, DataPercent: pct(85), MetadataPercent: pct(85)}}}}
	ns.nls.Status.FilteredStorageInfo.VolumeGroups = []string{"vg0"}
	thin := parameters.Params{VolumeType: v1alpha1.VolumeTypeLVM, ThinPool: "tp"}
	for _, tt := range []struct {
		name    string
		fill    *ledger.Fill // nil: the default
		wantErr string
	}{
		{name: "default: metadata 85% > 80%", wantErr: "thin pool tp in VG vg0 on n: metadata 85% full, above the 80% threshold"},
		{name: "raised thresholds", fill: &ledger.Fill{DataPercent: 90, MetadataPercent: 90}},
		{name: "lowered data threshold", fill: &ledger.Fill{DataPercent: 80, MetadataPercent: 90}, wantErr: "data 85% full, above the 80% threshold"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := New(nil, nil)
			if tt.fill != nil {
				if err := s.SetFill(*tt.fill); err != nil {
					t.Fatal(err)
				}
			}
			pl, err := ns.place(s.ledgerOf(ns), "new", thin, 1<<30)
			if tt.wantErr == "" {
				if err != nil || pl.thinPool != "tp" {
					t.Fatalf("place = %+v, %v; want tp", pl, err)
				}
				return
			}
			if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("place = %+v, %v; want ResourceExhausted mentioning %q", pl, err, tt.wantErr)
			}
		})
	}
	if err := New(nil, nil).SetFill(ledger.Fill{DataPercent: 0, MetadataPercent: 80}); err == nil || !strings.Contains(err.Error(), "data fill threshold 0%") {
		t.Errorf("SetFill(0, 80) = %v, want an error naming the data threshold", err)
	}
}
