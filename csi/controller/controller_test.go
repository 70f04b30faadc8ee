/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package controller_test

import (
	"context"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	"math"
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
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/open-local/open-local/apis/client/clientset/versioned"
	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/csi/controller"
	"github.com/open-local/open-local/test/cluster"
)

func TestMain(m *testing.M) { cluster.Main(m) }

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// These tests exercise the controller alone against the real API server;
// the node agent's part (status) is played by the test, so each outcome
// (Ready, Failed with a code, slow) is reached deterministically. The real
// agent is in the sanity and e2e suites.

type fixture struct {
	ol   versioned.Interface
	srv  *controller.Server
	c    *cluster.Cluster
	node string
}

// newFixture registers a node whose NodeLocalStorage offers the given VGs
// (name → allocatable bytes) and devices (name → size, all ssd but "hdd*").
func newFixture(t *testing.T, node string, vgs map[string]int64, devices map[string]int64) *fixture {
	t.Helper()
	c := cluster.ForTest(t)
	f := &fixture{ol: c.OpenLocalClient(), srv: controller.New(c.OpenLocalClient(), c.Client()), c: c, node: node}
	ctx := t.Context()
	nlsAPI := f.ol.CsiV1alpha1().NodeLocalStorages()
	if _, err := nlsAPI.Create(ctx, &v1alpha1.NodeLocalStorage{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := cluster.Update(ctx, nlsAPI.Get, nlsAPI.UpdateStatus, node, func(nls *v1alpha1.NodeLocalStorage) { setStatus(nls, vgs, devices) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_ = nlsAPI.Delete(ctx, node, metav1.DeleteOptions{})
		lvs := f.ol.CsiV1alpha1().LocalVolumes()
		list, _ := lvs.List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
		for _, lv := range list.Items {
			_, _ = cluster.Update(ctx, lvs.Get, lvs.Update, lv.Name, func(lv *v1alpha1.LocalVolume) { lv.Finalizers = nil })
			_ = lvs.Delete(ctx, lv.Name, metav1.DeleteOptions{})
		}
	})
	return f
}

// setStatus is what the agent's discovery would report for the VGs and devices.
func setStatus(nls *v1alpha1.NodeLocalStorage, vgs map[string]int64, devices map[string]int64) {
	for name, size := range vgs {
		nls.Status.NodeStorageInfo.VolumeGroups = append(nls.Status.NodeStorageInfo.VolumeGroups,
			v1alpha1.VolumeGroup{Name: name, PhysicalVolumes: []string{"/dev/pv-of-" + name}, Total: uint64(size), Allocatable: uint64(size), Available: uint64(size)})
		nls.Status.FilteredStorageInfo.VolumeGroups = append(nls.Status.FilteredStorageInfo.VolumeGroups, name)
	}
	for name, size := range devices {
		media := "ssd"
		if strings.Contains(name, "hdd") {
			media = "hdd"
		}
		nls.Status.NodeStorageInfo.DeviceInfos = append(nls.Status.NodeStorageInfo.DeviceInfos,
			v1alpha1.DeviceInfo{Name: name, MediaType: media, Total: uint64(size)})
		nls.Status.FilteredStorageInfo.Devices = append(nls.Status.FilteredStorageInfo.Devices, name)
	}
}

// agent plays the node agent for one volume: it waits for the record and
// writes the status the real agent would.
func (f *fixture) agent(t *testing.T, name string, edit func(lv *v1alpha1.LocalVolume)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		lv, err := f.ol.CsiV1alpha1().LocalVolumes().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		edit(lv)
		lv.Status.ObservedGeneration = lv.Generation
		_, err = f.ol.CsiV1alpha1().LocalVolumes().UpdateStatus(ctx, lv, metav1.UpdateOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("agent for %s: %v", name, err)
	}
}

func readyAs(lv *v1alpha1.LocalVolume) {
	lv.Status.Phase, lv.Status.Code, lv.Status.Message = v1alpha1.PhaseReady, "", ""
	lv.Status.DevicePath = "/dev/" + lv.Spec.VGName + "/" + lv.Name
	lv.Status.CurrentSize = resource.NewQuantity(lv.Spec.Size.Value(), resource.BinarySI)
}

func mountCaps(fs string) []*csi.VolumeCapability {
	return []*csi.VolumeCapability{{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fs}}}}
}

