/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package iolimit_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/open-local/open-local/csi/node/iolimit"
)

// TestDeviceNumbers: major:minor from a dev_t with the kernel's encoding,
// including minors above 255 (loop300, NVMe partitions, dm-1000), which
// open-local's Rdev/256 got wrong.
func TestDeviceNumbers(t *testing.T) {
	for _, tt := range []struct {
		major, minor uint32
		want         string
	}{
		{7, 3, "7:3"},
		{7, 300, "7:300"},
		{253, 1000, "253:1000"},
		{259, 1048575, "259:1048575"},
		{4095, 0, "4095:0"},
	} {
		d := iolimit.DeviceFromRdev(unix.Mkdev(tt.major, tt.minor))
		if d.String() != tt.want {
			t.Errorf("Mkdev(%d,%d) → %s, want %s", tt.major, tt.minor, d, tt.want)
		}
		if back, err := iolimit.ParseDevice(tt.want); err != nil || back != d {
			t.Errorf("ParseDevice(%s) = %v, %v", tt.want, back, err)
		}
	}
	for _, bad := range []string{"", "7", "7:", "a:1", "7:3:1", "-1:2"} {
		if _, err := iolimit.ParseDevice(bad); err == nil {
			t.Errorf("ParseDevice(%q) accepted", bad)
		}
	}
}

// TestDeviceOf: a block device node is itself; a file is its filesystem's.
func TestDeviceOf(t *testing.T) {
	var st unix.Stat_t
	if err := unix.Stat("/dev/null", &st); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	got, err := iolimit.DeviceOf(dir)
	if err != nil || got != iolimit.DeviceFromRdev(st.Dev) {
		t.Fatalf("DeviceOf(dir) = %v, %v; want the filesystem's %v", got, err, iolimit.DeviceFromRdev(st.Dev))
	}
	if _, err := iolimit.DeviceOf(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("DeviceOf of a missing path succeeded")
	}
}

// TestLines: what is written to the cgroup files, v1 and v2, set and clear.
func TestLines(t *testing.T) {
	dev := iolimit.Device{Major: 259, Minor: 300}
	tests := []struct {
		name string
		v    iolimit.Version
		l    iolimit.Limits
		want []iolimit.FileLine
	}{
		{"v1 symmetric", iolimit.V1, iolimit.Symmetric(10<<20, 100), []iolimit.FileLine{
			{File: "blkio.throttle.read_bps_device", Line: "259:300 10485760"},
			{File: "blkio.throttle.write_bps_device", Line: "259:300 10485760"},
			{File: "blkio.throttle.read_iops_device", Line: "259:300 100"},
			{File: "blkio.throttle.write_iops_device", Line: "259:300 100"},
		}},
		{"v1 bps only clears iops", iolimit.V1, iolimit.Symmetric(1<<20, 0), []iolimit.FileLine{
			{File: "blkio.throttle.read_bps_device", Line: "259:300 1048576"},
			{File: "blkio.throttle.write_bps_device", Line: "259:300 1048576"},
			{File: "blkio.throttle.read_iops_device", Line: "259:300 0"},
			{File: "blkio.throttle.write_iops_device", Line: "259:300 0"},
		}},
		{"v1 clear", iolimit.V1, iolimit.Limits{}, []iolimit.FileLine{
			{File: "blkio.throttle.read_bps_device", Line: "259:300 0"},
			{File: "blkio.throttle.write_bps_device", Line: "259:300 0"},
			{File: "blkio.throttle.read_iops_device", Line: "259:300 0"},
			{File: "blkio.throttle.write_iops_device", Line: "259:300 0"},
		}},
		{"v2 symmetric", iolimit.V2, iolimit.Symmetric(10<<20, 100),
			[]iolimit.FileLine{{File: "io.max", Line: "259:300 rbps=10485760 wbps=10485760 riops=100 wiops=100"}}},
		{"v2 iops only", iolimit.V2, iolimit.Symmetric(0, 2000),
			[]iolimit.FileLine{{File: "io.max", Line: "259:300 rbps=max wbps=max riops=2000 wiops=2000"}}},
		{"v2 asymmetric", iolimit.V2, iolimit.Limits{WriteBPS: 1}, []iolimit.FileLine{{File: "io.max", Line: "259:300 rbps=max wbps=1 riops=max wiops=max"}}},
		{"v2 clear", iolimit.V2, iolimit.Limits{}, []iolimit.FileLine{{File: "io.max", Line: "259:300 rbps=max wbps=max riops=max wiops=max"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := iolimit.Lines(tt.v, dev, tt.l); !slices.Equal(got, tt.want) {
				t.Fatalf("got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestRead parses what the kernel reports: v1 lists one "MAJ:MIN value"
// line per device, v2 one io.max line per device with "max" for none.
func TestRead(t *testing.T) {
	dev := iolimit.Device{Major: 7, Minor: 3}
	dir := t.TempDir()
	files := map[string]string{
		"blkio.throttle.read_bps_device":   "8:0 5\n7:3 1048576\n",
		"blkio.throttle.write_bps_device":  "7:3 2097152\n",
		"blkio.throttle.read_iops_device":  "",
		"blkio.throttle.write_iops_device": "7:30 9\n7:3 100\n",
		"io.max":                           "8:0 rbps=1 wbps=max riops=max wiops=max\n7:3 rbps=max wbps=4096 riops=50 wiops=max\n",
	}
	for f, c := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v1, err := iolimit.Read(iolimit.V1, os.ReadFile, dir, dev)
	if want := (iolimit.Limits{ReadBPS: 1 << 20, WriteBPS: 2 << 20, WriteIOPS: 100}); err != nil || v1 != want {
		t.Errorf("v1: %+v, %v; want %+v", v1, err, want)
	}
	v2, err := iolimit.Read(iolimit.V2, os.ReadFile, dir, dev)
	if want := (iolimit.Limits{WriteBPS: 4096, ReadIOPS: 50}); err != nil || v2 != want {
		t.Errorf("v2: %+v, %v; want %+v", v2, err, want)
	}
}
