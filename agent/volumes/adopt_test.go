/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package volumes_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-local/open-local/agent/volumes"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/loopvg"
)

// An adopted LocalVolume (the importer's, for an LV open-local made: no
// tag of ours) is verified, never created or resized: an LV of that name
// and at least that size keeps its data, is tagged ours and Ready, and is
// removed by the normal delete; anything else is refused with an Event and
// nothing on disk changes.
func TestAdoptedVolumes(t *testing.T) {
	n := newNode(t, "vol-adopt", "olvadopt", 128*mib)
	ctx := t.Context()
	data := bytes.Repeat([]byte("open-local v0.8.0 data "), 1000)
	// The LVs open-local's lvmd leaves: lvcreate -n <pv name> -L <bytes>b, no tags.
	for _, lv := range []struct {
		name string
		size int64
	}{{"local-small", 4 * mib}, {"local-fits", 8 * mib}} { // local-fits last: contiguous room to grow (loop mode)
		if _, err := n.vg.Run(ctx, "lvcreate", "--yes", "--name", lv.name, "--size", strconv.FormatInt(lv.size, 10)+"b", "--alloc", "contiguous", "olvadopt"); err != nil {
			t.Fatal(err)
		}
	}
	path, err := n.act.Activate(ctx, "olvadopt", "local-fits")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := n.act.Deactivate(ctx, "olvadopt", "local-fits"); err != nil {
		t.Fatal(err)
	}

	adopt := func(name string, size int64) {
		t.Helper()
		spec := lvmSpec("olvadopt", size)
		spec.NodeName, spec.LVName = n.name, name
		lv := &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{v1alpha1.AdoptedLabel: "true"},
			Finalizers: []string{v1alpha1.LocalVolumeFinalizer}}, Spec: spec}
		if _, err := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Create(ctx, lv, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, lv string
		size     int64
		// code is the refusal's; "" means Ready.
		code, reason string
	}{
		{name: "fits", lv: "local-fits", size: 8 * mib, reason: volumes.ReasonAdopted},
		{name: "smaller than the PV says", lv: "local-small", size: 8 * mib, code: "FailedPrecondition", reason: volumes.ReasonAdoptRefused},
		{name: "missing", lv: "local-missing", size: 8 * mib, code: "NotFound", reason: volumes.ReasonAdoptRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			adopt(tc.lv, tc.size)
			if tc.code == "" {
				n.waitFor(t, tc.lv, "Ready", ready(tc.size))
			} else {
				n.waitFor(t, tc.lv, "refused", failed(tc.code))
			}
			waitEvent(t, n.c, tc.lv, tc.reason)
		})
	}

	got, err := n.lvm.GetLV(ctx, "olvadopt", "local-fits")
	if err != nil || !got.HasTag(lvm.OwnedTag) {
		t.Fatalf("adopted LV: %+v, %v; want tag %s", got, err, lvm.OwnedTag)
	}
	lv, err := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Get(ctx, "local-fits", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	read, err := os.ReadFile(lv.Status.DevicePath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(read, data) {
		t.Errorf("adopted LV's data changed: first bytes %q", read[:64])
	}
	small, err := n.lvm.GetLV(ctx, "olvadopt", "local-small")
	if err != nil || small.HasTag(lvm.OwnedTag) || small.Size != uint64(4*mib) {
		t.Errorf("refused LV: %+v, %v; want it untouched (4 MiB, untagged)", small, err)
	}
	if names := n.lvNames(t); !slices.Equal(names, []string{"local-fits", "local-small"}) {
		t.Errorf("LVs after adoption: %v, want [local-fits local-small] (nothing created)", names)
	}

	// Expansion through the normal path (csi-resizer grows spec.size): the
	// now-tagged LV is extended, its data kept.
	lvs := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes()
	if _, err := cluster.Update(ctx, lvs.Get, lvs.Update, "local-fits", func(lv *v1alpha1.LocalVolume) {
		lv.Spec.Size = *resource.NewQuantity(16*mib, resource.BinarySI)
	}); err != nil {
		t.Fatal(err)
	}
	lv = n.waitFor(t, "local-fits", "extended", ready(16*mib))
	waitEvent(t, n.c, "local-fits", volumes.ReasonExtended)
	if read, err = os.ReadFile(lv.Status.DevicePath); err != nil || !bytes.HasPrefix(read, data) || len(read) != int(16*mib) {
		t.Errorf("extended adopted LV: %d bytes, data kept %v, %v", len(read), bytes.HasPrefix(read, data), err)
	}

	// Delete through the normal path: the adopted LV goes, the refused one stays.
	n.delete(t, "local-fits")
	n.waitFor(t, "local-fits", "deleted", gone)
	n.delete(t, "local-small")
	n.waitFor(t, "local-small", "refused removal", failed("FailedPrecondition"))
	if names := n.lvNames(t); !slices.Equal(names, []string{"local-small"}) {
		t.Errorf("LVs after delete: %v, want [local-small]", names)
	}
}

// An adopted Device volume's disk is in use by its tenant (formatted,
// mounted): it is taken as it is, its identity recorded, its data kept,
// where a new Device volume would be refused such a disk.
func TestAdoptedDevice(t *testing.T) {
	devs := loopvg.NewDevices(t, 64*mib, 64*mib)
	n := newNode(t, "dev-adopt", "olvdevadopt", 64*mib)
	mnts := []string{stage(t, devs[0].Path), stage(t, devs[1].Path)}
	for _, m := range mnts {
		if err := os.WriteFile(filepath.Join(m, "data"), []byte("open-local v0.8.0"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	spec := deviceSpec(devs[0].Path, 64*mib)
	spec.NodeName = n.name
	lv := &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: "local-dev", Labels: map[string]string{v1alpha1.AdoptedLabel: "true"},
		Finalizers: []string{v1alpha1.LocalVolumeFinalizer}}, Spec: spec}
	if _, err := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Create(t.Context(), lv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n.create(t, "new-dev", deviceSpec(devs[1].Path, 64*mib)) // the same disk state, not adopted
	got := n.waitFor(t, "local-dev", "Ready", ready(64*mib))
	if want := "loop:" + devs[0].File + "@0"; got.Status.DeviceIdentity != want {
		t.Errorf("identity %q, want %q", got.Status.DeviceIdentity, want)
	}
	n.waitFor(t, "new-dev", "refused", failed("FailedPrecondition"))
	if b, err := os.ReadFile(filepath.Join(mnts[0], "data")); err != nil || string(b) != "open-local v0.8.0" {
		t.Errorf("adopted disk's data: %q, %v", b, err)
	}
	for _, m := range mnts {
		unstage(t, m)
	}
}