func onNode(node string) *csi.TopologyRequirement {
	return &csi.TopologyRequirement{Preferred: []*csi.Topology{{Segments: map[string]string{"kubernetes.io/hostname": node}}}}
}

func createReq(name, node string, size int64, params map[string]string) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{Name: name, CapacityRange: &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: mountCaps("ext4"), Parameters: params, AccessibilityRequirements: onNode(node)}
}

// CreateVolume waits for the agent; an overlapping call on the same volume
// is Aborted; a repeated call returns the same volume.
func TestCreateVolumeIdempotentAndAborted(t *testing.T) {
	f := newFixture(t, "ctl-idem", map[string]int64{"pool0": 10 * gib}, nil)
	ctx := t.Context()
	req := createReq("vol-idem", f.node, gib, map[string]string{"volumeType": "LVM"})
	type result struct {
		resp *csi.CreateVolumeResponse
		err  error
	}
	first := make(chan result, 1)
	go func() {
		resp, err := f.srv.CreateVolume(ctx, req)
		first <- result{resp, err}
	}()
	// The record exists (the first call is waiting for the agent) ...
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := f.ol.CsiV1alpha1().LocalVolumes().Get(ctx, "vol-idem", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// ... so an overlapping call is refused.
	if _, err := f.srv.CreateVolume(ctx, req); status.Code(err) != codes.Aborted {
		t.Fatalf("overlapping CreateVolume: %v, want Aborted", err)
	}
	if _, err := f.srv.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: "vol-idem",
		CapacityRange: &csi.CapacityRange{RequiredBytes: 2 * gib}}); status.Code(err) != codes.Aborted {
		t.Fatalf("overlapping ControllerExpandVolume: %v, want Aborted", err)
	}
	f.agent(t, "vol-idem", readyAs)
	r := <-first
	if r.err != nil {
		t.Fatal(r.err)
	}
	v := r.resp.Volume
	if v.VolumeId != "vol-idem" || v.CapacityBytes != gib || v.AccessibleTopology[0].Segments["kubernetes.io/hostname"] != f.node ||
		v.VolumeContext["vgName"] != "pool0" || v.VolumeContext["csi.aliyun.com/fstype"] != "ext4" {
		t.Fatalf("CreateVolume = %+v", v)
	}
	for range 3 {
		again, err := f.srv.CreateVolume(ctx, req)
		if err != nil || again.Volume.String() != v.String() {
			t.Fatalf("repeated CreateVolume = %v, %v; want %v", again, err, v)
		}
	}
	bigger := createReq("vol-idem", f.node, 2*gib, map[string]string{"volumeType": "LVM"})
	if _, err := f.srv.CreateVolume(ctx, bigger); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("same name, other size: %v, want AlreadyExists", err)
	}
	lv, _ := f.ol.CsiV1alpha1().LocalVolumes().Get(ctx, "vol-idem", metav1.GetOptions{})
	if lv.Spec.NodeName != f.node || lv.Spec.VGName != "pool0" || lv.Spec.Size.Value() != gib ||
		len(lv.Finalizers) != 1 || lv.Finalizers[0] != v1alpha1.LocalVolumeFinalizer {
		t.Fatalf("LocalVolume written: %+v", lv)
	}
}

