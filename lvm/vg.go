/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package lvm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// CreateVG turns devices into PVs and creates the VG name on them. Every
// device is checked first (see CheckDevice): nothing is written unless all of
// them are usable. Devices that are already PVs of no VG are reused as they
// are. A VG of that name existing already is ErrAlreadyExists.
func (c *Client) CreateVG(ctx context.Context, name string, devices []string, tags ...string) error {
	if err := ValidateVGName(name); err != nil {
		return err
	}
	if err := validateTags(tags); err != nil {
		return err
	}
	if len(devices) == 0 {
		return fmt.Errorf("%w: VG %s: no devices", ErrInvalidArgument, name)
	}
	// lvm refuses a new VG named like an entry of /dev, since /dev/<vg> is
	// where its LVs appear. Checked here, before any pvcreate.
	if _, err := os.Lstat(filepath.Join("/dev", name)); err == nil {
		return fmt.Errorf("%w: VG name %q: /dev/%s already exists", ErrInvalidArgument, name, name)
	}
	pvs, err := c.ListPVs(ctx)
	if err != nil {
		return err
	}
	if _, err := c.GetVG(ctx, name); err == nil {
		return fmt.Errorf("VG %s: %w", name, ErrAlreadyExists)
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	fresh, err := c.checkDevices(ctx, name, devices, pvs)
	if err != nil {
		return err
	}
	if err := c.pvcreate(ctx, fresh); err != nil {
		return err
	}
	argv := append([]string{"vgcreate"}, tagArgs(tags)...)
	argv = append(argv, name)
	_, err = c.lvm(ctx, append(argv, devices...)...)
	return err
}

// ExtendVG adds those of devices that are not yet PVs of the VG name to it,
// with the same checks as CreateVG, and returns the devices it added.
func (c *Client) ExtendVG(ctx context.Context, name string, devices []string) ([]string, error) {
	if err := ValidateVGName(name); err != nil {
		return nil, err
	}
	if _, err := c.GetVG(ctx, name); err != nil {
		return nil, err
	}
	pvs, err := c.ListPVs(ctx)
	if err != nil {
		return nil, err
	}
	var add []string
	for _, d := range devices {
		member, err := isPVOf(d, name, pvs)
		if err != nil {
			return nil, err
		}
		if !member {
			add = append(add, d)
		}
	}
	if len(add) == 0 {
		return nil, nil
	}
	fresh, err := c.checkDevices(ctx, name, add, pvs)
	if err != nil {
		return nil, err
	}
	if err := c.pvcreate(ctx, fresh); err != nil {
		return nil, err
	}
	if _, err := c.lvm(ctx, append([]string{"vgextend", name}, add...)...); err != nil {
		return nil, err
	}
	return add, nil
}

// pvcreate labels devices as PVs. No --force, no --yes: should a signature
// have appeared since the check, pvcreate asks, reads EOF and refuses.
func (c *Client) pvcreate(ctx context.Context, devices []string) error {
	if len(devices) == 0 {
		return nil
	}
	_, err := c.lvm(ctx, append([]string{"pvcreate"}, devices...)...)
	return err
}

// checkDevices checks every device for vg and returns those that need
// pvcreate (the others are PVs of no VG already).
func (c *Client) checkDevices(ctx context.Context, vg string, devices []string, pvs []PV) ([]string, error) {
	var fresh []string
	seen := map[uint64]string{}
	for _, d := range devices {
		st, err := CheckDevice(ctx, c.run, d, pvs)
		if err != nil {
			return nil, err
		}
		if other, dup := seen[st.rdev]; dup {
			return nil, fmt.Errorf("%w: %s and %s are the same device", ErrInvalidArgument, other, d)
		}
		seen[st.rdev] = d
		switch {
		case st.PV == nil:
			fresh = append(fresh, d)
		case st.PV.VG == "":
			// An orphan PV: vgcreate/vgextend take it as it is.
		case st.PV.VG == vg:
			return nil, fmt.Errorf("%w: %s is already a PV of VG %s", ErrAlreadyExists, d, vg)
		}
	}
	return fresh, nil
}

// DeviceState is what CheckDevice found.
type DeviceState struct {
	// PV is the device's PV when lvm knows it as one (then of no VG).
	PV   *PV
	rdev uint64
}

// CheckDevice decides whether device may become (or already is) a PV of no
// VG, without writing anything. It refuses (ErrDeviceInUse) a device that is
// a PV of some VG, carries any signature blkid -p finds other than an orphan
// PV's (filesystem, swap, RAID member, partition table, ...), has partitions,
// or is held by another device (device-mapper, md). A path that is not a
// block device is ErrInvalidArgument. pvs is ListPVs' result.
func CheckDevice(ctx context.Context, r Runner, device string, pvs []PV) (DeviceState, error) {
	if !filepath.IsAbs(device) || strings.HasPrefix(filepath.Base(device), "-") {
		return DeviceState{}, fmt.Errorf("%w: device %q: want an absolute path", ErrInvalidArgument, device)
	}
	var st unix.Stat_t
	if err := unix.Stat(device, &st); err != nil {
		return DeviceState{}, fmt.Errorf("%w: device %s: %w", ErrInvalidArgument, device, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return DeviceState{}, fmt.Errorf("%w: %s is not a block device", ErrInvalidArgument, device)
	}
	state := DeviceState{rdev: st.Rdev}
	for i := range pvs {
		if pvs[i].Major == int(unix.Major(st.Rdev)) && pvs[i].Minor == int(unix.Minor(st.Rdev)) {
			if pvs[i].VG != "" {
				return state, fmt.Errorf("%w: %s is a PV of VG %s", ErrDeviceInUse, device, pvs[i].VG)
			}
			state.PV = &pvs[i]
		}
	}
	if state.PV != nil && state.PV.VG != "" {
		return state, nil
	}
	sysDir := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	if holders, _ := os.ReadDir(filepath.Join(sysDir, "holders")); len(holders) > 0 {
		return state, fmt.Errorf("%w: %s is held by %s", ErrDeviceInUse, device, holders[0].Name())
	}
	if parts, _ := partitions(sysDir); len(parts) > 0 {
		return state, fmt.Errorf("%w: %s has partitions (%s)", ErrDeviceInUse, device, strings.Join(parts, ", "))
	}
	sig, err := Signatures(ctx, r, device)
	if err != nil {
		return state, err
	}
	if state.PV != nil && len(sig) == 1 && sig[0] == "LVM2_member" {
		return state, nil
	}
	if len(sig) > 0 {
		what := strings.Join(sig, ", ")
		if slices.Contains(sig, "LVM2_member") {
			what += " (a PV this node's lvm filter does not show)"
		}
		return state, fmt.Errorf("%w: %s carries a %s signature", ErrDeviceInUse, device, what)
	}
	return state, nil
}

// partitions lists the partitions of the block device whose sysfs directory
// is sysDir.
func partitions(sysDir string) ([]string, error) {
	entries, err := os.ReadDir(sysDir)
	if err != nil {
		return nil, err
	}
	var parts []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(sysDir, e.Name(), "partition")); err == nil {
			parts = append(parts, e.Name())
		}
	}
	return parts, nil
}

