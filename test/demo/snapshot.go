/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package demo

import (
	"context"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// ---- 4. snapshot and restore

// The article's names.
const (
	snapshotName = "new-snapshot-test"
	snapSource   = "nginx-lvm"
	snapRestored = "nginx-lvm-snap"
)

func (d *demo) stepSnapshot(ctx context.Context, res *StepResult) error {
	if d.activation == "device-mapper" {
		// This kernel snapshots: the article's step, on step 2's volume.
		return d.snapshotAndRestore(ctx, res, snapSource)
	}
	return d.snapshotInVM(ctx, res)
}

// snapshotAndRestore snapshots the volume of StatefulSet source (step 2's
// nginx-lvm, or its twin on the VM's node), changes the data, and restores
// the snapshot into a new StatefulSet that must see the data as it was at
// the snapshot, on the snapshot's node.
func (d *demo) snapshotAndRestore(ctx context.Context, res *StepResult, source string) error {
	p := d.p
	p.say("the chart's VolumeSnapshotClass (open-local's read-only LVM snapshots with a 4Gi copy-on-write area):")
	if _, err := d.show(ctx, "get", "volumesnapshotclass"); err != nil {
		return err
	}
	manifest := fmt.Sprintf(`apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata:
  name: %s
spec:
  volumeSnapshotClassName: open-local-lvm
  source:
    persistentVolumeClaimName: %s
`, snapshotName, pvcOf(source))
	out, err := d.applyManifest(ctx, "snapshot.yaml", manifest)
	p.command("kubectl apply -f manifests/snapshot.yaml", out)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(d.cluster.RESTConfig())
	if err != nil {
		return err
	}
	var snap *unstructured.Unstructured
	err = d.poll(ctx, 3*time.Minute, "csi-snapshotter", func(ctx context.Context) (bool, string, error) {
		got, err := dyn.Resource(volumeSnapshots).Namespace(ns).Get(ctx, snapshotName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		snap = got
		ready, _, _ := unstructured.NestedBool(got.Object, "status", "readyToUse")
		msg, _, _ := unstructured.NestedString(got.Object, "status", "error", "message")
		return ready, fmt.Sprintf("readyToUse=%v %s; events: %s", ready, msg, d.events(ctx, snapshotName)), nil
	})
	if err != nil {
		return err
	}
	for _, args := range [][]string{{"get", "volumesnapshot"}, {"get", "volumesnapshotcontent"}} {
		if _, err := d.show(ctx, args...); err != nil {
			return err
		}
	}
	content, _, _ := unstructured.NestedString(snap.Object, "status", "boundVolumeSnapshotContentName")
	p.check(res, "VolumeSnapshot %s ReadyToUse, bound to %s", snapshotName, content)
	if err := d.checkSnapshotLV(ctx, res, "snap-"+string(snap.GetUID())); err != nil {
		return err
	}
	// Change the source after the snapshot: the restore must not see it.
	if _, err := d.execIn(ctx, podOf(source), "echo 'written after the snapshot' >> /data/index.html"); err != nil {
		return err
	}
	restore := strings.Replace(statefulSet(snapRestored, "open-local-lvm", false, `cat /data/index.html; exec sleep infinity`),
		"      storageClassName: open-local-lvm\n",
		"      storageClassName: open-local-lvm\n      dataSource:\n        apiGroup: snapshot.storage.k8s.io\n        kind: VolumeSnapshot\n        name: "+snapshotName+"\n", 1)
	p.say("a second StatefulSet whose volumeClaimTemplate has dataSource: VolumeSnapshot %s:", snapshotName)
	out, err = d.applyManifest(ctx, "sts-nginx-snap.yaml", restore)
	p.command("kubectl apply -f manifests/sts-nginx-snap.yaml", out)
	if err != nil {
		return err
	}
	restored, err := d.waitPodRunning(ctx, podOf(snapRestored), 5*time.Minute)
	if err != nil {
		return err
	}
	for _, args := range [][]string{{"get", "pod", "-o", "wide", "-l", "app=" + snapRestored}, {"get", "pvc", "-l", "app=" + snapRestored}} {
		if _, err := d.show(ctx, args...); err != nil {
			return err
		}
	}
	_, pv, err := d.boundVolume(ctx, pvcOf(snapRestored))
	if err != nil {
		return err
	}
	readOnly, err := d.checkRestoredVolume(ctx, res, pv.Spec.CSI.VolumeHandle)
	if err != nil {
		return err
	}
	if readOnly {
		out, err := d.execIn(ctx, podOf(snapRestored), "touch /data/x 2>&1 && echo WRITTEN; grep ' /data ' /proc/mounts")
		if err != nil {
			return err
		}
		if strings.Contains(out, "WRITTEN") || !strings.Contains(out, "Read-only file system") || !strings.Contains(out, " ro,") {
			return fmt.Errorf("the read-only restore is not read-only: %q", out)
		}
		p.check(res, "inside %s: /data is read-only (a write fails with EROFS)", podOf(snapRestored))
	}
	out, err = d.execIn(ctx, podOf(snapRestored), "cat /data/index.html")
	if err != nil {
		return err
	}
	if !strings.Contains(out, "written by "+podOf(source)) || strings.Contains(out, "after the snapshot") {
		return fmt.Errorf("the restored volume holds %q: want the page %s wrote before the snapshot, without the later line", out, podOf(source))
	}
	p.check(res, "inside %s: the page %s wrote before the snapshot, without the line written after it", podOf(snapRestored), podOf(source))
	src, err := d.kube.CoreV1().Pods(ns).Get(ctx, podOf(source), metav1.GetOptions{})
	if err != nil {
		return err
	}
	if restored.Spec.NodeName != src.Spec.NodeName {
		return fmt.Errorf("pod %s runs on %s, but the snapshot is on %s", restored.Name, restored.Spec.NodeName, src.Spec.NodeName)
	}
	p.check(res, "the scheduler placed %s on %s, the snapshot's node (its manifest names no node)", restored.Name, restored.Spec.NodeName)
	return nil
}

// checkRestoredVolume checks the LocalVolume of a volume restored from a
// snapshot: a read-only view of the snapshot's LV (the VolumeSnapshotClass's
// csi.aliyun.com/readonly, open-local's behaviour) or an LV of its own.
func (d *demo) checkRestoredVolume(ctx context.Context, res *StepResult, name string) (readOnly bool, err error) {
	lv, err := d.ol.CsiV1alpha1().LocalVolumes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("LocalVolume of the restored volume: %w", err)
	}
	if lv.Spec.Source == nil || lv.Spec.Source.Snapshot == "" {
		return false, fmt.Errorf("LocalVolume %s names no source snapshot: %+v", name, lv.Spec.Source)
	}
	if !lv.Spec.ReadOnly {
		return false, d.checkLV(ctx, res, name, 5*gib)
	}
	if lv.Status.Phase != v1alpha1.PhaseReady {
		return false, fmt.Errorf("LocalVolume %s is %s: %s", name, lv.Status.Phase, lv.Status.Message)
	}
	d.p.check(res, "LocalVolume %s Ready on %s: a read-only restore, served from snapshot %s's LV (no copy)",
		name, lv.Spec.NodeName, lv.Spec.Source.Snapshot)
	return true, nil
}

// checkSnapshotLV checks the snapshot's LocalVolume and its LVM snapshot LV.
func (d *demo) checkSnapshotLV(ctx context.Context, res *StepResult, name string) error {
	lv, err := d.ol.CsiV1alpha1().LocalVolumes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("LocalVolume of the snapshot: %w", err)
	}
	if lv.Status.Phase != v1alpha1.PhaseReady {
		return fmt.Errorf("LocalVolume %s is %s: %s", name, lv.Status.Phase, lv.Status.Message)
	}
	rows, err := d.lvmOn(lv.Spec.NodeName).Report(ctx, "lvs", "-o", "lv_name,origin,lv_size,lv_attr", lv.Spec.VGName+"/"+lv.LVName())
	if err != nil {
		return err
	}
	row := rows[0]
	if row["origin"] == "" {
		return fmt.Errorf("LV %s/%s is no snapshot: %v", lv.Spec.VGName, lv.LVName(), row)
	}
	d.p.check(res, "LocalVolume %s Ready; lvm: %s/%s is a snapshot of %s (attributes %s, copy-on-write area %s)",
		name, lv.Spec.VGName, lv.LVName(), row["origin"], row["lv_attr"], humanBytes(atoi64(row["lv_size"])))
	return nil
}
