/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package volumes

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"

	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/loopvg"
)

// copyBlocks between real block devices (loop devices): data blocks are
// copied, zero blocks are zeroed on the device (thick target: stale data
// there must not survive) or skipped (thin target), and only the first
// total bytes are touched.
func TestCopyBlocks(t *testing.T) {
	capability.Require(t, capability.Root, capability.LoopDevices)
	const size = 24 << 20
	for _, tt := range []struct {
		name      string
		skipZeros bool
		// wantWritten is how many bytes go through write(2).
		wantWritten int64
	}{
		{name: "thick target", wantWritten: 2 * copyBufferSize},
		{name: "thin target", skipZeros: true, wantWritten: 2 * copyBufferSize},
	} {
		t.Run(tt.name, func(t *testing.T) {
			devs := loopvg.NewDevices(t, size, size)
			src, dst := devs[0].Path, devs[1].Path
			// Source: data in blocks 0 and 3, zeros elsewhere.
			data := make([]byte, 2*copyBufferSize)
			if _, err := rand.Read(data); err != nil {
				t.Fatal(err)
			}
			loopvg.WriteAt(t, src, data[:copyBufferSize], 0)
			loopvg.WriteAt(t, src, data[copyBufferSize:], 3*copyBufferSize)
			// Target: stale data everywhere.
			stale := bytes.Repeat([]byte{0xAB}, size)
			loopvg.WriteAt(t, dst, stale, 0)

			total := int64(5 * copyBufferSize)
			j := &copyJob{}
			if err := copyBlocks(context.Background(), src, dst, total, tt.skipZeros, j); err != nil {
				t.Fatal(err)
			}
			if j.copied.Load() != total || j.wroteBytes.Load() != tt.wantWritten {
				t.Errorf("copied %d, written %d; want %d, %d", j.copied.Load(), j.wroteBytes.Load(), total, tt.wantWritten)
			}
			got := loopvg.ReadAt(t, dst, 0, size)
			want := loopvg.ReadAt(t, src, 0, size)
			if tt.skipZeros {
				// A fresh thin LV reads zeros where nothing was written;
				// this loop device does not, which shows what was skipped.
				copy(want[copyBufferSize:3*copyBufferSize], stale)
				copy(want[4*copyBufferSize:5*copyBufferSize], stale)
			}
			copy(want[total:], stale) // beyond total: untouched
			if !bytes.Equal(got, want) {
				t.Error("target differs from what the copy should leave")
			}
		})
	}

	// Cancelled: it stops and says so.
	devs := loopvg.NewDevices(t, size, size)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := copyBlocks(ctx, devs[0].Path, devs[1].Path, size, false, &copyJob{}); err == nil {
		t.Error("a cancelled copy succeeded")
	}
}

func BenchmarkCopyBlocks(b *testing.B) {
	capability.Require(b, capability.Root, capability.LoopDevices)
	const size = 64 << 20
	devs := loopvg.NewDevices(b, size, size)
	data := make([]byte, size/2)
	if _, err := rand.Read(data); err != nil {
		b.Fatal(err)
	}
	loopvg.WriteAt(b, devs[0].Path, data, 0) // half data, half zeros
	b.SetBytes(size)
	for b.Loop() {
		if err := copyBlocks(context.Background(), devs[0].Path, devs[1].Path, size, false, &copyJob{}); err != nil {
			b.Fatal(err)
		}
	}
}
