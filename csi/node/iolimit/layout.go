/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package iolimit

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Driver is kubelet's --cgroup-driver.
type Driver string

// cgroup drivers.
const (
	// DriverAuto tries both layouts: the pod's cgroup exists in one only.
	DriverAuto     Driver = "auto"
	DriverCgroupfs Driver = "cgroupfs"
	DriverSystemd  Driver = "systemd"
)

// ParseDriver parses a --cgroup-driver value.
func ParseDriver(s string) (Driver, error) {
	switch d := Driver(s); d {
	case DriverAuto, DriverCgroupfs, DriverSystemd:
		return d, nil
	}
	return "", fmt.Errorf("cgroup driver %q: want %s, %s or %s (kubelet's --cgroup-driver)", s, DriverAuto, DriverCgroupfs, DriverSystemd)
}

// Layout is how kubelet on this node names pod cgroups: its --cgroup-driver
// and --cgroup-root (cgroupRoot in its configuration; "/" by default,
// "/kubelet" on kind nodes).
type Layout struct {
	Driver Driver
	Root   string
}

// qosOrder is the order in which QoS classes are probed. Any order finds
// the one existing cgroup; this one matches how common each class is for
// workloads with local volumes.
var qosOrder = []corev1.PodQOSClass{corev1.PodQOSBurstable, corev1.PodQOSBestEffort, corev1.PodQOSGuaranteed}

// nodeAllocatableCgroup is kubelet's top cgroup of all pods
// (defaultNodeAllocatableCgroupName, with --cgroups-per-qos, the default).
const nodeAllocatableCgroup = "kubepods"

// PodCgroup is kubelet's name of a pod's cgroup, relative to a hierarchy's
// mount point (kubelet's "cgroupfs form" of the name, which it uses for
// both drivers): with the cgroupfs driver
//
//	<root>/kubepods/pod<uid>                          (Guaranteed)
//	<root>/kubepods/{burstable,besteffort}/pod<uid>
//
// and with the systemd driver, the same name parts joined by "-" and
// expanded as a systemd slice ("-" in a part becomes "_"):
//
//	/kubepods.slice/kubepods-pod<uid_>.slice
//	/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice
//
// (pkg/kubelet/cm: GetPodContainerName, CgroupName.ToCgroupfs/ToSystemd).
func PodCgroup(l Layout, qos corev1.PodQOSClass, uid types.UID) (string, error) {
	if err := validUID(uid); err != nil {
		return "", err
	}
	name := rootName(l.Root)
	name = append(name, nodeAllocatableCgroup)
	switch qos {
	case corev1.PodQOSGuaranteed:
	case corev1.PodQOSBurstable, corev1.PodQOSBestEffort:
		name = append(name, strings.ToLower(string(qos)))
	default:
		return "", fmt.Errorf("unknown QoS class %q", qos)
	}
	name = append(name, "pod"+string(uid))
	switch l.Driver {
	case DriverCgroupfs:
		return "/" + path.Join(name...), nil
	case DriverSystemd:
		parts := make([]string, len(name))
		for i, p := range name {
			parts[i] = strings.ReplaceAll(p, "-", "_")
		}
		return expandSlice(strings.Join(parts, "-") + ".slice")
	}
	return "", fmt.Errorf("cgroup driver %q has no single layout", l.Driver)
}

// rootName splits kubelet's --cgroup-root, which it always parses in
// cgroupfs form (ParseCgroupfsToCgroupName), into name parts.
func rootName(root string) []string {
	root = strings.Trim(path.Clean("/"+root), "/")
	if root == "" {
		return nil
	}
	return strings.Split(root, "/")
}

// expandSlice is systemd's (and runc's ExpandSlice) mapping of a slice unit
// to its cgroup path: "a-b-c.slice" lives at /a.slice/a-b.slice/a-b-c.slice.
func expandSlice(slice string) (string, error) {
	const suffix = ".slice"
	name, ok := strings.CutSuffix(slice, suffix)
	if !ok || name == "" || strings.Contains(slice, "/") {
		return "", fmt.Errorf("invalid slice name %q", slice)
	}
	if name == "-" {
		return "/", nil
	}
	var p, prefix strings.Builder
	for _, c := range strings.Split(name, "-") {
		if c == "" {
			return "", fmt.Errorf("invalid slice name %q (empty component)", slice)
		}
		p.WriteString("/" + prefix.String() + c + suffix)
		prefix.WriteString(c + "-")
	}
	return p.String(), nil
}

