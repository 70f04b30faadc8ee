/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package capability

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/open-local/open-local/test/mountinfo"
)

// probeTimeout bounds each probe command: a hung tool must not hang every test.
const probeTimeout = 15 * time.Second

// capSysResourceBit is CAP_SYS_RESOURCE's number in linux/capability.h.
const capSysResourceBit = 24

// detectors maps each capability to its probe. Probes never modify the machine.
var detectors = map[Capability]func() (bool, string){
	Root:           detectRoot,
	LoopDevices:    detectLoop,
	LVM:            detectLVM,
	DeviceMapper:   detectDeviceMapper,
	CapSysResource: detectCapSysResource,
	CgroupV1Blkio:  detectCgroupV1Blkio,
	CgroupV2IO:     detectCgroupV2IO,
	XFS:            func() (bool, string) { return detectFilesystem("xfs", "mkfs.xfs") },
	Ext4:           func() (bool, string) { return detectFilesystem("ext4", "mkfs.ext4") },
	VM:             detectVM,
	Prometheus:     detectPrometheus,
}

func detectRoot() (bool, string) {
	if uid := os.Geteuid(); uid != 0 {
		return false, fmt.Sprintf("effective uid is %d, not 0", uid)
	}
	return true, "effective uid 0"
}

func detectLoop() (bool, string) {
	out, err := probe("losetup", "-f")
	if err != nil {
		return false, err.Error()
	}
	if !strings.HasPrefix(out, "/dev/loop") {
		return false, fmt.Sprintf("losetup -f printed %q", out)
	}
	return true, "losetup -f found " + out
}

func detectLVM() (bool, string) {
	// lvm prints fd-leak warnings when the parent (go test) holds fds open.
	out, err := probeEnv([]string{"LVM_SUPPRESS_FD_WARNINGS=1"}, "lvm", "version")
	if err != nil {
		return false, err.Error()
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "LVM version") {
			return true, strings.Join(strings.Fields(l), " ")
		}
	}
	return false, fmt.Sprintf("lvm version printed no version: %q", out)
}

// detectDeviceMapper demands every layer, because each one alone has misled:
// a /dev/mapper/control node can exist with no driver behind it, and the
// driver can be present while dmsetup is missing.
func detectDeviceMapper() (bool, string) {
	for _, f := range []string{"/proc/misc", "/proc/devices"} {
		b, err := os.ReadFile(f)
		if err != nil {
			return false, err.Error()
		}
		if !procListsName(string(b), "device-mapper") {
			return false, f + " does not list device-mapper (kernel has no dm-mod)"
		}
	}
	if fi, err := os.Stat("/dev/mapper/control"); err != nil {
		return false, err.Error()
	} else if fi.Mode()&os.ModeCharDevice == 0 {
		return false, "/dev/mapper/control is not a character device"
	}
	out, err := probe("dmsetup", "version")
	if err != nil {
		return false, err.Error()
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "Driver version:") {
			return true, "dmsetup: " + strings.Join(strings.Fields(l), " ")
		}
	}
	return false, fmt.Sprintf("dmsetup version printed no driver version: %q", out)
}

// procListsName reports whether a /proc/misc or /proc/devices style listing
// ("<number> <name>" per line) contains name.
func procListsName(content, name string) bool {
	for _, l := range strings.Split(content, "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && f[1] == name {
			return true
		}
	}
	return false
}

func detectCapSysResource() (bool, string) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false, err.Error()
	}
	ok, err := hasEffectiveCap(string(b), capSysResourceBit)
	if err != nil {
		return false, err.Error()
	}
	if !ok {
		return false, "CAP_SYS_RESOURCE not in CapEff of /proc/self/status (online ext4 resize fails with EPERM)"
	}
	return true, "CAP_SYS_RESOURCE in CapEff"
}

// hasEffectiveCap parses the CapEff line of /proc/<pid>/status.
func hasEffectiveCap(status string, bit uint) (bool, error) {
	for _, l := range strings.Split(status, "\n") {
		v, ok := strings.CutPrefix(l, "CapEff:")
		if !ok {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return false, fmt.Errorf("parse CapEff %q: %w", strings.TrimSpace(v), err)
		}
		return mask&(1<<bit) != 0, nil
	}
	return false, errors.New("no CapEff line in status")
}

func detectCgroupV1Blkio() (bool, string) {
	ms, err := mountinfo.Read()
	if err != nil {
		return false, err.Error()
	}
	return cgroupV1BlkioIn(ms, fileExists)
}

