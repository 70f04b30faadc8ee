/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package inline

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	olscheme "github.com/open-local/open-local/apis/client/clientset/versioned/scheme"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/test/cluster"
)

func TestMain(m *testing.M) { cluster.Main(m) }

// decisionEnv is a Collector for one node on the local cluster, with its
// informers running but no worker: the test calls collect itself, so every
// decision is observed, including "keep".
type decisionEnv struct {
	c    *cluster.Cluster
	col  *Collector
	node string
	busy atomic.Bool
}

func newDecisionEnv(t *testing.T) *decisionEnv {
	t.Helper()
	c := cluster.ForTest(t)
	e := &decisionEnv{c: c, node: "gc-" + rand.String(5)}
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.Client().CoreV1().Events("")})
	t.Cleanup(b.Shutdown)
	col, err := New(Options{NodeName: e.node, Client: c.OpenLocalClient(), Kube: c.Client(),
		Recorder:    b.NewRecorder(olscheme.Scheme, corev1.EventSource{Component: "open-local-agent", Host: e.node}),
		DeviceInUse: func(string) (bool, error) { return e.busy.Load(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	col.olf.Start(ctx.Done())
	col.kf.Start(ctx.Done())
	t.Cleanup(func() { col.olf.Shutdown(); col.kf.Shutdown() })
	if !cache.WaitForCacheSync(ctx.Done(), col.synced...) {
		t.Fatal("informers did not sync")
	}
	e.col = col
	return e
}

// pod creates a pod; phase "" leaves it Pending.
func (e *decisionEnv) pod(t *testing.T, name, nodeName string, phase corev1.PodPhase) *corev1.Pod {
	t.Helper()
	pods := e.c.Client().CoreV1().Pods("default")
	p, err := pods.Create(t.Context(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "c", Image: "c"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		zero := int64(0)
		_ = pods.Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})
	if phase != "" {
		// kwok may be writing the pod's status meanwhile.
		if p, err = cluster.Update(t.Context(), pods.Get, pods.UpdateStatus, name, func(p *corev1.Pod) { p.Status.Phase = phase }); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// volume creates an inline LocalVolume of the pod ref on node (no
// finalizer: no agent runs here, deletion is immediate) and waits until the
// collector's informer has it.
func (e *decisionEnv) volume(t *testing.T, name, node string, ref *v1alpha1.ObjectReference, devicePath string) {
	t.Helper()
	lvs := e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes()
	_, err := lvs.Create(t.Context(), &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.LocalVolumeSpec{NodeName: node, VolumeType: v1alpha1.VolumeTypeLVM, VGName: "vg",
			Size: *resource.NewQuantity(1<<20, resource.BinarySI), PodRef: ref}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lvs.Delete(context.Background(), name, metav1.DeleteOptions{}) })
	if devicePath != "" {
		_, err := cluster.Update(t.Context(), lvs.Get, lvs.UpdateStatus, name, func(lv *v1alpha1.LocalVolume) {
			lv.Status = v1alpha1.LocalVolumeStatus{Phase: v1alpha1.PhaseReady, DevicePath: devicePath}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if node != e.node {
		return
	}
	waitFor(t, "the informer to see "+name, func() bool {
		got, err := e.col.lvLister.Get(name)
		return err == nil && (devicePath == "" || got.Status.DevicePath == devicePath)
	})
}

func (e *decisionEnv) exists(t *testing.T, name string) bool {
	t.Helper()
	_, err := e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Get(t.Context(), name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

func refTo(p *corev1.Pod) *v1alpha1.ObjectReference {
	return &v1alpha1.ObjectReference{Namespace: p.Namespace, Name: p.Name, UID: p.UID}
}

// TestCollectDecisions: which inline volumes the collector deletes.
func TestCollectDecisions(t *testing.T) {
	e := newDecisionEnv(t)
	tests := []struct {
		name string
		// setup returns the volume's pod reference (nil: not inline) and
		// the node of the volume.
		setup   func(t *testing.T, name string) (*v1alpha1.ObjectReference, string)
		collect bool
	}{
		{"pod running here", func(t *testing.T, n string) (*v1alpha1.ObjectReference, string) {
			return refTo(e.pod(t, n, e.node, corev1.PodRunning)), e.node
		}, false},
		{"pod pending, not bound yet (scheduler between PreBind and bind)", func(t *testing.T, n string) (*v1alpha1.ObjectReference, string) {
			return refTo(e.pod(t, n, "", "")), e.node
		}, false},
		{"pod deleted", func(t *testing.T, n string) (*v1alpha1.ObjectReference, string) {
			return &v1alpha1.ObjectReference{Namespace: "default", Name: n, UID: types.UID("deleted-" + n)}, e.node
		}, true},
		{"pod replaced by one with another UID", func(t *testing.T, n string) (*v1alpha1.ObjectReference, string) {
			ref := refTo(e.pod(t, n, e.node, corev1.PodRunning))
			ref.UID = "an-earlier-incarnation"
			return ref, e.node
		}, true},
		{"pod succeeded", func(t *testing.T, n string) (*v1alpha1.ObjectReference, string) {
			return refTo(e.pod(t, n, e.node, corev1.PodSucceeded)), e.node
		}, true},
		{"pod failed", func(t *testing.T, n string) (*v1alpha1.ObjectReference, string) {
			return refTo(e.pod(t, n, e.node, corev1.PodFailed)), e.node
		}, true},
		{"pod bound to another node", func(t *testing.T, n string) (*v1alpha1.ObjectReference, string) {
			return refTo(e.pod(t, n, "elsewhere", "")), e.node
		}, true},
		{"not an inline volume", func(t *testing.T, n string) (*v1alpha1.ObjectReference, string) {
			return nil, e.node
		}, false},
		{"another node's volume", func(t *testing.T, n string) (*v1alpha1.ObjectReference, string) {
			return &v1alpha1.ObjectReference{Namespace: "default", Name: n, UID: "gone"}, "another-node"
		}, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := e.node + "-" + string(rune('a'+i))
			ref, node := tt.setup(t, name)
			e.volume(t, name, node, ref, "")
			if _, err := e.col.collect(t.Context(), name); err != nil {
				t.Fatalf("collect: %v", err)
			}
			if gone := !e.exists(t, name); gone != tt.collect {
				t.Fatalf("collected: %v, want %v", gone, tt.collect)
			}
		})
	}
}

// TestCollectWaitsForUnmount: the volume of a gone pod whose device is
// still mounted is kept, with one Warning Event and a retry, until it is
// unmounted.
func TestCollectWaitsForUnmount(t *testing.T) {
	e := newDecisionEnv(t)
	ctx := t.Context()
	name := e.node + "-busy"
	e.volume(t, name, e.node, &v1alpha1.ObjectReference{Namespace: "default", Name: name, UID: "gone"}, "/dev/loop-of-"+name)
	e.busy.Store(true)
	for range 2 {
		retry, err := e.col.collect(ctx, name)
		if err != nil || retry <= 0 {
			t.Fatalf("collect of a mounted volume: retry %v, %v", retry, err)
		}
	}
	if !e.exists(t, name) {
		t.Fatal("a mounted volume was deleted")
	}
	waitFor(t, "the "+ReasonInUse+" event", func() bool {
		evs, err := e.c.Client().CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name + ",reason=" + ReasonInUse})
		return err == nil && len(evs.Items) == 1 && evs.Items[0].Count == 1
	})
	e.busy.Store(false)
	if _, err := e.col.collect(ctx, name); err != nil {
		t.Fatal(err)
	}
	if e.exists(t, name) {
		t.Fatal("an unmounted volume of a gone pod was kept")
	}
}

// TestDeviceInUse on real devices: a mounted one is busy, /dev/null (not
// a block device, never exclusively held) and a missing path are not.
func TestDeviceInUse(t *testing.T) {
	for path, want := range map[string]bool{"/dev/null": false, "/dev/no-such-device": false} {
		if got, err := DeviceInUse(path); err != nil || got != want {
			t.Errorf("DeviceInUse(%s) = %v, %v; want %v", path, got, err, want)
		}
	}
}

// waitFor polls cond; the deadline only bounds a failing test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}
