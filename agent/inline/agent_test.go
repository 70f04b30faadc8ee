/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package inline_test

import (
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-local/open-local/agent/inline"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/csitest"
)

// TestAgentCollectsInlineVolumes runs the real agent binary on a node with
// a VG on loop devices: inline volumes (as the scheduler's PreBind writes
// them) of a deleted pod and of a finished pod are deleted and their LVs
// removed, the finished pod's only once its filesystem is unmounted; the
// running pod's volume stays.
func TestAgentCollectsInlineVolumes(t *testing.T) {
	capability.Require(t, capability.Ext4)
	c := cluster.ForTest(t)
	ctx := t.Context()
	n := csitest.NewAgentNode(t, c, "gc-agent-node", "olgc", 512<<20)
	pods := c.Client().CoreV1().Pods("default")
	lvs := c.OpenLocalClient().CsiV1alpha1().LocalVolumes()

	newPod := func(name string) *corev1.Pod {
		p, err := pods.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: corev1.PodSpec{NodeName: n.Name, Containers: []corev1.Container{{Name: "c", Image: "c"}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pods.Delete(context.Background(), name, *metav1.NewDeleteOptions(0)) })
		return p
	}
	newVolume := func(p *corev1.Pod) *v1alpha1.LocalVolume {
		name := "csi-gc-" + p.Name
		_, err := lvs.Create(ctx, &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: name, Finalizers: []string{v1alpha1.LocalVolumeFinalizer}},
			Spec: v1alpha1.LocalVolumeSpec{NodeName: n.Name, Kind: v1alpha1.KindVolume, VolumeType: v1alpha1.VolumeTypeLVM, VGName: n.VG.Name,
				LVMType: v1alpha1.LVMTypeLinear, Size: *resource.NewQuantity(32<<20, resource.BinarySI),
				PodRef: &v1alpha1.ObjectReference{Namespace: p.Namespace, Name: p.Name, UID: p.UID}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var lv *v1alpha1.LocalVolume
		waitFor(t, "the agent to create the LV of "+name, func() bool {
			lv, err = lvs.Get(ctx, name, metav1.GetOptions{})
			return err == nil && lv.Status.Phase == v1alpha1.PhaseReady
		})
		if _, err := n.LVM.GetLV(ctx, n.VG.Name, name); err != nil {
			t.Fatal(err)
		}
		return lv
	}
	gone := func(name string) bool {
		_, err := lvs.Get(ctx, name, metav1.GetOptions{})
		_, lvErr := n.LVM.GetLV(ctx, n.VG.Name, name)
		return apierrors.IsNotFound(err) && errors.Is(lvErr, lvm.ErrNotFound)
	}

	running, deleted, finished := newPod("gc-running"), newPod("gc-deleted"), newPod("gc-finished")
	keep, collectNow, collectLater := newVolume(running), newVolume(deleted), newVolume(finished)

	// The finished pod's volume is still mounted (kubelet has not
	// unmounted it yet).
	dir := t.TempDir()
	if out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", collectLater.Status.DevicePath).CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v: %s", err, out)
	}
	if err := unix.Mount(collectLater.Status.DevicePath, dir, "ext4", 0, ""); err != nil {
		t.Fatal(err)
	}
	mounted := true
	t.Cleanup(func() {
		if mounted {
			_ = unix.Unmount(dir, 0)
		}
	})

	if err := pods.Delete(ctx, deleted.Name, *metav1.NewDeleteOptions(0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted pod's inline volume to be collected", func() bool { return gone(collectNow.Name) })

	// kwok runs the pod (sets it Running) meanwhile: retry on conflicts.
	_, err := cluster.Update(ctx, pods.Get, pods.UpdateStatus, finished.Name, func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the "+inline.ReasonInUse+" event of the finished pod's mounted volume", func() bool {
		evs, err := c.Client().CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + collectLater.Name + ",reason=" + inline.ReasonInUse})
		return err == nil && len(evs.Items) > 0
	})
	if gone(collectLater.Name) {
		t.Fatal("a mounted inline volume was removed")
	}
	if err := unix.Unmount(dir, 0); err != nil {
		t.Fatal(err)
	}
	mounted = false
	// The agent looks again after its in-use retry interval (10 s).
	waitFor(t, "the finished pod's inline volume to be collected after unmount", func() bool { return gone(collectLater.Name) })

	if gone(keep.Name) {
		t.Fatal("the running pod's inline volume was collected")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}