// cgroupV1BlkioIn finds a cgroup v1 hierarchy with the blkio controller whose
// throttle files exist (they are missing when the kernel lacks
// CONFIG_BLK_DEV_THROTTLING even though blkio is mounted).
func cgroupV1BlkioIn(ms []mountinfo.Mount, exists func(string) bool) (bool, string) {
	for _, m := range ms {
		if m.FSType != "cgroup" || !slices.Contains(m.SuperOptions, "blkio") {
			continue
		}
		f := filepath.Join(m.Point, "blkio.throttle.write_bps_device")
		if exists(f) {
			return true, f
		}
		return false, "blkio mounted at " + m.Point + " but " + f + " is missing (no blk-throttle)"
	}
	return false, "no cgroup v1 hierarchy with the blkio controller is mounted"
}

func detectCgroupV2IO() (bool, string) {
	ms, err := mountinfo.Read()
	if err != nil {
		return false, err.Error()
	}
	return cgroupV2IOIn(ms, os.ReadFile)
}

// cgroupV2IOIn finds a cgroup2 mount whose cgroup.controllers offers io. On
// hybrid hosts cgroup2 is often mounted with no controllers at all (they are
// bound to v1 hierarchies), which is why the mount alone proves nothing.
func cgroupV2IOIn(ms []mountinfo.Mount, readFile func(string) ([]byte, error)) (bool, string) {
	var seen []string
	for _, m := range ms {
		if m.FSType != "cgroup2" {
			continue
		}
		b, err := readFile(filepath.Join(m.Point, "cgroup.controllers"))
		if err != nil {
			seen = append(seen, fmt.Sprintf("%s: %v", m.Point, err))
			continue
		}
		if slices.Contains(strings.Fields(string(b)), "io") {
			return true, "io controller at " + m.Point
		}
		seen = append(seen, fmt.Sprintf("%s offers only %q", m.Point, strings.TrimSpace(string(b))))
	}
	if len(seen) == 0 {
		return false, "no cgroup2 mount"
	}
	return false, "no cgroup2 mount offers the io controller: " + strings.Join(seen, "; ")
}

// detectFilesystem needs both the mkfs tool and kernel support: listed in
// /proc/filesystems, or available as a module that mount would load.
func detectFilesystem(fs, mkfs string) (bool, string) {
	p, err := exec.LookPath(mkfs)
	if err != nil {
		return false, err.Error()
	}
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return false, err.Error()
	}
	if filesystemsList(string(b), fs) {
		return true, p + "; kernel lists " + fs
	}
	rel, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return false, err.Error()
	}
	dep, err := os.ReadFile(filepath.Join("/lib/modules", strings.TrimSpace(string(rel)), "modules.dep"))
	if err == nil && moduleListed(string(dep), fs) {
		return true, p + "; " + fs + " is a loadable module"
	}
	return false, "kernel has no " + fs + " (not in /proc/filesystems, no module)"
}

// filesystemsList parses /proc/filesystems ("nodev\tproc", "\text4").
func filesystemsList(content, fs string) bool {
	for _, l := range strings.Split(content, "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && f[len(f)-1] == fs {
			return true
		}
	}
	return false
}

// moduleListed reports whether modules.dep has a module file named <name>.ko*.
func moduleListed(dep, name string) bool {
	for _, l := range strings.Split(dep, "\n") {
		path, _, _ := strings.Cut(l, ":")
		if base := filepath.Base(path); base == name+".ko" || strings.HasPrefix(base, name+".ko.") {
			return true
		}
	}
	return false
}

func detectVM() (bool, string) {
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return false, err.Error() + " (apt package qemu-system-x86)"
	}
	return true, p
}

func detectPrometheus() (bool, string) {
	var found []string
	for _, name := range []string{"prometheus", "promtool"} {
		p, err := exec.LookPath(name)
		if err != nil {
			return false, err.Error() + " (apt package prometheus; hack/deps.sh installs it)"
		}
		found = append(found, p)
	}
	return true, strings.Join(found, ", ")
}

func probe(name string, args ...string) (string, error) { return probeEnv(nil, name, args...) }

// probeEnv runs a probe command and returns its trimmed stdout; errors carry
// stderr, since that is what explains a missing capability.
func probeEnv(env []string, name string, args ...string) (string, error) {
	if _, err := exec.LookPath(name); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.Join(strings.Fields(stderr.String()), " ")
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, msg)
	}
	return strings.TrimSpace(stdout.String()), nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
