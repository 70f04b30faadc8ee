/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package discovery

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/loopvg"
)

// writeMBR writes a DOS partition table with one Linux partition from
// sector 2048 to the end, so the test needs no sfdisk.
func writeMBR(t *testing.T, path string, size int64) {
	t.Helper()
	mbr := make([]byte, 512)
	entry := mbr[446:462]
	entry[4] = 0x83
	binary.LittleEndian.PutUint32(entry[8:], 2048)
	binary.LittleEndian.PutUint32(entry[12:], uint32(size/512-2048))
	mbr[510], mbr[511] = 0x55, 0xaa
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(mbr, 0); err != nil {
		t.Fatal(err)
	}
}

// attachPartitioned attaches file with partition scanning and detaches it
// when the test ends; it returns the loop device.
func attachPartitioned(t *testing.T, file string) string {
	t.Helper()
	out, err := exec.Command("losetup", "--find", "--show", "--partscan", file).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup --partscan %s: %v: %s", file, err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

func devNumber(t *testing.T, path string) (int, int) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return int(unix.Major(st.Rdev)), int(unix.Minor(st.Rdev))
}

// TestBlockDevicesInUse: on real loop devices, a disk with partitions, a
// PV and a device with a mounted filesystem are reported in use (and so
// never offered as a raw Device volume); a plain disk and an unused
// partition are free. The partition's disk is named as its parent.
func TestBlockDevicesInUse(t *testing.T) {
	capability.Require(t, capability.Root, capability.LoopDevices)
	const size = 64 << 20
	devs := loopvg.NewDevices(t, size, size, size)
	plain, pv, mounted := devs[0].Path, devs[1].Path, devs[2].Path

	partFile := filepath.Join(t.TempDir(), "partitioned.img")
	if err := loopvg.CreateSparseFile(partFile, size); err != nil {
		t.Fatal(err)
	}
	writeMBR(t, partFile, size)
	partitioned := attachPartitioned(t, partFile)
	partition := partitioned + "p1"
	// This machine's kernel accepts --partscan but creates no partition
	// (loop ext_range 1): then only the other rows run.
	_, err := os.Stat("/sys/block/" + filepath.Base(partitioned) + "/" + filepath.Base(partition) + "/partition")
	scanned := err == nil
	if !scanned {
		t.Logf("SKIP the partition rows: the kernel did not scan the loop device's partition table: %v (TestBlockDevicesSysfsLayout covers partitions on a sysfs-shaped tree)", err)
	}

	if out, err := exec.Command("mkfs.ext4", "-q", "-F", mounted).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	mnt := t.TempDir()
	if err := unix.Mount(mounted, mnt, "ext4", 0, ""); err != nil {
		t.Fatalf("mount %s: %v", mounted, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, 0) })

	major, minor := devNumber(t, pv)
	use, err := UsageOf([]lvm.PV{{Name: pv, VG: "somebodys-vg", Major: major, Minor: minor}}, "/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	names := []string{plain, pv, mounted, partitioned}
	for i := range names {
		names[i] = regexp.QuoteMeta(filepath.Base(names[i]))
	}
	got, err := BlockDevices("/sys", regexp.MustCompile("^("+strings.Join(names, "|")+")$"), use)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]v1alpha1.DeviceInfo{}
	for _, d := range got {
		byName[d.Name] = d
	}
	tests := []struct {
		dev, inUse, parent string
	}{
		{dev: plain},
		{dev: pv, inUse: "physical volume of VG somebodys-vg"},
		{dev: mounted, inUse: "mounted at " + mnt},
	}
	if scanned {
		tests = append(tests, []struct{ dev, inUse, parent string }{
			{dev: partitioned, inUse: "has partitions " + partition},
			{dev: partition, parent: partitioned},
		}...)
	}
	for _, tt := range tests {
		d, ok := byName[tt.dev]
		if !ok {
			t.Errorf("%s not discovered (got %+v)", tt.dev, got)
			continue
		}
		if d.InUse != tt.inUse || d.Parent != tt.parent {
			t.Errorf("%s: inUse %q parent %q, want %q and %q", tt.dev, d.InUse, d.Parent, tt.inUse, tt.parent)
		}
	}
}

// TestBlockDevicesHolders: a device with holders (device-mapper or md on
// top; this kernel has neither, so a sysfs-shaped tree) is in use, and so
// is a partition with holders.
func TestBlockDevicesHolders(t *testing.T) {
	sys := t.TempDir()
	write := func(path, content string) {
		t.Helper()
		p := filepath.Join(sys, "block", path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("sdb/size", "2097152")
	write("sdb/holders/dm-0", "")
	write("sdc/size", "2097152")
	write("sdc/holders/.keep", "") // an empty holders directory: free
	write("sdd/size", "2097152")
	write("sdd/sdd1/size", "1048576")
	write("sdd/sdd1/partition", "1")
	write("sdd/sdd1/holders/md0", "")
	got, err := BlockDevices(sys, regexp.MustCompile(DefaultDeviceRegexp), Usage{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"/dev/sdb":  "held by dm-0",
		"/dev/sdc":  "",
		"/dev/sdd":  "has partitions /dev/sdd1",
		"/dev/sdd1": "held by md0",
	}
	if len(got) != len(want) {
		t.Fatalf("devices %+v, want %v", got, want)
	}
	for _, d := range got {
		if d.InUse != want[d.Name] {
			t.Errorf("%s: inUse %q, want %q", d.Name, d.InUse, want[d.Name])
		}
	}
}
