/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package demo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/open-local/open-local/test/loopvg"
	"github.com/open-local/open-local/test/mountinfo"
	"github.com/open-local/open-local/test/procruntime"
)

// hostState records everything the demo changes on the host outside its own
// directory, written before each change is made, so Down removes exactly
// that, even after a crash half-way through Up.
type hostState struct {
	// Dir is the demo directory (everything below it is the demo's).
	Dir string `json:"dir"`
	// Disk is the loop device the NodeLocalStorageInitConfig turns into a
	// VG, and its backing file.
	Disk *loopvg.Device `json:"disk,omitempty"`
	// KubeletVarLibCreated lists what the kubelet creates under
	// /var/lib/kubelet whatever its --root-dir says (its device-plugin
	// socket), which did not exist before the demo.
	KubeletVarLibCreated []string `json:"kubeletVarLibCreated,omitempty"`
	// CgroupRoot is the demo kubelet's cgroupRoot (cgroupRootFor): a tree
	// of its own, so that another kubelet on the host (a second demo, as
	// TestDemo beside `make demo`) neither counts nor tears down its pods.
	CgroupRoot string `json:"cgroupRoot"`
	// Cgroups lists that tree in every hierarchy (<hierarchy><CgroupRoot>);
	// the demo creates it (the kubelet requires its cgroupRoot to exist).
	Cgroups []string `json:"cgroups,omitempty"`
	// ContainerLogLinks is the directory where the kubelet links container
	// logs whatever its podLogsDir says; links into Dir are the demo's.
	ContainerLogLinks string `json:"containerLogLinks"`
}

const hostStateFile = "host-state.json"

// Paths the kubelet uses regardless of its flags.
var (
	varLibKubelet    = "/var/lib/kubelet"
	varLogContainers = "/var/log/containers"
)

func (h *hostState) save() error {
	data, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(h.Dir, hostStateFile+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(h.Dir, hostStateFile))
}

func loadHostState(dir string) (*hostState, error) {
	data, err := os.ReadFile(filepath.Join(dir, hostStateFile))
	if err != nil {
		return nil, err
	}
	h := &hostState{}
	if err := json.Unmarshal(data, h); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, hostStateFile), err)
	}
	if h.Dir != dir {
		return nil, fmt.Errorf("%s records directory %s, not %s", hostStateFile, h.Dir, dir)
	}
	return h, nil
}

// cgroupRootFor is the kubelet's cgroupRoot for the demo in dir, one
// level below each hierarchy's root and named after dir, so that demos in
// different dirs never share it.
func cgroupRootFor(dir string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(dir)))
	return "/open-local-demo-" + hex.EncodeToString(sum[:6])
}

func cgroupHierarchies() ([]string, error) {
	roots, err := mountinfo.CgroupRoots()
	if err != nil {
		return nil, err
	}
	if len(roots) == 0 {
		return nil, errors.New("no cgroup hierarchy is mounted")
	}
	return roots, nil
}

// kubeletCgroupsIn is the kubelet's cgroup root in every hierarchy
// mounted: the v1 ones and the unified one (a hybrid host), or the only,
// unified, one of a cgroup v2 host.
func kubeletCgroupsIn(hierarchies []string, cgroupRoot string) []string {
	out := make([]string, len(hierarchies))
	for i, h := range hierarchies {
		out[i] = filepath.Join(h, cgroupRoot)
	}
	return out
}

// preflightHost refuses to start where the demo's cgroup tree exists
// already: the teardown of a demo in the same dir, whose record is gone,
// did not finish; the new kubelet would adopt (and its teardown remove)
// whatever runs there. Other kubelets on the host are no obstacle: each has
// its own cgroupRoot, root dir, pod logs dir and ports. (Every kubelet
// takes over /var/lib/kubelet/device-plugins/kubelet.sock, whatever its
// --root-dir; no demo step uses device plugins.)
func preflightHost(cgroupRoot string) error {
	hierarchies, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	return preflightCgroups(hierarchies, cgroupRoot)
}

