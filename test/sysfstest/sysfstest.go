/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package sysfstest builds sysfs-shaped trees over real devices, for what
// this kernel cannot make (loop partitions).
package sysfstest

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// Partition makes a sysfs-shaped root in which the real loop device
// dev (found by its device number) is partition 1 of the disk diskDev (with WWN wwid), and
// the real loop device disk is that disk, since this kernel creates no loop
// partitions; it returns the root.
func Partition(t testing.TB, dev, diskDev, wwid string) string {
	t.Helper()
	root := t.TempDir()
	// Named as the real devices, so /dev/<name> of a sysfs entry is the
	// device it describes (blockdev.Resolve relies on that).
	disk := filepath.Join(root, "devices", "virtual", "block", filepath.Base(diskDev))
	part := filepath.Join(disk, filepath.Base(dev))
	for _, f := range []struct{ path, content string }{
		{filepath.Join(disk, "device", "wwid"), wwid},
		{filepath.Join(part, "partition"), "1"},
	} {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.path, []byte(f.content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	links := filepath.Join(root, "dev", "block")
	for _, d := range []string{links, filepath.Join(root, "block")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(disk, filepath.Join(root, "block", filepath.Base(diskDev))); err != nil {
		t.Fatal(err)
	}
	for target, d := range map[string]string{part: dev, disk: diskDev} {
		var st unix.Stat_t
		if err := unix.Stat(d, &st); err != nil {
			t.Fatal(err)
		}
		num := strconv.FormatUint(uint64(unix.Major(st.Rdev)), 10) + ":" + strconv.FormatUint(uint64(unix.Minor(st.Rdev)), 10)
		if err := os.Symlink(target, filepath.Join(links, num)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}