// Signatures returns the TYPE and PTTYPE values blkid -p (low-level probe,
// no cache, what mount-utils uses) finds on device: filesystem, swap, RAID,
// LVM2_member, or a partition table type. None found is an empty list.
func Signatures(ctx context.Context, r Runner, device string) ([]string, error) {
	out, err := r.Run(ctx, "blkid", "-p", "-o", "export", device)
	var ce *CommandError
	if errors.As(err, &ce) && ce.ExitCode == 2 {
		return nil, nil // blkid: nothing found
	}
	if errors.As(err, &ce) && ce.ExitCode == 8 {
		// blkid: several signatures that contradict each other.
		return []string{"ambivalent (several)"}, nil
	}
	if err != nil {
		return nil, err
	}
	var sigs []string
	for _, l := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), "=")
		if ok && (k == "TYPE" || k == "PTTYPE") && v != "" {
			sigs = append(sigs, v)
		}
	}
	return sigs, nil
}

// isPVOf reports whether device is a PV of vg.
func isPVOf(device, vg string, pvs []PV) (bool, error) {
	var st unix.Stat_t
	if err := unix.Stat(device, &st); err != nil {
		return false, fmt.Errorf("%w: device %s: %w", ErrInvalidArgument, device, err)
	}
	for _, pv := range pvs {
		if pv.VG == vg && pv.Major == int(unix.Major(st.Rdev)) && pv.Minor == int(unix.Minor(st.Rdev)) {
			return true, nil
		}
	}
	return false, nil
}
