/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package orphanvolumes

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/informers"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	olscheme "github.com/open-local/open-local/apis/client/clientset/versioned/scheme"
	"github.com/open-local/open-local/apis/client/informers/externalversions"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/config"
	"github.com/open-local/open-local/test/cluster"
)

func TestMain(m *testing.M) { cluster.Main(m) }

// TestCollectorOnCluster runs the collector in this process against the
// local real cluster: orphans (claim deleted, claim replaced by a PVC of the
// same name) are deleted after the grace period with an Event and counted;
// a volume whose claim exists, one a PV names, and one whose claimRef has
// no UID are kept — until the live claim is deleted.
func TestCollectorOnCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the local real cluster")
	}
	c := cluster.ForTest(t)
	ctx := t.Context()
	kube, ol := c.Client(), c.OpenLocalClient()
	run := rand.String(6)
	ns := "gc-" + run
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })

	pvc := func(name string) *corev1.PersistentVolumeClaim {
		t.Helper()
		sc := "open-local-lvm"
		p, err := kube.CoreV1().PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				StorageClassName: &sc,
				Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	deletePVC := func(name string) {
		t.Helper()
		if err := kube.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		for {
			_, err := kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return
			}
			if ctx.Err() != nil {
				t.Fatal(ctx.Err())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	lvs := ol.CsiV1alpha1().LocalVolumes()
	volume := func(claim string, uid types.UID) string {
		t.Helper()
		name := "pvc-" + string(uuid.NewUUID())
		_, err := lvs.Create(ctx, &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1alpha1.LocalVolumeSpec{NodeName: "gc-node-" + run, VolumeType: v1alpha1.VolumeTypeLVM, Kind: v1alpha1.KindVolume,
				VGName: "vg", Size: resource.MustParse("1Gi"), ClaimRef: &v1alpha1.ObjectReference{Namespace: ns, Name: claim, UID: uid}}},
			metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = lvs.Delete(context.Background(), name, metav1.DeleteOptions{}) })
		return name
	}

	live := pvc("live")
	liveVol := volume("live", live.UID)
	goneVol := volume("gone", uuid.NewUUID()) // a PVC deleted before anyone looked
	first := pvc("reused")
	replacedVol := volume("reused", first.UID)
	deletePVC("reused")
	second := pvc("reused")
	noUIDVol := volume("gone", "")
	retainedVol := volume("retained", uuid.NewUUID())
	pvName := "pv-" + run
	_, err := kube.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: pvName},
		Spec: corev1.PersistentVolumeSpec{Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: config.ProvisionerName, VolumeHandle: retainedVol}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.CoreV1().PersistentVolumes().Delete(context.Background(), pvName, metav1.DeleteOptions{})
	})

	// The collector, as agent --mode=controller runs it.
	reg := prometheus.NewRegistry()
	metrics := NewMetrics(reg)
	runCtx, cancel := context.WithCancel(context.Background())
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = olscheme.AddToScheme(scheme)
	b := record.NewBroadcaster(record.WithContext(runCtx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	kf := informers.NewSharedInformerFactory(kube, 0)
	of := externalversions.NewSharedInformerFactory(ol, 0)
	const grace = 3 * time.Second
	gc, err := New(ol, kube, of.Csi().V1alpha1().LocalVolumes(), kf.Core().V1().PersistentVolumeClaims(), kf.Core().V1().PersistentVolumes(),
		b.NewRecorder(scheme, corev1.EventSource{Component: "open-local-nls-controller"}), Options{Grace: grace, Resync: time.Second, Metrics: metrics})
	if err != nil {
		t.Fatal(err)
	}
	kf.Start(runCtx.Done())
	of.Start(runCtx.Done())
	done := make(chan struct{})
	started := time.Now()
	go func() { defer close(done); _ = gc.Run(runCtx) }()
	t.Cleanup(func() { cancel(); <-done; kf.Shutdown(); of.Shutdown(); b.Shutdown() })

	gone := func(name string) bool {
		_, err := lvs.Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}
	waitGone := func(name string, within time.Duration) time.Duration {
		t.Helper()
		deadline := time.Now().Add(within)
		for !gone(name) {
			if time.Now().After(deadline) {
				t.Fatalf("orphan LocalVolume %s still there after %s", name, within)
			}
			time.Sleep(100 * time.Millisecond)
		}
		return time.Since(started)
	}
	for _, name := range []string{goneVol, replacedVol} {
		if took := waitGone(name, 30*time.Second); took < grace {
			t.Errorf("%s collected after %s, before the %s grace period", name, took, grace)
		}
	}
	// Two more resyncs: the others stay.
	time.Sleep(2 * time.Second)
	for _, name := range []string{liveVol, noUIDVol, retainedVol} {
		if gone(name) {
			t.Errorf("LocalVolume %s was collected; its claim exists, or its claimRef has no UID, or a PV names it", name)
		}
	}

	// Its claim deleted, the live volume is an orphan too.
	deletePVC("live")
	waitGone(liveVol, 30*time.Second)

	if got := testutil.ToFloat64(metrics.collected.WithLabelValues(ReasonClaimDeleted)); got != 2 {
		t.Errorf("collected{ClaimDeleted} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(metrics.collected.WithLabelValues(ReasonClaimReplaced)); got != 1 {
		t.Errorf("collected{ClaimReplaced} = %v, want 1", got)
	}
	// One Event per collected volume, naming the claim.
	for name, part := range map[string]string{goneVol: "no longer exists", replacedVol: "replaced by a PVC of that name with uid " + string(second.UID), liveVol: string(live.UID)} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			evs, err := kube.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name + ",reason=" + ReasonCollected})
			if err != nil {
				t.Fatal(err)
			}
			if len(evs.Items) == 1 && strings.Contains(evs.Items[0].Message, part) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Events of %s: %v, want one %s containing %q", name, messages(evs.Items), ReasonCollected, part)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

func messages(evs []corev1.Event) []string {
	var m []string
	for _, e := range evs {
		m = append(m, fmt.Sprintf("%s: %s", e.Reason, e.Message))
	}
	return m
}