// Placement: the VG with room, the pinned VG, the smallest fitting device;
// nothing fitting is ResourceExhausted with the numbers.
func TestCreateVolumePlacement(t *testing.T) {
	f := newFixture(t, "ctl-place", map[string]int64{"small": 2 * gib, "big": 8 * gib},
		map[string]int64{"/dev/sdb": 100 * gib, "/dev/sdc": 20 * gib, "/dev/hdd1": 500 * gib})
	ctx := t.Context()
	tests := []struct {
		name      string
		size      int64
		params    map[string]string
		wantVG    string
		wantDev   string
		wantCode  codes.Code
		wantInMsg string
	}{
		{name: "most free VG", size: gib, params: map[string]string{"volumeType": "LVM"}, wantVG: "big"},
		{name: "pinned VG", size: gib, params: map[string]string{"volumeType": "LVM", "vgName": "small"}, wantVG: "small"},
		{name: "pinned VG too small", size: 3 * gib, params: map[string]string{"vgName": "small"},
			wantCode: codes.ResourceExhausted, wantInMsg: "VG small on node ctl-place: need 3Gi"},
		{name: "unknown VG", size: gib, params: map[string]string{"vgName": "nope"},
			wantCode: codes.ResourceExhausted, wantInMsg: "not in the node's NodeLocalStorage"},
		{name: "no VG big enough", size: 20 * gib, params: nil, wantCode: codes.ResourceExhausted, wantInMsg: "no VG has 20Gi free"},
		{name: "smallest ssd that fits", size: 10 * gib, params: map[string]string{"volumeType": "Device", "mediaType": "ssd"}, wantDev: "/dev/sdc"},
		{name: "hdd", size: 10 * gib, params: map[string]string{"volumeType": "Device", "mediaType": "hdd"}, wantDev: "/dev/hdd1"},
		{name: "no ssd big enough", size: 200 * gib, params: map[string]string{"volumeType": "Device", "mediaType": "ssd"},
			wantCode: codes.ResourceExhausted, wantInMsg: "no free ssd device"},
		{name: "unknown parameter", size: gib, params: map[string]string{"vgname": "big"}, wantCode: codes.InvalidArgument, wantInMsg: `"vgname"`},
		{name: "the only hdd is taken", size: gib, params: map[string]string{"volumeType": "Device", "mediaType": "hdd"},
			wantCode: codes.ResourceExhausted, wantInMsg: "no free hdd device of at least 1Gi"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := "vol-place-" + string(rune('a'+i))
			type result struct {
				resp *csi.CreateVolumeResponse
				err  error
			}
			done := make(chan result, 1)
			go func() {
				resp, err := f.srv.CreateVolume(ctx, createReq(name, f.node, tt.size, tt.params))
				done <- result{resp, err}
			}()
			if tt.wantCode != codes.OK {
				r := <-done
				if status.Code(r.err) != tt.wantCode || !strings.Contains(status.Convert(r.err).Message(), tt.wantInMsg) {
					t.Fatalf("CreateVolume: %v; want %s mentioning %q", r.err, tt.wantCode, tt.wantInMsg)
				}
				if _, err := f.ol.CsiV1alpha1().LocalVolumes().Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
					t.Fatalf("a refused volume left a LocalVolume: %v", err)
				}
				return
			}
			f.agent(t, name, readyAs)
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			lv, _ := f.ol.CsiV1alpha1().LocalVolumes().Get(ctx, name, metav1.GetOptions{})
			if lv.Spec.VGName != tt.wantVG || lv.Spec.Device != tt.wantDev {
				t.Fatalf("placed in VG %q device %q; want %q %q", lv.Spec.VGName, lv.Spec.Device, tt.wantVG, tt.wantDev)
			}
			if tt.wantDev != "" && r.resp.Volume.VolumeContext["Device"] != tt.wantDev {
				t.Fatalf("volume context %v lacks Device", r.resp.Volume.VolumeContext)
			}
		})
	}
}

// The agent failing with ResourceExhausted makes CreateVolume return it
// (csi-provisioner reschedules) and drops the record, so the next placement
// writes a fresh one; other codes are returned for a retry, record kept.
func TestCreateVolumeAgentFailure(t *testing.T) {
	f := newFixture(t, "ctl-fail", map[string]int64{"pool0": 10 * gib}, nil)
	ctx := t.Context()
	for _, tt := range []struct {
		name, code string
		want       codes.Code
		kept       bool
	}{
		{name: "vol-fail-space", code: "ResourceExhausted", want: codes.ResourceExhausted},
		{name: "vol-fail-novg", code: "NotFound", want: codes.NotFound, kept: true},
	} {
		done := make(chan error, 1)
		go func() {
			_, err := f.srv.CreateVolume(ctx, createReq(tt.name, f.node, gib, nil))
			done <- err
		}()
		f.agent(t, tt.name, func(lv *v1alpha1.LocalVolume) {
			lv.Status.Phase, lv.Status.Code, lv.Status.Message = v1alpha1.PhaseFailed, tt.code, "lvcreate said no"
		})
		err := <-done
		if status.Code(err) != tt.want || !strings.Contains(err.Error(), "lvcreate said no") {
			t.Fatalf("%s: %v, want %s with the agent's message", tt.name, err, tt.want)
		}
		// Deleted: gone, or waiting for the agent to drop its finalizer.
		lv, getErr := f.ol.CsiV1alpha1().LocalVolumes().Get(ctx, tt.name, metav1.GetOptions{})
		if kept := getErr == nil && lv.DeletionTimestamp == nil; kept != tt.kept {
			t.Fatalf("%s: record kept = %v, want %v (%v)", tt.name, kept, tt.kept, getErr)
		}
	}
}

