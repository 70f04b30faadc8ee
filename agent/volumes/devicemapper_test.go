/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package volumes_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/open-local/open-local/agent/volumes"
	"github.com/open-local/open-local/apis/client/clientset/versioned/fake"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/loopvg"
)

// withFinalizers makes the generated fake clientset keep a deleted object
// that still has finalizers (setting its deletionTimestamp) and drop it once
// they are gone, as the API server does.
func withFinalizers(ol *fake.Clientset) {
	gvr := v1alpha1.SchemeGroupVersion.WithResource("localvolumes")
	ol.PrependReactor("delete", "localvolumes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		obj, err := ol.Tracker().Get(gvr, "", a.(k8stesting.DeleteAction).GetName())
		if err != nil {
			return false, nil, nil
		}
		lv := obj.(*v1alpha1.LocalVolume).DeepCopy()
		if len(lv.Finalizers) == 0 {
			return false, nil, nil
		}
		now := metav1.Now()
		lv.DeletionTimestamp = &now
		return true, lv, ol.Tracker().Update(gvr, lv, "")
	})
	ol.PrependReactor("update", "localvolumes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		lv := a.(k8stesting.UpdateAction).GetObject().(*v1alpha1.LocalVolume)
		if a.GetSubresource() == "" && lv.DeletionTimestamp != nil && len(lv.Finalizers) == 0 {
			return true, lv, ol.Tracker().Delete(gvr, "", lv.Name)
		}
		return false, nil, nil
	})
}

// TestDeviceMapperReconciler runs the reconciler with real LV activation:
// lvcreate makes /dev/<vg>/<lv>, lvextend grows the active device, and
// deletion deactivates before lvremove. No API server runs in the VM, so the
// generated fake clientset (with finalizer semantics) stands in for it; on
// the host the same reconciler runs against the real one (reconciler_test.go).
func TestDeviceMapperReconciler(t *testing.T) {
	capability.Require(t, capability.DeviceMapper, capability.Root, capability.LoopDevices, capability.LVM)
	vg := loopvg.New(t, "olvdm", 256*mib)
	client := lvm.New(&lvm.ExecRunner{Env: vg.Config.Env()})
	act, err := lvm.NewActivator(lvm.ModeDeviceMapper, client, filepath.Join(t.TempDir(), "lock"))
	if err != nil {
		t.Fatal(err)
	}
	ol := fake.NewSimpleClientset()
	withFinalizers(ol)
	r, err := volumes.New(volumes.Options{NodeName: "dm-node", Client: ol, Kube: kubefake.NewClientset(), LVM: client, Activator: act,
		RetryBase: 100 * time.Millisecond, RetryMax: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() { cancel(); <-done }()

	lvs := ol.CsiV1alpha1().LocalVolumes()
	get := func(cond func(*v1alpha1.LocalVolume) bool) *v1alpha1.LocalVolume {
		t.Helper()
		var last *v1alpha1.LocalVolume
		err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
			lv, err := lvs.Get(ctx, "dm-1", metav1.GetOptions{})
			if err != nil {
				last = nil
			} else {
				last = lv
			}
			return cond(last), nil
		})
		if err != nil {
			t.Fatalf("LocalVolume dm-1: %v; last %+v", err, last)
		}
		return last
	}
	spec := lvmSpec("olvdm", 32*mib)
	spec.NodeName = "dm-node"
	if _, err := lvs.Create(t.Context(), &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: "dm-1",
		Finalizers: []string{v1alpha1.LocalVolumeFinalizer}}, Spec: spec}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	lv := get(ready(32 * mib))
	if lv.Status.DevicePath != "/dev/olvdm/dm-1" {
		t.Fatalf("device path %q, want /dev/olvdm/dm-1", lv.Status.DevicePath)
	}
	if size, err := deviceSize(lv.Status.DevicePath); err != nil || size != 32*mib {
		t.Fatalf("%s: %d bytes, %v", lv.Status.DevicePath, size, err)
	}

	lv.Spec.Size = *resource.NewQuantity(64*mib, resource.BinarySI)
	lv.Generation++ // the fake does not bump it
	if _, err := lvs.Update(t.Context(), lv, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	lv = get(ready(64 * mib))
	if size, err := deviceSize(lv.Status.DevicePath); err != nil || size != 64*mib {
		t.Fatalf("active device after lvextend: %d bytes, %v", size, err)
	}

	if err := lvs.Delete(t.Context(), "dm-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	get(gone)
	if _, err := client.GetLV(t.Context(), "olvdm", "dm-1"); !errors.Is(err, lvm.ErrNotFound) {
		t.Fatalf("LV after delete: %v", err)
	}
	if _, err := os.Stat("/dev/olvdm/dm-1"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("device node left: %v", err)
	}
}
