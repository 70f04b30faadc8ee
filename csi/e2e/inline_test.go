/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package e2e_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/config/profile"
	"github.com/open-local/open-local/csi/identity"
	"github.com/open-local/open-local/lvm"
)

// inlinePod is a pod of our scheduler with a CSI inline volume of each
// size, named vol0, vol1, ...
func (e *env) inlinePod(t *testing.T, name string, sizes ...string) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			SchedulerName: profile.SchedulerName,
			NodeSelector:  map[string]string{parameters.TopologyKey: e.node.Name},
			Containers:    []corev1.Container{{Name: "app", Image: "app"}},
		},
	}
	for i, size := range sizes {
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: fmt.Sprintf("vol%d", i), VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
			Driver: identity.DefaultDriverName, VolumeAttributes: map[string]string{"vgName": e.node.VG.Name, "size": size}}}})
	}
	created, err := e.kube.CoreV1().Pods("default").Create(t.Context(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.kube.CoreV1().Pods("default").Delete(context.Background(), name, *metav1.NewDeleteOptions(0))
	})
	return created
}

// inlinePublish is kubelet's NodePublishVolume of the pod's i-th inline
// volume (handle csi-<sha256(podUID+volumeName)>, attributes plus
// podInfoOnMount).
func (e *env) inlinePublish(pod *corev1.Pod, i int) *csi.NodePublishVolumeRequest {
	vol := pod.Spec.Volumes[i]
	sum := sha256.Sum256([]byte(string(pod.UID) + vol.Name))
	vctx := map[string]string{
		parameters.PodName: pod.Name, parameters.PodNamespace: pod.Namespace, parameters.PodUID: string(pod.UID),
		parameters.PodServiceAccount: "default", parameters.Ephemeral: "true",
	}
	for k, v := range vol.CSI.VolumeAttributes {
		vctx[k] = v
	}
	return &csi.NodePublishVolumeRequest{
		VolumeId:   "csi-" + hex.EncodeToString(sum[:]),
		TargetPath: filepath.Join(e.dir, "pods", string(pod.UID), "volumes", "kubernetes.io~csi", vol.Name, "mount"),
		VolumeCapability: &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}},
		VolumeContext: vctx,
	}
}

func (e *env) waitPod(t *testing.T, name, what string, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var last *corev1.Pod
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := e.kube.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = p
		return cond(p), nil
	})
	if err != nil {
		t.Fatalf("pod %s %s: %v; last status %+v", name, what, err, last.Status)
	}
	return last
}

func (e *env) waitVolumeGone(t *testing.T, name string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Get(ctx, name, metav1.GetOptions{})
		_, lvErr := e.node.LVM.GetLV(ctx, e.node.VG.Name, name)
		return apierrors.IsNotFound(err) && errors.Is(lvErr, lvm.ErrNotFound), nil
	})
	if err != nil {
		t.Fatalf("LocalVolume %s and its LV were not removed: %v", name, err)
	}
}

func scheduled(p *corev1.Pod) bool { return p.Spec.NodeName != "" }

// unpublishAtEnd unpublishes req when the test ends, so a failing test
// leaves no mount behind (a no-op after the test's own unpublish).
func (e *env) unpublishAtEnd(t *testing.T, req *csi.NodePublishVolumeRequest) {
	t.Cleanup(func() {
		_, _ = e.csi.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath})
	})
}