// CreateVolume for a PVC uses the LocalVolume the scheduler's PreBind
// wrote (pvc-<UID>), wherever it put it.
func TestCreateVolumeUsesSchedulerAllocation(t *testing.T) {
	f := newFixture(t, "ctl-sched", map[string]int64{"pool-a": 10 * gib, "pool-b": 2 * gib}, nil)
	ctx := t.Context()
	pvc, err := f.c.Client().CoreV1().PersistentVolumeClaims("default").Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "ctl-sched-claim"},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = f.c.Client().CoreV1().PersistentVolumeClaims("default").Delete(context.Background(), pvc.Name, metav1.DeleteOptions{})
	})
	id := "pvc-" + string(pvc.UID)
	prebind := &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: id, Finalizers: []string{v1alpha1.LocalVolumeFinalizer}},
		Spec: v1alpha1.LocalVolumeSpec{NodeName: f.node, VolumeType: v1alpha1.VolumeTypeLVM, VGName: "pool-b",
			Size: resource.MustParse("1Gi"), ClaimRef: &v1alpha1.ObjectReference{Namespace: "default", Name: pvc.Name, UID: pvc.UID}}}
	if _, err := f.ol.CsiV1alpha1().LocalVolumes().Create(ctx, prebind, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.agent(t, id, readyAs)
	resp, err := f.srv.CreateVolume(ctx, createReq("pvc-provisioner-name", f.node, gib, map[string]string{
		"volumeType": "LVM", "csi.storage.k8s.io/pvc/name": pvc.Name, "csi.storage.k8s.io/pvc/namespace": "default"}))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Volume.VolumeId != id || resp.Volume.VolumeContext["vgName"] != "pool-b" {
		t.Fatalf("CreateVolume = %+v, want the scheduler's %s in pool-b", resp.Volume, id)
	}
}

// Expansion checks the VG's room first (a clear ResourceExhausted), then
// grows spec.size and waits for the agent.
func TestControllerExpandVolume(t *testing.T) {
	f := newFixture(t, "ctl-expand", map[string]int64{"pool0": 4 * gib}, nil)
	ctx := t.Context()
	done := make(chan error, 1)
	go func() { _, err := f.srv.CreateVolume(ctx, createReq("vol-exp", f.node, gib, nil)); done <- err }()
	f.agent(t, "vol-exp", readyAs)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_, err := f.srv.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: "vol-exp", CapacityRange: &csi.CapacityRange{RequiredBytes: 5 * gib}})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "VG pool0 on node ctl-expand: need 5Gi") {
		t.Fatalf("expansion beyond the VG: %v", err)
	}
	exp := make(chan *csi.ControllerExpandVolumeResponse, 1)
	go func() {
		r, err := f.srv.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: "vol-exp",
			CapacityRange: &csi.CapacityRange{RequiredBytes: 3 * gib}, VolumeCapability: mountCaps("ext4")[0]})
		if err != nil {
			t.Error(err)
		}
		exp <- r
	}()
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		lv, err := f.ol.CsiV1alpha1().LocalVolumes().Get(ctx, "vol-exp", metav1.GetOptions{})
		return err == nil && lv.Spec.Size.Value() == 3*gib, nil
	})
	if err != nil {
		t.Fatal("spec.size not raised")
	}
	f.agent(t, "vol-exp", readyAs)
	r := <-exp
	if r == nil || r.CapacityBytes != 3*gib || !r.NodeExpansionRequired {
		t.Fatalf("ControllerExpandVolume = %v", r)
	}
	if _, err := f.srv.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: "missing",
		CapacityRange: &csi.CapacityRange{RequiredBytes: gib}}); status.Code(err) != codes.NotFound {
		t.Fatalf("expand of a missing volume: %v", err)
	}
}

