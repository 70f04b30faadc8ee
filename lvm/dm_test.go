/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package lvm_test

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/open-local/open-local/lvm"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/loopvg"
)

// The tests in this file need device-mapper: they run in the VM
// (test/vm Suites), and skip on a host without it.

// TestDeviceMapperActivatorAndSnapshot: a linear LV activated as
// /dev/<vg>/<lv>, grown while active, a classic COW snapshot holding the old
// data, and RemoveLV refusing the origin while the snapshot exists.
func TestDeviceMapperActivatorAndSnapshot(t *testing.T) {
	capability.Require(t, capability.DeviceMapper)
	e := newEnv(t, 512<<20)
	ctx := t.Context()
	if err := e.c.CreateVG(ctx, "oldmsnap", []string{e.devs[0].Path}); err != nil {
		t.Fatal(err)
	}
	act, err := lvm.NewActivator(lvm.ModeAuto, e.c, "")
	if err != nil {
		t.Fatal(err)
	}
	if act.Mode() != lvm.ModeDeviceMapper {
		t.Fatalf("auto mode with device-mapper picked %s", act.Mode())
	}
	if _, err := timed(t, "CreateLV", func() (*lvm.LV, error) {
		return e.c.CreateLV(ctx, lvm.CreateLVOptions{VG: "oldmsnap", Name: "origin", Size: 64 * mib, Tags: []string{lvm.OwnedTag}})
	}); err != nil {
		t.Fatal(err)
	}
	dev, err := timed(t, "Activate (already active)", func() (string, error) { return act.Activate(ctx, "oldmsnap", "origin") })
	if err != nil || dev != "/dev/oldmsnap/origin" {
		t.Fatalf("Activate = %q, %v", dev, err)
	}
	before := bytes.Repeat([]byte{0xA5}, int(mib))
	after := bytes.Repeat([]byte{0x5A}, int(mib))
	loopvg.WriteAt(t, dev, before, int64(4*mib))

	if _, err := timed(t, "ExtendLV (active)", func() (*lvm.LV, error) { return e.c.ExtendLV(ctx, "oldmsnap", "origin", 96*mib) }); err != nil {
		t.Fatal(err)
	}
	if got := deviceSize(t, dev); got != 96*mib {
		t.Errorf("active LV after extend: %d bytes, want 96 MiB", got)
	}

	snap, err := timed(t, "CreateSnapshot", func() (*lvm.LV, error) {
		return e.c.CreateSnapshot(ctx, lvm.SnapshotOptions{VG: "oldmsnap", Origin: "origin", Name: "snap-1", Size: 32 * mib, Tags: []string{lvm.OwnedTag}})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot as lvs reports it: %+v", snap)
	if snap.Origin != "origin" || !snap.IsSnapshot() || snap.Size != 32*mib {
		t.Errorf("snapshot = %+v, want origin \"origin\" and 32 MiB of COW space", snap)
	}
	if vg, _ := e.c.GetVG(ctx, "oldmsnap"); vg == nil || vg.Size-vg.Free != 96*mib+32*mib {
		t.Errorf("VG use with origin and snapshot = %+v, want 128 MiB used", vg)
	}
	loopvg.WriteAt(t, dev, after, int64(4*mib))
	snapDev, err := act.Activate(ctx, "oldmsnap", "snap-1")
	if err != nil {
		t.Fatal(err)
	}
	if got := loopvg.ReadAt(t, snapDev, int64(4*mib), len(before)); !bytes.Equal(got, before) {
		t.Errorf("snapshot lost the data written before it (first byte %#x)", got[0])
	}
	if lv, _ := e.c.GetLV(ctx, "oldmsnap", "snap-1"); lv == nil || lv.DataPercent <= 0 {
		t.Errorf("snapshot COW usage not reported: %+v", lv)
	}
	if err := e.c.RemoveLV(ctx, "oldmsnap", "origin"); !errors.Is(err, lvm.ErrInUse) {
		t.Errorf("RemoveLV of an origin with a snapshot: %v, want ErrInUse", err)
	}

	// lvm switches a snapshot only with its origin: both stay active.
	for _, n := range []string{"snap-1", "origin"} {
		if err := act.Deactivate(ctx, "oldmsnap", n); err != nil {
			t.Fatalf("Deactivate %s: %v", n, err)
		}
	}
	if _, err := os.Stat(snapDev); err != nil {
		t.Errorf("%s after Deactivate of a snapshot: %v (want it kept active)", snapDev, err)
	}
	if _, err := timed(t, "RemoveLV snapshot", func() (any, error) { return nil, e.c.RemoveLV(ctx, "oldmsnap", "snap-1") }); err != nil {
		t.Fatal(err)
	}
	if _, err := timed(t, "Deactivate", func() (any, error) { return nil, act.Deactivate(ctx, "oldmsnap", "origin") }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dev); !os.IsNotExist(err) {
		t.Errorf("%s after Deactivate: %v", dev, err)
	}
	if again, err := timed(t, "Activate (inactive)", func() (string, error) { return act.Activate(ctx, "oldmsnap", "origin") }); err != nil || again != dev {
		t.Errorf("re-Activate = %q, %v", again, err)
	}
	if got := loopvg.ReadAt(t, dev, int64(4*mib), len(after)); !bytes.Equal(got, after) {
		t.Errorf("origin lost its data over deactivate/activate (first byte %#x)", got[0])
	}
	if err := e.c.RemoveLV(ctx, "oldmsnap", "origin"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dev); !os.IsNotExist(err) {
		t.Errorf("%s after RemoveLV: %v", dev, err)
	}
}

// TestDeviceMapperThin: thin pool, thin LV, thin snapshot (activated despite
// lvm's activation-skip default), RemoveLV refusing a pool in use but not a
// thin origin (its thin snapshot keeps the data).
func TestDeviceMapperThin(t *testing.T) {
	capability.Require(t, capability.DeviceMapper)
	e := newEnv(t, 512<<20)
	ctx := t.Context()
	if err := e.c.CreateVG(ctx, "oldmthin", []string{e.devs[0].Path}); err != nil {
		t.Fatal(err)
	}
	act := lvm.NewDeviceMapperActivator(e.c)
	pool, err := timed(t, "CreateThinPool", func() (*lvm.LV, error) {
		return e.c.CreateThinPool(ctx, lvm.ThinPoolOptions{VG: "oldmthin", Name: "pool0", Size: 128 * mib, Tags: []string{lvm.OwnedTag}})
	})
	if err != nil {
		t.Fatal(err)
	}
	if !pool.IsThinPool() {
		t.Errorf("pool = %+v", pool)
	}
	thin, err := timed(t, "CreateThinLV", func() (*lvm.LV, error) {
		return e.c.CreateThinLV(ctx, lvm.ThinLVOptions{VG: "oldmthin", Pool: "pool0", Name: "thin-1", VirtualSize: gib, Tags: []string{lvm.OwnedTag}})
	})
	if err != nil {
		t.Fatal(err)
	}
	if thin.Pool != "pool0" || thin.Size != gib {
		t.Errorf("thin LV = %+v", thin)
	}
	dev, err := act.Activate(ctx, "oldmthin", "thin-1")
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0x3C}, int(mib))
	loopvg.WriteAt(t, dev, data, int64(512*mib))

	tsnap, err := timed(t, "CreateThinSnapshot", func() (*lvm.LV, error) {
		return e.c.CreateThinSnapshot(ctx, "oldmthin", "thin-1", "tsnap-1", lvm.OwnedTag)
	})
	if err != nil {
		t.Fatal(err)
	}
	if tsnap.Origin != "thin-1" || tsnap.Pool != "pool0" {
		t.Errorf("thin snapshot = %+v", tsnap)
	}
	snapDev, err := act.Activate(ctx, "oldmthin", "tsnap-1")
	if err != nil {
		t.Fatal(err)
	}
	loopvg.WriteAt(t, dev, bytes.Repeat([]byte{0}, int(mib)), int64(512*mib))
	if got := loopvg.ReadAt(t, snapDev, int64(512*mib), len(data)); !bytes.Equal(got, data) {
		t.Errorf("thin snapshot does not hold the data (first byte %#x)", got[0])
	}

	if err := e.c.RemoveLV(ctx, "oldmthin", "pool0"); !errors.Is(err, lvm.ErrInUse) {
		t.Errorf("RemoveLV of a pool with thin LVs: %v, want ErrInUse", err)
	}
	// A thin snapshot is a volume of its own: its origin may go first.
	if err := act.Deactivate(ctx, "oldmthin", "thin-1"); err != nil {
		t.Fatal(err)
	}
	if err := e.c.RemoveLV(ctx, "oldmthin", "thin-1"); err != nil {
		t.Errorf("RemoveLV of a thin origin with a thin snapshot: %v", err)
	}
	if got := loopvg.ReadAt(t, snapDev, int64(512*mib), len(data)); !bytes.Equal(got, data) {
		t.Errorf("thin snapshot lost its data when its origin was removed (first byte %#x)", got[0])
	}
	for _, n := range []string{"tsnap-1", "pool0"} {
		if err := e.c.RemoveLV(ctx, "oldmthin", n); err != nil {
			t.Fatalf("RemoveLV %s: %v", n, err)
		}
	}
	if lvs, err := e.c.ListLVs(ctx, "oldmthin"); err != nil || len(lvs) != 0 {
		t.Errorf("LVs left: %+v, %v", lvs, err)
	}
}

