/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package node_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/csi/node"
	"github.com/open-local/open-local/csi/node/iolimit"
	"github.com/open-local/open-local/csi/node/iolimit/iolimittest"
	"github.com/open-local/open-local/test/capability"
)

// The limits the throttling tests set. Small enough that the slowest
// machine (the emulated VM) is still several times faster unthrottled.
const (
	limitBPS  = 4 << 20 // 4 MiB/s
	limitIOPS = 100
	// Measurements must be within ±tolerance of the limit...
	tolerance = 0.3
	// ...and unthrottled at least this many times faster.
	unthrottledFactor = 3
)

// ioHierarchy returns the cgroup hierarchy kubelet would use here and
// requires the capability it needs: v1 blkio on the CI host, v2 io in the VM.
func ioHierarchy(t *testing.T) iolimit.Hierarchy {
	t.Helper()
	h, err := iolimit.DetectHierarchy(iolimit.DefaultCgroupMount)
	if err != nil {
		// Reports what this machine lacks, or fails where CI says it has it.
		capability.Require(t, capability.CgroupV1Blkio)
		capability.Require(t, capability.CgroupV2IO)
		t.Fatalf("no cgroup IO controller: %v", err)
	}
	capability.Require(t, map[iolimit.Version]capability.Capability{iolimit.V1: capability.CgroupV1Blkio, iolimit.V2: capability.CgroupV2IO}[h.Version])
	return h
}

// testCgroupRoot is a kubelet --cgroup-root of the test's own: a real
// kubelet on the same machine (the demo) reaps pod cgroups under its
// kubepods that belong to no pod it knows.
func testCgroupRoot() string { return "/open-local-test-" + rand.String(6) }

