/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package volumes_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-local/open-local/agent/volumes"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/loopvg"
)

func snapshotSpec(vg, origin string, cow int64, policy *v1alpha1.SnapshotPolicy) v1alpha1.LocalVolumeSpec {
	s := lvmSpec(vg, cow)
	s.Kind, s.Source, s.SnapshotPolicy = v1alpha1.KindSnapshot, &v1alpha1.LocalVolumeSource{Volume: origin}, policy
	return s
}

func restoreSpec(vg, snapshot string, size int64, readOnly bool) v1alpha1.LocalVolumeSpec {
	s := lvmSpec(vg, size)
	s.Source, s.ReadOnly = &v1alpha1.LocalVolumeSource{Snapshot: snapshot}, readOnly
	return s
}

func taken(lv *v1alpha1.LocalVolume) bool {
	return lv != nil && lv.Status.Phase == v1alpha1.PhaseReady && lv.Status.SnapshotTime != nil && lv.Status.RestoreSize != nil &&
		lv.Status.ObservedGeneration == lv.Generation
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// stays checks that cond holds for LocalVolume name during d.
func (n *node) stays(t *testing.T, name string, d time.Duration, cond func(*v1alpha1.LocalVolume) bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		lv, err := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Get(t.Context(), name, metav1.GetOptions{})
		if err != nil || !cond(lv) {
			t.Fatalf("LocalVolume %s changed: %+v, %v", name, lv, err)
		}
	}
}

