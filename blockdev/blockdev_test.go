/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package blockdev

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/open-local/open-local/lvm"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/loopvg"
	"github.com/open-local/open-local/test/sysfstest"
)

const size = 64 << 20

// TestIdentityOfLoopDevices: a loop device is its backing file; Resolve
// finds the device from the identity; an unknown identity is not found.
func TestIdentityOfLoopDevices(t *testing.T) {
	capability.Require(t, capability.Root, capability.LoopDevices)
	devs := loopvg.NewDevices(t, size, size)
	for _, d := range devs {
		id, err := Identity("/sys", d.Path)
		if err != nil {
			t.Fatal(err)
		}
		if want := "loop:" + d.File + "@0"; id != want {
			t.Errorf("identity of %s = %q, want %q", d.Path, id, want)
		}
		got, err := Resolve("/sys", id)
		if err != nil || got != d.Path {
			t.Errorf("Resolve(%q) = %q, %v; want %s", id, got, err, d.Path)
		}
	}
	if _, err := Resolve("/sys", "loop:/no/such/file@0"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve of an unknown identity: %v, want ErrNotFound", err)
	}
	if _, err := Identity("/sys", "/dev/null"); err == nil {
		t.Error("a character device has an identity")
	}
}

// mkfsWithFile makes an ext4 filesystem on dev holding a file, unmounted.
func mkfsWithFile(t *testing.T, dev string) {
	t.Helper()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", dev).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v: %s", dev, err, out)
	}
	mnt := t.TempDir()
	if err := unix.Mount(dev, mnt, "ext4", 0, ""); err != nil {
		t.Fatal(err)
	}
	err := os.WriteFile(filepath.Join(mnt, "secret"), []byte("the last tenant's data"), 0o600)
	if uerr := unix.Unmount(mnt, 0); err == nil {
		err = uerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// hasSignature reports whether blkid finds any signature on dev.
func hasSignature(t *testing.T, dev string) bool {
	t.Helper()
	out, err := exec.Command("blkid", "--probe", dev).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 2 {
		return false // nothing found
	}
	if err != nil {
		t.Fatalf("blkid %s: %v: %s", dev, err, out)
	}
	return true
}

func headZero(t *testing.T, dev string) bool {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	return bytes.Count(buf, []byte{0}) == len(buf)
}

// TestWipe wipes real loop devices by each policy, and refuses a device
// whose identity is not the record's, one that is mounted, and policy
// manual; a refused device keeps its filesystem untouched.
func TestWipe(t *testing.T) {
	capability.Require(t, capability.Root, capability.LoopDevices)
	w := &Wiper{Runner: &lvm.ExecRunner{}}
	tests := []struct {
		name      string
		policy    Policy
		wrongID   bool // the record names the other device's identity
		mounted   bool
		wantErr   error // nil: wiped
		wantZeros bool  // the first 4 MiB read back zeros after
	}{
		{name: "signatures", policy: WipeSignatures},
		{name: "zero", policy: WipeZero, wantZeros: true},
		{name: "discard", policy: WipeDiscard, wantZeros: true},
		{name: "identity mismatch", policy: WipeSignatures, wrongID: true, wantErr: ErrIdentityMismatch},
		{name: "identity mismatch, zero", policy: WipeZero, wrongID: true, wantErr: ErrIdentityMismatch},
		{name: "mounted", policy: WipeZero, mounted: true, wantErr: unix.EBUSY},
		{name: "manual", policy: WipeManual, wantErr: errors.New("any")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			devs := loopvg.NewDevices(t, size, size)
			dev, other := devs[0].Path, devs[1].Path
			mkfsWithFile(t, dev)
			id, err := Identity("/sys", dev)
			if err != nil {
				t.Fatal(err)
			}
			if tt.wrongID {
				if id, err = Identity("/sys", other); err != nil {
					t.Fatal(err)
				}
			}
			if tt.mounted {
				mnt := t.TempDir()
				if err := unix.Mount(dev, mnt, "ext4", 0, ""); err != nil {
					t.Fatal(err)
				}
				defer func() { _ = unix.Unmount(mnt, 0) }()
			}
			err = w.Wipe(t.Context(), dev, id, tt.policy)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("Wipe: %v", err)
			case tt.wantErr != nil && err == nil:
				t.Fatal("Wipe succeeded, want a refusal")
			case tt.wantErr != nil && tt.policy != WipeManual && !errors.Is(err, tt.wantErr):
				t.Fatalf("Wipe: %v, want %v", err, tt.wantErr)
			}
			if tt.mounted {
				return // its filesystem is in use; blkid of a mounted device is beside the point
			}
			if sig := hasSignature(t, dev); sig != (tt.wantErr != nil) {
				t.Errorf("signature after Wipe: %t, want %t", sig, tt.wantErr != nil)
			}
			if tt.wantZeros && !headZero(t, dev) {
				t.Error("device not zero after wipe")
			}
		})
	}
}

// A partition's identity is its disk's and its number; a partition and its
// disk overlap, two devices do not.
func TestPartitionIdentityAndOverlap(t *testing.T) {
	capability.Require(t, capability.Root, capability.LoopDevices)
	devs := loopvg.NewDevices(t, size, size)
	sys := sysfstest.Partition(t, devs[0].Path, devs[1].Path, "naa.600a0b800012345")
	id, err := Identity(sys, devs[0].Path)
	if err != nil || id != "wwid:naa.600a0b800012345-part1" {
		t.Errorf("identity of a partition = %q, %v", id, err)
	}
	tests := []struct {
		name string
		a, b string
		sys  string
		want bool
	}{
		{name: "same device", a: devs[0].Path, b: devs[0].Path, sys: "/sys", want: true},
		{name: "two disks", a: devs[0].Path, b: devs[1].Path, sys: "/sys", want: false},
		{name: "a partition and its disk", a: devs[0].Path, b: devs[1].Path, sys: sys, want: true},
		{name: "a disk and its partition", a: devs[1].Path, b: devs[0].Path, sys: sys, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Overlap(tt.sys, tt.a, tt.b)
			if err != nil || got != tt.want {
				t.Errorf("Overlap(%s, %s) = %t, %v; want %t", tt.a, tt.b, got, err, tt.want)
			}
		})
	}
}

// Resolve finds a partition and its disk by identity in such a tree.
func TestResolvePartition(t *testing.T) {
	capability.Require(t, capability.Root, capability.LoopDevices)
	devs := loopvg.NewDevices(t, size, size)
	sys := sysfstest.Partition(t, devs[0].Path, devs[1].Path, "naa.600a0b800012345")
	for id, want := range map[string]string{"wwid:naa.600a0b800012345": devs[1].Path, "wwid:naa.600a0b800012345-part1": devs[0].Path} {
		if got, err := Resolve(sys, id); err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %s", id, got, err, want)
		}
	}
}
