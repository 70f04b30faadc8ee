/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package loopvg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/open-local/open-local/test/capability"
)

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
	gib = int64(1) << 30
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "2G", want: 2 * gib},
		{in: "2g", want: 2 * gib},
		{in: "2Gi", want: 2 * gib},
		{in: "2GiB", want: 2 * gib},
		{in: "512M", want: 512 * mib},
		{in: "64k", want: 64 * kib},
		{in: "1T", want: 1 << 40},
		{in: "4096", want: 4096},
		{in: " 1M ", want: mib},
		{in: "", wantErr: true},
		{in: "0", wantErr: true},
		{in: "-1G", wantErr: true},
		{in: "2X", wantErr: true},
		{in: "G", wantErr: true},
		{in: "1.5G", wantErr: true},
		{in: "99999999999T", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
				t.Fatalf("ParseSize(%q) = %d, %v; want %d, err=%v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestRenderConfig(t *testing.T) {
	tests := []struct {
		name    string
		full    bool
		devices []string
		want    []string
		wantErr bool
	}{
		{name: "metadata mode", devices: []string{"/dev/loop8", "/dev/loop9"},
			want: []string{"activation = 0", `"a|^/dev/loop8$|", "a|^/dev/loop9$|", "r|.*|"`, "use_devicesfile = 0",
				"obtain_device_list_from_udev = 0", "udev_sync = 0", "udev_rules = 0", `backup_dir = "/cfg/backup"`,
				`archive_dir = "/cfg/archive"`, `locking_dir = "/cfg/lock"`}},
		{name: "full mode", full: true, devices: []string{"/dev/loop8"},
			want: []string{"activation = 1", `"a|^/dev/loop8$|", "r|.*|"`}},
		{name: "no devices rejects everything", want: []string{`global_filter = [ "r|.*|" ]`}},
		{name: "regexp metacharacters are quoted", devices: []string{"/dev/disk/by-id/a.b+c"},
			want: []string{`"a|^/dev/disk/by-id/a\.b\+c$|"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := renderConfig("/cfg", tt.full, tt.devices)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("config lacks %q:\n%s", w, got)
				}
			}
		})
	}
	if _, err := renderConfig(`/a"b`, false, nil); err == nil {
		t.Error("a quote in the config dir must be refused")
	}
}

func TestValidDevicePath(t *testing.T) {
	for _, p := range []string{"loop0", "/dev/loop0|", `/dev/"x`, "/dev/../dev/loop0", "/dev/loop0\n", ""} {
		if validDevicePath(p) == nil {
			t.Errorf("validDevicePath(%q) accepted", p)
		}
	}
	if err := validDevicePath("/dev/loop12"); err != nil {
		t.Error(err)
	}
}

// TestConfigValidates asks lvm itself whether both flavours of our lvm.conf
// are valid (a misspelt setting is otherwise silently ignored).
func TestConfigValidates(t *testing.T) {
	capability.Require(t, capability.LVM)
	for _, full := range []bool{false, true} {
		c, err := WriteConfig(filepath.Join(t.TempDir(), "lvm"), full, "/dev/loop100")
		if err != nil {
			t.Fatal(err)
		}
		out, err := run(t.Context(), c.Env(), "lvmconfig", "--validate")
		if err != nil || !strings.Contains(string(out), "LVM configuration valid") {
			t.Fatalf("full=%v: lvmconfig --validate: %v: %s", full, err, out)
		}
	}
}

func TestParseReport(t *testing.T) {
	out := []byte(`  {
      "report": [
          {
              "vg": [
                  {"vg_name":"tvg", "vg_size":"2139095040"},
                  {"vg_name":"other", "vg_size":"4194304"}
              ]
          }
      ]
  }
`)
	rows, err := parseReport(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0]["vg_name"] != "tvg" || rows[1]["vg_size"] != "4194304" {
		t.Fatalf("rows = %v", rows)
	}
	if _, err := parseReport([]byte("WARNING: x")); err == nil {
		t.Fatal("garbage must not parse")
	}
	if rows, err := parseReport([]byte(`{"report":[{"lv":[]}]}`)); err != nil || len(rows) != 0 {
		t.Fatalf("empty report: %v %v", rows, err)
	}
}

func TestLinearExtent(t *testing.T) {
	pvs := []map[string]string{
		{"pv_name": "/dev/loop0", "pe_start": "1048576", "vg_extent_size": "4194304"},
		{"pv_name": "/dev/loop1", "pe_start": "1048576", "vg_extent_size": "4194304"},
	}
	seg := func(segtype, start, size, devices string) map[string]string {
		return map[string]string{"segtype": segtype, "seg_start_pe": start, "seg_size_pe": size, "devices": devices}
	}
	tests := []struct {
		name    string
		segs    []map[string]string
		want    LinearLVExtent
		wantErr string
	}{
		{name: "first LV on the PV", segs: []map[string]string{seg("linear", "0", "25", "/dev/loop0(0)")},
			want: LinearLVExtent{PV: "/dev/loop0", Offset: mib, Size: 25 * 4 * mib}},
		// seg_start_pe is 0 here although the data starts at PE 25.
		{name: "second LV uses the PE in devices", segs: []map[string]string{seg("linear", "0", "50", "/dev/loop0(25)")},
			want: LinearLVExtent{PV: "/dev/loop0", Offset: mib + 25*4*mib, Size: 50 * 4 * mib}},
		{name: "other PV", segs: []map[string]string{seg("linear", "0", "1", "/dev/loop1(3)")},
			want: LinearLVExtent{PV: "/dev/loop1", Offset: mib + 3*4*mib, Size: 4 * mib}},
		{name: "two segments", segs: []map[string]string{seg("linear", "0", "2", "/dev/loop0(0)"), seg("linear", "2", "2", "/dev/loop0(9)")},
			wantErr: "2 segments"},
		{name: "no segments", segs: nil, wantErr: "0 segments"},
		{name: "striped", segs: []map[string]string{seg("striped", "0", "4", "/dev/loop0(0),/dev/loop1(0)")},
			wantErr: "not linear"},
		{name: "unparsable devices", segs: []map[string]string{seg("linear", "0", "4", "/dev/loop0")},
			wantErr: "cannot parse devices"},
		{name: "unknown PV", segs: []map[string]string{seg("linear", "0", "4", "/dev/loop7(0)")},
			wantErr: "not in pvs"},
		{name: "bad size", segs: []map[string]string{seg("linear", "0", "x", "/dev/loop0(0)")},
			wantErr: "seg_size_pe"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := linearExtent("vg/lv", tt.segs, pvs)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// vgBytes is what a VG made of these PVs must report as vg_size: each PV
// contributes whole extents after its metadata area (pe_start).
func vgBytes(t *testing.T, vg *VG) int64 {
	t.Helper()
	rows, err := vg.Config.Report(t.Context(), "pvs", "-o", "pv_name,dev_size,pe_start,vg_extent_size")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(vg.Devices) {
		t.Fatalf("pvs shows %d PVs, want %d: %v", len(rows), len(vg.Devices), rows)
	}
	var total int64
	for _, r := range rows {
		dev, _ := strconv.ParseInt(r["dev_size"], 10, 64)
		start, _ := strconv.ParseInt(r["pe_start"], 10, 64)
		ext, _ := strconv.ParseInt(r["vg_extent_size"], 10, 64)
		total += (dev - start) / ext * ext
	}
	return total
}

func TestNewVGAndTeardown(t *testing.T) {
	start := time.Now()
	vg := New(t, "oltest", 1*gib, 1*gib)
	created := time.Since(start)
	ctx := t.Context()

	rows, err := vg.Config.Report(ctx, "vgs", "-o", "vg_name,vg_size,pv_count", vg.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0]["vg_name"] != "oltest" || rows[0]["pv_count"] != "2" {
		t.Fatalf("vgs = %v", rows)
	}
	if want := strconv.FormatInt(vgBytes(t, vg), 10); rows[0]["vg_size"] != want {
		t.Errorf("vg_size = %s, want %s", rows[0]["vg_size"], want)
	}
	// Two 1 GiB PVs with 4 MiB extents and 1 MiB metadata: 2 x 255 extents.
	if rows[0]["vg_size"] != strconv.FormatInt(2*255*4*mib, 10) {
		t.Errorf("vg_size = %s, want %d", rows[0]["vg_size"], 2*255*4*mib)
	}

	if _, err := vg.Run(ctx, "lvcreate", "--yes", "--name", "lv1", "--size", "100m", "--alloc", "contiguous", vg.Name); err != nil {
		t.Fatal(err)
	}
	lvs, err := vg.Config.Report(ctx, "lvs", "-o", "lv_name,lv_size,segtype", vg.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(lvs) != 1 || lvs[0]["lv_name"] != "lv1" || lvs[0]["lv_size"] != strconv.FormatInt(100*mib, 10) || lvs[0]["segtype"] != "linear" {
		t.Fatalf("lvs = %v", lvs)
	}

	// Keep the PVs' content past teardown (a hard link survives Down's
	// unlink) to prove that the VG was really removed, not merely detached.
	keep := t.TempDir()
	var kept []string
	for i, d := range vg.Devices {
		k := filepath.Join(keep, strconv.Itoa(i))
		if err := os.Link(d.File, k); err != nil {
			t.Fatal(err)
		}
		kept = append(kept, k)
	}

	start = time.Now()
	if err := Down(ctx, vg.Dir); err != nil {
		t.Fatalf("Down: %v", err)
	}
	t.Logf("VG of 2 loop devices: create %v, teardown %v (full mode: %v)", created.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), vg.Config.FullMode)

	for _, d := range vg.Devices {
		if devs, err := LoopDevicesOf(ctx, d.File); err != nil || len(devs) > 0 {
			t.Errorf("after Down, %s is still attached to %v (%v)", d.File, devs, err)
		}
		if _, err := os.Stat(d.File); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after Down, %s still exists (%v)", d.File, err)
		}
	}
	for _, f := range []string{filepath.Join(vg.Dir, StateFile), vg.Config.Dir} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after Down, %s still exists (%v)", f, err)
		}
	}
	// Down again is a no-op.
	if err := Down(ctx, vg.Dir); err != nil {
		t.Errorf("second Down: %v", err)
	}

	var paths []string
	for _, k := range kept {
		d, err := Attach(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Detach(context.Background()) })
		paths = append(paths, d.Path)
	}
	cfg := NewConfig(t, paths...)
	if vgs, err := cfg.Report(ctx, "vgs", "-o", "vg_name"); err != nil || len(vgs) != 0 {
		t.Errorf("after Down the PVs still hold a VG: %v (%v)", vgs, err)
	}
}

func TestPrivateFilter(t *testing.T) {
	devs := NewDevices(t, 64*mib, 64*mib)
	ctx := t.Context()
	both := NewConfig(t, devs[0].Path, devs[1].Path)
	if _, err := both.Run(ctx, "pvcreate", "--yes", devs[0].Path, devs[1].Path); err != nil {
		t.Fatal(err)
	}
	pvNames := func(c *Config) []string {
		rows, err := c.Report(ctx, "pvs", "-o", "pv_name")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, r := range rows {
			names = append(names, r["pv_name"])
		}
		return names
	}
	if got := pvNames(both); len(got) != 2 {
		t.Fatalf("config accepting both devices sees %v", got)
	}

	one := NewConfig(t, devs[0].Path)
	if got := pvNames(one); len(got) != 1 || got[0] != devs[0].Path {
		t.Fatalf("config accepting only %s sees %v: the filter leaks", devs[0].Path, got)
	}
	// lvm must refuse to touch the hidden device.
	if _, err := one.Run(ctx, "pvremove", "--yes", devs[1].Path); err == nil {
		t.Fatalf("pvremove of %s succeeded through a config that does not accept it", devs[1].Path)
	}
	if got := pvNames(both); len(got) != 2 {
		t.Fatalf("hidden PV was modified: %v", got)
	}

	if err := one.AddDevices(devs[1].Path, devs[0].Path); err != nil {
		t.Fatal(err)
	}
	if got := one.Devices(); len(got) != 2 {
		t.Fatalf("AddDevices duplicated or lost devices: %v", got)
	}
	if got := pvNames(one); len(got) != 2 {
		t.Fatalf("after AddDevices the config sees %v", got)
	}

	none := NewConfig(t)
	if got := pvNames(none); len(got) != 0 {
		t.Fatalf("a config accepting nothing sees %v (host disks leak in)", got)
	}
}

func TestDetachLeavesForeignDeviceAlone(t *testing.T) {
	devs := NewDevices(t, 16*mib)
	ctx := t.Context()
	// Same loop device, but not the file we would have attached.
	foreign := devs[0]
	foreign.File = filepath.Join(t.TempDir(), "other.img")
	if err := foreign.Detach(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := LoopDevicesOf(ctx, devs[0].File); err != nil || len(got) != 1 {
		t.Fatalf("Detach of a device bound to another file detached it: %v %v", got, err)
	}
	// Same file, other offset: also not ours.
	shifted := devs[0]
	shifted.Offset = 4096
	if err := shifted.Detach(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := LoopDevicesOf(ctx, devs[0].File); len(got) != 1 {
		t.Fatal("Detach ignored the offset")
	}
	if err := devs[0].Detach(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := LoopDevicesOf(ctx, devs[0].File); len(got) != 0 {
		t.Fatalf("still attached: %v", got)
	}
	// Detaching twice is fine (the cleanup registered by NewDevices does it).
	if err := devs[0].Detach(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestUpRollsBackOnFailure(t *testing.T) {
	capability.Require(t, capability.Root, capability.LoopDevices, capability.LVM)
	dir := t.TempDir()
	ctx := t.Context()
	// vgcreate refuses this name after the files, loop devices and PVs exist.
	_, err := Up(ctx, Options{Dir: dir, VG: "bad/name", Sizes: []int64{32 * mib}})
	if err == nil {
		t.Fatal("Up with an invalid VG name succeeded")
	}
	t.Logf("expected error: %v", err)
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("rollback left %v in %s", names, dir)
	}

	vg := New(t, "olbusy", 32*mib)
	if _, err := Up(ctx, Options{Dir: vg.Dir, VG: "other", Sizes: []int64{32 * mib}}); err == nil {
		t.Fatal("Up into a directory already in use succeeded")
	}
}

// TestDownAfterExtendOntoDetachedDevice covers the agent tests' pattern: a
// second device added to the VG later, whose own cleanup (registered later,
// so run earlier) detaches it before the VG is removed.
func TestDownAfterExtendOntoDetachedDevice(t *testing.T) {
	vg := New(t, "olextend", 64*mib)
	extra := NewDevices(t, 64*mib)[0]
	ctx := t.Context()
	if err := vg.Config.AddDevices(extra.Path); err != nil {
		t.Fatal(err)
	}
	if _, err := vg.Run(ctx, "vgextend", "--yes", vg.Name, extra.Path); err != nil {
		t.Fatal(err)
	}
	rows, err := vg.Config.Report(ctx, "vgs", "-o", "pv_count", vg.Name)
	if err != nil || len(rows) != 1 || rows[0]["pv_count"] != "2" {
		t.Fatalf("vgs after vgextend: %v %v", rows, err)
	}
	if err := extra.Detach(ctx); err != nil {
		t.Fatal(err)
	}
	if err := Down(ctx, vg.Dir); err != nil {
		t.Fatalf("Down with a missing PV: %v", err)
	}
}

func TestAttachLinearLV(t *testing.T) {
	vg := New(t, "olattach", 128*mib, 128*mib)
	ctx := t.Context()
	for _, lv := range []struct{ name, size string }{{"first", "8m"}, {"second", "16m"}} {
		if _, err := vg.Run(ctx, "lvcreate", "--yes", "--name", lv.name, "--size", lv.size, "--alloc", "contiguous", vg.Name); err != nil {
			t.Fatal(err)
		}
	}
	ext, err := LocateLinearLV(ctx, vg.Config, vg.Name, "second")
	if err != nil {
		t.Fatal(err)
	}
	// "first" occupies PEs 0-1, so "second" starts at PE 2.
	if ext.Offset != mib+2*4*mib || ext.Size != 16*mib {
		t.Errorf("second LV located at %+v, want offset %d size %d", ext, mib+2*4*mib, 16*mib)
	}

	d := vg.AttachLV(t, "second")
	if d.Size != 16*mib || d.File != ext.PV || d.Offset != ext.Offset {
		t.Fatalf("attached %+v, want size %d over %s at %d", d, 16*mib, ext.PV, ext.Offset)
	}
	payload := bytes.Repeat([]byte("open-local!"), 1000)
	const at = 1 * mib
	f, err := os.OpenFile(d.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(payload, at); err != nil {
		t.Fatal(err)
	}
	// fsync on the loop device flushes through the PV's loop device into
	// the backing file.
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	var backing string
	for _, pv := range vg.Devices {
		if pv.Path == ext.PV {
			backing = pv.File
		}
	}
	bf, err := os.Open(backing)
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	got := make([]byte, len(payload))
	if _, err := bf.ReadAt(got, ext.Offset+at); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("backing file at %d holds %q..., want the payload", ext.Offset+at, got[:16])
	}

	// Striped and multi-segment LVs are refused with a clear error.
	if _, err := vg.Run(ctx, "lvcreate", "--yes", "--name", "striped", "--size", "8m", "--stripes", "2", "--stripesize", "64k", vg.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := AttachLinearLV(ctx, vg.Config, vg.Name, "striped"); err == nil || !strings.Contains(err.Error(), "not linear") {
		t.Errorf("striped LV: err = %v", err)
	}
	if _, err := vg.Run(ctx, "lvextend", "--yes", "--alloc", "normal", "--size", "+8m", vg.Name+"/first"); err != nil {
		t.Fatal(err)
	}
	if _, err := AttachLinearLV(ctx, vg.Config, vg.Name, "first"); err == nil || !strings.Contains(err.Error(), "segments") {
		t.Errorf("two-segment LV: err = %v", err)
	}
	if _, err := AttachLinearLV(ctx, vg.Config, vg.Name, "missing"); err == nil {
		t.Error("missing LV attached")
	}
}

// failingTB runs a test body the way package testing does (Fatalf ends the
// goroutine, cleanups run afterwards, last-in first-out) while the real test
// stays green, so teardown after a failed test can be checked.
type failingTB struct {
	*testing.T
	cleanups []func()
	fatal    string
	errs     []string
}

func (f *failingTB) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }
func (f *failingTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (f *failingTB) Errorf(format string, args ...any) {
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
}

func TestTeardownAfterFailedTest(t *testing.T) {
	capability.Require(t, capability.Root, capability.LoopDevices, capability.LVM)
	f := &failingTB{T: t}
	var vg *VG
	done := make(chan struct{})
	go func() {
		defer close(done)
		vg = New(f, "olfailed", 64*mib)
		if _, err := vg.Run(t.Context(), "lvcreate", "--yes", "--name", "lv", "--size", "8m", vg.Name); err != nil {
			t.Error(err)
		}
		f.Fatalf("simulated test failure with an LV still in the VG")
	}()
	<-done
	if f.fatal == "" || vg == nil {
		t.Fatalf("body did not run to its failure (fatal %q)", f.fatal)
	}
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
	if len(f.errs) > 0 {
		t.Fatalf("teardown errors: %v", f.errs)
	}
	for _, d := range vg.Devices {
		if devs, _ := LoopDevicesOf(t.Context(), d.File); len(devs) > 0 {
			t.Errorf("%s still attached to %v", d.File, devs)
		}
	}
	if _, err := os.Stat(filepath.Join(vg.Dir, StateFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file survived teardown: %v", err)
	}
}
