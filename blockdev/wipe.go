/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package blockdev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
)

// Policy is how a released Device volume's disk is wiped before it is
// offered again (the agent's --device-wipe, the chart's agent.deviceWipe).
type Policy string

// Wipe policies.
const (
	// WipeSignatures erases every filesystem, RAID and partition-table
	// signature (wipefs --all, what open-local ran): the next tenant's
	// NodeStage finds a blank disk and formats it, so no file of the last
	// tenant is visible through a filesystem. Fast on any size; the old
	// blocks stay readable to a raw-block tenant. The default.
	WipeSignatures Policy = "signatures"
	// WipeDiscard discards every block (BLKDISCARD): instant on SSDs, and
	// most then read back zeros; refused by devices without discard.
	WipeDiscard Policy = "discard"
	// WipeZero writes zeros over the whole device (BLKZEROOUT): nothing of
	// the last tenant is readable, at the cost of one full write.
	WipeZero Policy = "zero"
	// WipeManual wipes nothing: the disk stays quarantined until an
	// operator wipes it and annotates the LocalVolume (ReleasedAnnotation).
	WipeManual Policy = "manual"
)

// Policies are the valid policies, for flag help and validation.
var Policies = []Policy{WipeSignatures, WipeDiscard, WipeZero, WipeManual}

// ParsePolicy validates a policy name.
func ParsePolicy(s string) (Policy, error) {
	for _, p := range Policies {
		if string(p) == s {
			return p, nil
		}
	}
	return "", fmt.Errorf("unknown device wipe policy %q: want one of %v", s, Policies)
}

// ReleasedAnnotation is v1alpha1.DeviceWipedAnnotation (its home is the
// API package, so clients that cannot build this Linux-only package, such
// as kubectl open-local on a laptop, name it too).
const ReleasedAnnotation = v1alpha1.DeviceWipedAnnotation

// ErrIdentityMismatch: the device at the path is not the one the record names.
var ErrIdentityMismatch = errors.New("device identity does not match the record")

// Wiper wipes released devices. Commands go through Runner (the exec
// seam: argv built in Go); discard and zero are ioctls.
type Wiper struct {
	Runner lvm.Runner
	// Sysfs is where sysfs is mounted (default /sys).
	Sysfs string
}

// Wipe wipes the device at path by policy, after checking that its
// identity is id: a record whose kernel name now belongs to another disk
// (a reboot, hot-plug) must never wipe that disk. The device is opened
// exclusively (O_EXCL), so one that is mounted or held (device-mapper,
// md) is refused too. WipeManual wipes nothing and is an error.
func (w *Wiper) Wipe(ctx context.Context, path, id string, policy Policy) error {
	sysfs := w.Sysfs
	if sysfs == "" {
		sysfs = "/sys"
	}
	if id == "" {
		return fmt.Errorf("%w: the record names no identity for %s; not wiping it", ErrIdentityMismatch, path)
	}
	got, err := Identity(sysfs, path)
	if err != nil {
		return fmt.Errorf("not wiping %s: %w", path, err)
	}
	if got != id {
		return fmt.Errorf("%w: %s is %s, the record names %s; not wiping it", ErrIdentityMismatch, path, got, id)
	}
	// Exclusive open: fails with EBUSY while anything has the device
	// mounted or claimed. Kept open through the wipe, so nothing can
	// claim it in between (wipefs opens it O_EXCL itself, after us: we
	// close first for it).
	f, err := os.OpenFile(path, os.O_WRONLY|unix.O_EXCL, 0)
	if err != nil {
		return fmt.Errorf("open %s exclusively: %w", path, err)
	}
	defer f.Close()
	switch policy {
	case WipeSignatures:
		f.Close()
		if _, err := w.Runner.Run(ctx, "wipefs", "--all", path); err != nil {
			return fmt.Errorf("wipefs --all %s: %w", path, err)
		}
		return nil
	case WipeDiscard, WipeZero:
		size, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			return err
		}
		req := uintptr(unix.BLKDISCARD)
		if policy == WipeZero {
			req = unix.BLKZEROOUT
		}
		// BLKZEROOUT zeroes in one call; discarding or zeroing a whole
		// disk may take long, but the kernel splits it, and this runs
		// in the agent's worker, not in a CSI call.
		rng := [2]uint64{0, uint64(size)}
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(unsafe.Pointer(&rng))); errno != 0 {
			return fmt.Errorf("%s %s: %w", policy, path, errno)
		}
		return f.Sync()
	case WipeManual:
		return errors.New("policy manual: an operator wipes the device")
	}
	return fmt.Errorf("unknown device wipe policy %q", policy)
}