func preflightCgroups(hierarchies []string, cgroupRoot string) error {
	for _, cg := range kubeletCgroupsIn(hierarchies, cgroupRoot) {
		if _, err := os.Stat(cg); err == nil {
			return fmt.Errorf("%s exists: left by a demo in the same dir whose teardown did not finish; "+
				"remove it (its pods' processes first, then the cgroups, deepest first)", cg)
		}
	}
	return nil
}

// recordKubeletPaths notes, before the kubelet starts, which of the paths it
// creates outside its root dir do not exist yet (those are the demo's to
// remove) and the kubelet's cgroup tree, then creates that tree.
func (h *hostState) recordKubeletPaths() error {
	for _, p := range []string{varLibKubelet, filepath.Join(varLibKubelet, "device-plugins")} {
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			h.KubeletVarLibCreated = append(h.KubeletVarLibCreated, p)
		}
	}
	hierarchies, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	h.Cgroups = kubeletCgroupsIn(hierarchies, h.CgroupRoot)
	h.ContainerLogLinks = varLogContainers
	if err := h.save(); err != nil {
		return err
	}
	for i, cg := range h.Cgroups {
		if err := procruntime.MakeKubeletCgroupRoot(hierarchies[i], cg); err != nil {
			return err
		}
	}
	return nil
}

// teardown removes what the record names, in dependency order: mounts
// below the demo dir (the kubelet's volumes, its root dir's bind mount),
// loop devices stacked on the demo disk (the agent's LV devices, the
// kubelet's block-volume holders), the disk, the kubelet's cgroups and
// paths. It goes on after errors and returns them all.
func (h *hostState) teardown(ctx context.Context, report func(string)) error {
	var errs []error
	// List the stacked loops while the kubelet's device-file bind mounts
	// still exist: once unmounted, sysfs shows a holder's backing file as "/".
	var loops []loopvg.Device
	if h.Disk != nil {
		var err error
		if loops, err = stackedLoops(h.Disk.Path, h.Disk.File, h.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	if n, err := unmountBelow(h.Dir); err != nil {
		errs = append(errs, err)
	} else if n > 0 {
		report(fmt.Sprintf("unmounted %d mounts below %s", n, h.Dir))
	}
	if h.Disk != nil {
		for _, l := range loops {
			if err := l.Detach(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		if len(loops) > 0 {
			report(fmt.Sprintf("detached %d loop devices stacked on the demo disk", len(loops)))
		}
		if err := h.Disk.Detach(ctx); err != nil {
			errs = append(errs, err)
		} else {
			report("detached the demo disk " + h.Disk.Path)
		}
	}
	if n, err := removeCgroupTrees(h.Cgroups); err != nil {
		errs = append(errs, err)
	} else if n > 0 {
		report(fmt.Sprintf("removed %d kubelet cgroups", n))
	}
	if n, err := removeLinksInto(h.ContainerLogLinks, h.Dir); err != nil {
		errs = append(errs, err)
	} else if n > 0 {
		report(fmt.Sprintf("removed %d container log links from %s", n, h.ContainerLogLinks))
	}
	if note, err := removeKubeletVarLib(h.KubeletVarLibCreated); err != nil {
		errs = append(errs, err)
	} else if note != "" {
		report(note)
	}
	return errors.Join(errs...)
}

// mountsBelow lists the mount points at or below dir, deepest first.
func mountsBelow(dir string) ([]string, error) {
	ms, err := mountinfo.Read()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if m.Point == dir || strings.HasPrefix(m.Point, dir+"/") {
			out = append(out, m.Point)
		}
	}
	// Deepest first; a path mounted several times appears several times
	// and is unmounted as often.
	sort.SliceStable(out, func(i, j int) bool { return strings.Count(out[i], "/") > strings.Count(out[j], "/") })
	return out, nil
}

// unmountBelow unmounts every mount at or below dir (volumes the kubelet
// left mounted when it was stopped, the kubelet's bind mount of its root dir).
func unmountBelow(dir string) (int, error) {
	mps, err := mountsBelow(dir)
	if err != nil {
		return 0, err
	}
	var errs []error
	n := 0
	for _, mp := range mps {
		if err := unix.Unmount(mp, 0); err != nil {
			// Busy (a process still uses it): detach it from the tree now,
			// the kernel frees it when the last user goes.
			if err2 := unix.Unmount(mp, unix.MNT_DETACH); err2 != nil && !errors.Is(err2, unix.EINVAL) {
				errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
				continue
			}
		}
		n++
	}
	return n, errors.Join(errs...)
}

// loopInfo is one attached loop device as sysfs shows it.
type loopInfo struct {
	dev     loopvg.Device
	backing string
}

func attachedLoops() ([]loopInfo, error) {
	matches, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return nil, err
	}
	var out []loopInfo
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			continue // detached meanwhile
		}
		sys := filepath.Dir(m)
		off, _ := os.ReadFile(filepath.Join(sys, "offset"))
		offset, _ := strconv.ParseInt(strings.TrimSpace(string(off)), 10, 64)
		backing := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
		dev := "/dev/" + filepath.Base(filepath.Dir(sys))
		out = append(out, loopInfo{dev: loopvg.Device{Path: dev, File: backing, Offset: offset}, backing: backing})
	}
	return out, nil
}

