/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package loopvg

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/open-local/open-local/test/capability"
)

// TestDeviceMapperSmoke proves the full-mode environment works where the
// kernel has device-mapper (the test VM, see test/vm): real activation, a
// device node per LV, and a classic copy-on-write snapshot. On the CI host it
// skips (no device-mapper); in the VM OPEN_LOCAL_REQUIRE_CAPS makes a missing
// device-mapper a failure.
func TestDeviceMapperSmoke(t *testing.T) {
	capability.Require(t, capability.Root, capability.LoopDevices, capability.LVM, capability.DeviceMapper)
	ctx := t.Context()
	begin := time.Now()
	vg := New(t, "olsmoke", 512*mib)
	if !vg.Config.FullMode {
		t.Fatal("device-mapper is present but the config is in metadata mode")
	}
	t.Logf("VG up: %v", time.Since(begin).Round(time.Millisecond))
	step := func(what string, args ...string) {
		t.Helper()
		s := time.Now()
		if _, err := vg.Run(ctx, args...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		t.Logf("%s: %v", what, time.Since(s).Round(time.Millisecond))
	}

	step("lvcreate", "lvcreate", "--yes", "--name", "data", "--size", "128m", vg.Name)
	dev := vg.LVPath("data")
	if _, err := os.Stat(dev); err != nil {
		t.Fatalf("LV device node: %v", err)
	}
	before := bytes.Repeat([]byte{0xA5}, int(mib))
	after := bytes.Repeat([]byte{0x5A}, int(mib))
	WriteAt(t, dev, before, 4*mib)

	step("snapshot", "lvcreate", "--yes", "--snapshot", "--size", "64m", "--name", "snap", vg.Name+"/data")
	// Overwrite the origin: the snapshot must keep the old bytes (COW).
	WriteAt(t, dev, after, 4*mib)
	if got := ReadAt(t, vg.LVPath("snap"), 4*mib, len(before)); !bytes.Equal(got, before) {
		t.Fatalf("snapshot does not hold the data written before it was taken (first byte %#x)", got[0])
	}
	if got := ReadAt(t, dev, 4*mib, len(after)); !bytes.Equal(got, after) {
		t.Fatalf("origin does not hold the new data (first byte %#x)", got[0])
	}

	step("remove snapshot", "lvremove", "--yes", vg.Name+"/snap")
	step("remove LV", "lvremove", "--yes", vg.Name+"/data")
	if _, err := os.Stat(dev); !os.IsNotExist(err) {
		t.Errorf("%s still exists after lvremove (%v)", dev, err)
	}
	step("vgremove", "vgremove", "--yes", vg.Name)
	t.Logf("smoke test body: %v", time.Since(begin).Round(time.Millisecond))
}
