/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package node_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/csi/node"
	"github.com/open-local/open-local/csi/node/iolimit"
	"github.com/open-local/open-local/csi/node/iolimit/iolimittest"
	"github.com/open-local/open-local/lvm"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/csitest"
)

// inlineHandle is kubelet's volume handle of an inline volume
// (pkg/volume/csi makeVolumeHandle).
func inlineHandle(pod *corev1.Pod, volume string) string {
	sum := sha256.Sum256([]byte(string(pod.UID) + volume))
	return "csi-" + hex.EncodeToString(sum[:])
}

// inlineEnv is a storage node run by the real agent binary (LocalVolume
// reconciler and inline volume collector) on the local cluster, and the
// node service.
type inlineEnv struct {
	c    *cluster.Cluster
	node *csitest.Node
	srv  *node.Server
	dir  string
	// layout is where the node service sets IO limits (it has none on a
	// machine without an IO controller).
	layout iolimit.Layout
}

func newInlineEnv(t *testing.T, vg string, size int64, configure ...func(*node.Options)) *inlineEnv {
	t.Helper()
	capability.Require(t, capability.Ext4)
	c := cluster.ForTest(t)
	e := &inlineEnv{c: c}
	n := csitest.NewAgentNode(t, c, "inline-"+vg, vg, size)
	var limits *iolimit.Manager
	if _, err := iolimit.DetectHierarchy(iolimit.DefaultCgroupMount); err == nil {
		layout := iolimit.Layout{Driver: iolimit.DriverCgroupfs, Root: testCgroupRoot()}
		if limits, err = iolimit.New(iolimit.Options{Layout: layout, StateDir: filepath.Join(t.TempDir(), "io-limits")}); err != nil {
			t.Fatal(err)
		}
		e.layout = layout
	}
	opts := node.Options{NodeID: n.Name, Client: c.OpenLocalClient(), Activator: n.Activator(t), InlineReadyTimeout: time.Minute,
		IOLimits: limits}
	for _, f := range configure {
		f(&opts)
	}
	s, err := node.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e.node, e.srv, e.dir = n, s, t.TempDir()
	return e
}

// pod creates a running pod on the node, as kubelet would publish for.
func (e *inlineEnv) pod(t *testing.T, name string) *corev1.Pod {
	t.Helper()
	pods := e.c.Client().CoreV1().Pods("default")
	p, err := pods.Create(t.Context(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: e.node.Name, Containers: []corev1.Container{{Name: "app", Image: "app"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		zero := int64(0)
		_ = pods.Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})
	return p
}

// request is kubelet's NodePublishVolume for an inline volume of pod.
func (e *inlineEnv) request(pod *corev1.Pod, volume string, attrs map[string]string) *csi.NodePublishVolumeRequest {
	vctx := map[string]string{
		parameters.PodName: pod.Name, parameters.PodNamespace: pod.Namespace, parameters.PodUID: string(pod.UID),
		parameters.PodServiceAccount: "default", parameters.Ephemeral: "true",
	}
	for k, v := range attrs {
		vctx[k] = v
	}
	return &csi.NodePublishVolumeRequest{
		VolumeId:         inlineHandle(pod, volume),
		TargetPath:       filepath.Join(e.dir, "pods", string(pod.UID), "volumes", volume, "mount"),
		VolumeCapability: mountCap("", csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER),
		VolumeContext:    vctx,
	}
}

func (e *inlineEnv) waitGone(t *testing.T, name string) {
	t.Helper()
	waitFor(t, "LocalVolume "+name+" and its LV to be removed", func() bool {
		_, err := e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Get(t.Context(), name, metav1.GetOptions{})
		_, lvErr := e.node.LVM.GetLV(t.Context(), e.node.VG.Name, name)
		return apierrors.IsNotFound(err) && errors.Is(lvErr, lvm.ErrNotFound)
	})
}

// TestInlineVolume: kubelet publishes an inline volume of a pod that no
// open-local scheduler placed: the node allocates the LocalVolume itself,
// the agent creates the LV, the node formats and mounts it; unpublish
// unmounts and deletes the LocalVolume, and the agent removes the LV. A pod
// our scheduler placed has no LocalVolume either (the scheduler counts it
// from the pod): without a vgName attribute the node chooses the VG.
func TestInlineVolume(t *testing.T) {
	e := newInlineEnv(t, "olinline", 1<<30)
	ctx := t.Context()
	lvs := e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes()

	t.Run("allocated by the node", func(t *testing.T) {
		pod := e.pod(t, "inline-node")
		// No fsType in the capability: the attribute's (xfs needs 300 MiB).
		req := e.request(pod, "scratch", map[string]string{"vgName": e.node.VG.Name, "size": "320Mi", "fsType": "xfs"})
		for range 2 {
			if _, err := e.srv.NodePublishVolume(ctx, req); err != nil {
				t.Fatalf("NodePublishVolume: %v", err)
			}
		}
		lv, err := lvs.Get(ctx, req.VolumeId, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if lv.Spec.NodeName != e.node.Name || lv.Spec.VGName != e.node.VG.Name || lv.Spec.Size.Value() != 320<<20 ||
			lv.Spec.PodRef == nil || lv.Spec.PodRef.UID != pod.UID || lv.Status.Phase != v1alpha1.PhaseReady {
			t.Fatalf("LocalVolume: spec %+v status %+v", lv.Spec, lv.Status)
		}
		if _, err := e.node.LVM.GetLV(ctx, e.node.VG.Name, req.VolumeId); err != nil {
			t.Fatalf("LV of the inline volume: %v", err)
		}
		if opts := mountOptions(t, req.TargetPath); !containsWord(opts, "xfs") {
			t.Fatalf("target mount %q is not xfs", opts)
		}
		if err := os.WriteFile(filepath.Join(req.TargetPath, "f"), []byte("scratch"), 0o644); err != nil {
			t.Fatalf("inline volume not writable: %v", err)
		}
		for range 2 {
			if _, err := e.srv.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath}); err != nil {
				t.Fatalf("NodeUnpublishVolume: %v", err)
			}
		}
		if _, err := os.Stat(req.TargetPath); !os.IsNotExist(err) {
			t.Fatalf("target left behind: %v", err)
		}
		e.waitGone(t, req.VolumeId)
	})

	t.Run("placed by the open-local scheduler: no vgName, the node chooses the VG, with IO limits", func(t *testing.T) {
		h := ioHierarchy(t)
		pod := e.pod(t, "inline-sched")
		cg := iolimittest.PodFor(t, h, e.layout, corev1.PodQOSBestEffort, pod.UID)
		req := e.request(pod, "cache", map[string]string{"size": "48Mi", "bps": "2Mi", "iops": "300"})
		// The scheduler wrote no LocalVolume (it counts the volume from the pod).
		if _, err := e.srv.NodePublishVolume(ctx, req); err != nil {
			t.Fatalf("NodePublishVolume: %v", err)
		}
		lv, err := lvs.Get(ctx, req.VolumeId, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if lv.Spec.VGName != e.node.VG.Name || lv.Spec.Size.Value() != 48<<20 || lv.Spec.PodRef == nil || lv.Spec.PodRef.UID != pod.UID {
			t.Fatalf("LocalVolume the node wrote: %+v", lv.Spec)
		}
		if opts := mountOptions(t, req.TargetPath); !containsWord(opts, "ext4") {
			t.Fatalf("target mount %q is not the default ext4", opts)
		}
		dev, err := iolimit.DeviceOf(req.TargetPath)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := readLimits(t, h, cg.Dir, dev), iolimit.Symmetric(2<<20, 300); got != want {
			t.Fatalf("pod cgroup holds %v for %s, want %v", got, dev, want)
		}
		if _, err := e.srv.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath}); err != nil {
			t.Fatal(err)
		}
		if got := readLimits(t, h, cg.Dir, dev); got != (iolimit.Limits{}) {
			t.Fatalf("limits left after unpublish: %v", got)
		}
		e.waitGone(t, req.VolumeId)
	})
}

