/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package controller

import (
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
		ns.volumes = append(ns.volumes, v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("v%d", i)},
			Spec: v1alpha1.LocalVolumeSpec{NodeName: "n", VolumeType: v1alpha1.VolumeTypeLVM, VGName: fmt.Sprintf("vg%d", i%vgs),
				Size: *resource.NewQuantity(1<<20, resource.BinarySI)}})
	}
	return ns
}

func TestPlaceSpreadsToMostFree(t *testing.T) {
	ns := benchNode(3, 5) // vg0 and vg1 hold two volumes, vg2 one
	p, err := ns.place(parameters.Params{VolumeType: v1alpha1.VolumeTypeLVM}, 1<<30)
	if err != nil || p.vg != "vg2" {
		t.Fatalf("place = %+v, %v; want vg2", p, err)
	}
	// Each 1 MiB volume takes a whole extent (LVM's default 4 MiB: the
	// NLS gives no extent size).
	total, maxVol := ns.capacity(parameters.Params{VolumeType: v1alpha1.VolumeTypeLVM})
	if total != 300<<30-5*(4<<20) || maxVol != 100<<30-4<<20 {
		t.Fatalf("capacity = %d, %d", total, maxVol)
	}
}

// BenchmarkPlace: the controller's placement on a node with 4 VGs and
// 1000 volumes (the API reads around it are not included).
func BenchmarkPlace(b *testing.B) {
	ns := benchNode(4, 1000)
	p := parameters.Params{VolumeType: v1alpha1.VolumeTypeLVM}
	for b.Loop() {
		if _, err := ns.place(p, 1<<30); err != nil {
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
		got := snapshotID(tt.name)
		if tt.want == "snap-" {
			if len(got) != len("snap-")+40 || got[:5] != "snap-" || got != snapshotID(tt.name) {
				t.Errorf("snapshotID(%q) = %q, want a stable snap-<hash>", tt.name, got)
			}
		} else if got != tt.want {
			t.Errorf("snapshotID(%q) = %q, want %q", tt.name, got, tt.want)
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
