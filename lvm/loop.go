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
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Extent is where a linear, single-segment LV's data lives on its PV.
type Extent struct {
	PV     string // PV device path
	Offset uint64 // bytes from the start of the PV
	Size   uint64 // bytes
}

// devicesField matches lvs' devices column for one PV: "/dev/loop3(25)",
// where 25 is the first physical extent on that PV.
var devicesField = regexp.MustCompile(`^(/[^(),]+)\((\d+)\)$`)

// LinearExtent tells where vg/lv's data is on its PV: offset pe_start +
// N × extent size, where N is the physical extent in lvs' devices column
// (not seg_start_pe, which is the segment's first logical extent). Only
// linear LVs with one segment are contiguous; anything else is an error.
func (c *Client) LinearExtent(ctx context.Context, vg, lv string) (Extent, error) {
	if err := validateVGLV(vg, lv); err != nil {
		return Extent{}, err
	}
	out, err := c.lvm(ctx, append(append([]string{"lvs", "--segments"}, reportArgs...),
		"-o", "lv_name,segtype,seg_size_pe,devices,vg_extent_size", vg+"/"+lv)...)
	if err != nil {
		return Extent{}, err
	}
	segs, err := parseReport(out, "seg")
	if err != nil {
		return Extent{}, err
	}
	pvs, err := c.ListPVs(ctx)
	if err != nil {
		return Extent{}, err
	}
	return linearExtent(vg+"/"+lv, segs, pvs)
}

func linearExtent(name string, segs []map[string]string, pvs []PV) (Extent, error) {
	if len(segs) == 0 {
		return Extent{}, fmt.Errorf("LV %s: %w", name, ErrNotFound)
	}
	if len(segs) != 1 {
		return Extent{}, fmt.Errorf("%w: LV %s has %d segments; only single-segment linear LVs can be exposed as a loop device (allocate with --alloc contiguous)", ErrInvalidArgument, name, len(segs))
	}
	seg := row{m: segs[0]}
	if t := seg.str("segtype"); t != "linear" {
		return Extent{}, fmt.Errorf("%w: LV %s is %q; only linear LVs can be exposed as a loop device", ErrInvalidArgument, name, t)
	}
	m := devicesField.FindStringSubmatch(seg.str("devices"))
	if m == nil {
		return Extent{}, fmt.Errorf("LV %s: cannot parse devices %q (want one PV)", name, seg.str("devices"))
	}
	startPE, err := strconv.ParseUint(m[2], 10, 64)
	if err != nil {
		return Extent{}, err
	}
	sizePE, extent := seg.uint("seg_size_pe"), seg.uint("vg_extent_size")
	if seg.err != nil {
		return Extent{}, seg.err
	}
	if extent == 0 || sizePE == 0 {
		return Extent{}, fmt.Errorf("LV %s: extent size %d, %d extents", name, extent, sizePE)
	}
	for _, pv := range pvs {
		if pv.Name == m[1] {
			return Extent{PV: pv.Name, Offset: pv.PEStart + startPE*extent, Size: sizePE * extent}, nil
		}
	}
	return Extent{}, fmt.Errorf("LV %s: PV %s not in pvs output", name, m[1])
}

// LoopActivator exposes linear LVs as loop devices over their extents, for
// kernels without device-mapper (lvm runs with activation = 0 there).
//
// A loop device is identified by its backing device and offset, read from
// sysfs, so Activate reuses the device it (or another process) attached
// before, and Deactivate detaches only a loop device sitting exactly on the
// LV's extents. Setup is serialised between processes with an flock on the
// lock file.
type LoopActivator struct {
	c        *Client
	lockFile string
	// sysBlock is /sys/block (a parameter for tests).
	sysBlock string
	mu       sync.Mutex
}

var _ Activator = (*LoopActivator)(nil)

// NewLoopActivator returns a LoopActivator; lockFile's directory is created
// if needed.
func NewLoopActivator(c *Client, lockFile string) *LoopActivator {
	return &LoopActivator{c: c, lockFile: lockFile, sysBlock: "/sys/block"}
}

// Mode implements Activator.
func (a *LoopActivator) Mode() Mode { return ModeLoop }