// A LocalVolume that exists before the publish (an older scheduler's
// PreBind wrote it, or an earlier publish) is used as is, with its VG.
func TestInlineVolumeExistingRecord(t *testing.T) {
	e := newInlineEnv(t, "olinlinerec", 256<<20)
	ctx := t.Context()
	lvs := e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes()
	pod := e.pod(t, "inline-rec")
	req := e.request(pod, "cache", map[string]string{"size": "48Mi"})
	written := v1alpha1.InlineLocalVolume(req.VolumeId, e.node.Name, e.node.VG.Name, 48<<20,
		v1alpha1.ObjectReference{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID})
	created, err := lvs.Create(ctx, written, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.srv.NodePublishVolume(ctx, req); err != nil {
		t.Fatalf("NodePublishVolume: %v", err)
	}
	lv, err := lvs.Get(ctx, req.VolumeId, metav1.GetOptions{})
	if err != nil || lv.UID != created.UID {
		t.Fatalf("the record was replaced: %v", err)
	}
	if _, err := e.srv.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath}); err != nil {
		t.Fatal(err)
	}
	e.waitGone(t, req.VolumeId)
}

// TestInlineVolumeBadInput: clear codes for what a pod spec can get wrong,
// and ResourceExhausted when the VG lacks room; nothing is allocated.
func TestInlineVolumeBadInput(t *testing.T) {
	e := newInlineEnv(t, "olinlinebad", 256<<20)
	ctx := t.Context()
	pod := e.pod(t, "inline-bad")
	vg := e.node.VG.Name
	blockReq := e.request(pod, "v", map[string]string{"vgName": vg})
	blockReq.VolumeCapability = blockCap()
	noPod := e.request(pod, "v", map[string]string{"vgName": vg})
	delete(noPod.VolumeContext, parameters.PodUID)
	tests := []struct {
		name string
		req  *csi.NodePublishVolumeRequest
		want codes.Code
	}{
		{"no vgName and no VG with room", e.request(pod, "v", map[string]string{"size": "1Gi"}), codes.ResourceExhausted},
		{"size not a quantity", e.request(pod, "v", map[string]string{"vgName": vg, "size": "lots"}), codes.InvalidArgument},
		{"unknown attribute", e.request(pod, "v", map[string]string{"vgName": vg, "vgname": vg}), codes.InvalidArgument},
		{"unsupported filesystem", e.request(pod, "v", map[string]string{"vgName": vg, "fsType": "btrfs"}), codes.InvalidArgument},
		{"VG not open-local's", e.request(pod, "v", map[string]string{"vgName": "not-here"}), codes.InvalidArgument},
		{"block access", blockReq, codes.InvalidArgument},
		{"no pod info", noPod, codes.InvalidArgument},
		{"larger than the VG's room", e.request(pod, "v", map[string]string{"vgName": vg, "size": "1Gi"}), codes.ResourceExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.srv.NodePublishVolume(ctx, tt.req)
			if status.Code(err) != tt.want {
				t.Fatalf("got %v, want %s", err, tt.want)
			}
			t.Log(err)
			if _, err := e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Get(ctx, tt.req.VolumeId, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Fatalf("a refused publish allocated LocalVolume %s: %v", tt.req.VolumeId, err)
			}
		})
	}
}

