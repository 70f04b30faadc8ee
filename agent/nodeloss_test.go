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

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/config"
	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/launcher"
)

// TestStatefulSetRecreatesClaimOnNodeLoss runs the real binary in controller
// mode with node-loss cleanup on, beside kube-controller-manager's
// StatefulSet, PVC-protection and pod GC controllers: a StatefulSet whose
// claim template opts in loses its node (the Node object is deleted); the
// volume gets NodeGone, the claim is deleted, pod GC removes the pod of the
// gone node, and the StatefulSet recreates pod and claim (a new, empty claim
// that a scheduler could place on any node). The old LocalVolume, deleted as
// DeleteVolume does once its PV is released, goes without an agent.
func TestStatefulSetRecreatesClaimOnNodeLoss(t *testing.T) {
	c := cluster.ForTest(t)
	ctx := t.Context()
	kube, ol := c.Client(), c.OpenLocalClient()
	run := rand.String(6)
	ns, node, sc := "sts-nodeloss-"+run, "sts-node-"+run, "nodeloss-"+run
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	if _, err := kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{}) })

	// No scheduler in the test cluster: the pod is pinned to the node
	// (kwok runs it there).
	labels := map[string]string{"app": "db-" + run}
	if _, err := kube.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "db", Image: "db",
					VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}}}},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data", Annotations: map[string]string{v1alpha1.NodeLossAnnotation: "true"}},
				Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					StorageClassName: &sc,
					Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
			}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	claim := func() *corev1.PersistentVolumeClaim {
		pvc, err := kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data-db-0", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		return pvc
	}
	poll := func(what string, timeout time.Duration, cond func() bool) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
			return cond(), nil
		}); err != nil {
			t.Fatalf("%s: not so after %s", what, timeout)
		}
	}
	var old *corev1.PersistentVolumeClaim
	poll("the StatefulSet's claim exists", 30*time.Second, func() bool { old = claim(); return old != nil })

	// Provisioned, as CreateVolume leaves it: the LocalVolume with the
	// agent's finalizer, and a PV bound to the claim.
	lvName := "pvc-" + string(old.UID)
	lvs := ol.CsiV1alpha1().LocalVolumes()
	if _, err := lvs.Create(ctx, &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: lvName, Finalizers: []string{v1alpha1.LocalVolumeFinalizer}},
		Spec: v1alpha1.LocalVolumeSpec{NodeName: node, VolumeType: v1alpha1.VolumeTypeLVM, Kind: v1alpha1.KindVolume, VGName: "vg",
			Size: resource.MustParse("1Gi"), ClaimRef: &v1alpha1.ObjectReference{Namespace: ns, Name: old.Name, UID: old.UID}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = cluster.Update(ctx, lvs.Get, lvs.Update, lvName, func(lv *v1alpha1.LocalVolume) { lv.Finalizers = nil })
		_ = lvs.Delete(ctx, lvName, metav1.DeleteOptions{})
	})
	if _, err := kube.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: lvName},
		Spec: corev1.PersistentVolumeSpec{Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete, StorageClassName: sc,
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: ns, Name: old.Name, UID: old.UID},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: config.ProvisionerName, VolumeHandle: lvName}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.CoreV1().PersistentVolumes().Delete(context.Background(), lvName, metav1.DeleteOptions{})
	})
	poll("the claim is bound", 30*time.Second, func() bool { p := claim(); return p != nil && p.Status.Phase == corev1.ClaimBound })
	poll("the pod runs on "+node, 30*time.Second, func() bool {
		p, err := kube.CoreV1().Pods(ns).Get(ctx, "db-0", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning
	})

	// The NLSC of this test: the controller's NLS part needs one; no node
	// matches its selector.
	nlsc := "nlsc-" + run
	if _, err := ol.CsiV1alpha1().NodeLocalStorageInitConfigs().Create(ctx, &v1alpha1.NodeLocalStorageInitConfig{ObjectMeta: metav1.ObjectMeta{Name: nlsc},
		Spec: v1alpha1.NodeLocalStorageInitConfigSpec{GlobalConfig: v1alpha1.GlobalConfig{ListConfig: v1alpha1.ListConfig{VGs: v1alpha1.VGList{Include: []string{"x"}}}}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ol.CsiV1alpha1().NodeLocalStorageInitConfigs().Delete(context.Background(), nlsc, metav1.DeleteOptions{})
	})
	ctrl := launcher.ForTest(t).Start(t, c, "nodeloss-controller-"+run, cluster.Binary(t, "./agent"), launcher.NLSController, launcher.Pod{},
		"--kubeconfig", c.Kubeconfig, "--initconfig", nlsc, "--node-selector", "test.open-local/run="+run,
		"--leader-elect", "false", "--healthz-bind-address", "", "--node-loss-grace", "3s", "--node-loss-cleanup", "true")

	started := time.Now()
	if err := kube.CoreV1().Nodes().Delete(ctx, node, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll("NodeGone=True on "+lvName, 30*time.Second, func() bool {
		lv, err := lvs.Get(ctx, lvName, metav1.GetOptions{})
		return err == nil && meta.IsStatusConditionTrue(lv.Status.Conditions, v1alpha1.ConditionNodeGone)
	})
	poll("the old claim is being deleted", 30*time.Second, func() bool {
		p := claim()
		return p == nil || p.UID != old.UID || p.DeletionTimestamp != nil
	})
	// Pod GC removes pods of a gone node after 40 s; then PVC protection
	// lets the claim go and the StatefulSet makes pod and claim anew.
	var recreated *corev1.PersistentVolumeClaim
	poll("the StatefulSet recreates its claim", 3*time.Minute, func() bool {
		recreated = claim()
		return recreated != nil && recreated.UID != old.UID
	})
	t.Logf("claim recreated %s after the Node was deleted", time.Since(started).Round(time.Second))
	if recreated.Annotations[v1alpha1.NodeLossAnnotation] != "true" {
		t.Errorf("recreated claim's annotations %v: want the template's %s", recreated.Annotations, v1alpha1.NodeLossAnnotation)
	}
	if recreated.Spec.VolumeName != "" {
		t.Errorf("recreated claim is bound to %q, want a new, unbound claim", recreated.Spec.VolumeName)
	}

	// DeleteVolume deletes the LocalVolume once the PV is released.
	if err := lvs.Delete(ctx, lvName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll("the old LocalVolume goes without an agent", 30*time.Second, func() bool {
		_, err := lvs.Get(ctx, lvName, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	evs, err := kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=PersistentVolumeClaim,involvedObject.name=data-db-0"})
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, e := range evs.Items {
		reasons = append(reasons, e.Reason)
	}
	for _, want := range []string{"NodeGone", "NodeGoneClaimDeleted"} {
		if !slices.Contains(reasons, want) {
			t.Errorf("Events on the claim: %v, want %s", reasons, want)
		}
	}
	if !ctrl.Alive() {
		t.Errorf("controller exited: %s", ctrl.LogTail(20))
	}
}
