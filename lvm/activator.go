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
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Mode is how LVs become block devices on this machine.
type Mode string

// Activation modes.
const (
	// ModeAuto picks ModeDeviceMapper when the kernel has device-mapper,
	// ModeLoop otherwise.
	ModeAuto Mode = "auto"
	// ModeDeviceMapper: lvchange -ay; the device is /dev/<vg>/<lv>.
	ModeDeviceMapper Mode = "device-mapper"
	// ModeLoop: a loop device over the LV's extents on its PV, for kernels
	// without device-mapper (lvm in metadata mode). Linear single-segment
	// LVs only; new LVs are not wiped by lvcreate there (see WipeEdges).
	ModeLoop Mode = "loop"
)

// ParseMode parses a --activation flag value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeAuto, ModeDeviceMapper, ModeLoop:
		return m, nil
	}
	return "", fmt.Errorf("%w: activation mode %q: want %s, %s or %s", ErrInvalidArgument, s, ModeAuto, ModeDeviceMapper, ModeLoop)
}

// DetectMode reports ModeDeviceMapper when the kernel has a device-mapper
// driver (listed in /proc/misc, with /dev/mapper/control present), else
// ModeLoop.
func DetectMode() Mode {
	b, err := os.ReadFile("/proc/misc")
	if err != nil {
		return ModeLoop
	}
	listed := false
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[1] == "device-mapper" {
			listed = true
		}
	}
	if _, err := os.Stat("/dev/mapper/control"); err != nil || !listed {
		return ModeLoop
	}
	return ModeDeviceMapper
}

// Activator resolves an LV to a block device.
//
// Callers (the LocalVolume reconciler, the CSI node plugin) use it as:
//
//	path, err := act.Activate(ctx, vg, lv) // after CreateLV; again after ExtendLV (grows a loop device)
//	if act.Mode() == lvm.ModeLoop { lvm.WipeEdges(path) } // once, before the volume is first reported Ready
//	...
//	act.Deactivate(ctx, vg, lv) // BEFORE RemoveLV: afterwards the LV's extents are unknown
type Activator interface {
	// Mode is ModeDeviceMapper or ModeLoop.
	Mode() Mode
	// Activate makes vg/lv's data available as a block device and returns
	// its path. It is idempotent, and after the LV was extended it makes
	// the device as large as the LV.
	Activate(ctx context.Context, vg, lv string) (string, error)
	// Deactivate undoes Activate. An LV that is not active (or no longer
	// exists) is not an error. With device-mapper, classic snapshots and
	// their origins stay active (lvm switches them only together).
	Deactivate(ctx context.Context, vg, lv string) error
}

// NewActivator returns the Activator for mode (ModeAuto is resolved with
// DetectMode). lockFile serialises loop-device setup between processes on
// the node (agent and CSI node plugin); it is unused for device-mapper.
func NewActivator(mode Mode, c *Client, lockFile string) (Activator, error) {
	if mode == ModeAuto {
		mode = DetectMode()
	}
	switch mode {
	case ModeDeviceMapper:
		return &DeviceMapperActivator{c: c}, nil
	case ModeLoop:
		return NewLoopActivator(c, lockFile), nil
	}
	_, err := ParseMode(string(mode))
	return nil, err
}

// DeviceMapperActivator activates LVs with lvchange; the device is
// /dev/<vg>/<lv>.
type DeviceMapperActivator struct{ c *Client }

var _ Activator = (*DeviceMapperActivator)(nil)

// NewDeviceMapperActivator returns an Activator for kernels with device-mapper.
func NewDeviceMapperActivator(c *Client) *DeviceMapperActivator { return &DeviceMapperActivator{c: c} }

// Mode implements Activator.
func (a *DeviceMapperActivator) Mode() Mode { return ModeDeviceMapper }

// Activate implements Activator. lvextend resizes an active LV's device
// itself, so there is nothing to grow here.
func (a *DeviceMapperActivator) Activate(ctx context.Context, vg, lv string) (string, error) {
	l, err := a.c.GetLV(ctx, vg, lv)
	if err != nil {
		return "", err
	}
	path := filepath.Join("/dev", vg, lv)
	if l.Active == "active" {
		if _, err := os.Stat(path); err == nil {
			return path, nil
		}
	}
	// --ignoreactivationskip: thin snapshots are created with the skip flag.
	if _, err := a.c.lvm(ctx, "lvchange", "--activate", "y", "--ignoreactivationskip", vg+"/"+lv); err != nil {
		return "", err
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("LV %s/%s activated but %s is missing: %w", vg, lv, path, err)
	}
	return path, nil
}

// Deactivate implements Activator.
func (a *DeviceMapperActivator) Deactivate(ctx context.Context, vg, lv string) error {
	l, err := a.c.GetLV(ctx, vg, lv)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if l.Active != "active" {
		return nil
	}
	// lvm (de)activates a classic snapshot only together with its origin;
	// deactivating one would take the other (maybe in use) down too. Such
	// LVs stay active; RemoveLV removes them active.
	if l.Origin != "" && l.Pool == "" {
		return nil
	}
	lvs, err := a.c.ListLVs(ctx, vg)
	if err != nil {
		return err
	}
	for _, s := range lvs {
		if s.Origin == lv && s.Pool == "" {
			return nil
		}
	}
	_, err = a.c.lvm(ctx, "lvchange", "--activate", "n", vg+"/"+lv)
	return err
}

// wipeLen is how much WipeEdges zeroes at each end: more than any
// signature blkid looks for at the start (btrfs at 64 KiB) and than md/ZFS
// metadata at the end.
const wipeLen = 1 << 20

// WipeEdges zeroes the first and last MiB of a new volume's device, so that
// no filesystem or other signature of an earlier LV on the same extents can
// be found (and mounted) by the next owner. lvcreate does this itself
// (--wipesignatures, --zero) when it can activate the LV; in metadata mode
// (ModeLoop) it cannot, so callers must before first use. Only ever call it
// on the device of an LV that was just created for the caller.
func WipeEdges(devicePath string) error {
	f, err := os.OpenFile(devicePath, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	zero := make([]byte, min(wipeLen, size))
	if _, err := f.WriteAt(zero, 0); err != nil {
		return fmt.Errorf("wipe %s: %w", devicePath, err)
	}
	if size > int64(len(zero)) {
		tail := min(wipeLen, size-int64(len(zero)))
		if _, err := f.WriteAt(zero[:tail], size-tail); err != nil {
			return fmt.Errorf("wipe %s: %w", devicePath, err)
		}
	}
	return f.Sync()
}
