/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package capability is the one place that decides whether a test that needs
// something from the machine (root, loop devices, lvm2, device-mapper, cgroup
// IO controllers, ...) runs for real or is skipped.
//
// Tests call Require at their top. A missing capability skips the test with a
// printed reason, so a developer laptop or a kernel without device-mapper still
// runs everything it can. CI must not be fooled by such skips: it lists in
// OPEN_LOCAL_REQUIRE_CAPS every capability its machine is known to have, and
// for those a missing capability becomes a test failure instead of a skip, so a
// broken install (lvm2 not installed, losetup failing) can never hide behind
// "skipped".
//
// Detection runs against the real machine at run time, once per capability per
// process (sync.Once), because probes exec tools and each test binary calls
// Require many times.
package capability

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Capability names something a test may need from the machine. The string
// value is what OPEN_LOCAL_REQUIRE_CAPS lists.
type Capability string

const (
	// Root: the effective uid is 0 (losetup, mount, lvm need it).
	Root Capability = "root"
	// LoopDevices: `losetup -f` finds a free loop device.
	LoopDevices Capability = "loop"
	// LVM: lvm2's `lvm` binary runs.
	LVM Capability = "lvm"
	// DeviceMapper: the kernel has a working device-mapper, so LVs can be
	// activated (and snapshots, thin pools exist). Absent on the CI host.
	DeviceMapper Capability = "device-mapper"
	// CapSysResource: CAP_SYS_RESOURCE is in the effective set. Online ext4
	// resize2fs needs it (EPERM without it).
	CapSysResource Capability = "cap-sys-resource"
	// CgroupV1Blkio: cgroup v1 blkio throttling files exist.
	CgroupV1Blkio Capability = "cgroup-v1-blkio"
	// CgroupV2IO: a cgroup2 hierarchy offers the io controller (io.max).
	CgroupV2IO Capability = "cgroup-v2-io"
	// XFS: mkfs.xfs exists and the kernel can mount xfs.
	XFS Capability = "xfs"
	// Ext4: mkfs.ext4 exists and the kernel can mount ext4.
	Ext4 Capability = "ext4"
	// VM: qemu-system-x86_64 exists, so hack/vmrun.sh can boot a test VM.
	VM Capability = "vm"
	// Prometheus: Debian's prometheus package (prometheus and promtool), for
	// the alert rules' unit tests and the dashboard queries.
	Prometheus Capability = "prometheus"
)

// EnvRequire names the environment variable listing capabilities whose absence
// must fail a test instead of skipping it: comma-separated names, or "all".
const EnvRequire = "OPEN_LOCAL_REQUIRE_CAPS"

// EnvInVM is set to 1 by the VM runner (test/vm) in the guest, so tests and
// logs can tell where they run.
const EnvInVM = "OPEN_LOCAL_IN_VM"

// All lists every known capability, in a stable order for reports.
func All() []Capability {
	return []Capability{Root, LoopDevices, LVM, DeviceMapper, CapSysResource,
		CgroupV1Blkio, CgroupV2IO, XFS, Ext4, VM, Prometheus}
}

// result is a cached detection outcome.
type result struct {
	once   sync.Once
	ok     bool
	reason string
}

var cache = func() map[Capability]*result {
	m := make(map[Capability]*result)
	for _, c := range All() {
		m[c] = &result{}
	}
	return m
}()

// Has reports whether the machine has c, with a human-readable reason (why it
// is missing, or what was found). The probe runs once per process.
func Has(c Capability) (bool, string) {
	r, ok := cache[c]
	if !ok {
		return false, fmt.Sprintf("unknown capability %q", string(c))
	}
	r.once.Do(func() { r.ok, r.reason = detectors[c]() })
	return r.ok, r.reason
}

// InVM reports whether this process runs inside the test VM (see EnvInVM).
func InVM() bool { return os.Getenv(EnvInVM) == "1" }

// Require skips t unless the machine has every capability in caps; a missing
// capability listed in OPEN_LOCAL_REQUIRE_CAPS fails t instead. All missing
// capabilities are reported at once, so one run shows everything to fix.
//
// Under -short (make test-short, the seconds-long loop) every capability but
// Root skips: loop devices, lvm2, mkfs, cgroups, Prometheus and the VM are the
// machine-backed tests that `make test` runs; a test that only needs root
// (a tmpfs mount) stays in the fast loop.
func Require(t testing.TB, caps ...Capability) {
	t.Helper()
	require(t, os.Getenv(EnvRequire), testing.Short(), Has, caps)
}

// require is Require with its inputs injected, so the decision is unit-tested
// without depending on the machine.
func require(t testing.TB, env string, short bool, has func(Capability) (bool, string), caps []Capability) {
	t.Helper()
	if short {
		var machine []string
		for _, c := range caps {
			if c != Root {
				machine = append(machine, string(c))
			}
		}
		if len(machine) > 0 {
			t.Skipf("skipping under -short: a test on the machine's %s (runs in make test)", strings.Join(machine, ", "))
			return
		}
	}
	required, err := parseRequired(env)
	if err != nil {
		// A typo in CI's list would silently turn a required capability back
		// into a skip; refuse instead.
		t.Fatalf("capability: %v", err)
		return
	}
	var missing, fatal []string
	for _, c := range caps {
		ok, reason := has(c)
		if ok {
			continue
		}
		line := fmt.Sprintf("%s (%s)", c, reason)
		missing = append(missing, line)
		if required[c] {
			fatal = append(fatal, line)
		}
	}
	switch {
	case len(fatal) > 0:
		t.Fatalf("capability required by %s=%q is missing: %s", EnvRequire, env, strings.Join(fatal, "; "))
	case len(missing) > 0:
		t.Skipf("skipping: machine lacks %s", strings.Join(missing, "; "))
	}
}

// parseRequired parses OPEN_LOCAL_REQUIRE_CAPS. Unknown names are an error.
func parseRequired(env string) (map[Capability]bool, error) {
	req := make(map[Capability]bool)
	for _, f := range strings.Split(env, ",") {
		name := strings.TrimSpace(f)
		switch {
		case name == "":
			continue
		case name == "all":
			for _, c := range All() {
				req[c] = true
			}
		case slices.Contains(All(), Capability(name)):
			req[Capability(name)] = true
		default:
			return nil, fmt.Errorf("%s lists unknown capability %q (known: %s, all)", EnvRequire, name, joinCaps(All()))
		}
	}
	return req, nil
}

func joinCaps(cs []Capability) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = string(c)
	}
	return strings.Join(s, ", ")
}

// Report returns one line per capability with its detection outcome; tests log
// it so a CI log shows what the machine could do.
func Report() string {
	var b strings.Builder
	for _, c := range All() {
		ok, reason := Has(c)
		mark := "no "
		if ok {
			mark = "yes"
		}
		fmt.Fprintf(&b, "%-17s %s  %s\n", c, mark, reason)
	}
	return b.String()
}