// DeleteVolume waits for the agent to drop the finalizer; unknown IDs are
// already deleted.
func TestDeleteVolume(t *testing.T) {
	f := newFixture(t, "ctl-delete", map[string]int64{"pool0": 4 * gib}, nil)
	ctx := t.Context()
	f.nodeObject(t)
	done := make(chan error, 1)
	go func() { _, err := f.srv.CreateVolume(ctx, createReq("vol-del", f.node, gib, nil)); done <- err }()
	f.agent(t, "vol-del", readyAs)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if _, err := f.srv.DeleteVolume(short, &csi.DeleteVolumeRequest{VolumeId: "vol-del"}); status.Code(err) != codes.DeadlineExceeded ||
		!strings.Contains(err.Error(), "ctl-delete") {
		t.Fatalf("DeleteVolume without the agent: %v, want DeadlineExceeded naming the node", err)
	}
	go func() { _, err := f.srv.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "vol-del"}); done <- err }()
	time.Sleep(200 * time.Millisecond)
	lv, err := f.ol.CsiV1alpha1().LocalVolumes().Get(ctx, "vol-del", metav1.GetOptions{})
	if err != nil || lv.DeletionTimestamp == nil {
		t.Fatalf("LocalVolume during deletion: %v %v", lv, err)
	}
	lvs := f.ol.CsiV1alpha1().LocalVolumes()
	// What the agent does after lvremove.
	if _, err := cluster.Update(ctx, lvs.Get, lvs.Update, lv.Name, func(lv *v1alpha1.LocalVolume) { lv.Finalizers = nil }); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"vol-del", "never-existed", "Not/A/Name"} {
		if _, err := f.srv.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
			t.Fatalf("DeleteVolume(%q): %v", id, err)
		}
	}
}

// nodeObject creates the fixture's Node (kwok keeps it Ready): a node that
// exists, whether or not its agent answers.
func (f *fixture) nodeObject(t *testing.T) {
	t.Helper()
	nodes := f.c.Client().CoreV1().Nodes()
	if _, err := nodes.Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: f.node}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nodes.Delete(context.Background(), f.node, metav1.DeleteOptions{}) })
}

// DeleteVolume of a volume whose node has no Node object: after a short
// wait (a machine whose Node was deleted may still run its agent) it says
// why the volume cannot go and what to do, instead of DeadlineExceeded at
// the sidecar's timeout, call after call; the LocalVolume's deletion has
// started, so once its finalizer is removed (the node-loss controller, or
// the operator) the next call succeeds.
func TestDeleteVolumeNodeGone(t *testing.T) {
	f := newFixture(t, "ctl-delete-gone", map[string]int64{"pool0": 4 * gib}, nil)
	ctx := t.Context()
	done := make(chan error, 1)
	go func() { _, err := f.srv.CreateVolume(ctx, createReq("vol-gone", f.node, gib, nil)); done <- err }()
	f.agent(t, "vol-gone", readyAs)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The sidecar's timeout is minutes; give the call a minute.
	call, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	start := time.Now()
	_, err := f.srv.DeleteVolume(call, &csi.DeleteVolumeRequest{VolumeId: "vol-gone"})
	took := time.Since(start)
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("DeleteVolume with the node gone: %v after %s, want FailedPrecondition", err, took)
	}
	for _, part := range []string{"ctl-delete-gone", "no Node object", "NodeGone", "controller.nodeLoss.cleanup", "kubectl patch localvolume vol-gone"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q does not say %q", err, part)
		}
	}
	if took > 30*time.Second {
		t.Errorf("DeleteVolume took %s, want a short wait", took)
	}
	lvs := f.ol.CsiV1alpha1().LocalVolumes()
	lv, err := lvs.Get(ctx, "vol-gone", metav1.GetOptions{})
	if err != nil || lv.DeletionTimestamp == nil {
		t.Fatalf("LocalVolume after DeleteVolume: %v %v, want its deletion started", lv, err)
	}
	if _, err := cluster.Update(ctx, lvs.Get, lvs.Update, lv.Name, func(lv *v1alpha1.LocalVolume) { lv.Finalizers = nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := f.srv.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "vol-gone"}); err != nil {
		t.Fatalf("DeleteVolume once the finalizer is gone: %v", err)
	}
}

