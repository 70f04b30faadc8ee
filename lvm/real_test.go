/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package lvm_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/open-local/open-local/lvm"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/loopvg"
)

const (
	mib = uint64(1) << 20
	gib = uint64(1) << 30
)

// env is real lvm2 on loop devices, through a private config that sees only
// them. In metadata mode (this host) the client allocates contiguously, as
// the agent does with a LoopActivator.
type env struct {
	c    *lvm.Client
	cfg  *loopvg.Config
	devs []loopvg.Device
}

func newEnv(t testing.TB, sizes ...int64) *env {
	t.Helper()
	capability.Require(t, capability.Root, capability.LoopDevices, capability.LVM)
	devs := loopvg.NewDevices(t, sizes...)
	var paths []string
	for _, d := range devs {
		paths = append(paths, d.Path)
	}
	cfg := loopvg.NewConfig(t, paths...)
	var opts []lvm.Option
	if !cfg.FullMode {
		opts = append(opts, lvm.WithAlloc(lvm.AllocContiguous))
	}
	e := &env{c: lvm.New(&lvm.ExecRunner{SystemDir: cfg.Dir, Env: cfg.Env()}, opts...), cfg: cfg, devs: devs}
	// Runs before the loop devices are detached (cleanups are LIFO).
	t.Cleanup(func() { e.removeAllVGs(t) })
	return e
}