// TestDeviceMapperStriped: open-local's striping layout over every PV that
// fits, activated and written end to end.
func TestDeviceMapperStriped(t *testing.T) {
	capability.Require(t, capability.DeviceMapper)
	e := newEnv(t, 256<<20, 256<<20, 256<<20)
	ctx := t.Context()
	var paths []string
	for _, d := range e.devs {
		paths = append(paths, d.Path)
	}
	if err := e.c.CreateVG(ctx, "oldmstripe", paths); err != nil {
		t.Fatal(err)
	}
	lv, err := timed(t, "CreateLV striped", func() (*lvm.LV, error) {
		return e.c.CreateLV(ctx, lvm.CreateLVOptions{VG: "oldmstripe", Name: "st", Size: 96 * mib, Striped: true})
	})
	if err != nil {
		t.Fatal(err)
	}
	if lv.Layout != "striped" || lv.Size != 96*mib {
		t.Errorf("striped LV = %+v", lv)
	}
	// 3 stripes: each PV holds 32 MiB.
	pvs, err := e.c.ListPVs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, pv := range pvs {
		if pv.VG == "oldmstripe" && pv.Size-pv.Free != 32*mib {
			t.Errorf("PV %s holds %d bytes of the LV, want 32 MiB (3 stripes)", pv.Name, pv.Size-pv.Free)
		}
	}
	act := lvm.NewDeviceMapperActivator(e.c)
	dev, err := act.Activate(ctx, "oldmstripe", "st")
	if err != nil {
		t.Fatal(err)
	}
	end := bytes.Repeat([]byte{0x7E}, 4096)
	loopvg.WriteAt(t, dev, end, int64(96*mib)-4096)
	if got := loopvg.ReadAt(t, dev, int64(96*mib)-4096, 4096); !bytes.Equal(got, end) {
		t.Error("striped LV's last block does not read back")
	}
	// A striped LV too large for any PV set is ResourceExhausted.
	if _, err := e.c.CreateLV(ctx, lvm.CreateLVOptions{VG: "oldmstripe", Name: "big", Size: 700 * mib, Striped: true}); !errors.Is(err, lvm.ErrInsufficientSpace) {
		t.Errorf("oversized striped LV: %v", err)
	}
}