func containsWord(s, w string) bool {
	return slices.Contains(strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' }), w)
}

// TestInlineVolumeDefaultSize: an inline volume without a size gets the
// scheduler's defaultInlineVolumeSize (the plugin's
// --default-inline-volume-size), the size the scheduler counted from the
// pod; before, the node always created 1Gi.
func TestInlineVolumeDefaultSize(t *testing.T) {
	const want = 64 << 20
	e := newInlineEnv(t, "olinlinedef", 256<<20, func(o *node.Options) { o.DefaultInlineSize = want })
	ctx := t.Context()
	req := e.request(e.pod(t, "inline-default"), "v", nil)
	if _, err := e.srv.NodePublishVolume(ctx, req); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = e.srv.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath})
	})
	lv, err := e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Get(ctx, req.VolumeId, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := lv.Spec.Size.Value(); got != want {
		t.Errorf("inline volume without a size: LocalVolume of %d bytes, want the configured default %d", got, want)
	}
	if lv.Status.CurrentSize == nil || lv.Status.CurrentSize.Value() != want {
		t.Errorf("inline volume without a size: LV of %v, want %d bytes", lv.Status.CurrentSize, want)
	}
}

// The node's own allocation of an inline volume counts the VG as the
// scheduler and the CSI controller do (the ledger): whole extents, so sizes
// just past an extent boundary cannot together spend more than the VG has.
func TestInlineVolumeCountsWholeExtents(t *testing.T) {
	e := newInlineEnv(t, "olinlineext", 256<<20)
	ctx := t.Context()
	ol := e.c.OpenLocalClient().CsiV1alpha1()
	nls, err := ol.NodeLocalStorages().Get(ctx, e.node.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var allocatable, extent int64
	for _, g := range nls.Status.NodeStorageInfo.VolumeGroups {
		if g.Name == e.node.VG.Name {
			allocatable, extent = int64(g.Allocatable), int64(g.ExtentSize)
		}
	}
	if allocatable == 0 || extent == 0 {
		t.Fatalf("VG %s not in NodeLocalStorage %s: %+v", e.node.VG.Name, e.node.Name, nls.Status.NodeStorageInfo.VolumeGroups)
	}
	// Two volumes one byte past an extent: they take 4 extents, not 2 and
	// 2 bytes.
	for _, name := range []string{"ext-a", "ext-b"} {
		lv := &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: name, Finalizers: []string{v1alpha1.LocalVolumeFinalizer}},
			Spec: v1alpha1.LocalVolumeSpec{NodeName: e.node.Name, VolumeType: v1alpha1.VolumeTypeLVM, Kind: v1alpha1.KindVolume,
				VGName: e.node.VG.Name, Size: *resource.NewQuantity(extent+1, resource.BinarySI)}}
		if _, err := ol.LocalVolumes().Create(ctx, lv, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ol.LocalVolumes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	}
	// Room left: allocatable − 4 extents. Asking for 3 extents less than
	// allocatable fits the byte sum (2 extents + 2 bytes) but not the LVs.
	pod := e.pod(t, "inline-ext")
	size := allocatable - 3*extent
	req := e.request(pod, "v", map[string]string{"vgName": e.node.VG.Name, "size": resource.NewQuantity(size, resource.BinarySI).String()})
	_, err = e.srv.NodePublishVolume(ctx, req)
	if status.Code(err) != codes.ResourceExhausted {
		if err == nil {
			_, _ = e.srv.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath})
		}
		t.Fatalf("inline volume of %d bytes with %d of %d bytes in whole extents taken: got %v, want ResourceExhausted", size, 4*extent, allocatable, err)
	}
	t.Log(err)
	if _, err := ol.LocalVolumes().Get(ctx, req.VolumeId, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		_ = ol.LocalVolumes().Delete(context.Background(), req.VolumeId, metav1.DeleteOptions{})
		t.Fatalf("a refused publish allocated LocalVolume %s: %v", req.VolumeId, err)
	}
}