func (e *env) removeAllVGs(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := e.cfg.Report(ctx, "vgs", "-o", "vg_name")
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	for _, r := range rows {
		if e.cfg.FullMode {
			_, _ = e.cfg.Run(ctx, "vgchange", "--activate", "n", r["vg_name"])
		}
		if _, err := e.cfg.Run(ctx, "vgremove", "--force", "--force", "--yes", r["vg_name"]); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
}

// timed runs op and logs how long it took: the lvm latencies of this machine.
func timed[T any](t *testing.T, what string, op func() (T, error)) (T, error) {
	t.Helper()
	start := time.Now()
	v, err := op()
	t.Logf("%-28s %6.1f ms", what, float64(time.Since(start).Microseconds())/1000)
	return v, err
}

func signatures(t *testing.T, dev string) []string {
	t.Helper()
	sig, err := lvm.Signatures(t.Context(), &lvm.ExecRunner{}, dev)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func TestVGCreateExtendAndRefusals(t *testing.T) {
	e := newEnv(t, 1<<30, 1<<30, 1<<30, 1<<30, 1<<30, 1<<30)
	ctx := t.Context()
	d := func(i int) string { return e.devs[i].Path }
	// d(0), d(1): ours; d(2): another VG's; d(3): has ext4; d(4): listed
	// in the filter, never named: must stay untouched; d(5): for bad names.
	if _, err := e.cfg.Run(ctx, "vgcreate", "foreign", d(2)); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", d(3)).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}

	if _, err := timed(t, "CreateVG (pvcreate+vgcreate)", func() (any, error) {
		return nil, e.c.CreateVG(ctx, "olvg", []string{d(0)}, "t1")
	}); err != nil {
		t.Fatal(err)
	}
	vg, err := timed(t, "GetVG", func() (*lvm.VG, error) { return e.c.GetVG(ctx, "olvg") })
	if err != nil {
		t.Fatal(err)
	}
	// 1 GiB minus lvm's 1 MiB metadata area, in 4 MiB extents: 255 extents.
	if vg.Size != 255*4*mib || vg.Free != vg.Size || vg.ExtentSize != 4*mib || vg.PVCount != 1 || !slices.Equal(vg.Tags, []string{"t1"}) {
		t.Errorf("VG = %+v", vg)
	}
	if err := e.c.CreateVG(ctx, "olvg", []string{d(1)}); !errors.Is(err, lvm.ErrAlreadyExists) {
		t.Errorf("second CreateVG: %v, want ErrAlreadyExists", err)
	}
	if sig := signatures(t, d(1)); len(sig) != 0 {
		t.Errorf("refused CreateVG labelled %s: %v", d(1), sig)
	}

	added, err := timed(t, "ExtendVG", func() ([]string, error) { return e.c.ExtendVG(ctx, "olvg", []string{d(0), d(1)}) })
	if err != nil || !slices.Equal(added, []string{d(1)}) {
		t.Fatalf("ExtendVG = %v, %v; want [%s]", added, err, d(1))
	}
	if added, err := e.c.ExtendVG(ctx, "olvg", []string{d(1), d(0)}); err != nil || len(added) != 0 {
		t.Errorf("repeated ExtendVG = %v, %v; want nothing added", added, err)
	}
	if vg, _ := e.c.GetVG(ctx, "olvg"); vg == nil || vg.Size != 2*255*4*mib || vg.PVCount != 2 {
		t.Errorf("extended VG = %+v", vg)
	}
	pvs, err := timed(t, "ListPVs", func() ([]lvm.PV, error) { return e.c.ListPVs(ctx) })
	if err != nil {
		t.Fatal(err)
	}
	var ours []string
	for _, pv := range pvs {
		if pv.VG == "olvg" {
			ours = append(ours, pv.Name)
			if pv.PEStart != mib || pv.DevSize != gib {
				t.Errorf("PV %+v", pv)
			}
		}
	}
	if !slices.Equal(ours, []string{d(0), d(1)}) {
		t.Errorf("PVs of olvg = %v", ours)
	}

	refusals := []struct {
		name    string
		op      func() error
		want    error
		message string
		device  string // must keep exactly its signatures
	}{
		{"extend onto another VG's PV", func() error { _, err := e.c.ExtendVG(ctx, "olvg", []string{d(2)}); return err },
			lvm.ErrDeviceInUse, "PV of VG foreign", d(2)},
		{"create on another VG's PV", func() error { return e.c.CreateVG(ctx, "x", []string{d(5), d(2)}) },
			lvm.ErrDeviceInUse, "PV of VG foreign", d(5)},
		{"create on a filesystem", func() error { return e.c.CreateVG(ctx, "x", []string{d(3)}) },
			lvm.ErrDeviceInUse, "ext4", d(3)},
		{"extend onto a filesystem", func() error { _, err := e.c.ExtendVG(ctx, "olvg", []string{d(3)}); return err },
			lvm.ErrDeviceInUse, "ext4", d(3)},
		{"missing device", func() error { return e.c.CreateVG(ctx, "x", []string{"/dev/loop-does-not-exist"}) },
			lvm.ErrInvalidArgument, "no such file", ""},
		{"not a block device", func() error { return e.c.CreateVG(ctx, "x", []string{os.Args[0]}) },
			lvm.ErrInvalidArgument, "not a block device", ""},
		{"relative path", func() error { return e.c.CreateVG(ctx, "x", []string{"loop0"}) },
			lvm.ErrInvalidArgument, "absolute", ""},
		{"same device twice", func() error { return e.c.CreateVG(ctx, "x", []string{d(5), d(5)}) },
			lvm.ErrInvalidArgument, "same device", d(5)},
		{"invalid VG name", func() error { return e.c.CreateVG(ctx, "bad name", []string{d(5)}) },
			lvm.ErrInvalidArgument, "contains", d(5)},
		{"VG name of a /dev entry", func() error { return e.c.CreateVG(ctx, "mapper", []string{d(5)}) },
			lvm.ErrInvalidArgument, "/dev/mapper", d(5)},
		{"extend a missing VG", func() error { _, err := e.c.ExtendVG(ctx, "novg", []string{d(5)}); return err },
			lvm.ErrNotFound, "novg", d(5)},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			var before []string
			if r.device != "" {
				before = signatures(t, r.device)
			}
			err := r.op()
			if !errors.Is(err, r.want) || !strings.Contains(err.Error(), r.message) {
				t.Fatalf("err = %v, want %v mentioning %q", err, r.want, r.message)
			}
			if r.device != "" {
				if after := signatures(t, r.device); !slices.Equal(before, after) {
					t.Errorf("refused operation changed %s: signatures %v -> %v", r.device, before, after)
				}
			}
		})
	}
	if vgs, _ := e.c.ListVGs(ctx); len(vgs) != 2 {
		t.Errorf("VGs after refusals: %+v (want olvg and foreign only)", vgs)
	}
	if sig := signatures(t, d(4)); len(sig) != 0 {
		t.Errorf("unlisted %s carries %v", d(4), sig)
	}
	if sig := signatures(t, d(3)); !slices.Equal(sig, []string{"ext4"}) {
		t.Errorf("%s: %v, want its ext4 untouched", d(3), sig)
	}
}