// DeleteVolume of a Device volume returns once the agent has quarantined
// the disk (phase Quarantined): the record, and so the hold on the disk,
// stays until the wipe, which may wait for an operator (policy manual) —
// the PV need not wait with it. The disk is not offered meanwhile.
func TestDeleteDeviceVolumeQuarantined(t *testing.T) {
	f := newFixture(t, "ctl-delete-dev", nil, map[string]int64{"/dev/sdb": 10 * gib})
	ctx := t.Context()
	done := make(chan error, 1)
	params := map[string]string{"volumeType": "Device", "mediaType": "ssd"}
	go func() { _, err := f.srv.CreateVolume(ctx, createReq("vol-dev-del", f.node, gib, params)); done <- err }()
	f.agent(t, "vol-dev-del", func(lv *v1alpha1.LocalVolume) {
		readyAs(lv)
		lv.Status.DevicePath, lv.Status.DeviceIdentity = lv.Spec.Device, "wwid:naa.5000c500a1b2c3d4"
	})
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := f.srv.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "vol-dev-del"})
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	f.agent(t, "vol-dev-del", func(lv *v1alpha1.LocalVolume) {
		lv.Status.Phase, lv.Status.Message = v1alpha1.PhaseQuarantined, "released; the disk is quarantined until an operator wipes it (policy manual)"
	})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("DeleteVolume still waits for a quarantined disk's wipe")
	}
	lv, err := f.ol.CsiV1alpha1().LocalVolumes().Get(ctx, "vol-dev-del", metav1.GetOptions{})
	if err != nil || lv.DeletionTimestamp == nil {
		t.Fatalf("the quarantined record must stay (being deleted): %v %v", lv, err)
	}
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := f.srv.CreateVolume(short, createReq("vol-dev-next", f.node, gib, params)); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("CreateVolume on the quarantined disk: %v, want ResourceExhausted", err)
	}
}

// GetCapacity: free space per node and StorageClass, and the largest volume.
func TestGetCapacity(t *testing.T) {
	f := newFixture(t, "ctl-cap", map[string]int64{"a": 4 * gib, "b": 6 * gib}, map[string]int64{"/dev/sdx": 50 * gib, "/dev/sdy": 80 * gib})
	ctx := t.Context()
	done := make(chan error, 1)
	go func() {
		_, err := f.srv.CreateVolume(ctx, createReq("vol-cap", f.node, gib, map[string]string{"vgName": "b"}))
		done <- err
	}()
	f.agent(t, "vol-cap", readyAs)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	seg := &csi.Topology{Segments: map[string]string{"kubernetes.io/hostname": f.node}}
	tests := []struct {
		name       string
		params     map[string]string
		topo       *csi.Topology
		total, max int64
		code       codes.Code
	}{
		{name: "all VGs", topo: seg, total: 9 * gib, max: 5 * gib},
		{name: "pinned VG", params: map[string]string{"vgName": "a"}, topo: seg, total: 4 * gib, max: 4 * gib},
		{name: "ssd devices", params: map[string]string{"volumeType": "Device", "mediaType": "ssd"}, topo: seg, total: 130 * gib, max: 80 * gib},
		{name: "other topology key", topo: &csi.Topology{Segments: map[string]string{"zone": "z"}}},
		{name: "unknown node", topo: &csi.Topology{Segments: map[string]string{"kubernetes.io/hostname": "nowhere"}}},
		{name: "bad parameter", params: map[string]string{"volumeType": "Quota"}, topo: seg, code: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := f.srv.GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: tt.params, AccessibleTopology: tt.topo})
			if status.Code(err) != tt.code {
				t.Fatalf("GetCapacity: %v, want %s", err, tt.code)
			}
			if err == nil && (r.AvailableCapacity != tt.total || r.MaximumVolumeSize.GetValue() != tt.max) {
				t.Fatalf("GetCapacity = %d (max %d), want %d (max %d)", r.AvailableCapacity, r.MaximumVolumeSize.GetValue(), tt.total, tt.max)
			}
		})
	}
}

// A StorageClass the parser refuses gets no capacity, so its pods stay
// Pending with VolumeBinding's "not enough free storage": GetCapacity logs
// the real cause, once per distinct error however often it is asked.
func TestGetCapacityLogsRefusedClass(t *testing.T) {
	f := newFixture(t, "ctl-cap-bad", map[string]int64{"a": gib}, nil)
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.BufferLogs(true)))
	ctx := klog.NewContext(t.Context(), logger)
	seg := &csi.Topology{Segments: map[string]string{"kubernetes.io/hostname": f.node}}
	for range 3 {
		for _, params := range []map[string]string{{"bps": "fast"}, {"vgname": "x"}} {
			if _, err := f.srv.GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: params, AccessibleTopology: seg}); status.Code(err) != codes.InvalidArgument {
				t.Fatalf("GetCapacity(%v): %v, want InvalidArgument", params, err)
			}
		}
	}
	out := logger.GetSink().(ktesting.Underlier).GetBuffer().String()
	for _, want := range []string{`parameters={"bps":"fast"}`, `parameters={"vgname":"x"}`} {
		if n := strings.Count(out, want); n != 1 {
			t.Errorf("log mentions %s %d times, want once:\n%s", want, n, out)
		}
	}
}

