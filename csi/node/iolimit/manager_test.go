/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package iolimit_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/open-local/open-local/csi/node/iolimit"
)

// The Manager's bookkeeping runs here against a directory tree shaped like
// cgroupfs (plain files hold the last line written). What the kernel does
// with the lines — throttling — is measured for real in csi/node
// (TestNodeIOLimits), on cgroup v1 on the host and v2 in the VM.

// fakeCgroup creates dir with the (empty) limit files of a cgroup.
func fakeCgroup(t *testing.T, v iolimit.Version, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := []string{"io.max"}
	if v == iolimit.V1 {
		files = []string{"blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device",
			"blkio.throttle.read_iops_device", "blkio.throttle.write_iops_device"}
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type fakeNode struct {
	h        iolimit.Hierarchy
	layout   iolimit.Layout
	podDir   string
	stateDir string
}

func newFakeNode(t *testing.T, v iolimit.Version) *fakeNode {
	mount := t.TempDir()
	n := &fakeNode{h: iolimit.Hierarchy{Version: v, Dir: mount}, layout: iolimit.Layout{Driver: iolimit.DriverSystemd, Root: "/"},
		stateDir: filepath.Join(t.TempDir(), "state")}
	if v == iolimit.V1 {
		n.h.Dir = filepath.Join(mount, "blkio")
	}
	rel, err := iolimit.PodCgroup(n.layout, corev1.PodQOSBurstable, uid)
	if err != nil {
		t.Fatal(err)
	}
	n.podDir = filepath.Join(n.h.Dir, rel)
	fakeCgroup(t, v, n.podDir)
	return n
}

// manager returns a Manager for the node. Plain files are truncated and
// rewritten by each resync, so tests reading them use a long resync unless
// they test it.
func (n *fakeNode) manager(t *testing.T, resync time.Duration) *iolimit.Manager {
	t.Helper()
	m, err := iolimit.New(iolimit.Options{Layout: iolimit.Layout{Driver: iolimit.DriverAuto}, StateDir: n.stateDir, Hierarchy: &n.h,
		Resync: resync, PodCgroupWait: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (n *fakeNode) limits(t *testing.T, dir string) iolimit.Limits {
	t.Helper()
	l, err := iolimit.Read(n.h.Version, os.ReadFile, dir, dev)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// eventually polls cond (the Manager reacts to inotify events and timers);
// the deadline only bounds a failing test.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

var (
	dev    = iolimit.Device{Major: 7, Minor: 300}
	limits = iolimit.Symmetric(8<<20, 200)
)

func req(target string) iolimit.Request {
	return iolimit.Request{VolumeID: "vol", TargetPath: target, PodUID: uid, Device: dev, Limits: limits}
}

// TestManagerLifecycle: Apply sets the pod cgroup (v1: and every cgroup
// below it, including containers created later); a shared publication
// keeps the limit until the last one goes; Remove clears; all idempotent.
func TestManagerLifecycle(t *testing.T) {
	for _, v := range []iolimit.Version{iolimit.V1, iolimit.V2} {
		t.Run("v"+string(rune('0'+v)), func(t *testing.T) {
			n := newFakeNode(t, v)
			existing := filepath.Join(n.podDir, "container-a")
			fakeCgroup(t, v, existing)
			m := n.manager(t, time.Hour)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- m.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })

			for range 2 {
				got, err := m.Apply(ctx, req("/pods/a/target"))
				if err != nil || got.Cgroup != n.podDir || got.Version != v {
					t.Fatalf("Apply: %+v, %v; want cgroup %s", got, err, n.podDir)
				}
			}
			// Run's first resync may still be rewriting the files (a plain
			// file is empty between truncate and write; cgroup files are not).
			wantChild := limits
			if v == iolimit.V2 {
				wantChild = iolimit.Limits{} // io.max is hierarchical: the pod's is enough
			}
			eventually(t, "limits in the pod cgroup and its existing container's", func() bool {
				return n.limits(t, n.podDir) == limits && n.limits(t, existing) == wantChild
			})
			// A container started after publishing: built aside and moved
			// in, so its files exist when the Manager sees it (the kernel
			// creates them with the directory).
			aside := filepath.Join(filepath.Dir(n.podDir), "aside")
			fakeCgroup(t, v, aside)
			fakeCgroup(t, v, filepath.Join(aside, "nested"))
			later := filepath.Join(n.podDir, "container-b")
			if err := os.Rename(aside, later); err != nil {
				t.Fatal(err)
			}
			if v == iolimit.V1 {
				eventually(t, "limits in a container cgroup created after publishing", func() bool {
					return n.limits(t, later) == limits && n.limits(t, filepath.Join(later, "nested")) == limits
				})
			}

			// A second publication of the same device to the same pod.
			if _, err := m.Apply(ctx, req("/pods/a/second")); err != nil {
				t.Fatal(err)
			}
			if err := m.Remove(ctx, "/pods/a/target"); err != nil {
				t.Fatal(err)
			}
			if l := n.limits(t, n.podDir); l != limits {
				t.Fatalf("limits removed while another publication needs them: %+v", l)
			}
			for range 2 {
				if err := m.Remove(ctx, "/pods/a/second"); err != nil {
					t.Fatal(err)
				}
			}
			for _, d := range []string{n.podDir, existing, later} {
				if l := n.limits(t, d); l != (iolimit.Limits{}) {
					t.Errorf("%s still holds %+v after the last unpublish", d, l)
				}
			}
			if left, _ := os.ReadDir(n.stateDir); len(left) != 0 {
				t.Errorf("records left: %v", left)
			}
		})
	}
}

// TestManagerRestart: records survive a restart of the plugin, so a later
// NodeUnpublishVolume still clears, and records of pods whose cgroup is
// gone are forgotten.
func TestManagerRestart(t *testing.T) {
	n := newFakeNode(t, iolimit.V1)
	ctx := t.Context()
	first := n.manager(t, time.Hour)
	if _, err := first.Apply(ctx, req("/pods/a/target")); err != nil {
		t.Fatal(err)
	}
	// Zero limits are a removal.
	if _, err := first.Apply(ctx, iolimit.Request{TargetPath: "/pods/a/none", PodUID: uid, Device: dev}); err != nil {
		t.Fatal(err)
	}

	second := n.manager(t, time.Hour)
	if err := second.Remove(ctx, "/pods/a/target"); err != nil {
		t.Fatal(err)
	}
	if l := n.limits(t, n.podDir); l != (iolimit.Limits{}) {
		t.Fatalf("a restarted manager did not clear %+v", l)
	}

	if _, err := second.Apply(ctx, req("/pods/a/target")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(n.podDir); err != nil {
		t.Fatal(err)
	}
	third := n.manager(t, 50*time.Millisecond)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- third.Run(rctx) }()
	eventually(t, "the record of a gone pod to be forgotten", func() bool {
		left, _ := os.ReadDir(n.stateDir)
		return len(left) == 0
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestManagerWaitsForPodCgroup: kubelet may publish before it created the
// pod's cgroup; Apply finds a cgroup that appears while it waits.
func TestManagerWaitsForPodCgroup(t *testing.T) {
	n := newFakeNode(t, iolimit.V1)
	if err := os.RemoveAll(n.podDir); err != nil {
		t.Fatal(err)
	}
	m, err := iolimit.New(iolimit.Options{StateDir: n.stateDir, Hierarchy: &n.h, PodCgroupWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := m.Apply(t.Context(), req("/pods/a/target"))
		done <- err
	}()
	// Apply polls: this is found whenever it happens within the minute.
	time.Sleep(150 * time.Millisecond)
	fakeCgroup(t, iolimit.V1, n.podDir)
	if err := <-done; err != nil {
		t.Fatalf("Apply with a pod cgroup created meanwhile: %v", err)
	}
	if l := n.limits(t, n.podDir); l != limits {
		t.Fatalf("pod cgroup holds %+v", l)
	}
}

// TestManagerErrors: a pod without a cgroup, and a node without an IO
// controller, are refused with errors that say so; nothing is recorded.
func TestManagerErrors(t *testing.T) {
	n := newFakeNode(t, iolimit.V2)
	m := n.manager(t, time.Hour)
	r := req("/pods/b/target")
	r.PodUID = "11111111-2222-3333-4444-555555555555"
	if _, err := m.Apply(t.Context(), r); !errors.Is(err, iolimit.ErrPodCgroupNotFound) {
		t.Fatalf("pod without cgroup: %v", err)
	}
	if left, _ := os.ReadDir(n.stateDir); len(left) != 0 {
		t.Errorf("records of a failed Apply: %v", left)
	}
	none, err := iolimit.New(iolimit.Options{CgroupMount: t.TempDir(), StateDir: n.stateDir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := none.Apply(t.Context(), req("/pods/a/target")); !errors.Is(err, iolimit.ErrNoController) {
		t.Fatalf("node without IO controller: %v", err)
	}
	if _, err := iolimit.New(iolimit.Options{StateDir: n.stateDir, Layout: iolimit.Layout{Driver: "upstart"}}); err == nil {
		t.Fatal("unknown driver accepted")
	}
}
