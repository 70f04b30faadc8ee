/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package lvm

import (
	"context"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// zeroChunk is how much one BLKZEROOUT call zeroes: small enough that a
// cancelled context (agent shutdown) stops the work within a second or so,
// large enough that the syscalls cost nothing.
const zeroChunk = 256 << 20

// ZeroDevice overwrites a new thick LV's device with zeros from byte from
// to its end (0: all of it; after an lvextend, the old size), so that a raw
// block reader of the volume cannot read the blocks of the LV that held
// these extents before: lvcreate zeroes only the first 4 KiB (--zero) and
// wipes known signatures, never the data. Only ever call it on the device
// of an LV (or the part of it) that was just allocated for the caller.
func ZeroDevice(ctx context.Context, devicePath string, from int64) error {
	f, err := os.OpenFile(devicePath, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	for off := max(from, 0); off < size; off += zeroChunk {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("zero %s: stopped at %d of %d bytes: %w", devicePath, off, size, err)
		}
		n := min(zeroChunk, size-off)
		if err := ZeroRange(f, off, n); err != nil {
			return fmt.Errorf("zero %s at %d (%d bytes): %w", devicePath, off, n, err)
		}
	}
	return f.Sync()
}

// ZeroRange asks the block device f to zero [off, off+n) (BLKZEROOUT; both
// multiples of 512): the kernel offloads it where it can (WRITE ZEROES, a
// hole in a loop device's backing file) and otherwise writes zero pages.
func ZeroRange(f *os.File, off, n int64) error {
	r := [2]uint64{uint64(off), uint64(n)}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r))); errno != 0 {
		return errno
	}
	return nil
}
