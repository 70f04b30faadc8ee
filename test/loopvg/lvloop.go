/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package loopvg

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"testing"
)

// This file is the test-only stand-in for LV activation on kernels without
// device-mapper: the LVM layer's production Activator will replace it.

// LinearLVExtent is where a linear, single-segment LV's data lives on its PV.
type LinearLVExtent struct {
	PV     string // PV device path
	Offset int64  // bytes from the start of the PV
	Size   int64  // bytes
}

// LocateLinearLV asks lvm where vg/lv's data is. Only linear LVs with one
// segment are contiguous on one PV; anything else is an error (create test
// LVs with --alloc contiguous to get one segment).
func LocateLinearLV(ctx context.Context, cfg *Config, vg, lv string) (LinearLVExtent, error) {
	segs, err := cfg.Report(ctx, "lvs", "-o", "lv_name,segtype,seg_start_pe,seg_size_pe,devices", vg+"/"+lv)
	if err != nil {
		return LinearLVExtent{}, err
	}
	pvs, err := cfg.Report(ctx, "pvs", "-o", "pv_name,pe_start,vg_extent_size", "--select", "vg_name="+vg)
	if err != nil {
		return LinearLVExtent{}, err
	}
	return linearExtent(vg+"/"+lv, segs, pvs)
}

// devicesField matches lvs' devices column for one PV: "/dev/loop3(25)".
var devicesField = regexp.MustCompile(`^(/[^(),]+)\((\d+)\)$`)

// linearExtent computes the extent from lvs segment rows and pvs rows.
//
// The PV offset comes from the physical extent in the devices column, not from
// seg_start_pe: seg_start_pe is the segment's first *logical* extent within
// the LV (always 0 for a single-segment LV), whereas "(N)" in devices is the
// first physical extent on the PV. They differ for every LV but the first.
func linearExtent(name string, segs, pvs []map[string]string) (LinearLVExtent, error) {
	if len(segs) != 1 {
		return LinearLVExtent{}, fmt.Errorf("LV %s has %d segments; only single-segment linear LVs can be exposed as a loop device (create it with --alloc contiguous)", name, len(segs))
	}
	seg := segs[0]
	if seg["segtype"] != "linear" {
		return LinearLVExtent{}, fmt.Errorf("LV %s is %q, not linear", name, seg["segtype"])
	}
	m := devicesField.FindStringSubmatch(seg["devices"])
	if m == nil {
		return LinearLVExtent{}, fmt.Errorf("LV %s: cannot parse devices %q (want one PV)", name, seg["devices"])
	}
	pv := m[1]
	startPE, err := strconv.ParseInt(m[2], 10, 64)
	if err != nil {
		return LinearLVExtent{}, err
	}
	sizePE, err := strconv.ParseInt(seg["seg_size_pe"], 10, 64)
	if err != nil {
		return LinearLVExtent{}, fmt.Errorf("LV %s: seg_size_pe %q: %w", name, seg["seg_size_pe"], err)
	}
	for _, p := range pvs {
		if p["pv_name"] != pv {
			continue
		}
		peStart, err := strconv.ParseInt(p["pe_start"], 10, 64)
		if err != nil {
			return LinearLVExtent{}, fmt.Errorf("PV %s: pe_start %q: %w", pv, p["pe_start"], err)
		}
		extent, err := strconv.ParseInt(p["vg_extent_size"], 10, 64)
		if err != nil || extent <= 0 {
			return LinearLVExtent{}, fmt.Errorf("PV %s: vg_extent_size %q: %v", pv, p["vg_extent_size"], err)
		}
		return LinearLVExtent{PV: pv, Offset: peStart + startPE*extent, Size: sizePE * extent}, nil
	}
	return LinearLVExtent{}, fmt.Errorf("LV %s: PV %s not in pvs output", name, pv)
}

// AttachLinearLV attaches a loop device over vg/lv's data on its PV, so the
// LV can be formatted, mounted and written on a kernel without device-mapper.
// Device.File is the PV; detach with Device.Detach.
func AttachLinearLV(ctx context.Context, cfg *Config, vg, lv string) (Device, error) {
	ext, err := LocateLinearLV(ctx, cfg, vg, lv)
	if err != nil {
		return Device{}, err
	}
	d, err := attach(ctx, ext.PV, ext.Offset, ext.Size)
	if err != nil {
		return Device{}, fmt.Errorf("attach LV %s/%s: %w", vg, lv, err)
	}
	return d, nil
}

// AttachLV is AttachLinearLV for tests: the loop device is detached when the
// test ends (before the VG is removed, since it was attached later).
func (v *VG) AttachLV(t testing.TB, lv string) Device {
	t.Helper()
	d, err := AttachLinearLV(t.Context(), v.Config, v.Name, lv)
	if err != nil {
		t.Fatalf("loopvg: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := d.Detach(ctx); err != nil {
			t.Errorf("loopvg: detach %s (LV %s/%s): %v", d.Path, v.Name, lv, err)
		}
	})
	return d
}