// TestInlineVolumes runs CSI ephemeral inline volumes through the whole
// system: our scheduler counts inline volumes before placing a pod (one
// that does not fit next to another pod's makes the node infeasible) and
// keeps counting the bound pod's; kubelet's NodePublishVolume (played by
// the test) writes their LocalVolumes, the agent creates the LVs, the CSI
// node formats and mounts them; the pod deleted, the unpublish deletes the LocalVolumes, the agent removes the LVs,
// and the scheduler, seeing the space released, places the waiting pod. A
// pod deleted without an unpublish has its volume collected by the agent.
func TestInlineVolumes(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	// The VG has two 4 GiB PVs (and loop activation needs each LV on one
	// PV): two 3 GiB volumes fit, a third does not.
	first := e.inlinePod(t, "inline-first", "3Gi", "3Gi")
	first = e.waitPod(t, first.Name, "scheduled", scheduled)
	var reqs []*csi.NodePublishVolumeRequest
	for i, v := range first.Spec.Volumes {
		if v.CSI == nil {
			continue // the service account token's projected volume
		}
		req := e.inlinePublish(first, i)
		e.unpublishAtEnd(t, req)
		// The scheduler writes nothing for an inline volume (it counts the
		// bound pod); the CSI node writes the record at NodePublishVolume.
		if _, err := e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Get(ctx, req.VolumeId, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("LocalVolume %s before NodePublishVolume: %v, want NotFound (the scheduler writes none)", req.VolumeId, err)
		}
		for range 2 {
			if _, err := e.csi.NodePublishVolume(ctx, req); err != nil {
				t.Fatalf("NodePublishVolume: %v", err)
			}
		}
		lv, err := e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Get(ctx, req.VolumeId, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("NodePublishVolume wrote no LocalVolume %s: %v", req.VolumeId, err)
		}
		if lv.Spec.PodRef == nil || lv.Spec.PodRef.UID != first.UID || lv.Spec.Size.Value() != 3*gib {
			t.Fatalf("LocalVolume %s: %+v", lv.Name, lv.Spec)
		}
		e.checkLV(t, req.VolumeId, 3*gib)
		writeAndCheck(t, req.TargetPath, "inline")
		reqs = append(reqs, req)
	}

	second := e.inlinePod(t, "inline-second", "3Gi")
	second = e.waitPod(t, second.Name, "reported unschedulable", func(p *corev1.Pod) bool {
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				return true
			}
		}
		return false
	})
	var why string
	for _, c := range second.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			why = c.Message
		}
	}
	t.Logf("second pod while the first holds its volumes: %s", why)
	if !strings.Contains(why, e.node.VG.Name) || scheduled(second) {
		t.Fatalf("second pod: node %q, reason %q; want unschedulable for lack of room in VG %s", second.Spec.NodeName, why, e.node.VG.Name)
	}

	// kubelet unpublishes a pod's inline volumes once the pod is gone (a
	// bound pod's inline volumes count for the scheduler as long as the
	// pod is there, LocalVolume or not).
	if err := e.kube.CoreV1().Pods("default").Delete(ctx, first.Name, *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatal(err)
	}
	for _, req := range reqs {
		for range 2 {
			if _, err := e.csi.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath}); err != nil {
				t.Fatalf("NodeUnpublishVolume: %v", err)
			}
		}
		if _, err := os.Stat(req.TargetPath); !os.IsNotExist(err) {
			t.Fatalf("target left behind: %v", err)
		}
	}
	start := time.Now()
	for _, req := range reqs {
		e.waitVolumeGone(t, req.VolumeId)
	}
	second = e.waitPod(t, second.Name, "scheduled once the first pod's volumes are gone", scheduled)
	t.Logf("second pod scheduled %v after the first pod's volumes were unpublished", time.Since(start).Round(time.Millisecond))
	secondReq := e.inlinePublish(second, 0)
	e.unpublishAtEnd(t, secondReq)
	if _, err := e.csi.NodePublishVolume(ctx, secondReq); err != nil {
		t.Fatalf("NodePublishVolume of the second pod: %v", err)
	}
	if _, err := e.csi.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: secondReq.VolumeId, TargetPath: secondReq.TargetPath}); err != nil {
		t.Fatal(err)
	}
	e.waitVolumeGone(t, secondReq.VolumeId)

	// A pod deleted on a node that never unpublished: once its mount is
	// gone (kubelet's orphaned-pod cleanup; here by hand) the agent
	// collects the volume; while mounted it waits.
	third := e.inlinePod(t, "inline-third", "1Gi")
	third = e.waitPod(t, third.Name, "scheduled", scheduled)
	thirdReq := e.inlinePublish(third, 0)
	e.unpublishAtEnd(t, thirdReq)
	if _, err := e.csi.NodePublishVolume(ctx, thirdReq); err != nil {
		t.Fatalf("NodePublishVolume of the third pod: %v", err)
	}
	if err := e.kube.CoreV1().Pods("default").Delete(ctx, third.Name, *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(thirdReq.TargetPath, 0); err != nil {
		t.Fatal(err)
	}
	e.waitVolumeGone(t, thirdReq.VolumeId)
}