func podContext(p *iolimittest.Pod, extra map[string]string) map[string]string {
	m := map[string]string{
		parameters.PodName: "app", parameters.PodNamespace: "default", parameters.PodUID: string(p.UID),
		parameters.PodServiceAccount: "default", parameters.Ephemeral: "false",
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

type measurement struct {
	name     string
	workload iolimittest.Workload
	// rate picks the throttled quantity and limit is its limit.
	rate  func(iolimittest.Result) float64
	limit float64
	unit  string
}

// TestNodeIOLimits publishes a volume with bps and iops into a pod cgroup
// laid out as kubelet does (cgroupfs, BestEffort) and measures, with a
// process in a container cgroup created after the publish (as a container
// runtime creates it) reading and writing with O_DIRECT, that IO runs near
// the limits, that it runs far faster without them (before the publish and
// after the unpublish), and that the unpublish removes the limits. cgroup
// v1 blkio on the host, v2 io.max in the VM (real /dev/<vg>/<lv> there).
func TestNodeIOLimits(t *testing.T) {
	capability.Require(t, capability.Ext4)
	h := ioHierarchy(t)
	e := newEnv(t, "olnodeio", 512*mib)
	ctx := t.Context()
	id := "vol-io"
	e.volume(t, id, 128*mib)
	layout := iolimit.Layout{Driver: iolimit.DriverCgroupfs, Root: testCgroupRoot()}
	limits, err := iolimit.New(iolimit.Options{Layout: iolimit.Layout{Driver: iolimit.DriverAuto, Root: layout.Root}, StateDir: filepath.Join(e.dir, "io-limits")})
	if err != nil {
		t.Fatal(err)
	}
	runManager(t, limits)
	s, err := node.New(node.Options{NodeID: e.name, Client: e.ol, Activator: e.act, IOLimits: limits})
	if err != nil {
		t.Fatal(err)
	}
	pod := iolimittest.NewPod(t, h, layout, corev1.PodQOSBestEffort)

	staging, target := filepath.Join(e.dir, "staging"), filepath.Join(e.dir, "pods", string(pod.UID), "mount")
	vc := mountCap("ext4", csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	if _, err := s.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: vc}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = s.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
		_, _ = s.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
	})
	const span = 16 << 20
	iolimittest.Fill(t, filepath.Join(staging, "data"), span)
	workloads := func(dir string) []measurement {
		f := filepath.Join(dir, "data")
		bps := func(r iolimittest.Result) float64 { return r.MiBps() }
		iops := func(r iolimittest.Result) float64 { return r.IOPS() }
		return []measurement{
			{"write bps", iolimittest.Workload{Path: f, Write: true, BlockSize: 1 << 20, Count: 8, Span: span}, bps, limitBPS >> 20, "MiB/s"},
			{"write iops", iolimittest.Workload{Path: f, Write: true, BlockSize: 4 << 10, Count: 200, Span: span}, iops, limitIOPS, "IOPS"},
			{"read bps", iolimittest.Workload{Path: f, BlockSize: 1 << 20, Count: 8, Span: span}, bps, limitBPS >> 20, "MiB/s"},
			{"read iops", iolimittest.Workload{Path: f, BlockSize: 4 << 10, Count: 200, Span: span}, iops, limitIOPS, "IOPS"},
		}
	}

	// Unthrottled, in the pod cgroup, before the publish.
	before := map[string]float64{}
	for _, m := range workloads(staging) {
		r := iolimittest.Measure(t, pod.Dir, m.workload)
		before[m.name] = m.rate(r)
	}

	vctx := podContext(pod, map[string]string{parameters.BPS: strconv.Itoa(limitBPS), parameters.IOPS: strconv.Itoa(limitIOPS)})
	for range 2 {
		if _, err := s.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target,
			VolumeCapability: vc, VolumeContext: vctx}); err != nil {
			t.Fatalf("NodePublishVolume: %v", err)
		}
	}
	dev, err := iolimit.DeviceOf(target)
	if err != nil {
		t.Fatal(err)
	}
	want := iolimit.Symmetric(limitBPS, limitIOPS)
	if got := readLimits(t, h, pod.Dir, dev); got != want {
		t.Fatalf("pod cgroup %s holds %v for %s, want %v", pod.Dir, got, dev, want)
	}
	// The container starts after its volumes are published.
	container := pod.Child(t, "app-container")
	if h.Version == iolimit.V1 {
		// v1 throttling is not hierarchical: the limit must be copied into
		// the container's cgroup, which the manager does when it appears.
		waitFor(t, "limits in the new container cgroup", func() bool { return readLimits(t, h, container, dev) == want })
	}

	for _, m := range workloads(target) {
		r := iolimittest.Measure(t, container, m.workload)
		got := m.rate(r)
		t.Logf("cgroup v%d, %s (%s) on %s: unthrottled %.1f %s, limit %.0f %s: %.1f %s (%s)",
			h.Version, m.name, m.workload, dev, before[m.name], m.unit, m.limit, m.unit, got, m.unit, r)
		if !iolimittest.Within(got, m.limit, tolerance) {
			t.Errorf("%s: %.1f %s, want %.0f ±%.0f%%", m.name, got, m.unit, m.limit, tolerance*100)
		}
		if before[m.name] < unthrottledFactor*m.limit {
			t.Errorf("%s unthrottled: %.1f %s, want at least %d× the limit %.0f (the limit proves nothing otherwise)",
				m.name, before[m.name], m.unit, unthrottledFactor, m.limit)
		}
	}

	for range 2 {
		if _, err := s.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
			t.Fatalf("NodeUnpublishVolume: %v", err)
		}
	}
	for _, dir := range []string{pod.Dir, container} {
		if got := readLimits(t, h, dir, dev); got != (iolimit.Limits{}) {
			t.Errorf("%s still holds %v for %s after NodeUnpublishVolume", dir, got, dev)
		}
	}
	// The same container, through the still staged filesystem: unthrottled.
	m := workloads(staging)[0]
	r := iolimittest.Measure(t, container, m.workload)
	t.Logf("cgroup v%d, %s after unpublish: %.1f %s", h.Version, m.name, m.rate(r), m.unit)
	if m.rate(r) < unthrottledFactor*m.limit {
		t.Errorf("%s after unpublish: %.1f %s, still near the limit %.0f", m.name, m.rate(r), m.unit, m.limit)
	}
}