// Bad requests get InvalidArgument (or NotFound) naming what is wrong.
func TestControllerBadInput(t *testing.T) {
	f := newFixture(t, "ctl-bad", map[string]int64{"pool0": 4 * gib}, nil)
	ctx := t.Context()
	multi := []*csi.VolumeCapability{{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}}}
	tests := []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"no name", func() error {
			_, err := f.srv.CreateVolume(ctx, &csi.CreateVolumeRequest{VolumeCapabilities: mountCaps("")})
			return err
		},
			codes.InvalidArgument, "name"},
		{"no capabilities", func() error { _, err := f.srv.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "x"}); return err },
			codes.InvalidArgument, "volume_capabilities"},
		{"multi-node access", func() error {
			_, err := f.srv.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "x", VolumeCapabilities: multi})
			return err
		}, codes.InvalidArgument, "MULTI_NODE_MULTI_WRITER"},
		{"unsupported filesystem", func() error {
			_, err := f.srv.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "x", VolumeCapabilities: mountCaps("ntfs")})
			return err
		}, codes.InvalidArgument, "ntfs"},
		{"required above limit", func() error {
			_, err := f.srv.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "x", VolumeCapabilities: mountCaps(""),
				CapacityRange: &csi.CapacityRange{RequiredBytes: 2 * gib, LimitBytes: gib}})
			return err
		}, codes.InvalidArgument, "limit_bytes"},
		{"topology without hostname", func() error {
			_, err := f.srv.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "x", VolumeCapabilities: mountCaps(""),
				AccessibilityRequirements: &csi.TopologyRequirement{Preferred: []*csi.Topology{{Segments: map[string]string{"zone": "a"}}}}})
			return err
		}, codes.InvalidArgument, "kubernetes.io/hostname"},
		{"malformed bps", func() error {
			_, err := f.srv.CreateVolume(ctx, createReq("x", f.node, gib, map[string]string{"bps": "lots"}))
			return err
		}, codes.InvalidArgument, `"bps"`},
		{"missing PVC", func() error {
			_, err := f.srv.CreateVolume(ctx, createReq("x", f.node, gib, map[string]string{
				"csi.storage.k8s.io/pvc/name": "nope", "csi.storage.k8s.io/pvc/namespace": "default"}))
			return err
		}, codes.NotFound, "PVC default/nope"},
		{"required near 2^63", func() error {
			_, err := f.srv.CreateVolume(ctx, createReq("x", f.node, math.MaxInt64, nil))
			return err
		}, codes.OutOfRange, "more than 1Ei"},
		{"required just past 1Ei", func() error {
			_, err := f.srv.CreateVolume(ctx, createReq("x", f.node, parameters.MaxVolumeSize+1, nil))
			return err
		}, codes.OutOfRange, "more than 1Ei"},
		{"expand to 2^63-1", func() error {
			_, err := f.srv.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: "x",
				CapacityRange: &csi.CapacityRange{RequiredBytes: math.MaxInt64}})
			return err
		}, codes.OutOfRange, "more than 1Ei"},
		{"iops past int64", func() error {
			_, err := f.srv.CreateVolume(ctx, createReq("x", f.node, gib, map[string]string{"iops": "9223372036854775808"}))
			return err
		}, codes.InvalidArgument, `"iops"`},
		{"bps in milli-bytes", func() error {
			_, err := f.srv.CreateVolume(ctx, createReq("x", f.node, gib, map[string]string{"bps": "1m"}))
			return err
		}, codes.InvalidArgument, "less than one byte"},
		{"expand without capacity", func() error {
			_, err := f.srv.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: "x"})
			return err
		}, codes.InvalidArgument, "capacity_range"},
		{"validate unknown volume", func() error {
			_, err := f.srv.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "nope", VolumeCapabilities: mountCaps("")})
			return err
		}, codes.NotFound, "nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.msg) {
				t.Fatalf("got %v, want %s mentioning %q", err, tt.code, tt.msg)
			}
		})
	}
}
