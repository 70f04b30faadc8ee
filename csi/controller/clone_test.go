/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package controller_test

import (
	"context"
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
)

func cloneReq(name, node, source string, size int64, params map[string]string) *csi.CreateVolumeRequest {
	r := createReq(name, node, size, params)
	r.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: source}}}
	return r
}

func blockCaps() []*csi.VolumeCapability {
	return []*csi.VolumeCapability{{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}}}
}

// The controller advertises CLONE_VOLUME.
func TestCloneCapability(t *testing.T) {
	f := newFixture(t, "ctl-clonecap", map[string]int64{"pool0": gib}, nil)
	resp, err := f.srv.ControllerGetCapabilities(t.Context(), &csi.ControllerGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(resp.Capabilities, func(c *csi.ControllerServiceCapability) bool {
		return c.GetRpc().GetType() == csi.ControllerServiceCapability_RPC_CLONE_VOLUME
	}) {
		t.Fatalf("capabilities %v lack CLONE_VOLUME", resp.Capabilities)
	}
}

// Clones: on the source's node and VG, at least its size, in its volume
// mode, checked for room as thick or thin volumes; refusals with the CSI
// spec's codes and leave no LocalVolume.
func TestClone(t *testing.T) {
	f := newFixture(t, "ctl-clone", map[string]int64{"pool0": 10 * gib, "pool1": 10 * gib}, map[string]int64{"/dev/sdc": 4 * gib})
	f.withThinPool(t, "pool0", "tp", 8*gib)
	ctx := t.Context()
	f.volume(t, "vol-csrc", 2*gib, map[string]string{"vgName": "pool0"})
	f.volume(t, "vol-cdev", gib, map[string]string{"volumeType": "Device", "mediaType": "ssd"})

	// A source whose PVC and PV say it is an ext4 filesystem volume.
	kube := f.c.Client().CoreV1()
	pvc, err := kube.PersistentVolumeClaims("default").Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "ctl-clone-src"},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			VolumeName: "pv-ctl-clone-src",
			Resources:  corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.PersistentVolumeClaims("default").Delete(context.Background(), pvc.Name, metav1.DeleteOptions{})
	})
	claimed := "pvc-" + string(pvc.UID)
	done := make(chan error, 1)
	go func() {
		_, err := f.srv.CreateVolume(ctx, createReq("claimed", f.node, gib, map[string]string{
			"csi.storage.k8s.io/pvc/name": pvc.Name, "csi.storage.k8s.io/pvc/namespace": "default"}))
		done <- err
	}()
	f.agent(t, claimed, readyAs)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	fs := corev1.PersistentVolumeFilesystem
	if _, err := kube.PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pv-ctl-clone-src"},
		Spec: corev1.PersistentVolumeSpec{Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, VolumeMode: &fs,
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "local.csi.aliyun.com", VolumeHandle: claimed,
				VolumeAttributes: map[string]string{parameters.ContextFSType: "ext4"}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.PersistentVolumes().Delete(context.Background(), "pv-ctl-clone-src", metav1.DeleteOptions{})
	})

	for _, tt := range []struct {
		name    string
		req     *csi.CreateVolumeRequest
		code    codes.Code
		mention string
	}{
		{"unknown source", cloneReq("vol-c", f.node, "vol-nope", 2*gib, nil), codes.NotFound, "vol-nope"},
		{"no volume_id", cloneReq("vol-c", f.node, "", 2*gib, nil), codes.InvalidArgument, "volume_id"},
		{"smaller than the source", cloneReq("vol-c", f.node, "vol-csrc", gib, nil), codes.OutOfRange, "smaller than source volume vol-csrc"},
		{"limit below the source", func() *csi.CreateVolumeRequest {
			r := cloneReq("vol-c", f.node, "vol-csrc", 0, nil)
			r.CapacityRange = &csi.CapacityRange{LimitBytes: gib}
			return r
		}(), codes.OutOfRange, "limit_bytes"},
		{"another node", func() *csi.CreateVolumeRequest {
			r := cloneReq("vol-c", f.node, "vol-csrc", 2*gib, nil)
			r.AccessibilityRequirements = onNode("elsewhere")
			return r
		}(), codes.ResourceExhausted, "on node ctl-clone"},
		{"another VG", cloneReq("vol-c", f.node, "vol-csrc", 2*gib, map[string]string{"vgName": "pool1"}), codes.InvalidArgument, "stays in its source's VG"},
		{"a Device clone", cloneReq("vol-c", f.node, "vol-csrc", 2*gib, map[string]string{"volumeType": "Device", "mediaType": "ssd"}), codes.InvalidArgument, "LVM only"},
		{"a Device source", cloneReq("vol-c", f.node, "vol-cdev", 2*gib, nil), codes.InvalidArgument, "whole device"},
		{"bigger than the VG", cloneReq("vol-c", f.node, "vol-csrc", 9*gib, nil), codes.ResourceExhausted, "VG pool0 on node ctl-clone: need 9Gi"},
		{"bigger than the pool", cloneReq("vol-c", f.node, "vol-csrc", 9*gib, map[string]string{"thinPool": "tp"}), codes.ResourceExhausted, "thin pool pool0/tp"},
		{"another volume mode", func() *csi.CreateVolumeRequest {
			r := cloneReq("vol-c", f.node, claimed, gib, nil)
			r.VolumeCapabilities = blockCaps()
			return r
		}(), codes.InvalidArgument, "volumeMode Filesystem, the clone asks for Block"},
		{"another filesystem", func() *csi.CreateVolumeRequest {
			r := cloneReq("vol-c", f.node, claimed, gib, nil)
			r.VolumeCapabilities = mountCaps("xfs")
			return r
		}(), codes.InvalidArgument, "holds a ext4 filesystem, the clone asks for xfs"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// A refusal answers at once; a call that was let through
			// would wait for an agent that is not there.
			callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_, err := f.srv.CreateVolume(callCtx, tt.req)
			if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.mention) {
				_ = f.ol.CsiV1alpha1().LocalVolumes().Delete(ctx, "vol-c", metav1.DeleteOptions{})
				t.Fatalf("CreateVolume = %v, want %s mentioning %q", err, tt.code, tt.mention)
			}
			if _, err := f.ol.CsiV1alpha1().LocalVolumes().Get(ctx, "vol-c", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Fatalf("a refused clone left a LocalVolume: %v", err)
			}
		})
	}

	for _, tt := range []struct {
		name, source string
		size         int64
		params       map[string]string
		pool         string
	}{
		{"thick", "vol-csrc", 3 * gib, nil, ""},
		{"thin", "vol-csrc", 2 * gib, map[string]string{"thinPool": "tp"}, "tp"},
		{"same mode and filesystem", claimed, gib, nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			name := "vol-clone-" + strings.ReplaceAll(tt.name, " ", "-")
			type result struct {
				resp *csi.CreateVolumeResponse
				err  error
			}
			call := make(chan result, 1)
			go func() {
				r, err := f.srv.CreateVolume(ctx, cloneReq(name, f.node, tt.source, tt.size, tt.params))
				call <- result{r, err}
			}()
			f.agent(t, name, readyAs)
			res := <-call
			if res.err != nil {
				t.Fatal(res.err)
			}
			lv, vg := f.get(t, name), f.get(t, tt.source).Spec.VGName
			if lv.Spec.Source == nil || lv.Spec.Source.Volume != tt.source || lv.Spec.Source.Snapshot != "" ||
				lv.Spec.NodeName != f.node || lv.Spec.VGName != vg || lv.Spec.ThinPool != tt.pool || lv.Spec.Size.Value() != tt.size {
				t.Fatalf("clone spec %+v, want %d bytes from %s in %s/%q", lv.Spec, tt.size, tt.source, vg, tt.pool)
			}
			if src := res.resp.Volume.GetContentSource().GetVolume().GetVolumeId(); src != tt.source {
				t.Errorf("content source %q, want %s", src, tt.source)
			}
			// Repeated: the same volume; with another source: AlreadyExists.
			if _, err := f.srv.CreateVolume(ctx, cloneReq(name, f.node, tt.source, tt.size, tt.params)); err != nil {
				t.Errorf("repeated CreateVolume: %v", err)
			}
			if _, err := f.srv.CreateVolume(ctx, createReq(name, f.node, tt.size, tt.params)); status.Code(err) != codes.AlreadyExists {
				t.Errorf("CreateVolume without the source = %v, want AlreadyExists", err)
			}
		})
	}

	// A source is not deleted while a clone is being filled from it.
	f.agent(t, "vol-clone-thick", func(lv *v1alpha1.LocalVolume) {
		lv.Status.Phase = v1alpha1.PhasePending
		lv.Status.Copy = &v1alpha1.CopyStatus{Source: "vol-csrc", TotalBytes: 2 * gib, CopiedBytes: gib}
	})
	_, err = f.srv.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "vol-csrc"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "vol-clone-thick (being filled from it)") {
		t.Fatalf("DeleteVolume of a source being copied = %v, want FailedPrecondition naming the clone", err)
	}
}