func TestLVLifecycleAndErrors(t *testing.T) {
	e := newEnv(t, 1<<30, 1<<30)
	ctx := t.Context()
	if err := e.c.CreateVG(ctx, "ollv", []string{e.devs[0].Path, e.devs[1].Path}); err != nil {
		t.Fatal(err)
	}
	lv, err := timed(t, "CreateLV (+lvs)", func() (*lvm.LV, error) {
		return e.c.CreateLV(ctx, lvm.CreateLVOptions{VG: "ollv", Name: "pvc-a", Size: 100 * mib, Tags: []string{lvm.OwnedTag}})
	})
	if err != nil {
		t.Fatal(err)
	}
	if lv.Size != 100*mib || !lv.HasTag(lvm.OwnedTag) || lv.Layout != "linear" || lv.Segments != 1 || lv.VG != "ollv" || lv.Path != "/dev/ollv/pvc-a" {
		t.Errorf("LV = %+v", lv)
	}
	if _, err := e.c.CreateLV(ctx, lvm.CreateLVOptions{VG: "ollv", Name: "pvc-a", Size: mib}); !errors.Is(err, lvm.ErrAlreadyExists) {
		t.Errorf("duplicate CreateLV: %v, want ErrAlreadyExists", err)
	}
	_, err = e.c.CreateLV(ctx, lvm.CreateLVOptions{VG: "ollv", Name: "huge", Size: 5 * gib})
	if !errors.Is(err, lvm.ErrInsufficientSpace) || lvm.Code(err) != codes.ResourceExhausted {
		t.Errorf("oversized CreateLV: %v (code %v), want ErrInsufficientSpace/ResourceExhausted", err, lvm.Code(err))
	}
	var ce *lvm.CommandError
	if !errors.As(err, &ce) || ce.ExitCode != 5 || !slices.Contains(ce.Argv, "huge") || !strings.Contains(ce.Stderr, "nsufficient") {
		t.Errorf("CommandError = %+v", ce)
	}
	if _, err := e.c.CreateLV(ctx, lvm.CreateLVOptions{VG: "novg", Name: "a", Size: mib}); !errors.Is(err, lvm.ErrNotFound) {
		t.Errorf("CreateLV in a missing VG: %v, want ErrNotFound", err)
	}

	if lv, err := timed(t, "ExtendLV (lvs+lvextend+lvs)", func() (*lvm.LV, error) { return e.c.ExtendLV(ctx, "ollv", "pvc-a", 200*mib) }); err != nil || lv.Size != 200*mib {
		t.Errorf("ExtendLV = %+v, %v", lv, err)
	}
	if lv, err := e.c.ExtendLV(ctx, "ollv", "pvc-a", 100*mib); err != nil || lv.Size != 200*mib {
		t.Errorf("ExtendLV to a smaller size = %+v, %v; want unchanged", lv, err)
	}
	if _, err := e.c.ExtendLV(ctx, "ollv", "pvc-a", 10*gib); !errors.Is(err, lvm.ErrInsufficientSpace) {
		t.Errorf("oversized ExtendLV: %v", err)
	}
	// lvm rounds up to whole 4 MiB extents.
	if lv, err := e.c.CreateLV(ctx, lvm.CreateLVOptions{VG: "ollv", Name: "odd", Size: 5*mib + 1}); err != nil || lv.Size != 8*mib {
		t.Errorf("odd-sized LV = %+v, %v; want 8 MiB", lv, err)
	}
	// Contiguous allocation (metadata mode) cannot grow an LV that another
	// one now follows: a real limit of the loop-device path, reported as
	// insufficient space.
	if !e.cfg.FullMode {
		if _, err := e.c.ExtendLV(ctx, "ollv", "pvc-a", 300*mib); !errors.Is(err, lvm.ErrInsufficientSpace) {
			t.Errorf("contiguous ExtendLV past a neighbour: %v, want ErrInsufficientSpace", err)
		}
	}
	for name, err := range map[string]error{
		"ExtendLV missing": func() error { _, err := e.c.ExtendLV(ctx, "ollv", "nope", gib); return err }(),
		"GetLV missing":    func() error { _, err := e.c.GetLV(ctx, "ollv", "nope"); return err }(),
		"GetVG missing":    func() error { _, err := e.c.GetVG(ctx, "novg"); return err }(),
		"ListLVs missing":  func() error { _, err := e.c.ListLVs(ctx, "novg"); return err }(),
		"RemoveLV missing": e.c.RemoveLV(ctx, "ollv", "nope"),
	} {
		if !errors.Is(err, lvm.ErrNotFound) || lvm.Code(err) != codes.NotFound {
			t.Errorf("%s: %v, want ErrNotFound", name, err)
		}
	}

	if _, err := timed(t, "AddTags", func() (any, error) { return nil, e.c.AddTags(ctx, "ollv", "pvc-a", "x", lvm.ProtectedTag) }); err != nil {
		t.Fatal(err)
	}
	if lv, _ := e.c.GetLV(ctx, "ollv", "pvc-a"); !slices.Equal(lv.Tags, []string{lvm.OwnedTag, lvm.ProtectedTag, "x"}) {
		t.Errorf("tags = %v", lv.Tags)
	}
	if err := e.c.RemoveLV(ctx, "ollv", "pvc-a"); !errors.Is(err, lvm.ErrInUse) {
		t.Errorf("RemoveLV of a protected LV: %v, want ErrInUse", err)
	}
	if err := e.c.RemoveTags(ctx, "ollv", "pvc-a", "x", lvm.ProtectedTag); err != nil {
		t.Fatal(err)
	}
	if lv, _ := e.c.GetLV(ctx, "ollv", "pvc-a"); !slices.Equal(lv.Tags, []string{lvm.OwnedTag}) {
		t.Errorf("tags after RemoveTags = %v", lv.Tags)
	}

	// Striping works in metadata mode too.
	st, err := timed(t, "CreateLV striped", func() (*lvm.LV, error) {
		return e.c.CreateLV(ctx, lvm.CreateLVOptions{VG: "ollv", Name: "striped", Size: 200 * mib, Striped: true, Alloc: lvm.AllocNormal})
	})
	if err != nil || st.Layout != "striped" {
		t.Fatalf("striped LV = %+v, %v", st, err)
	}
	if _, err := timed(t, "RemoveLV (lvs+lvremove)", func() (any, error) { return nil, e.c.RemoveLV(ctx, "ollv", "pvc-a") }); err != nil {
		t.Fatal(err)
	}
	lvs, err := timed(t, "ListLVs", func() ([]lvm.LV, error) { return e.c.ListLVs(ctx, "ollv") })
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range lvs {
		names = append(names, l.Name)
	}
	if !slices.Equal(names, []string{"odd", "striped"}) {
		t.Errorf("LVs after removal = %v", names)
	}
	if _, err := timed(t, "ListVGs", func() ([]lvm.VG, error) { return e.c.ListVGs(ctx) }); err != nil {
		t.Fatal(err)
	}
}

