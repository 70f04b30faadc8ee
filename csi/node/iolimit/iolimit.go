/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package iolimit throttles a volume's block device inside a pod's cgroup:
// cgroup v1 blkio.throttle.{read,write}_{bps,iops}_device and cgroup v2
// io.max, for kubelet's cgroupfs and systemd cgroup layouts.
//
// The pod's cgroup is found the way kubelet names it (pkg/kubelet/cm:
// <cgroup-root>/kubepods[/<qos>]/pod<uid>, systemd-expanded for the systemd
// driver) from the pod UID kubelet passes to NodePublishVolume
// (podInfoOnMount), probing the three QoS classes: a UID is unique, so
// exactly one exists, and no API call is needed.
//
// cgroup v1 throttling is not hierarchical (blk-throttle applies a v1 limit
// to the tasks of that very cgroup only; measured on this project's CI
// kernel), while container runtimes put container processes in child
// cgroups of the pod's (kubepods/besteffort/pod<uid>/<container>). So on
// v1 the Manager writes the limit into the pod cgroup and every cgroup below
// it, and watches the pod cgroup (inotify) to throttle containers created
// after the volume was published. cgroup v2 io.max is hierarchical: the pod
// cgroup alone suffices.
//
// Files are written with Go file IO, one whole line per write(2), as the
// kernel parses each write separately.
package iolimit

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Limits are per-device throughput limits; 0 means unlimited.
type Limits struct {
	ReadBPS, WriteBPS   uint64
	ReadIOPS, WriteIOPS uint64
}

// Symmetric is open-local's StorageClass semantics: bps and iops each limit
// reads and writes alike.
func Symmetric(bps, iops uint64) Limits {
	return Limits{ReadBPS: bps, WriteBPS: bps, ReadIOPS: iops, WriteIOPS: iops}
}

// IsZero reports whether no limit is set.
func (l Limits) IsZero() bool { return l == Limits{} }

func (l Limits) String() string {
	return fmt.Sprintf("rbps=%s wbps=%s riops=%s wiops=%s", v2Value(l.ReadBPS), v2Value(l.WriteBPS), v2Value(l.ReadIOPS), v2Value(l.WriteIOPS))
}

// Device is a block device number.
type Device struct{ Major, Minor uint32 }

// String is the MAJ:MIN form cgroup files use.
func (d Device) String() string { return fmt.Sprintf("%d:%d", d.Major, d.Minor) }

// DeviceFromRdev splits a dev_t with the kernel's encoding (minor numbers
// above 255 live in the high bits: dev_t/256 is not the major).
func DeviceFromRdev(rdev uint64) Device {
	return Device{Major: unix.Major(rdev), Minor: unix.Minor(rdev)}
}

// ParseDevice parses MAJ:MIN.
func ParseDevice(s string) (Device, error) {
	maj, min, ok := strings.Cut(s, ":")
	if !ok {
		return Device{}, fmt.Errorf("device %q: want MAJ:MIN", s)
	}
	a, err1 := strconv.ParseUint(maj, 10, 32)
	b, err2 := strconv.ParseUint(min, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return Device{}, fmt.Errorf("device %q: %w", s, err)
	}
	return Device{Major: uint32(a), Minor: uint32(b)}, nil
}

// DeviceOf returns the block device whose IO a published volume's path
// reaches: for a block device node (a raw block volume's target file is a
// bind mount of one) the device itself; for anything else the device of the
// filesystem holding it (a mounted volume's target). Either is the device
// the IO is submitted to — the loop device over an LV's extents on kernels
// without device-mapper, the LV's dm device otherwise — not the PV below it.
func DeviceOf(path string) (Device, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return Device{}, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		return DeviceFromRdev(st.Rdev), nil
	}
	return DeviceFromRdev(st.Dev), nil
}

// Version is the cgroup version of the hierarchy holding the IO controller.
type Version int

// cgroup versions.
const (
	V1 Version = 1
	V2 Version = 2
)

// v1 throttle files and the limit each holds.
var v1Files = []struct {
	name  string
	field func(*Limits) *uint64
}{
	{"blkio.throttle.read_bps_device", func(l *Limits) *uint64 { return &l.ReadBPS }},
	{"blkio.throttle.write_bps_device", func(l *Limits) *uint64 { return &l.WriteBPS }},
	{"blkio.throttle.read_iops_device", func(l *Limits) *uint64 { return &l.ReadIOPS }},
	{"blkio.throttle.write_iops_device", func(l *Limits) *uint64 { return &l.WriteIOPS }},
}

// v2File is cgroup v2's IO limit file.
const v2File = "io.max"

// FileLine is one write into one cgroup file.
type FileLine struct {
	File, Line string
}

// Lines returns what to write into a cgroup's files to set l on dev (all
// four v1 files, 0 clearing a limit; or the single io.max line, "max"
// clearing one). Writing the lines for the zero Limits removes the device's
// limits.
func Lines(v Version, dev Device, l Limits) []FileLine {
	if v == V2 {
		return []FileLine{{v2File, fmt.Sprintf("%s rbps=%s wbps=%s riops=%s wiops=%s", dev,
			v2Value(l.ReadBPS), v2Value(l.WriteBPS), v2Value(l.ReadIOPS), v2Value(l.WriteIOPS))}}
	}
	out := make([]FileLine, 0, len(v1Files))
	for _, f := range v1Files {
		out = append(out, FileLine{f.name, fmt.Sprintf("%s %d", dev, *f.field(&l))})
	}
	return out
}

func v2Value(n uint64) string {
	if n == 0 {
		return "max"
	}
	return strconv.FormatUint(n, 10)
}

// Read returns the limits a cgroup directory holds for dev, as the kernel
// reports them (absent entries are 0).
func Read(v Version, readFile func(string) ([]byte, error), dir string, dev Device) (Limits, error) {
	var l Limits
	if v == V2 {
		b, err := readFile(dir + "/" + v2File)
		if err != nil {
			return l, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || f[0] != dev.String() {
				continue
			}
			for _, kv := range f[1:] {
				k, val, _ := strings.Cut(kv, "=")
				n, _ := strconv.ParseUint(val, 10, 64) // "max" → 0
				switch k {
				case "rbps":
					l.ReadBPS = n
				case "wbps":
					l.WriteBPS = n
				case "riops":
					l.ReadIOPS = n
				case "wiops":
					l.WriteIOPS = n
				}
			}
		}
		return l, nil
	}
	for _, f := range v1Files {
		b, err := readFile(dir + "/" + f.name)
		if err != nil {
			return l, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if fs := strings.Fields(line); len(fs) == 2 && fs[0] == dev.String() {
				*f.field(&l), _ = strconv.ParseUint(fs[1], 10, 64)
			}
		}
	}
	return l, nil
}
