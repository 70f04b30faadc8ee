/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package nodeloss

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
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

const grace = 3 * time.Second

// env is one test's objects on the local real cluster.
type env struct {
	t   *testing.T
	c   *cluster.Cluster
	run string
	ns  string
}

func newEnv(t *testing.T) *env {
	c := cluster.ForTest(t)
	e := &env{t: t, c: c, run: rand.String(6)}
	e.ns = "nodeloss-" + e.run
	if _, err := c.Client().CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Client().CoreV1().Namespaces().Delete(context.Background(), e.ns, metav1.DeleteOptions{})
	})
	return e
}

func (e *env) node(name string) string {
	e.t.Helper()
	name += "-" + e.run
	if _, err := e.c.Client().CoreV1().Nodes().Create(e.t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = e.c.Client().CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	return name
}

func (e *env) deleteNode(name string) {
	e.t.Helper()
	if err := e.c.Client().CoreV1().Nodes().Delete(e.t.Context(), name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// volume is a provisioned volume as the CSI controller leaves it: a PVC,
// its LocalVolume (with the agent's finalizer) on node, and a bound PV.
type volume struct {
	pvc *corev1.PersistentVolumeClaim
	lv  string
	pv  string
}

func (e *env) volume(node, claim string, optIn bool) volume {
	e.t.Helper()
	ctx, kube, lvs := e.t.Context(), e.c.Client(), e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes()
	sc := "nodeloss-" + e.run // no such class: the PV is bound statically
	meta := metav1.ObjectMeta{Name: claim}
	if optIn {
		meta.Annotations = map[string]string{v1alpha1.NodeLossAnnotation: "true"}
	}
	pvc, err := kube.CoreV1().PersistentVolumeClaims(e.ns).Create(ctx, &corev1.PersistentVolumeClaim{ObjectMeta: meta,
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: &sc,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	name := "pvc-" + string(pvc.UID)
	if _, err := lvs.Create(ctx, &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: name, Finalizers: []string{v1alpha1.LocalVolumeFinalizer}},
		Spec: v1alpha1.LocalVolumeSpec{NodeName: node, VolumeType: v1alpha1.VolumeTypeLVM, Kind: v1alpha1.KindVolume,
			VGName: "vg", Size: resource.MustParse("1Gi"), ClaimRef: &v1alpha1.ObjectReference{Namespace: e.ns, Name: claim, UID: pvc.UID}}},
		metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		ctx := context.Background()
		_, _ = cluster.Update(ctx, lvs.Get, lvs.Update, name, func(lv *v1alpha1.LocalVolume) { lv.Finalizers = nil })
		_ = lvs.Delete(ctx, name, metav1.DeleteOptions{})
	})
	if _, err := kube.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete, StorageClassName: sc,
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: e.ns, Name: claim, UID: pvc.UID},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: config.ProvisionerName, VolumeHandle: name}}}}, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = kube.CoreV1().PersistentVolumes().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return volume{pvc: pvc, lv: name, pv: name}
}

// start runs the controller in this process, as agent --mode=controller does.
func (e *env) start(cleanup bool) *Metrics {
	e.t.Helper()
	kube, ol := e.c.Client(), e.c.OpenLocalClient()
	metrics := NewMetrics(prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = olscheme.AddToScheme(scheme)
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	kf := informers.NewSharedInformerFactory(kube, 0)
	of := externalversions.NewSharedInformerFactory(ol, 0)
	c, err := New(ol, kube, kf.Core().V1().Nodes(), of.Csi().V1alpha1().LocalVolumes(), kf.Core().V1().PersistentVolumeClaims(),
		kf.Core().V1().PersistentVolumes(), b.NewRecorder(scheme, corev1.EventSource{Component: "open-local-nls-controller"}),
		Options{Grace: grace, Cleanup: cleanup, Resync: time.Second, Metrics: metrics})
	if err != nil {
		e.t.Fatal(err)
	}
	kf.Start(ctx.Done())
	of.Start(ctx.Done())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); <-done; kf.Shutdown(); of.Shutdown(); b.Shutdown() })
	return metrics
}

