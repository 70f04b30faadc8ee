/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package loopvg

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/open-local/open-local/test/capability"
)

// cleanupTimeout bounds each teardown. t.Context() is already cancelled when
// cleanups run, so teardown uses its own context.
const cleanupTimeout = 2 * time.Minute

// NewDevices attaches one loop device per size, each backed by a sparse file
// in t.TempDir(), and detaches them when the test ends. It skips the test (or
// fails it, see capability.Require) without root or loop devices.
func NewDevices(t testing.TB, sizes ...int64) []Device {
	t.Helper()
	capability.Require(t, capability.Root, capability.LoopDevices)
	dir := t.TempDir()
	devs := make([]Device, 0, len(sizes))
	for i, size := range sizes {
		file := filepath.Join(dir, fmt.Sprintf("disk%d.img", i))
		if err := CreateSparseFile(file, size); err != nil {
			t.Fatalf("loopvg: %v", err)
		}
		d, err := Attach(t.Context(), file)
		if err != nil {
			t.Fatalf("loopvg: %v", err)
		}
		// Registered after TempDir's own cleanup, so it runs before the file
		// is deleted (cleanups run last-in first-out).
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
			defer cancel()
			// The code under test may have stacked loop devices on ours
			// (the loop Activator: an LV as a loop device at its extent
			// offset); they hold ours busy, so its detach would only set
			// autoclear and both would stay attached for ever.
			stacked, err := LoopDevicesOf(ctx, d.Path)
			if err != nil {
				t.Errorf("loopvg: loop devices on %s: %v", d.Path, err)
			}
			for _, s := range stacked {
				if _, err := run(ctx, nil, "losetup", "--detach", s); err != nil {
					t.Errorf("loopvg: detach %s (stacked on %s): %v", s, d.Path, err)
				}
			}
			if err := d.Detach(ctx); err != nil {
				t.Errorf("loopvg: detach %s: %v", d.Path, err)
			}
		})
		devs = append(devs, d)
	}
	return devs
}

// NewConfig writes a private LVM config in t.TempDir() accepting only
// devicePaths, in full mode when the kernel has device-mapper.
func NewConfig(t testing.TB, devicePaths ...string) *Config {
	t.Helper()
	capability.Require(t, capability.LVM)
	c, err := WriteConfig(filepath.Join(t.TempDir(), "lvm"), DetectFullMode(), devicePaths...)
	if err != nil {
		t.Fatalf("loopvg: %v", err)
	}
	return c
}

// New creates a volume group named vgName on one loop device per size, with
// its own config (see NewConfig), and removes all of it when the test ends,
// whether the test passed or not. It skips (or fails, see capability.Require)
// without root, loop devices or lvm2.
func New(t testing.TB, vgName string, sizes ...int64) *VG {
	t.Helper()
	capability.Require(t, capability.Root, capability.LoopDevices, capability.LVM)
	dir := t.TempDir()
	// Registered before Up: if Up fails half-way and its own rollback fails
	// too, the state file still lets this cleanup finish the job.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := Down(ctx, dir); err != nil {
			t.Errorf("loopvg: teardown of VG %s: %v", vgName, err)
		}
	})
	vg, err := Up(t.Context(), Options{Dir: dir, VG: vgName, Sizes: sizes, FullMode: DetectFullMode()})
	if err != nil {
		t.Fatalf("loopvg: %v", err)
	}
	return vg
}

// WriteAt writes data at off into a block device (or file) and syncs it.
func WriteAt(t testing.TB, dev string, data []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// ReadAt reads n bytes at off from a block device (or file).
func ReadAt(t testing.TB, dev string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}