// validUID accepts what kubelet uses as pod UIDs (UUIDs; hex hashes for
// static pods). Anything else could walk out of the cgroup tree.
func validUID(uid types.UID) error {
	if uid == "" || len(uid) > 128 {
		return fmt.Errorf("pod UID %q: want 1 to 128 characters", uid)
	}
	for _, r := range string(uid) {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return fmt.Errorf("pod UID %q: only letters, digits and - are allowed", uid)
		}
	}
	return nil
}

// Hierarchy is the cgroup hierarchy with the IO controller: the v1 blkio
// hierarchy, or the v2 unified one.
type Hierarchy struct {
	Version Version
	// Dir is its mount point, e.g. /sys/fs/cgroup/blkio or /sys/fs/cgroup.
	Dir string
}

// DetectHierarchy finds the IO controller under mount (the node's
// /sys/fs/cgroup) as kubelet decides the cgroup version: mount itself is
// cgroup2 → v2 (unified); else the v1 blkio hierarchy at mount/blkio. A
// cgroup2 mount inside a v1 layout (/sys/fs/cgroup/unified, "hybrid") is
// not kubelet's and is ignored, as kubelet ignores it.
func DetectHierarchy(mount string) (Hierarchy, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(mount, &st); err != nil {
		return Hierarchy{}, fmt.Errorf("cgroup mount %s: %w", mount, err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		b, err := os.ReadFile(filepath.Join(mount, "cgroup.controllers"))
		if err != nil {
			return Hierarchy{}, err
		}
		if !slices.Contains(strings.Fields(string(b)), "io") {
			return Hierarchy{}, fmt.Errorf("cgroup v2 at %s does not offer the io controller (cgroup.controllers: %q)", mount, strings.TrimSpace(string(b)))
		}
		return Hierarchy{Version: V2, Dir: mount}, nil
	}
	blkio := filepath.Join(mount, "blkio")
	if err := unix.Statfs(blkio, &st); err != nil {
		return Hierarchy{}, fmt.Errorf("%s is not cgroup v2 and has no v1 blkio hierarchy: %w", mount, err)
	}
	if st.Type != unix.CGROUP_SUPER_MAGIC {
		return Hierarchy{}, fmt.Errorf("%s is not a cgroup v1 mount", blkio)
	}
	if _, err := os.Stat(filepath.Join(blkio, v1Files[1].name)); err != nil {
		return Hierarchy{}, fmt.Errorf("cgroup v1 blkio at %s has no throttling (kernel without CONFIG_BLK_DEV_THROTTLING?): %w", blkio, err)
	}
	return Hierarchy{Version: V1, Dir: blkio}, nil
}

// ErrPodCgroupNotFound: none of the pod's possible cgroups exists.
var ErrPodCgroupNotFound = errors.New("pod cgroup not found")

// FindPod returns the directory of the pod's cgroup in h: the one of its
// possible names (the layout's driver or both, × the three QoS classes)
// that exists.
func (h Hierarchy) FindPod(l Layout, uid types.UID) (string, error) {
	drivers := []Driver{l.Driver}
	if l.Driver == DriverAuto || l.Driver == "" {
		drivers = []Driver{DriverCgroupfs, DriverSystemd}
	}
	var tried []string
	for _, d := range drivers {
		for _, qos := range qosOrder {
			rel, err := PodCgroup(Layout{Driver: d, Root: l.Root}, qos, uid)
			if err != nil {
				return "", err
			}
			dir := filepath.Join(h.Dir, rel)
			if st, err := os.Stat(dir); err == nil && st.IsDir() {
				return dir, nil
			}
			tried = append(tried, dir)
		}
	}
	return "", fmt.Errorf("%w for pod %s: none of %s exists (check --cgroup-driver and --cgroup-root against kubelet's)",
		ErrPodCgroupNotFound, uid, strings.Join(tried, ", "))
}
