/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package procruntime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/open-local/open-local/test/mountinfo"
)

// createContainerCgroups makes <root>/<parent>/<id> in every hierarchy in
// which the kubelet made the pod's cgroup <root>/<parent>, as runc does for
// a container (MakeCgroup), and returns their paths.
func createContainerCgroups(parent, id string) ([]string, error) {
	if parent == "" {
		return nil, nil // the kubelet without --cgroups-per-qos: stay where we are
	}
	if !filepath.IsAbs(parent) || filepath.Clean(parent) != parent {
		return nil, fmt.Errorf("cgroup parent %q: want a clean absolute cgroupfs path (the kubelet's cgroupfs driver)", parent)
	}
	roots, err := mountinfo.CgroupRoots()
	if err != nil {
		return nil, err
	}
	var made []string
	for _, root := range roots {
		pod := filepath.Join(root, parent)
		if _, err := os.Stat(pod); err != nil {
			continue // a hierarchy the kubelet does not manage
		}
		dir := filepath.Join(pod, id)
		made = append(made, dir) // removed on error, whatever MakeCgroup got to
		if err := MakeCgroup(pod, dir); err != nil {
			return made, err
		}
	}
	return made, nil
}

// MakeCgroup creates the cgroup dir below parent (in one hierarchy) unless
// it exists. A v1 cpuset child starts with no CPUs and no memory nodes
// (joining one fails with ENOSPC), so it gets the parent's, as runc does.
func MakeCgroup(parent, dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	// v1 only: a v2 child with no CPUs of its own uses its parent's (and the
	// v2 root has no cpuset.cpus to copy).
	if _, err := os.Stat(filepath.Join(dir, "cgroup.controllers")); err == nil {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, "cpuset.cpus")); err != nil {
		return nil // not the cpuset hierarchy
	}
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		v, err := os.ReadFile(filepath.Join(parent, f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
			return fmt.Errorf("%s/%s: %w", dir, f, err)
		}
	}
	return nil
}

// MakeKubeletCgroupRoot creates the kubelet's cgroupRoot dir below parent
// (in one hierarchy). The kubelet refuses a cgroupRoot that does not exist
// or, in a cgroup v2 hierarchy, that lacks a controller it needs; a v2
// child has the controllers its parent enables for it, so parent enables
// all of its own (as runc does for the cgroups it creates).
func MakeKubeletCgroupRoot(parent, dir string) error {
	if err := enableControllers(parent); err != nil {
		return err
	}
	return MakeCgroup(parent, dir)
}

// enableControllers enables, in a v2 cgroup, every controller it has for
// its children; a v1 cgroup (no cgroup.subtree_control) is left alone.
func enableControllers(cg string) error {
	have, err := os.ReadFile(filepath.Join(cg, "cgroup.controllers"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	enabled, err := os.ReadFile(filepath.Join(cg, "cgroup.subtree_control"))
	if err != nil {
		return err
	}
	on := strings.Fields(string(enabled))
	var add []string
	for _, c := range strings.Fields(string(have)) {
		if !slices.Contains(on, c) {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	if err := os.WriteFile(filepath.Join(cg, "cgroup.subtree_control"), []byte(strings.Join(add, " ")), 0o644); err != nil {
		return fmt.Errorf("enable controllers %v in %s: %w", add, cg, err)
	}
	return nil
}

// joinCgroups moves the calling process into every cgroup in dirs. The
// child helpers do it for themselves before they exec the container's
// command, so no process of a container ever runs outside its cgroups.
func joinCgroups(dirs []string) error {
	pid := []byte(strconv.Itoa(os.Getpid()))
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), pid, 0o644); err != nil {
			return fmt.Errorf("join cgroup %s: %w", d, err)
		}
	}
	return nil
}

// cgroupPids lists the processes in the cgroups of dirs (all of a
// container's processes are in each of them; reading all covers a process
// that is mid-way through joining).
func cgroupPids(dirs []string) []int {
	seen := map[int]bool{}
	var pids []int
	for _, d := range dirs {
		data, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
				seen[pid] = true
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// signalCgroups sends sig to every process of the container.
func signalCgroups(dirs []string, sig syscall.Signal) {
	for _, pid := range cgroupPids(dirs) {
		_ = syscall.Kill(pid, sig)
	}
}

// removeCgroups kills what is left in the container's cgroups and removes
// them; a cgroup is removable only once its last process is gone.
func removeCgroups(dirs []string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		signalCgroups(dirs, syscall.SIGKILL)
		var left []string
		var lastErr error
		for _, d := range dirs {
			if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
				left = append(left, d)
				lastErr = err
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remove cgroups %v: %w", left, lastErr)
		}
		dirs = left
		time.Sleep(50 * time.Millisecond)
	}
}

// readCgroupUint reads a single-number file (cpuacct.usage, …) from the
// first of dirs that has it.
func readCgroupUint(dirs []string, file string) (uint64, bool) {
	for _, d := range dirs {
		data, err := os.ReadFile(filepath.Join(d, file))
		if err != nil {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
		return v, err == nil
	}
	return 0, false
}
