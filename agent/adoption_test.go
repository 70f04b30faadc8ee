/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package main

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/open-local/open-local/agent/adoption"
	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/launcher"
)

// TestAdoptsOpenLocalVolumes runs the real binary in controller mode over
// the objects alibaba/open-local v0.8.0 leaves for a StatefulSet's LVM
// claim and a Device claim (PVs made by csi-provisioner
// --volume-name-prefix=local from the CreateVolume response of
// pkg/csi/controllerserver.go: volume context = class parameters + vgName
// or Device + extra metadata, topology kubernetes.io/hostname; its chart's
// helm/templates/controller.yaml and storage-class.yaml), beside one it
// must refuse (no node affinity) and another driver's. The importer writes
// the LocalVolumes of the first two, marks their PVs, leaves the others
// with an Event, and the ledger built from the API then counts them: a
// burst cannot take the space the old volumes hold.
func TestAdoptsOpenLocalVolumes(t *testing.T) {
	c := cluster.ForTest(t)
	ctx := t.Context()
	kube, ol := c.Client(), c.OpenLocalClient()
	run := rand.String(6)
	ns, node, vg := "adopt-"+run, "adopt-node-"+run, "open-local-pool-0"
	const gi = int64(1) << 30
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	if _, err := kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{}) })

	// The node's storage as open-local's agent reported it: a 10Gi VG and a
	// 20Gi SSD, both in the filtered lists.
	nls, err := ol.CsiV1alpha1().NodeLocalStorages().Create(ctx, &v1alpha1.NodeLocalStorage{ObjectMeta: metav1.ObjectMeta{Name: node},
		Spec: v1alpha1.NodeLocalStorageSpec{NodeName: node}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ol.CsiV1alpha1().NodeLocalStorages().Delete(context.Background(), node, metav1.DeleteOptions{})
	})
	nls.Status.NodeStorageInfo.VolumeGroups = []v1alpha1.VolumeGroup{{Name: vg, PhysicalVolumes: []string{"/dev/vdb"}, Total: uint64(10 * gi), Available: uint64(10 * gi),
		Allocatable: uint64(10 * gi), Condition: v1alpha1.StorageReady}}
	nls.Status.NodeStorageInfo.DeviceInfos = []v1alpha1.DeviceInfo{{Name: "/dev/vdc", MediaType: "ssd", Total: uint64(20 * gi)}}
	nls.Status.FilteredStorageInfo.VolumeGroups, nls.Status.FilteredStorageInfo.Devices = []string{vg}, []string{"/dev/vdc"}
	if nls, err = ol.CsiV1alpha1().NodeLocalStorages().UpdateStatus(ctx, nls, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	hostname := &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
		MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{node}}}}}}}
	// claimPV creates a claim pre-bound to a PV of open-local's making, and the PV.
	claimPV := func(claim, class, driver string, size string, attrs map[string]string, affinity *corev1.VolumeNodeAffinity) string {
		t.Helper()
		name := "local-" + string(uuid.NewUUID())
		q := resource.MustParse(size)
		pvc, err := kube.CoreV1().PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: claim,
			Annotations: map[string]string{"volume.kubernetes.io/selected-node": node, "volume.kubernetes.io/storage-provisioner": driver}},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: &class,
				VolumeName: name, Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: q}}}},
			metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		attrs["csi.storage.k8s.io/pv/name"], attrs["csi.storage.k8s.io/pvc/name"], attrs["csi.storage.k8s.io/pvc/namespace"] = name, claim, ns
		attrs["volume.kubernetes.io/selected-node"] = node
		if _, err := kube.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": driver}},
			Spec: corev1.PersistentVolumeSpec{Capacity: corev1.ResourceList{corev1.ResourceStorage: q},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete, StorageClassName: class,
				ClaimRef:     &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: ns, Name: claim, UID: pvc.UID},
				NodeAffinity: affinity,
				PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
					Driver: driver, VolumeHandle: name, FSType: "ext4", VolumeAttributes: attrs}}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx := context.Background()
			_ = kube.CoreV1().PersistentVolumes().Delete(ctx, name, metav1.DeleteOptions{})
			lvs := ol.CsiV1alpha1().LocalVolumes()
			_, _ = cluster.Update(ctx, lvs.Get, lvs.Update, name, func(lv *v1alpha1.LocalVolume) { lv.Finalizers = nil })
			_ = lvs.Delete(ctx, name, metav1.DeleteOptions{})
		})
		return name
	}
	lvmPV := claimPV("html-web-0", "open-local-lvm", "local.csi.aliyun.com", "5Gi", map[string]string{"volumeType": "LVM", "vgName": vg}, hostname)
	devPV := claimPV("raw", "open-local-device-ssd", "yodaplugin.csi.alibabacloud.com", "20Gi",
		map[string]string{"volumeType": "Device", "mediaType": "ssd", "Device": "/dev/vdc"}, hostname)
	lostPV := claimPV("lost", "open-local-lvm", "local.csi.aliyun.com", "1Gi", map[string]string{"volumeType": "LVM", "vgName": vg}, nil)
	otherPV := claimPV("other", "topolvm", "topolvm.io", "1Gi", map[string]string{"vgName": vg}, hostname)

	// Before adoption the ledger sees the whole VG free: the over-commit.
	before := ledger.New()
	before.SetNodeStorage(nls)
	if total, _ := before.Capacity(node, ledger.Volume{Type: v1alpha1.VolumeTypeLVM, VG: vg}); total != 10*gi {
		t.Fatalf("before adoption: %d bytes free, want all 10Gi", total)
	}

	nlsc := "nlsc-" + run
	if _, err := ol.CsiV1alpha1().NodeLocalStorageInitConfigs().Create(ctx, &v1alpha1.NodeLocalStorageInitConfig{ObjectMeta: metav1.ObjectMeta{Name: nlsc},
		Spec: v1alpha1.NodeLocalStorageInitConfigSpec{GlobalConfig: v1alpha1.GlobalConfig{ListConfig: v1alpha1.ListConfig{VGs: v1alpha1.VGList{Include: []string{"x"}}}}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ol.CsiV1alpha1().NodeLocalStorageInitConfigs().Delete(context.Background(), nlsc, metav1.DeleteOptions{})
	})
	launcher.ForTest(t).Start(t, c, "adopt-controller-"+run, cluster.Binary(t, "./agent"), launcher.NLSController, launcher.Pod{},
		"--kubeconfig", c.Kubeconfig, "--initconfig", nlsc, "--node-selector", "test.open-local/run="+run,
		"--leader-elect", "false", "--healthz-bind-address", "")

	get := func(name string) *v1alpha1.LocalVolume {
		lv, err := ol.CsiV1alpha1().LocalVolumes().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		return lv
	}
	poll := func(what string, cond func() bool) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			return cond(), nil
		}); err != nil {
			t.Fatalf("%s: not so after 30s", what)
		}
	}
	for _, name := range []string{lvmPV, devPV} {
		poll("LocalVolume "+name+" written and its PV marked", func() bool {
			pv, err := kube.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
			return get(name) != nil && err == nil && pv.Annotations[v1alpha1.AdoptedPVAnnotation] == name
		})
	}
	claim, err := kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "html-web-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lv := get(lvmPV)
	if s := lv.Spec; lv.Labels[v1alpha1.AdoptedLabel] != "true" || s.NodeName != node || s.VolumeType != v1alpha1.VolumeTypeLVM ||
		s.VGName != vg || lv.LVName() != lvmPV || s.Size.Value() != 5*gi || s.ClaimRef == nil || s.ClaimRef.UID != claim.UID ||
		!slices.Contains(lv.Finalizers, v1alpha1.LocalVolumeFinalizer) {
		t.Errorf("adopted LVM volume: %+v %+v", lv.ObjectMeta, s)
	}
	if d := get(devPV); d.Spec.VolumeType != v1alpha1.VolumeTypeDevice || d.Spec.Device != "/dev/vdc" || d.Spec.NodeName != node {
		t.Errorf("adopted Device volume: %+v", d.Spec)
	}
	poll("a Warning Event on the PV without node affinity", func() bool {
		evs, err := kube.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + lostPV})
		return err == nil && slices.ContainsFunc(evs.Items, func(e corev1.Event) bool { return e.Reason == adoption.ReasonNoNode })
	})
	if get(lostPV) != nil || get(otherPV) != nil {
		t.Errorf("refused or foreign PVs got LocalVolumes: %v %v", get(lostPV), get(otherPV))
	}

	// The ledger as the scheduler builds it, from the API: the 5Gi volume
	// and the whole disk are held.
	after := ledger.New()
	after.SetNodeStorage(nls)
	list, err := ol.CsiV1alpha1().LocalVolumes().List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		after.SetVolume(&list.Items[i])
	}
	if total, _ := after.Capacity(node, ledger.Volume{Type: v1alpha1.VolumeTypeLVM, VG: vg}); total != 5*gi {
		t.Errorf("after adoption: %d bytes free in %s, want 5Gi (10Gi less the adopted 5Gi)", total, vg)
	}
	if total, _ := after.Capacity(node, ledger.Volume{Type: v1alpha1.VolumeTypeDevice, MediaType: "ssd"}); total != 0 {
		t.Errorf("after adoption: %d bytes of free SSD, want 0 (the adopted Device volume holds /dev/vdc)", total)
	}
	if _, short := after.Place(node, ledger.Volume{Name: "burst", Type: v1alpha1.VolumeTypeLVM, VG: vg, Size: 6 * gi}, ledger.Binpack); short == nil {
		t.Errorf("a 6Gi volume was placed in a VG whose 10Gi holds 5Gi of open-local's")
	}
}
