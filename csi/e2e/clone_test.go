/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package e2e_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-local/open-local/apis/storage/parameters"
)

// TestClone: a PVC with a PersistentVolumeClaim dataSource, placed by our
// scheduler on its source's node and provisioned by csi-provisioner through
// our controller, holds the source's data (a block copy by the agent: the
// volumes are thick). The source is written and unpublished first, as a
// quiesced application would be.
func TestClone(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	sc := "open-local-lvm-clone"
	e.storageClass(t, sc, map[string]string{parameters.VolumeType: "LVM", parameters.FSType: "xfs"})
	src, srcPV, _ := e.provision(t, "clone-src", sc, 512*mib, corev1.PersistentVolumeFilesystem, byScheduler)
	staging, target, _ := e.stagePublish(t, srcPV, "clone-src")
	const content = "written before the clone"
	writeAndCheck(t, target, content)
	e.unpublishUnstage(t, srcPV.Spec.CSI.VolumeHandle, staging, target)

	clone, clonePV, took := e.provision(t, "clone-dst", sc, 768*mib, corev1.PersistentVolumeFilesystem, byScheduler, func(p *corev1.PersistentVolumeClaim) {
		p.Spec.DataSource = &corev1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: src.Name}
	})
	t.Logf("clone: pod created to PVC bound (scheduler, provisioner, agent's copy) %v", took.Round(time.Millisecond))
	e.checkPV(t, clone, clonePV, 768*mib)
	lv, err := e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Get(ctx, clonePV.Spec.CSI.VolumeHandle, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lv.Spec.Source == nil || lv.Spec.Source.Volume != srcPV.Spec.CSI.VolumeHandle || lv.Spec.VGName != "ole2e" ||
		lv.Status.Copy == nil || lv.Status.Copy.CompletionTime == nil {
		t.Fatalf("clone LocalVolume spec %+v status %+v: want a finished copy of %s in %s", lv.Spec, lv.Status, srcPV.Spec.CSI.VolumeHandle, "ole2e")
	}
	t.Logf("clone: copied %d bytes from %s", lv.Status.Copy.CopiedBytes, lv.Status.Copy.Source)

	staging, target, _ = e.stagePublish(t, clonePV, "clone-dst")
	got, err := os.ReadFile(filepath.Join(target, "data.txt"))
	if err != nil || string(got) != content {
		t.Fatalf("the clone holds %q (%v), want the source's %q", got, err, content)
	}
	if size := fsSize(t, target); size < 600*mib {
		t.Errorf("the clone's filesystem has %d bytes: not grown to the clone's 768 MiB", size)
	}
	e.unpublishUnstage(t, clonePV.Spec.CSI.VolumeHandle, staging, target)
	e.deletePVC(t, clone, clonePV)
	e.deletePVC(t, src, srcPV)
}