func (e *env) lv(name string) *v1alpha1.LocalVolume {
	lv, err := e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Get(e.t.Context(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return lv
}

func (e *env) claimExists(v volume) bool {
	pvc, err := e.c.Client().CoreV1().PersistentVolumeClaims(e.ns).Get(e.t.Context(), v.pvc.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return pvc.UID == v.pvc.UID && pvc.DeletionTimestamp == nil
}

func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("still not so after 30s: %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// events are the Events of reason about the object of kind named name (in
// ns; "" for all namespaces). A PV and its LocalVolume share a name.
func (e *env) events(ns, kind, name, reason string) []corev1.Event {
	evs, err := e.c.Client().CoreV1().Events(ns).List(e.t.Context(), metav1.ListOptions{
		FieldSelector: "involvedObject.kind=" + kind + ",involvedObject.name=" + name + ",reason=" + reason})
	if err != nil {
		e.t.Fatal(err)
	}
	return evs.Items
}

func (e *env) waitEvent(ns, kind, name, reason string, parts ...string) {
	e.t.Helper()
	e.eventually(fmt.Sprintf("an Event %s on %s containing %q", reason, name, parts), func() bool {
		for _, ev := range e.events(ns, kind, name, reason) {
			if ev.Type == corev1.EventTypeWarning || reason == ReasonFinalizerRemoved || reason == ReasonNodeReturned {
				ok := true
				for _, p := range parts {
					ok = ok && strings.Contains(ev.Message, p)
				}
				if ok {
					return true
				}
			}
		}
		return false
	})
}

func nodeGone(lv *v1alpha1.LocalVolume) metav1.ConditionStatus {
	if lv == nil {
		return "absent"
	}
	c := meta.FindStatusCondition(lv.Status.Conditions, v1alpha1.ConditionNodeGone)
	if c == nil {
		return ""
	}
	return c.Status
}

// holdNotReady keeps node's Ready condition False (kwok would heartbeat it
// back to True) until the test ends; the node exists all along.
func (e *env) holdNotReady(node string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	nodes := e.c.Client().CoreV1().Nodes()
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			n, err := nodes.Get(ctx, node, metav1.GetOptions{})
			if err == nil {
				ready := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionFalse, Reason: "KubeletDown",
					LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}
				i := slices.IndexFunc(n.Status.Conditions, func(c corev1.NodeCondition) bool { return c.Type == corev1.NodeReady })
				if i < 0 {
					n.Status.Conditions = append(n.Status.Conditions, ready)
				} else if n.Status.Conditions[i].Status != corev1.ConditionFalse {
					n.Status.Conditions[i] = ready
				}
				_, _ = nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{})
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	e.t.Cleanup(func() { cancel(); <-done })
}

// TestNodeLoss: what happens to the volumes of a node, by what happened to
// the node and whether cleanup is on. Each case has its own node, and the
// cases of one controller run together.
func TestNodeLoss(t *testing.T) {
	type want struct {
		gone          bool // NodeGone=True on its LocalVolumes, Events on PV and PVC
		claimDeleted  bool // the opted-in PVC is deleted
		finalizerGone bool // a LocalVolume being deleted goes without an agent
	}
	tests := []struct {
		name    string
		cleanup bool
		// happen does to the node what the case is about.
		happen func(e *env, node string)
		want   want
	}{
		{"deleted, cleanup on", true, func(e *env, n string) { e.deleteNode(n) }, want{true, true, true}},
		{"deleted, cleanup off", false, func(e *env, n string) { e.deleteNode(n) }, want{true, false, false}},
		{"NotReady, cleanup on", true, func(e *env, n string) { e.holdNotReady(n) }, want{}},
		{"deleted and re-created within the grace, cleanup on", true, func(e *env, n string) {
			e.deleteNode(n)
			time.Sleep(grace / 3)
			if _, err := e.c.Client().CoreV1().Nodes().Create(e.t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
				e.t.Fatal(err)
			}
		}, want{}},
	}
	for _, cleanup := range []bool{true, false} {
		t.Run(fmt.Sprintf("cleanup=%v", cleanup), func(t *testing.T) {
			e := newEnv(t)
			type nodeCase struct {
				name           string
				node           string
				optedIn, plain volume
				want           want
			}
			var cases []nodeCase
			for i, tc := range tests {
				if tc.cleanup != cleanup {
					continue
				}
				node := e.node(fmt.Sprintf("n%d", i))
				cases = append(cases, nodeCase{name: tc.name, node: node, want: tc.want,
					optedIn: e.volume(node, fmt.Sprintf("opted-in-%d", i), true), plain: e.volume(node, fmt.Sprintf("plain-%d", i), false)})
			}
			metrics := e.start(cleanup)
			started := time.Now()
			for _, tc := range tests {
				if tc.cleanup == cleanup {
					tc.happen(e, cases[slices.IndexFunc(cases, func(c nodeCase) bool { return c.name == tc.name })].node)
				}
			}
			for _, nc := range cases {
				if !nc.want.gone {
					continue
				}
				for _, v := range []volume{nc.optedIn, nc.plain} {
					e.eventually(nc.name+": NodeGone=True on "+v.lv, func() bool { return nodeGone(e.lv(v.lv)) == metav1.ConditionTrue })
					if took := time.Since(started); took < grace {
						t.Errorf("%s: NodeGone after %s, before the %s grace", nc.name, took, grace)
					}
					e.waitEvent("", "PersistentVolume", v.pv, ReasonNodeGone, nc.node, v.lv)
					e.waitEvent(e.ns, "PersistentVolumeClaim", v.pvc.Name, ReasonNodeGone, nc.node, v.lv)
				}
				if !cleanup {
					e.waitEvent(e.ns, "PersistentVolumeClaim", nc.optedIn.pvc.Name, ReasonNodeGone, "cleanup is off", "kubectl patch localvolume "+nc.optedIn.lv)
				}
				if nc.want.claimDeleted {
					e.eventually(nc.name+": opted-in PVC deleted", func() bool { return !e.claimExists(nc.optedIn) })
					e.waitEvent(e.ns, "PersistentVolumeClaim", nc.optedIn.pvc.Name, ReasonClaimDeleted, nc.node)
				}
			}
			// The volumes are deleted, as DeleteVolume does once the PV is
			// released: the agent's finalizer holds them unless cleanup
			// lets them go.
			lvs := e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes()
			for _, nc := range cases {
				if err := lvs.Delete(t.Context(), nc.optedIn.lv, metav1.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			for _, nc := range cases {
				if nc.want.finalizerGone {
					e.eventually(nc.name+": LocalVolume being deleted goes", func() bool { return e.lv(nc.optedIn.lv) == nil })
					e.waitEvent("", "LocalVolume", nc.optedIn.lv, ReasonFinalizerRemoved, nc.node)
				}
			}
			// Past the grace and a few resyncs, nothing else was touched.
			time.Sleep(time.Until(started.Add(2 * grace)))
			for _, nc := range cases {
				if !nc.want.gone {
					for _, v := range []volume{nc.optedIn, nc.plain} {
						if got := nodeGone(e.lv(v.lv)); got != "" {
							t.Errorf("%s: NodeGone=%q on %s, want no condition", nc.name, got, v.lv)
						}
						if evs := e.events("", "PersistentVolume", v.pv, ReasonNodeGone); len(evs) > 0 {
							t.Errorf("%s: Events on PV %s: %v", nc.name, v.pv, evs[0].Message)
						}
					}
				}
				if !nc.want.claimDeleted && !e.claimExists(nc.optedIn) {
					t.Errorf("%s: opted-in PVC %s deleted", nc.name, nc.optedIn.pvc.Name)
				}
				if !e.claimExists(nc.plain) {
					t.Errorf("%s: PVC %s without the annotation deleted", nc.name, nc.plain.pvc.Name)
				}
				if !nc.want.finalizerGone {
					if lv := e.lv(nc.optedIn.lv); lv == nil || !slices.Contains(lv.Finalizers, v1alpha1.LocalVolumeFinalizer) {
						t.Errorf("%s: LocalVolume %s being deleted lost its finalizer: %+v", nc.name, nc.optedIn.lv, lv)
					}
				}
				if lv := e.lv(nc.plain.lv); lv == nil || lv.DeletionTimestamp != nil || !slices.Contains(lv.Finalizers, v1alpha1.LocalVolumeFinalizer) {
					t.Errorf("%s: LocalVolume %s (not being deleted) changed: %+v", nc.name, nc.plain.lv, lv)
				}
			}
			var marked, removed, deleted float64
			for _, nc := range cases {
				if nc.want.gone {
					marked += 2
				}
				if nc.want.claimDeleted {
					deleted++
				}
				if nc.want.finalizerGone {
					removed++
				}
			}
			for action, want := range map[string]float64{ActionMarked: marked, ActionClaimDeleted: deleted, ActionFinalizerRemoved: removed} {
				if got := testutil.ToFloat64(metrics.actions.WithLabelValues(action)); got < want {
					// At least: volumes of earlier tests' gone nodes may be marked too.
					t.Errorf("open_local_node_loss_total{action=%q} = %v, want at least %v", action, got, want)
				}
			}

			// The node comes back: the condition says so.
			for _, nc := range cases {
				if !nc.want.gone {
					continue
				}
				if _, err := e.c.Client().CoreV1().Nodes().Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nc.node}}, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				e.eventually(nc.name+": NodeGone=False once the node is back", func() bool { return nodeGone(e.lv(nc.plain.lv)) == metav1.ConditionFalse })
				e.waitEvent("", "LocalVolume", nc.plain.lv, ReasonNodeReturned, nc.node)
			}
		})
	}
}
