/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package blockdev knows whole block devices handed out as Device volumes:
// their stable identity (what a record names instead of a kernel name
// that moves across reboots and hot-plug) and how a released one is
// wiped. The agent and the CSI node plugin both use it: one rule for
// "is this the disk the record means".
package blockdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNoIdentity: the device offers nothing stable to recognise it by.
var ErrNoIdentity = errors.New("no stable identity")

// ErrNotFound: no device on this node has the identity.
var ErrNotFound = errors.New("no device with this identity")

// Identity returns a stable identity of the block device at path, read
// from sysfs (mounted at sysfs), in the order an operator can check it:
//
//   - "wwid:<id>": the WWN/EUI the disk reports (SCSI VPD 0x83, NVMe) —
//     what /dev/disk/by-id/wwn-* is made of; unique by standard;
//   - "serial:<model>:<serial>": the serial the disk reports (virtio,
//     SATA/NVMe without WWN), with the model, since serials are unique
//     only per vendor — /dev/disk/by-id/virtio-<serial> and the like;
//   - "loop:<backing file>@<offset>": a loop device is its backing file
//     (the same file attached again under another number is the same disk).
//
// A partition is its disk's identity and its partition number
// ("<disk id>-part<N>", as by-id names partitions). A device with none of
// these (a virtio disk without a serial) has ErrNoIdentity: we write no
// marker onto a tenant's disk, so it is refused rather than guessed at.
func Identity(sysfs, path string) (string, error) {
	dir, err := sysfsDir(sysfs, path)
	if err != nil {
		return "", err
	}
	if n, err := readTrim(filepath.Join(dir, "partition")); err == nil {
		disk, err := diskIdentity(filepath.Dir(dir))
		if err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		return disk + "-part" + n, nil
	}
	id, err := diskIdentity(dir)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return id, nil
}

func diskIdentity(dir string) (string, error) {
	for _, f := range []string{"wwid", "device/wwid"} {
		if v, err := readTrim(filepath.Join(dir, f)); err == nil && v != "" {
			return "wwid:" + v, nil
		}
	}
	if v, err := readTrim(filepath.Join(dir, "device", "serial")); err == nil && v != "" {
		model, _ := readTrim(filepath.Join(dir, "device", "model"))
		return "serial:" + model + ":" + v, nil
	}
	if f, err := readTrim(filepath.Join(dir, "loop", "backing_file")); err == nil && f != "" {
		off, _ := readTrim(filepath.Join(dir, "loop", "offset"))
		if off == "" {
			off = "0"
		}
		return "loop:" + f + "@" + off, nil
	}
	return "", fmt.Errorf("%w: no wwid, serial or loop backing file in %s", ErrNoIdentity, dir)
}

// sysfsDir is the sysfs directory of the block device at path, found by
// its device number (so any name of it works: /dev/sdb, a by-id link).
func sysfsDir(sysfs, path string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", fmt.Errorf("device %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return "", fmt.Errorf("device %s is not a block device", path)
	}
	link := filepath.Join(sysfs, "dev", "block", fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)))
	dir, err := filepath.EvalSymlinks(link)
	if err != nil {
		return "", fmt.Errorf("device %s: %w", path, err)
	}
	return dir, nil
}

// Resolve returns the /dev path of the one block device whose Identity is
// id. None is ErrNotFound; two (a cloned disk, a file attached twice) is an
// error too: which one the record means cannot be told.
func Resolve(sysfs, id string) (string, error) {
	if id == "" {
		return "", fmt.Errorf("%w: empty identity", ErrNotFound)
	}
	entries, err := os.ReadDir(filepath.Join(sysfs, "block"))
	if err != nil {
		return "", err
	}
	var found []string
	for _, e := range entries {
		names := []string{e.Name()}
		if subs, err := os.ReadDir(filepath.Join(sysfs, "block", e.Name())); err == nil {
			for _, s := range subs {
				if _, err := os.Stat(filepath.Join(sysfs, "block", e.Name(), s.Name(), "partition")); err == nil {
					names = append(names, s.Name())
				}
			}
		}
		for _, n := range names {
			if got, err := Identity(sysfs, "/dev/"+n); err == nil && got == id {
				found = append(found, "/dev/"+n)
			}
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("%w: %s", ErrNotFound, id)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("devices %s all have identity %s: refusing to guess", strings.Join(found, ", "), id)
}

func readTrim(path string) (string, error) {
	b, err := os.ReadFile(path)
	return strings.TrimSpace(string(b)), err
}

// Overlap reports whether the block devices at a and b share blocks: the
// same device (under any name), or a disk and one of its partitions. A disk
// and its partitions are one exclusive unit: whoever has one must not see
// another tenant write the other.
func Overlap(sysfs, a, b string) (bool, error) {
	da, err := sysfsDir(sysfs, a)
	if err != nil {
		return false, err
	}
	db, err := sysfsDir(sysfs, b)
	if err != nil {
		return false, err
	}
	return da == db || filepath.Dir(da) == db || da == filepath.Dir(db), nil
}