// TestNameRulesAgreeWithLVM asks lvm itself (vgcreate/lvcreate --test, which
// changes nothing) about every name of the table the validation is tested
// with, so our rules cannot drift from lvm's.
func TestNameRulesAgreeWithLVM(t *testing.T) {
	e := newEnv(t, 256<<20, 256<<20)
	ctx := t.Context()
	if err := e.c.CreateVG(ctx, "olnames", []string{e.devs[0].Path}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cfg.Run(ctx, "pvcreate", e.devs[1].Path); err != nil {
		t.Fatal(err)
	}
	for _, name := range lvm.NameCasesForTest() {
		lvmVG := lvmAccepts(e.cfg, ctx, "vgcreate", "--test", name, e.devs[1].Path)
		lvmLV := lvmAccepts(e.cfg, ctx, "lvcreate", "--test", "--name", name, "--size", "4m", "olnames")
		if ours := lvm.ValidateVGName(name) == nil; ours != lvmVG {
			t.Errorf("VG name %q: we say ok=%v, lvm says ok=%v", name, ours, lvmVG)
		}
		if ours := lvm.ValidateLVName(name) == nil; ours != lvmLV {
			t.Errorf("LV name %q: we say ok=%v, lvm says ok=%v", name, ours, lvmLV)
		}
	}
	for _, tag := range []string{lvm.OwnedTag, "a.b_c+d-e/f=g!h:i&j#k", "has space", "comma,x", "quote\""} {
		lvmOK := lvmAccepts(e.cfg, ctx, "vgchange", "--test", "--addtag", tag, "olnames")
		if ours := lvm.ValidateTag(tag) == nil; ours != lvmOK {
			t.Errorf("tag %q: we say ok=%v, lvm says ok=%v", tag, ours, lvmOK)
		}
	}
}

func lvmAccepts(cfg *loopvg.Config, ctx context.Context, args ...string) bool {
	_, err := cfg.Run(ctx, args...)
	return err == nil
}

// TestLoopActivator exposes LVs as loop devices over their extents and checks
// the bytes land on the PV where lvm says the LV is.
func TestLoopActivator(t *testing.T) {
	e := newEnv(t, 1<<30)
	ctx := t.Context()
	pv := e.devs[0].Path
	if err := e.c.CreateVG(ctx, "olloop", []string{pv}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"first", "second"} {
		if _, err := e.c.CreateLV(ctx, lvm.CreateLVOptions{VG: "olloop", Name: n, Size: 64 * mib, Alloc: lvm.AllocContiguous}); err != nil {
			t.Fatal(err)
		}
	}
	act := lvm.NewLoopActivator(e.c, filepath.Join(t.TempDir(), "loop.lock"))
	t.Cleanup(func() {
		for _, n := range []string{"first", "second"} {
			if err := act.Deactivate(context.Background(), "olloop", n); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})

	dev, err := timed(t, "LoopActivator.Activate", func() (string, error) { return act.Activate(ctx, "olloop", "second") })
	if err != nil {
		t.Fatal(err)
	}
	if got := deviceSize(t, dev); got != 64*mib {
		t.Errorf("%s is %d bytes, want 64 MiB", dev, got)
	}
	ext, err := e.c.LinearExtent(ctx, "olloop", "second")
	if err != nil {
		t.Fatal(err)
	}
	// "second" starts after "first": 1 MiB metadata + 16 extents.
	if ext.Offset != mib+64*mib || ext.PV != pv {
		t.Errorf("extent = %+v", ext)
	}
	pattern := []byte("open-local LV data at its extent")
	loopvg.WriteAt(t, dev, pattern, 0)
	loopvg.WriteAt(t, dev, pattern, int64(64*mib)-int64(len(pattern)))
	if got := loopvg.ReadAt(t, pv, int64(ext.Offset), len(pattern)); string(got) != string(pattern) {
		t.Fatalf("PV at the LV's offset holds %q, want %q", got, pattern)
	}

	again, err := act.Activate(ctx, "olloop", "second")
	if err != nil || again != dev {
		t.Errorf("second Activate = %s, %v; want %s (reuse)", again, err, dev)
	}
	// Concurrent activations agree on one device.
	results := make(chan string, 4)
	for range 4 {
		go func() {
			p, err := act.Activate(ctx, "olloop", "second")
			if err != nil {
				p = err.Error()
			}
			results <- p
		}()
	}
	for range 4 {
		if p := <-results; p != dev {
			t.Errorf("concurrent Activate = %s, want %s", p, dev)
		}
	}
	if n := attachedAt(t, pv, ext.Offset); n != 1 {
		t.Errorf("%d loop devices over the LV, want 1", n)
	}

	if _, err := e.c.ExtendLV(ctx, "olloop", "second", 128*mib); err != nil {
		t.Fatal(err)
	}
	grown, err := timed(t, "Activate after ExtendLV", func() (string, error) { return act.Activate(ctx, "olloop", "second") })
	if err != nil || grown != dev {
		t.Fatalf("Activate after extend = %s, %v", grown, err)
	}
	if got := deviceSize(t, dev); got != 128*mib {
		t.Errorf("after extend %s is %d bytes, want 128 MiB", dev, got)
	}
	if got := loopvg.ReadAt(t, dev, 0, len(pattern)); string(got) != string(pattern) {
		t.Errorf("data lost on grow: %q", got)
	}

	if err := lvm.WipeEdges(dev); err != nil {
		t.Fatal(err)
	}
	if got := loopvg.ReadAt(t, pv, int64(ext.Offset), len(pattern)); string(got) == string(pattern) {
		t.Error("WipeEdges left the head")
	}

	if _, err := act.Activate(ctx, "olloop", "missing"); !errors.Is(err, lvm.ErrNotFound) {
		t.Errorf("Activate of a missing LV: %v", err)
	}

	if _, err := timed(t, "LoopActivator.Deactivate", func() (any, error) { return nil, act.Deactivate(ctx, "olloop", "second") }); err != nil {
		t.Fatal(err)
	}
	if n := attachedAt(t, pv, ext.Offset); n != 0 {
		t.Errorf("%d loop devices left over the LV", n)
	}
	if err := act.Deactivate(ctx, "olloop", "second"); err != nil {
		t.Errorf("repeated Deactivate: %v", err)
	}
	if err := act.Deactivate(ctx, "olloop", "missing"); err != nil {
		t.Errorf("Deactivate of a missing LV: %v", err)
	}
	// The PV's own loop device (offset 0 on its file) was never touched.
	if _, err := os.Stat(filepath.Join("/sys/block", filepath.Base(pv), "loop", "backing_file")); err != nil {
		t.Errorf("PV loop device %s detached: %v", pv, err)
	}
}

func TestLoopActivatorRefusesMultiSegmentLV(t *testing.T) {
	e := newEnv(t, 512<<20, 512<<20)
	ctx := t.Context()
	if err := e.c.CreateVG(ctx, "olseg", []string{e.devs[0].Path, e.devs[1].Path}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.CreateLV(ctx, lvm.CreateLVOptions{VG: "olseg", Name: "st", Size: 64 * mib, Stripes: 2, Alloc: lvm.AllocNormal}); err != nil {
		t.Fatal(err)
	}
	act := lvm.NewLoopActivator(e.c, "")
	if _, err := act.Activate(ctx, "olseg", "st"); !errors.Is(err, lvm.ErrInvalidArgument) || !strings.Contains(err.Error(), "striped") {
		t.Errorf("Activate of a striped LV: %v, want ErrInvalidArgument naming the layout", err)
	}
}

func deviceSize(t *testing.T, dev string) uint64 {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := f.Seek(0, 2)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(n)
}

// attachedAt counts loop devices backed by pv at offset.
func attachedAt(t *testing.T, pv string, offset uint64) int {
	t.Helper()
	out, err := exec.Command("losetup", "--noheadings", "--output", "OFFSET", "--associated", pv).Output()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range strings.Fields(string(out)) {
		if f == strconv.FormatUint(offset, 10) {
			n++
		}
	}
	return n
}
