/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package loopvg builds the node-side test environment for the LVM layer: a
// volume group on loop devices backed by sparse files, managed through a
// private LVM configuration directory (LVM_SYSTEM_DIR) whose filter accepts
// only those loop devices, so lvm never sees, scans or touches any other disk.
//
// Two modes, chosen from the kernel (test/capability):
//   - metadata mode (no device-mapper, the CI host): `activation = 0`; every
//     lvm command that only edits metadata works, nothing is activated.
//     AttachLinearLV exposes a linear LV's data as a loop device instead.
//   - full mode (device-mapper, the test VM): normal activation, with udev
//     disabled (there is no udevd), so /dev/<vg>/<lv>, snapshots and thin
//     pools are real.
//
// There are two entry points: the testing helpers (New, NewDevices,
// NewConfig) that tie teardown to t.Cleanup, and Up/Down, which take a
// context, return errors and record everything they create in a state file,
// so the demo CLI (hack/loopvg) can destroy an environment from another
// process. Both share one implementation.
package loopvg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
)

// Device is a loop device attached to a backing file.
type Device struct {
	// Path is the loop device, e.g. /dev/loop3.
	Path string `json:"path"`
	// File is the backing file (or block device) the loop device reads.
	File string `json:"file"`
	// Size is the size of the loop device in bytes.
	Size int64 `json:"size"`
	// Offset is where the loop device starts in File (0 for whole files).
	Offset int64 `json:"offset,omitempty"`
}

// CreateSparseFile creates a new file of size bytes that occupies no disk
// space until written. It refuses to overwrite an existing file, since
// teardown later deletes the files this package created.
func CreateSparseFile(path string, size int64) error {
	if size <= 0 {
		return fmt.Errorf("sparse file %s: size %d must be positive", path, size)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// Attach attaches file to the first free loop device.
func Attach(ctx context.Context, file string) (Device, error) {
	return attach(ctx, file, 0, 0)
}

// attach runs `losetup -f --show [--offset O --sizelimit S] file`; losetup
// itself retries when another process grabs the same free device.
func attach(ctx context.Context, file string, offset, sizelimit int64) (Device, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return Device{}, err
	}
	args := []string{"--find", "--show"}
	if offset > 0 {
		args = append(args, "--offset", strconv.FormatInt(offset, 10))
	}
	if sizelimit > 0 {
		args = append(args, "--sizelimit", strconv.FormatInt(sizelimit, 10))
	}
	args = append(args, abs)
	out, err := run(ctx, nil, "losetup", args...)
	if err != nil {
		return Device{}, err
	}
	dev := Device{Path: strings.TrimSpace(string(out)), File: abs, Offset: offset}
	if !strings.HasPrefix(dev.Path, "/dev/loop") {
		return Device{}, fmt.Errorf("losetup printed %q, not a loop device", dev.Path)
	}
	if dev.Size, err = loopSize(dev.Path); err != nil {
		// Do not leak the device we just attached.
		return Device{}, errors.Join(err, detachIfOurs(context.WithoutCancel(ctx), dev))
	}
	return dev, nil
}

// Detach detaches d if, and only if, it is still attached to d.File at
// d.Offset. A device that was detached already (or detached and then reused
// by someone else) is left alone: teardown must never touch what it did not
// create.
func (d Device) Detach(ctx context.Context) error {
	return detachIfOurs(ctx, d)
}

func detachIfOurs(ctx context.Context, d Device) error {
	ours, err := attachedTo(d)
	if err != nil || !ours {
		return err
	}
	_, err = run(ctx, nil, "losetup", "--detach", d.Path)
	return err
}

// attachedTo reads the loop device's sysfs attributes (no exec, no udev).
func attachedTo(d Device) (bool, error) {
	sys := filepath.Join("/sys/block", filepath.Base(d.Path), "loop")
	b, err := os.ReadFile(filepath.Join(sys, "backing_file"))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil // not attached (the loop/ directory exists only while bound)
	}
	if err != nil {
		return false, err
	}
	// The kernel appends " (deleted)" once the backing file is unlinked.
	backing := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
	if backing != d.File {
		return false, nil
	}
	b, err = os.ReadFile(filepath.Join(sys, "offset"))
	if err != nil {
		return false, err
	}
	off, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return false, fmt.Errorf("%s offset: %w", d.Path, err)
	}
	return off == d.Offset, nil
}

// loopSize reads the device size from sysfs (in 512-byte sectors).
func loopSize(dev string) (int64, error) {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "size"))
	if err != nil {
		return 0, err
	}
	sectors, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s size: %w", dev, err)
	}
	return sectors * 512, nil
}

// LoopDevicesOf lists loop devices currently attached to file (losetup -j).
// Tests use it to prove teardown left nothing behind.
func LoopDevicesOf(ctx context.Context, file string) ([]string, error) {
	out, err := run(ctx, nil, "losetup", "--noheadings", "--output", "NAME", "--associated", file)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(out)), nil
}

// ParseSize parses sizes as lvm and losetup write them: a number with an
// optional binary suffix K, M, G, T (optionally followed by "i" and/or "B";
// all powers of 1024, as in lvm's -L 2G).
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(t, "B")
	t = strings.TrimSuffix(t, "I")
	mult := int64(1)
	if n := len(t); n > 0 && !unicode.IsDigit(rune(t[n-1])) {
		shift, ok := map[byte]uint{'K': 10, 'M': 20, 'G': 30, 'T': 40}[t[n-1]]
		if !ok {
			return 0, fmt.Errorf("size %q: unknown suffix", s)
		}
		mult, t = 1<<shift, t[:n-1]
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("size %q: want a positive integer with optional K/M/G/T suffix", s)
	}
	if v > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return v * mult, nil
}

// run executes name with args (never through a shell) and returns stdout.
// The error names the command and carries stderr, which is what explains an
// lvm or losetup failure.
func run(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), &CommandError{Args: append([]string{name}, args...), Err: err, Stderr: stderr.String()}
	}
	return stdout.Bytes(), nil
}

// CommandError is a failed losetup or lvm command.
type CommandError struct {
	Args   []string
	Err    error
	Stderr string
}

func (e *CommandError) Error() string {
	return fmt.Sprintf("%s: %v: %s", strings.Join(e.Args, " "), e.Err, strings.TrimSpace(e.Stderr))
}

func (e *CommandError) Unwrap() error { return e.Err }