// Activate implements Activator: it attaches (or reuses) a loop device with
// the LV's offset and size on its PV, and grows the size limit of a reused
// one after the LV was extended.
func (a *LoopActivator) Activate(ctx context.Context, vg, lv string) (string, error) {
	ext, err := a.c.LinearExtent(ctx, vg, lv)
	if err != nil {
		return "", err
	}
	unlock, err := a.lock()
	if err != nil {
		return "", err
	}
	defer unlock()
	devs, err := a.loopDevicesAt(ext)
	if err != nil {
		return "", err
	}
	if len(devs) > 0 {
		dev := devs[0]
		if dev.sizeLimit != ext.Size {
			if err := setSizeLimit(dev.path, ext.Size); err != nil {
				return "", fmt.Errorf("resize loop device %s of LV %s/%s to %d bytes: %w", dev.path, vg, lv, ext.Size, err)
			}
		}
		return dev.path, nil
	}
	out, err := a.c.run.Run(ctx, "losetup", "--find", "--show",
		"--offset", strconv.FormatUint(ext.Offset, 10), "--sizelimit", strconv.FormatUint(ext.Size, 10), ext.PV)
	if err != nil {
		return "", fmt.Errorf("attach LV %s/%s: %w", vg, lv, err)
	}
	path := strings.TrimSpace(string(out))
	if !strings.HasPrefix(path, "/dev/loop") {
		return "", fmt.Errorf("losetup printed %q, not a loop device", path)
	}
	return path, nil
}

// Deactivate implements Activator: it detaches every loop device sitting
// exactly on the LV's extents. Once the LV is removed its extents are
// unknown, so call it before RemoveLV.
func (a *LoopActivator) Deactivate(ctx context.Context, vg, lv string) error {
	ext, err := a.c.LinearExtent(ctx, vg, lv)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	unlock, err := a.lock()
	if err != nil {
		return err
	}
	defer unlock()
	devs, err := a.loopDevicesAt(ext)
	if err != nil {
		return err
	}
	for _, d := range devs {
		if _, err := a.c.run.Run(ctx, "losetup", "--detach", d.path); err != nil {
			return fmt.Errorf("detach %s (LV %s/%s): %w", d.path, vg, lv, err)
		}
	}
	return nil
}

// lock takes the in-process mutex and the cross-process flock.
func (a *LoopActivator) lock() (func(), error) {
	a.mu.Lock()
	if a.lockFile == "" {
		return a.mu.Unlock, nil
	}
	if err := os.MkdirAll(filepath.Dir(a.lockFile), 0o755); err != nil {
		a.mu.Unlock()
		return nil, err
	}
	f, err := os.OpenFile(a.lockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		a.mu.Unlock()
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		a.mu.Unlock()
		return nil, fmt.Errorf("lock %s: %w", a.lockFile, err)
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
		a.mu.Unlock()
	}, nil
}

type loopDevice struct {
	path      string
	sizeLimit uint64
}

// loopDevicesAt lists attached loop devices whose backing device is ext.PV
// and whose offset is ext.Offset, reading sysfs (no exec).
func (a *LoopActivator) loopDevicesAt(ext Extent) ([]loopDevice, error) {
	pv, err := filepath.EvalSymlinks(ext.PV)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(a.sysBlock)
	if err != nil {
		return nil, err
	}
	var found []loopDevice
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		dir := filepath.Join(a.sysBlock, e.Name(), "loop")
		backing, err := os.ReadFile(filepath.Join(dir, "backing_file"))
		if err != nil {
			continue // not attached
		}
		if strings.TrimSuffix(strings.TrimSpace(string(backing)), " (deleted)") != pv {
			continue
		}
		off, err1 := readUint(filepath.Join(dir, "offset"))
		limit, err2 := readUint(filepath.Join(dir, "sizelimit"))
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		if off == ext.Offset {
			found = append(found, loopDevice{path: "/dev/" + e.Name(), sizeLimit: limit})
		}
	}
	return found, nil
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// setSizeLimit changes a loop device's size limit with LOOP_SET_STATUS64; the
// kernel resizes the device (also while mounted). EAGAIN means the kernel
// could not drop the device's page cache yet: retry briefly.
func setSizeLimit(dev string, size uint64) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	for attempt := 0; ; attempt++ {
		info, err := unix.IoctlLoopGetStatus64(fd)
		if err != nil {
			return err
		}
		info.Sizelimit = size
		err = unix.IoctlLoopSetStatus64(fd, info)
		if !errors.Is(err, unix.EAGAIN) || attempt == 20 {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