// stackedLoops finds the loop devices whose backing file is the demo disk,
// a loop device already found, or a file below dir, and orders them so each
// comes before the device it is stacked on (the order to detach them in).
func stackedLoops(disk, diskFile, dir string) ([]loopvg.Device, error) {
	all, err := attachedLoops()
	if err != nil {
		return nil, err
	}
	return orderStacked(all, disk, diskFile, dir), nil
}

func orderStacked(all []loopInfo, disk, diskFile, dir string) []loopvg.Device {
	depth := map[string]int{disk: 0}
	for changed := true; changed; {
		changed = false
		for _, l := range all {
			if _, known := depth[l.dev.Path]; known || l.dev.Path == disk || l.backing == diskFile {
				continue
			}
			d, onKnown := depth[l.backing]
			if !onKnown && strings.HasPrefix(l.backing, dir+"/") {
				// The kubelet's block-volume holder on a device file below its root dir.
				d, onKnown = 1, true
			}
			if onKnown {
				depth[l.dev.Path] = d + 1
				changed = true
			}
		}
	}
	var out []loopvg.Device
	for _, l := range all {
		if d, ok := depth[l.dev.Path]; ok && d > 0 {
			out = append(out, l.dev)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return depth[out[i].Path] > depth[out[j].Path] })
	return out
}

// removeCgroupTrees kills what still runs in the trees (only the demo's
// containers can be there) and removes them, deepest first.
func removeCgroupTrees(roots []string) (int, error) {
	n := 0
	var errs []error
	for _, root := range roots {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.Reverse(dirs) // WalkDir is lexical, parents first
		for _, d := range dirs {
			if err := removeCgroup(d); err != nil {
				errs = append(errs, err)
			} else {
				n++
			}
		}
	}
	return n, errors.Join(errs...)
}

func removeCgroup(dir string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		err := os.Remove(dir)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// removeLinksInto removes the symlinks in linkDir that point below dir.
func removeLinksInto(linkDir, dir string) (int, error) {
	entries, err := os.ReadDir(linkDir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		p := filepath.Join(linkDir, e.Name())
		target, err := os.Readlink(p)
		if err != nil || !strings.HasPrefix(target, dir+"/") {
			continue
		}
		if err := os.Remove(p); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// removeKubeletVarLib removes the kubelet's device-plugin socket and the
// directories the demo's kubelet created, unless another kubelet serves
// that socket now (every kubelet takes it over on start, whatever its
// --root-dir): then they are its, and left. A socket no one serves is
// removed even when the demo did not create the directories (its kubelet
// took it over from the kubelet that did). A directory that holds
// anything else is left too (and named).
func removeKubeletVarLib(created []string) (string, error) {
	sock := filepath.Join(varLibKubelet, "device-plugins", "kubelet.sock")
	if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		c.Close()
		return "another kubelet serves " + sock + " now: left it and " + varLibKubelet + " in place", nil
	}
	// No one serves it: a stopped kubelet's, this demo's or another's.
	_ = os.Remove(sock)
	var errs []error
	for _, p := range slices.Backward(created) {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("%s was created by the demo's kubelet but holds other files now: left in place (%w)", p, err))
		}
	}
	return "", errors.Join(errs...)
}