// TestNodeIOLimitsLayouts: a raw block volume published into a Guaranteed
// pod of the systemd layout gets its limits on the device itself; a pod
// whose cgroup does not exist, and a volume with limits but no pod UID,
// are refused clearly and leave nothing mounted.
func TestNodeIOLimitsLayouts(t *testing.T) {
	h := ioHierarchy(t)
	e := newEnv(t, "olnodeiol", 256*mib)
	ctx := t.Context()
	id := "vol-io-blk"
	e.volume(t, id, 32*mib)
	root := testCgroupRoot()
	limits, err := iolimit.New(iolimit.Options{Layout: iolimit.Layout{Driver: iolimit.DriverSystemd, Root: root}, StateDir: filepath.Join(e.dir, "io-limits"),
		PodCgroupWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s, err := node.New(node.Options{NodeID: e.name, Client: e.ol, Activator: e.act, IOLimits: limits})
	if err != nil {
		t.Fatal(err)
	}
	pod := iolimittest.NewPod(t, h, iolimit.Layout{Driver: iolimit.DriverSystemd, Root: root}, corev1.PodQOSGuaranteed)
	staging := filepath.Join(e.dir, "blk-staging")
	if err := os.MkdirAll(staging, 0o750); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: blockCap()}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = s.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging})
	})
	publish := func(target string, vctx map[string]string) error {
		_, err := s.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target,
			VolumeCapability: blockCap(), VolumeContext: vctx})
		return err
	}
	withLimits := map[string]string{parameters.BPS: "10Mi", parameters.IOPS: "1000"}

	target := filepath.Join(e.dir, "pods", string(pod.UID), "dev")
	if err := publish(target, podContext(pod, withLimits)); err != nil {
		t.Fatal(err)
	}
	dev, err := iolimit.DeviceOf(target)
	if err != nil {
		t.Fatal(err)
	}
	lvDev, err := e.act.Activate(ctx, e.vg.Name, id)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := iolimit.DeviceOf(lvDev); dev != want {
		t.Fatalf("limited device %s is not the LV's %s (%s)", dev, want, lvDev)
	}
	if got, want := readLimits(t, h, pod.Dir, dev), iolimit.Symmetric(10<<20, 1000); got != want {
		t.Fatalf("systemd-layout pod cgroup %s holds %v, want %v", pod.Dir, got, want)
	}
	if _, err := s.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	if got := readLimits(t, h, pod.Dir, dev); got != (iolimit.Limits{}) {
		t.Fatalf("limits left after unpublish: %v", got)
	}

	missing := &iolimittest.Pod{UID: "00000000-1111-2222-3333-444444444444"}
	noUID := podContext(pod, withLimits)
	delete(noUID, parameters.PodUID)
	for _, tt := range []struct {
		name string
		vctx map[string]string
	}{
		{"pod without cgroup", podContext(missing, withLimits)},
		{"no podInfoOnMount", noUID},
	} {
		t.Run(tt.name, func(t *testing.T) {
			target := filepath.Join(e.dir, "bad", tt.name)
			err := publish(target, tt.vctx)
			if status.Code(err) != codes.FailedPrecondition {
				t.Fatalf("got %v, want FailedPrecondition", err)
			}
			t.Logf("%v", err)
			if isMountPoint(t, target) {
				t.Fatalf("a failed publish left %s mounted", target)
			}
			_, _ = s.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target})
		})
	}
}

func readLimits(t *testing.T, h iolimit.Hierarchy, dir string, dev iolimit.Device) iolimit.Limits {
	t.Helper()
	l, err := iolimit.Read(h.Version, os.ReadFile, dir, dev)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func runManager(t *testing.T, m *iolimit.Manager) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// waitFor polls cond; the deadline only bounds a failing test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func isMountPoint(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}
