/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package lvm_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/open-local/open-local/lvm"
	"github.com/open-local/open-local/test/loopvg"
)

// imib is a MiB as the offsets and sizes here count.
const imib = int64(mib)

// zeroEnv is a VG whose PV holds a pattern (an earlier tenant's data) over
// its extents, and an activated LV of size bytes on them.
func zeroEnv(t testing.TB, vg string, size int64) (dev string, pattern []byte) {
	t.Helper()
	e := newEnv(t, size+64*imib)
	ctx := context.Background()
	pv := e.devs[0].Path
	if err := e.c.CreateVG(ctx, vg, []string{pv}); err != nil {
		t.Fatal(err)
	}
	pattern = bytes.Repeat([]byte("tenant-A"), int(size)/8)
	loopvg.WriteAt(t, pv, pattern, imib) // pe_start is 1 MiB
	if _, err := e.c.CreateLV(ctx, lvm.CreateLVOptions{VG: vg, Name: "lv", Size: uint64(size), Alloc: lvm.AllocContiguous}); err != nil {
		t.Fatal(err)
	}
	if ext, err := e.c.LinearExtent(ctx, vg, "lv"); err != nil || ext.Offset != mib {
		t.Fatalf("LV extent %+v, %v: want it at 1 MiB, over the pattern", ext, err)
	}
	act := lvm.NewLoopActivator(e.c, filepath.Join(t.TempDir(), "loop.lock"))
	t.Cleanup(func() { _ = act.Deactivate(context.Background(), vg, "lv") })
	dev, err := act.Activate(ctx, vg, "lv")
	if err != nil {
		t.Fatal(err)
	}
	return dev, pattern
}

// ZeroDevice zeroes from its offset to the end and leaves what comes
// before alone; a cancelled context stops it with an error.
func TestZeroDevice(t *testing.T) {
	const size = 96 * imib
	for _, tt := range []struct {
		name     string
		from     int64
		cancel   bool
		wantZero bool // the tail from "from" reads zeros
	}{
		{"all of it", 0, false, true},
		{"the part an extension added", 40 * imib, false, true},
		{"cancelled", 0, true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dev, pattern := zeroEnv(t, "olzero", size)
			ctx, cancel := context.WithCancel(t.Context())
			if tt.cancel {
				cancel()
			}
			defer cancel()
			start := time.Now()
			err := lvm.ZeroDevice(ctx, dev, tt.from)
			if tt.cancel != (err != nil) {
				t.Fatalf("ZeroDevice: %v (cancelled: %v)", err, tt.cancel)
			}
			if err == nil {
				t.Logf("zeroed %d MiB in %v: %.0f MB/s", (size-tt.from)/imib, time.Since(start), float64(size-tt.from)/1e6/time.Since(start).Seconds())
			}
			got := loopvg.ReadAt(t, dev, 0, int(size))
			if !bytes.Equal(got[:tt.from], pattern[:tt.from]) {
				t.Errorf("the first %d bytes changed", tt.from)
			}
			tail := got[tt.from:]
			allZero := !slices.ContainsFunc(tail, func(b byte) bool { return b != 0 })
			if allZero != tt.wantZero {
				t.Errorf("bytes from %d all zero: %v, want %v (they start %q)", tt.from, allZero, tt.wantZero, tail[:8])
			}
		})
	}
}

// BenchmarkZeroDevice measures zeroing a new LV (go test -bench ZeroDevice
// -run XXX ./lvm/): BLKZEROOUT as ZeroDevice does it, and plain writes of
// zeros, which is what a device without WRITE ZEROES costs.
func BenchmarkZeroDevice(b *testing.B) {
	const size = 512 * imib
	b.Run("BLKZEROOUT", func(b *testing.B) {
		dev, _ := zeroEnv(b, "olzerob", size)
		b.SetBytes(size)
		for b.Loop() {
			if err := lvm.ZeroDevice(context.Background(), dev, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("write", func(b *testing.B) {
		dev, _ := zeroEnv(b, "olzerow", size)
		buf := make([]byte, 4*imib)
		b.SetBytes(size)
		for b.Loop() {
			f, err := os.OpenFile(dev, os.O_WRONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			for off := int64(0); off < size; off += int64(len(buf)) {
				if _, err := f.WriteAt(buf, off); err != nil {
					b.Fatal(err)
				}
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	})
}