func (n *node) delete(t *testing.T, name string) {
	t.Helper()
	if err := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestDeviceMapperClassicSnapshots runs the copy-on-write path for real:
// a snapshot keeps the data written before it while the origin changes;
// its copy-on-write space grows by policy (spec.size first, so the
// scheduler counts it); read-only restores are the snapshot's LV; writable
// ones are filled by a block copy; an overflowing snapshot is reported
// lost; deletion waits for dependents in the right order.
func TestDeviceMapperClassicSnapshots(t *testing.T) {
	capability.Require(t, capability.DeviceMapper)
	n := newNode(t, "vol-snap", "olvsnap", 512*mib)
	ctx := t.Context()
	n.create(t, "origin", lvmSpec("olvsnap", 64*mib))
	origin := n.waitFor(t, "origin", "Ready", ready(64*mib))
	before := bytes.Repeat([]byte("before the snapshot "), 60000)[:mib]
	loopvg.WriteAt(t, origin.Status.DevicePath, before, 8*mib)

	n.create(t, "snap-1", snapshotSpec("olvsnap", "origin", 8*mib,
		&v1alpha1.SnapshotPolicy{ExpansionThresholdPercent: 50, ExpansionSize: *resource.NewQuantity(8*mib, resource.BinarySI)}))
	snap := n.waitFor(t, "snap-1", "taken", taken)
	if snap.Status.RestoreSize.Value() != 64*mib || snap.Status.CurrentSize.Value() != 8*mib || snap.Status.DevicePath == "" {
		t.Fatalf("snapshot status %+v: want restore size 64Mi, 8Mi of copy-on-write space, a device", snap.Status)
	}
	waitEvent(t, n.c, "snap-1", volumes.ReasonSnapshotCreated)
	after := bytes.Repeat([]byte{0xEE}, int(mib))
	loopvg.WriteAt(t, origin.Status.DevicePath, after, 8*mib)
	if got := loopvg.ReadAt(t, snap.Status.DevicePath, 8*mib, int(mib)); !bytes.Equal(got, before) {
		t.Fatal("the snapshot does not hold the data written before it")
	}

	// 5 MiB of new data fill the 8 MiB copy-on-write space past 50%.
	loopvg.WriteAt(t, origin.Status.DevicePath, randomBytes(t, int(5*mib)), 20*mib)
	snap = n.waitFor(t, "snap-1", "grown by policy", func(lv *v1alpha1.LocalVolume) bool {
		return taken(lv) && lv.Spec.Size.Value() >= 16*mib && lv.Status.CurrentSize.Value() >= 16*mib
	})
	waitEvent(t, n.c, "snap-1", volumes.ReasonSnapshotExpanded)
	if lvInfo, err := n.lvm.GetLV(ctx, "olvsnap", "snap-1"); err != nil || lvInfo.Size != uint64(snap.Spec.Size.Value()) {
		t.Fatalf("snapshot LV %+v (%v) does not match spec.size %s", lvInfo, err, snap.Spec.Size.String())
	}

	// Read-only restore: the snapshot's own device, its size, its data.
	n.create(t, "restore-ro", restoreSpec("olvsnap", "snap-1", 64*mib, true))
	ro := n.waitFor(t, "restore-ro", "Ready", ready(64*mib))
	if ro.Status.DevicePath != snap.Status.DevicePath {
		t.Fatalf("read-only restore device %s, want the snapshot's %s", ro.Status.DevicePath, snap.Status.DevicePath)
	}
	if names := n.lvNames(t); strings.Contains(strings.Join(names, ","), "restore-ro") {
		t.Fatalf("a read-only restore created an LV: %v", names)
	}

	// Writable restore: a new LV filled by a block copy.
	n.create(t, "restore-rw", restoreSpec("olvsnap", "snap-1", 96*mib, false))
	rw := n.waitFor(t, "restore-rw", "restored", func(lv *v1alpha1.LocalVolume) bool {
		return ready(96*mib)(lv) && lv.Status.Copy != nil && lv.Status.Copy.CompletionTime != nil
	})
	if c := rw.Status.Copy; c.Source != "snap-1" || c.TotalBytes != 64*mib || c.CopiedBytes != 64*mib {
		t.Errorf("copy status %+v", c)
	}
	waitEvent(t, n.c, "restore-rw", volumes.ReasonRestored)
	if got := loopvg.ReadAt(t, rw.Status.DevicePath, 8*mib, int(mib)); !bytes.Equal(got, before) {
		t.Fatal("the restored volume does not hold the snapshot's data")
	}
	if l, _ := n.lvm.GetLV(ctx, "olvsnap", "restore-rw"); l == nil || l.HasTag("csi.aliyun.com/restoring") {
		t.Fatalf("restored LV %+v still marked as being restored", l)
	}
	// It is a volume of its own: writes do not reach the snapshot.
	loopvg.WriteAt(t, rw.Status.DevicePath, after, 8*mib)
	if got := loopvg.ReadAt(t, snap.Status.DevicePath, 8*mib, int(mib)); !bytes.Equal(got, before) {
		t.Fatal("writing the restored volume changed the snapshot")
	}

	// A restore smaller than the snapshot is refused.
	n.create(t, "restore-small", restoreSpec("olvsnap", "snap-1", 32*mib, false))
	small := n.waitFor(t, "restore-small", "refused", failed(codes.OutOfRange.String()))
	if !strings.Contains(small.Status.Message, "smaller than snapshot snap-1") {
		t.Errorf("message %q", small.Status.Message)
	}

	// Deletion order: the origin waits for its snapshot, the snapshot for
	// its read-only restore.
	n.delete(t, "origin")
	n.waitFor(t, "origin", "held by its snapshot", failed(codes.FailedPrecondition.String()))
	n.delete(t, "snap-1")
	held := n.waitFor(t, "snap-1", "held by its read-only restore", failed(codes.FailedPrecondition.String()))
	if !strings.Contains(held.Status.Message, "restore-ro") {
		t.Errorf("message %q does not name the restore", held.Status.Message)
	}
	if _, err := n.lvm.GetLV(ctx, "olvsnap", "snap-1"); err != nil {
		t.Fatalf("snapshot LV removed while in use: %v", err)
	}
	// The view a pod may be using stays Ready meanwhile.
	n.stays(t, "restore-ro", 5*time.Second, ready(64*mib))
	n.delete(t, "restore-ro")
	n.waitFor(t, "restore-ro", "gone", gone)
	n.waitFor(t, "snap-1", "gone", gone)
	n.waitFor(t, "origin", "gone", gone)
	if names := n.lvNames(t); strings.Join(names, ",") != "restore-rw,restore-small" && strings.Join(names, ",") != "restore-rw" {
		t.Fatalf("LVs left: %v, want the independent restore", names)
	}
	if got := loopvg.ReadAt(t, rw.Status.DevicePath, 8*mib, int(mib)); !bytes.Equal(got, after) {
		t.Fatal("the restored volume lost its data when its snapshot went")
	}

	// Overflow: 8 MiB written into 4 MiB of copy-on-write space without a
	// policy invalidates the snapshot; it is reported lost, not retried.
	n.create(t, "origin-2", lvmSpec("olvsnap", 32*mib))
	o2 := n.waitFor(t, "origin-2", "Ready", ready(32*mib))
	n.create(t, "snap-small", snapshotSpec("olvsnap", "origin-2", 4*mib, nil))
	n.waitFor(t, "snap-small", "taken", taken)
	loopvg.WriteAt(t, o2.Status.DevicePath, randomBytes(t, int(8*mib)), 0)
	lost := n.waitFor(t, "snap-small", "invalidated", failed(codes.DataLoss.String()))
	if !strings.Contains(lost.Status.Message, "overflowed") {
		t.Errorf("message %q", lost.Status.Message)
	}
	waitEvent(t, n.c, "snap-small", volumes.ReasonSnapshotInvalidated)
	n.create(t, "restore-lost", restoreSpec("olvsnap", "snap-small", 32*mib, false))
	n.waitFor(t, "restore-lost", "refused", failed(codes.DataLoss.String()))
}

// TestDeviceMapperThinSnapshots: thin volumes in a thin pool, thin
// snapshots (the origin may go before them), restores that are thin
// snapshots of the snapshot (instant, no copy) or block copies into a
// thick LV, with the data checked each time.
func TestDeviceMapperThinSnapshots(t *testing.T) {
	capability.Require(t, capability.DeviceMapper)
	n := newNode(t, "vol-thin", "olvthin", 512*mib)
	ctx := t.Context()
	// The pool as the agent's node-storage loop creates it from
	// resourceToBeInited (tested in ./agent); here it is the fixture.
	if _, err := n.lvm.CreateThinPool(ctx, lvm.ThinPoolOptions{VG: "olvthin", Name: "tp", Size: uint64(128 * mib), Tags: []string{lvm.OwnedTag}}); err != nil {
		t.Fatal(err)
	}
	thin := func(s v1alpha1.LocalVolumeSpec) v1alpha1.LocalVolumeSpec { s.ThinPool = "tp"; return s }
	// 256 MiB virtual in a 128 MiB pool: thin volumes are overprovisioned.
	n.create(t, "thin-origin", thin(lvmSpec("olvthin", 256*mib)))
	origin := n.waitFor(t, "thin-origin", "Ready", ready(256*mib))
	if l, _ := n.lvm.GetLV(ctx, "olvthin", "thin-origin"); l == nil || l.Pool != "tp" {
		t.Fatalf("thin LV %+v, want one in pool tp", l)
	}
	data := randomBytes(t, int(mib))
	loopvg.WriteAt(t, origin.Status.DevicePath, data, 200*mib)

	n.create(t, "thin-snap", thin(snapshotSpec("olvthin", "thin-origin", 256*mib, nil)))
	snap := n.waitFor(t, "thin-snap", "taken", taken)
	if snap.Status.RestoreSize.Value() != 256*mib {
		t.Errorf("thin snapshot restore size %s", snap.Status.RestoreSize.String())
	}
	loopvg.WriteAt(t, origin.Status.DevicePath, bytes.Repeat([]byte{1}, int(mib)), 200*mib)

	// Thin restore in the same pool: a thin snapshot of the snapshot.
	n.create(t, "thin-restore", thin(restoreSpec("olvthin", "thin-snap", 256*mib, false)))
	tr := n.waitFor(t, "thin-restore", "Ready", ready(256*mib))
	if tr.Status.Copy != nil {
		t.Errorf("a thin restore copied data: %+v", tr.Status.Copy)
	}
	if l, _ := n.lvm.GetLV(ctx, "olvthin", "thin-restore"); l == nil || l.Origin != "thin-snap" || l.Pool != "tp" {
		t.Errorf("thin restore LV %+v, want a thin snapshot of thin-snap", l)
	}
	if got := loopvg.ReadAt(t, tr.Status.DevicePath, 200*mib, int(mib)); !bytes.Equal(got, data) {
		t.Fatal("thin restore does not hold the snapshot's data")
	}

	// Thick restore from a thin snapshot: a block copy.
	n.create(t, "thick-restore", restoreSpec("olvthin", "thin-snap", 256*mib, false))
	cr := n.waitFor(t, "thick-restore", "restored", func(lv *v1alpha1.LocalVolume) bool {
		return ready(256*mib)(lv) && lv.Status.Copy != nil && lv.Status.Copy.CompletionTime != nil
	})
	if got := loopvg.ReadAt(t, cr.Status.DevicePath, 200*mib, int(mib)); !bytes.Equal(got, data) {
		t.Fatal("thick restore does not hold the snapshot's data")
	}

	// A thin origin goes before its thin snapshot, which keeps its data.
	n.delete(t, "thin-origin")
	n.waitFor(t, "thin-origin", "gone", gone)
	snap = n.waitFor(t, "thin-snap", "still Ready", taken)
	if got := loopvg.ReadAt(t, snap.Status.DevicePath, 200*mib, int(mib)); !bytes.Equal(got, data) {
		t.Fatal("thin snapshot lost its data with its origin")
	}
	for _, name := range []string{"thin-restore", "thick-restore", "thin-snap"} {
		n.delete(t, name)
		n.waitFor(t, name, "gone", gone)
	}
	if names := n.lvNames(t); strings.Join(names, ",") != "tp" {
		t.Fatalf("LVs left: %v, want only the pool", names)
	}
}

// Snapshots and restores that cannot be carried out fail with a code and
// a message saying why. Without device-mapper (this host) lvm refuses
// snapshots: FailedPrecondition naming device-mapper, never a crash or a
// silent retry; with it (the VM) the same snapshot is taken.
func TestSnapshotRefusals(t *testing.T) {
	n := newNode(t, "vol-snapbad", "olvsnapbad", 128*mib)
	n.create(t, "bad-origin", lvmSpec("olvsnapbad", 16*mib))
	n.waitFor(t, "bad-origin", "Ready", ready(16*mib))

	if dm, _ := capability.Has(capability.DeviceMapper); dm {
		n.create(t, "bad-snap", snapshotSpec("olvsnapbad", "bad-origin", 8*mib, nil))
		n.waitFor(t, "bad-snap", "taken", taken)
	} else {
		n.create(t, "bad-snap", snapshotSpec("olvsnapbad", "bad-origin", 8*mib, nil))
		lv := n.waitFor(t, "bad-snap", "refused", failed(codes.FailedPrecondition.String()))
		if !strings.Contains(lv.Status.Message, "device-mapper") {
			t.Errorf("message %q does not say why", lv.Status.Message)
		}
		waitEvent(t, n.c, "bad-snap", volumes.ReasonSnapshotFailed)
		if _, err := n.lvm.GetLV(t.Context(), "olvsnapbad", "bad-snap"); !errors.Is(err, lvm.ErrNotFound) {
			t.Errorf("a refused snapshot left an LV: %v", err)
		}
	}
	for _, tt := range []struct {
		name string
		spec v1alpha1.LocalVolumeSpec
		code codes.Code
		msg  string
	}{
		{"bad-nosource", snapshotSpec("olvsnapbad", "no-such-volume", 8*mib, nil), codes.NotFound, "no-such-volume"},
		{"bad-othervg", snapshotSpec("olvother", "bad-origin", 8*mib, nil), codes.InvalidArgument, "VG olvsnapbad"},
		{"bad-snapofsnap", snapshotSpec("olvsnapbad", "bad-snap", 8*mib, nil), codes.InvalidArgument, "not an LVM volume with an LV of its own"},
		{"bad-restore", restoreSpec("olvsnapbad", "no-such-snap", 16*mib, false), codes.NotFound, "no-such-snap"},
		{"bad-restorevol", restoreSpec("olvsnapbad", "bad-origin", 16*mib, true), codes.InvalidArgument, "not a snapshot"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n.create(t, tt.name, tt.spec)
			lv := n.waitFor(t, tt.name, "Failed "+tt.code.String(), failed(tt.code.String()))
			if !strings.Contains(lv.Status.Message, tt.msg) {
				t.Errorf("message %q, want it to mention %q", lv.Status.Message, tt.msg)
			}
			n.delete(t, tt.name)
			n.waitFor(t, tt.name, "deleted", gone)
		})
	}
	// The volume itself is untouched by all that.
	if _, err := n.lvm.GetLV(context.Background(), "olvsnapbad", "bad-origin"); err != nil {
		t.Fatal(err)
	}
}
