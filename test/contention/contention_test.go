/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package contention_test is issue 13's end-to-end check of the capacity
// authority: on the local real cluster, a burst of PVC pods and inline
// volume pods over capacity runs while PVC expansions, VolumeSnapshots and
// inline volumes that no scheduler placed compete for one VG, and an
// observer asserts at every watch event that what the node granted fits
// the VG's allocatable, from the API objects alone (observer_test.go). At
// the end the real LVM is checked: the LVs fit the allocatable, and nothing
// refused holds an LV.
//
// Everything is real: our scheduler, the CSI controller and node binaries,
// csi-provisioner, csi-resizer, csi-snapshotter and snapshot-controller,
// kube-controller-manager, and the agent binary on lvm2 (metadata mode on a
// loop device). This kernel has no device-mapper, so lvcreate -s is
// refused: snapshots compete for room (the CSI controller's check, then the
// agent's admission) and fail afterwards, holding nothing.
package contention_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	olinformers "github.com/open-local/open-local/apis/client/informers/externalversions"
	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/config/profile"
	"github.com/open-local/open-local/csi/identity"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/csitest"
	"github.com/open-local/open-local/test/launcher"
)

func TestMain(m *testing.M) { cluster.Main(m) }

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// The VG has 1 GiB of which 256 MiB are reserved (the NodeLocalStorage
// reserve annotation): allocatable is 768 MiB while LVM has room for
// 1 GiB, so a grant past the allocatable is possible and would be seen.
// Asked for in all: 192 MiB of base volumes, then 512 MiB of burst PVCs,
// 256 MiB of scheduled inline volumes, 128 MiB of unscheduled inline
// volumes, 256 MiB of growth and 128 MiB of snapshots: nearly twice the
// allocatable.
const (
	vgSize      = 1 * gib
	reserve     = 256 * mib
	volSize     = 32 * mib
	baseVolumes = 6 // bound before the burst; 0-3 are expanded, 4-5 snapshotted
	expanded    = 4 // base volumes grown by growBy during the burst
	growBy      = 64 * mib
	snapSize    = "64Mi"
	burstPVCs   = 16 // PVC pods of our scheduler
	burstInline = 8  // inline-volume pods of our scheduler
	nodeInline  = 4  // inline volumes of pods placed without our scheduler: the CSI node writes their LocalVolumes
)

type env struct {
	c     *cluster.Cluster
	kube  kubernetes.Interface
	snaps snapclient.Interface
	node  *csitest.Node
	csi   csi.NodeClient
	dir   string
	ns    string
	port  string // the scheduler's secure port
}

func setup(t *testing.T) *env {
	capability.Require(t, capability.Root, capability.LoopDevices, capability.LVM, capability.Ext4)
	c := cluster.ForTest(t)
	ctx := t.Context()
	e := &env{c: c, kube: c.Client(), snaps: snapclient.NewForConfigOrDie(c.RESTConfig()), dir: t.TempDir(),
		ns: "burst-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 36)}
	e.node = csitest.NewAgentNode(t, c, "burst-node", "olburst", vgSize)
	e.setReserve(t)

	drv, err := identity.CSIDriver(identity.DefaultDriverName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.kube.StorageV1().CSIDrivers().Create(ctx, drv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	ctrlSock, nodeSock := e.node.StartDriverProcesses(t, c, e.dir, "-burst")
	// csi-snapshotter's default retries (1 s doubling to 5 min): a snapshot
	// this kernel refuses is retried less and less, so the node settles.
	csitest.StartSidecars(t, c, ctrlSock, "-burst", csitest.Sidecar{Container: launcher.Provisioner, Changes: csitest.FastRetries},
		csitest.Sidecar{Container: launcher.Resizer, Changes: csitest.FastRetries}, csitest.Sidecar{Container: launcher.Snapshotter},
		csitest.Sidecar{Container: launcher.SnapshotController, Changes: csitest.FastRetries})
	e.csi = csi.NewNodeClient(csitest.Dial(t, "unix://"+nodeSock))
	e.port = strconv.Itoa(csitest.StartScheduler(t, c, "open-local-scheduler-burst", 2*time.Minute))

	if _, err := e.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wffc := storagev1.VolumeBindingWaitForFirstConsumer
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "burst-lvm"}, Provisioner: identity.DefaultDriverName,
		Parameters:        map[string]string{parameters.VolumeType: "LVM", parameters.VGName: e.node.VG.Name, parameters.FSType: "ext4"},
		VolumeBindingMode: &wffc, AllowVolumeExpansion: ptr.To(true), ReclaimPolicy: ptr.To(corev1.PersistentVolumeReclaimDelete)}
	if _, err := e.kube.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	vsc := &snapv1.VolumeSnapshotClass{ObjectMeta: metav1.ObjectMeta{Name: "burst-snap"}, Driver: identity.DefaultDriverName,
		DeletionPolicy: snapv1.VolumeSnapshotContentDelete, Parameters: map[string]string{parameters.SnapshotInitialSize: snapSize}}
	if _, err := e.snaps.SnapshotV1().VolumeSnapshotClasses().Create(ctx, vsc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Before the agent's cleanup (registered earlier, so it runs
		// later) removes the LocalVolumes left.
		ctx := context.Background()
		_ = e.kube.CoreV1().Namespaces().Delete(ctx, e.ns, metav1.DeleteOptions{})
		_ = e.kube.StorageV1().StorageClasses().Delete(ctx, "burst-lvm", metav1.DeleteOptions{})
		_ = e.snaps.SnapshotV1().VolumeSnapshotClasses().Delete(ctx, "burst-snap", metav1.DeleteOptions{})
	})
	return e
}

// setReserve reserves part of the VG with the NodeLocalStorage annotation
// and waits until the agent reports the smaller allocatable.
func (e *env) setReserve(t *testing.T) {
	t.Helper()
	api := e.c.OpenLocalClient().CsiV1alpha1().NodeLocalStorages()
	_, err := cluster.Update(t.Context(), api.Get, api.Update, e.node.Name, func(nls *v1alpha1.NodeLocalStorage) {
		if nls.Annotations == nil {
			nls.Annotations = map[string]string{}
		}
		nls.Annotations["csi.aliyun.com/storage-reserved"] = fmt.Sprintf(`{%q:"%dMi"}`, e.node.VG.Name, reserve/mib)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		nls, err := api.Get(ctx, e.node.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, vg := range nls.Status.NodeStorageInfo.VolumeGroups {
			if vg.Name == e.node.VG.Name && vg.Allocatable > 0 && vg.Allocatable+uint64(reserve) == vg.Total {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("the agent did not report VG %s with %d MiB reserved: %v", e.node.VG.Name, reserve/mib, err)
	}
}

// pvcPod creates a claim of volSize and a pod of our scheduler using it.
func (e *env) pvcPod(ctx context.Context, name string, size int64) error {
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: ptr.To("burst-lvm"),
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(size, resource.BinarySI)}},
		},
	}
	if _, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err := e.kube.CoreV1().Pods(e.ns).Create(ctx, e.pod(name, corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name}}), metav1.CreateOptions{})
	return err
}

func (e *env) pod(name string, src corev1.VolumeSource) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec: corev1.PodSpec{
			SchedulerName: profile.SchedulerName,
			NodeSelector:  map[string]string{parameters.TopologyKey: e.node.Name},
			Containers:    []corev1.Container{{Name: "app", Image: "app"}},
			Volumes:       []corev1.Volume{{Name: "data", VolumeSource: src}},
		},
	}
}

func (e *env) inlineSource() corev1.VolumeSource {
	return corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: identity.DefaultDriverName,
		VolumeAttributes: map[string]string{parameters.VGName: e.node.VG.Name, parameters.InlineSize: strconv.FormatInt(volSize/mib, 10) + "Mi"}}}
}

// inlinePod creates a pod with one inline volume, placed by our scheduler,
// and once it is bound publishes the volume as kubelet would: the scheduler
// writes no LocalVolume for it (it counts the pod), the CSI node does. A pod
// still unplaced after 60 s is left waiting (no room: an expected outcome).
func (e *env) inlinePod(ctx context.Context, t *testing.T, name string) error {
	if _, err := e.kube.CoreV1().Pods(e.ns).Create(ctx, e.pod(name, e.inlineSource()), metav1.CreateOptions{}); err != nil {
		return err
	}
	var pod *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := e.kube.CoreV1().Pods(e.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil || p.Spec.NodeName == "" {
			return false, nil //nolint:nilerr // keep polling
		}
		pod = p
		return true, nil
	})
	if err != nil {
		return nil
	}
	got, err := e.publishInline(ctx, t, pod)
	t.Logf("inline volume of %s (placed by our scheduler on %s): %s", name, pod.Spec.NodeName, got)
	return err
}

// nodeInlinePublish is a pod placed without our scheduler (nodeName set)
// and kubelet's NodePublishVolume of its inline volume: no LocalVolume
// exists, so the CSI node checks the room with the ledger and writes one.
// It returns the outcome of the publish.
func (e *env) nodeInlinePublish(ctx context.Context, t *testing.T, name string) (string, error) {
	p := e.pod(name, e.inlineSource())
	p.Spec.SchedulerName, p.Spec.NodeSelector, p.Spec.NodeName = "", nil, e.node.Name
	pod, err := e.kube.CoreV1().Pods(e.ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return e.publishInline(ctx, t, pod)
}

// publishInline is kubelet's NodePublishVolume of the pod's inline volume.
func (e *env) publishInline(ctx context.Context, t *testing.T, pod *corev1.Pod) (string, error) {
	vol := pod.Spec.Volumes[0]
	vctx := map[string]string{parameters.PodName: pod.Name, parameters.PodNamespace: pod.Namespace, parameters.PodUID: string(pod.UID),
		parameters.PodServiceAccount: "default", parameters.Ephemeral: "true"}
	for k, v := range vol.CSI.VolumeAttributes {
		vctx[k] = v
	}
	req := &csi.NodePublishVolumeRequest{
		VolumeId:   v1alpha1.InlineVolumeName(pod.UID, vol.Name),
		TargetPath: filepath.Join(e.dir, "pods", string(pod.UID), "volumes", "kubernetes.io~csi", vol.Name, "mount"),
		VolumeCapability: &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}},
		VolumeContext: vctx,
	}
	t.Cleanup(func() {
		_, _ = e.csi.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath})
	})
	_, err := e.csi.NodePublishVolume(ctx, req)
	if err != nil {
		return "refused: " + status.Code(err).String(), nil
	}
	return "published", nil
}

// expand asks for growBy more on a claim; the outcome is read at the end.
func (e *env) expand(ctx context.Context, name string) error {
	patch := fmt.Sprintf(`{"spec":{"resources":{"requests":{"storage":"%d"}}}}`, volSize+growBy)
	_, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	return err
}

func (e *env) snapshot(ctx context.Context, name, pvc string) error {
	vs := &snapv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec: snapv1.VolumeSnapshotSpec{Source: snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: &pvc}, VolumeSnapshotClassName: ptr.To("burst-snap")}}
	_, err := e.snaps.SnapshotV1().VolumeSnapshots(e.ns).Create(ctx, vs, metav1.CreateOptions{})
	return err
}

// startObserver watches the node's LocalVolumes and NodeLocalStorage until
// the test ends.
func (e *env) startObserver(t *testing.T) *observer {
	t.Helper()
	o := newObserver(e.node.Name, e.node.VG.Name)
	f := olinformers.NewSharedInformerFactory(e.c.OpenLocalClient(), 0)
	lvInf := f.Csi().V1alpha1().LocalVolumes().Informer()
	nlsInf := f.Csi().V1alpha1().NodeLocalStorages().Informer()
	if _, err := lvInf.AddEventHandler(o.lvHandler()); err != nil {
		t.Fatal(err)
	}
	if _, err := nlsInf.AddEventHandler(o.nlsHandler()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); f.Shutdown() })
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(t.Context().Done(), lvInf.HasSynced, nlsInf.HasSynced) {
		t.Fatal("observer informers did not sync")
	}
	return o
}

// TestBurstWhileEverythingCompetes (issue 13, "Done when"): Σ granted ≤
// allocatable at every observation while a burst over capacity, PVC
// expansions, snapshots and inline volumes with and without a scheduler
// compete for one VG; at the end LVM agrees and nothing refused holds an
// LV. It also prints the cost of the capacity authority: the scheduler's
// Reserve and PreBind per pod, and the NodeLocalStorage GETs (one per
// agent admission) with their latency.
func TestBurstWhileEverythingCompetes(t *testing.T) {
	e := setup(t)
	ctx := t.Context()
	vgName := e.node.VG.Name

	// Base volumes to expand and snapshot during the burst. On this kernel
	// an LV is reached through a loop device at its extents, so LVs are
	// contiguous (test/loopvg): each volume to expand gets a spacer after
	// it, deleted before the burst, so its growth competes with the burst
	// for the gap instead of failing in LVM for want of adjacent extents.
	for i := range expanded {
		for _, name := range []string{fmt.Sprintf("base-%d", i), fmt.Sprintf("spacer-%d", i)} {
			size := volSize
			if strings.HasPrefix(name, "spacer") {
				size = growBy
			}
			if err := e.pvcPod(ctx, name, size); err != nil {
				t.Fatal(err)
			}
			e.waitBound(t, name)
		}
	}
	for i := expanded; i < baseVolumes; i++ {
		if err := e.pvcPod(ctx, fmt.Sprintf("base-%d", i), volSize); err != nil {
			t.Fatal(err)
		}
		e.waitBound(t, fmt.Sprintf("base-%d", i))
	}
	for i := range expanded {
		e.deleteClaim(t, fmt.Sprintf("spacer-%d", i))
	}

	o := e.startObserver(t)
	apiBefore := e.apiserverNLSGets(t)

	// Everything at once.
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	nodeInlineOutcome := map[string]string{}
	run := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	// Expansions, snapshots and inline volumes without a scheduler first;
	// the scheduler's pods follow in a stream, one every pace, so that the
	// others (which reach the CSI controller and node through their
	// sidecars seconds later) land in the middle of the burst rather than
	// after it. Pacing only spreads the load; nothing is timed.
	for i := range expanded {
		run(func() error { return e.expand(ctx, fmt.Sprintf("base-%d", i)) })
	}
	for i := expanded; i < baseVolumes; i++ {
		run(func() error { return e.snapshot(ctx, fmt.Sprintf("snap-%d", i), fmt.Sprintf("base-%d", i)) })
	}
	for i := range nodeInline {
		run(func() error {
			name := fmt.Sprintf("node-inline-%d", i)
			got, err := e.nodeInlinePublish(ctx, t, name)
			mu.Lock()
			nodeInlineOutcome[name] = got
			mu.Unlock()
			return err
		})
	}
	// PVC pods and inline pods interleaved, two to one.
	var stream []func() error
	for i, j := 0, 0; i < burstPVCs || j < burstInline; {
		for k := 0; k < 2 && i < burstPVCs; k, i = k+1, i+1 {
			name := fmt.Sprintf("burst-%d", i)
			stream = append(stream, func() error { return e.pvcPod(ctx, name, volSize) })
		}
		if j < burstInline {
			name := fmt.Sprintf("inline-%d", j)
			stream = append(stream, func() error { return e.inlinePod(ctx, t, name) })
			j++
		}
	}
	const pace = 150 * time.Millisecond
	for i, create := range stream {
		run(func() error {
			time.Sleep(time.Duration(i) * pace)
			return create()
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	e.waitSettled(t)
	took := time.Since(start)

	// What the observer saw.
	r := o.result()
	for _, v := range r.violations {
		t.Errorf("over-commit seen in the API: %s", v)
	}
	t.Logf("observer: %d observations; granted at most %s of %s allocatable; asked for at most %s (%d observations asked for more than the allocatable: writers racing, resolved by the agent); agent refusals (ResourceExhausted): %d",
		r.observations, ledger.Bytes(r.maxGranted), ledger.Bytes(r.allocatable), ledger.Bytes(r.maxAsked), r.overAsked, len(r.refused))
	for name, msg := range r.refused {
		t.Logf("  refused %s: %s", name, msg)
	}
	if r.observations < burstPVCs {
		t.Errorf("only %d observations: the observer did not watch the burst", r.observations)
	}

	// The end state, from the API and from LVM.
	e.checkEnd(t, vgName, nodeInlineOutcome, took)
	e.reportCost(t, apiBefore)
}

// deleteClaim deletes a pod and its claim and waits until its LocalVolume
// (and so its LV) is gone.
func (e *env) deleteClaim(t *testing.T, name string) {
	t.Helper()
	ctx := t.Context()
	pvc, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = e.kube.CoreV1().Pods(e.ns).Delete(ctx, name, *metav1.NewDeleteOptions(0))
	if err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	id := v1alpha1.PVCVolumeName(pvc.UID)
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Get(ctx, id, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("LocalVolume %s of deleted claim %s not gone: %v", id, name, err)
	}
}

func (e *env) waitBound(t *testing.T, name string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.ClaimBound, nil
	})
	if err != nil {
		t.Fatalf("PVC %s not bound: %v", name, err)
	}
}

// waitSettled waits until the node has nothing in progress: no
// LocalVolume without a final phase, no pod of the burst whose claim is
// being provisioned, and nothing changed for 3 s. Not a timing assertion:
// the bound only keeps a stuck system from hanging the test.
func (e *env) waitSettled(t *testing.T) {
	t.Helper()
	last, same := "", 0
	err := wait.PollUntilContextTimeout(t.Context(), 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		lvs, err := e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil //nolint:nilerr // keep polling
		}
		pods, err := e.kube.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil //nolint:nilerr // keep polling
		}
		var b strings.Builder
		busy := false
		for _, lv := range lvs.Items {
			if lv.Spec.NodeName != e.node.Name {
				continue
			}
			if lv.Status.Phase == "" || lv.Status.Phase == v1alpha1.PhasePending || lv.Status.ObservedGeneration < lv.Generation {
				busy = true
			}
			fmt.Fprintf(&b, "%s/%s/%s ", lv.Name, lv.ResourceVersion, lv.Status.Phase)
		}
		for _, p := range pods.Items {
			fmt.Fprintf(&b, "%s/%s ", p.Name, p.Spec.NodeName)
		}
		if busy || b.String() != last {
			last, same = b.String(), 0
			return false, nil
		}
		same++
		return same >= 6, nil
	})
	if err != nil {
		t.Fatalf("the node did not settle: %v; last state %s", err, last)
	}
}

// checkEnd checks LVM against the allocatable and the records, and logs
// what happened to every competitor.
func (e *env) checkEnd(t *testing.T, vgName string, nodeInline map[string]string, took time.Duration) {
	t.Helper()
	ctx := t.Context()
	nls, err := e.c.OpenLocalClient().CsiV1alpha1().NodeLocalStorages().Get(ctx, e.node.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var allocatable int64
	for _, vg := range nls.Status.NodeStorageInfo.VolumeGroups {
		if vg.Name == vgName {
			allocatable = int64(vg.Allocatable)
		}
	}
	vg, err := e.node.LVM.GetVG(ctx, vgName)
	if err != nil {
		t.Fatal(err)
	}
	lvs, err := e.node.LVM.ListLVs(ctx, vgName)
	if err != nil {
		t.Fatal(err)
	}
	list, err := e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	records := map[string]*v1alpha1.LocalVolume{}
	for i := range list.Items {
		lv := &list.Items[i]
		if lv.Spec.NodeName == e.node.Name {
			records[lv.LVName()] = lv
		}
	}
	var used int64
	for _, l := range lvs {
		used += int64(l.Size)
		rec := records[l.Name]
		switch {
		case rec == nil:
			t.Errorf("LV %s/%s (%d bytes) has no LocalVolume", vgName, l.Name, l.Size)
		case rec.Status.CurrentSize == nil:
			t.Errorf("LV %s/%s exists but LocalVolume %s (phase %s, %s) was never granted: a refused volume holds space", vgName, l.Name, rec.Name, rec.Status.Phase, rec.Status.Message)
		case int64(l.Size) > rec.Status.CurrentSize.Value():
			t.Errorf("LV %s/%s has %d bytes, more than LocalVolume %s was granted (%s)", vgName, l.Name, l.Size, rec.Name, rec.Status.CurrentSize)
		case rec.Spec.Kind == v1alpha1.KindSnapshot:
			t.Logf("snapshot LV %s exists (this kernel has device-mapper?)", l.Name)
		}
	}
	t.Logf("LVM: %d LVs use %s of VG %s (%s, %s allocatable)", len(lvs), ledger.Bytes(used), vgName, ledger.Bytes(int64(vg.Size)), ledger.Bytes(allocatable))
	if used > allocatable || used > int64(vg.Size) {
		t.Errorf("LVM: LVs use %d bytes of VG %s, more than its allocatable %d (VG %d bytes)", used, vgName, allocatable, vg.Size)
	}
	// What a writer reading the API (the CSI controller, the CSI node) is
	// told now for one more extent.
	l := ledger.New()
	nlsCopy := nls.DeepCopy()
	nlsCopy.Spec.NodeName = e.node.Name
	l.SetNodeStorage(nlsCopy)
	for _, lv := range records {
		l.SetVolume(lv)
	}
	l.Visit(func(u ledger.VGUsage) {
		if u.VG == vgName {
			t.Logf("API ledger of VG %s: used %s of %s (schedulable %v)", vgName, ledger.Bytes(u.Used), ledger.Bytes(u.Capacity), u.Schedulable)
		}
	}, nil)
	if _, sf := l.Place(e.node.Name, ledger.Volume{Name: "probe", Desc: "probe", Type: v1alpha1.VolumeTypeLVM, VG: vgName, Size: 4 * mib}, ledger.Spread); sf != nil {
		t.Logf("API ledger: one more extent: %s", sf.Detail())
	}
	// Refused records hold nothing: a refused creation has no LV (checked
	// above: every LV has a granted record); a refused growth kept its old
	// size.
	failed := 0
	for _, lv := range records {
		if lv.Status.Phase == v1alpha1.PhaseFailed {
			failed++
			t.Logf("  Failed %s (%s, spec %s, has %v): %s %s", lv.Name, lv.Spec.Kind, lv.Spec.Size.String(), lv.Status.CurrentSize, lv.Status.Code, lv.Status.Message)
		}
	}

	// What happened to every competitor.
	pods, err := e.kube.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	placed := map[string]int{}
	waiting := map[string]int{}
	for _, p := range pods.Items {
		kind := strings.TrimRight(p.Name, "0123456789-")
		if p.Spec.NodeName != "" {
			placed[kind]++
		} else {
			waiting[kind]++
		}
	}
	t.Logf("after %v: pods placed %v, waiting %v; LocalVolumes Failed: %d; node-placed inline volumes: %v", took.Round(100*time.Millisecond), placed, waiting, failed, nodeInline)
	if waiting["burst"]+waiting["inline"] == 0 {
		t.Errorf("every burst pod was placed: %d MiB asked for did not exceed the %d MiB allocatable?", (burstPVCs+burstInline)*volSize/mib, allocatable/mib)
	}
	for i := range expanded {
		name := fmt.Sprintf("base-%d", i)
		pvc, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		lv := records[v1alpha1.PVCVolumeName(pvc.UID)]
		if lv == nil {
			t.Errorf("expanded claim %s has no LocalVolume", name)
			continue
		}
		t.Logf("expansion of %s to %d MiB: LocalVolume spec %s, LV %v, %s %s; last event %q", name, (volSize+growBy)/mib,
			lv.Spec.Size.String(), lv.Status.CurrentSize, lv.Status.Phase, lv.Status.Code, e.lastEvent(name))
	}
	for i := expanded; i < baseVolumes; i++ {
		name := fmt.Sprintf("snap-%d", i)
		vs, err := e.snaps.SnapshotV1().VolumeSnapshots(e.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		msg := "no status"
		if vs.Status != nil && vs.Status.Error != nil {
			msg = ptr.Deref(vs.Status.Error.Message, "")
		} else if vs.Status != nil && vs.Status.ReadyToUse != nil {
			msg = fmt.Sprintf("readyToUse %v", *vs.Status.ReadyToUse)
		}
		t.Logf("VolumeSnapshot %s: %s", name, msg)
	}
}

func (e *env) lastEvent(name string) string {
	evs, err := e.kube.CoreV1().Events(e.ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil || len(evs.Items) == 0 {
		return ""
	}
	last := evs.Items[0]
	for _, ev := range evs.Items {
		if ev.LastTimestamp.After(last.LastTimestamp.Time) {
			last = ev
		}
	}
	return last.Reason + ": " + last.Message
}

var (
	// pluginRE: one plugin at one extension point (sampled by the scheduler).
	pluginRE = regexp.MustCompile(`(?m)^scheduler_plugin_execution_duration_seconds_(sum|count)\{extension_point="(\w+)",plugin="(\w+)",status="\w+"\} (\S+)$`)
	// pointRE: a whole extension point, every plugin (every pod).
	pointRE = regexp.MustCompile(`(?m)^scheduler_framework_extension_point_duration_seconds_(sum|count)\{extension_point="(\w+)",profile="[^"]*",status="\w+"\} (\S+)$`)
	// nlsGetRE: the API server's GETs of NodeLocalStorages.
	nlsGetRE = regexp.MustCompile(`(?m)^apiserver_request_duration_seconds_(sum|count)\{[^}]*resource="nodelocalstorages"[^}]*verb="GET"[^}]*\} (\S+)$`)
)

// means sums a metric's _sum and _count series per key and returns
// key -> (mean seconds, count).
func means(text string, re *regexp.Regexp, key func([]string) string, value func([]string) string) map[string][2]float64 {
	sum, count := map[string]float64{}, map[string]float64{}
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		k := key(m)
		if k == "" {
			continue
		}
		v, _ := strconv.ParseFloat(value(m), 64)
		if m[1] == "sum" {
			sum[k] += v
		} else {
			count[k] += v
		}
	}
	out := map[string][2]float64{}
	for k, c := range count {
		if c > 0 {
			out[k] = [2]float64{sum[k] / c, c}
		}
	}
	return out
}

func (e *env) schedulerMetrics(t *testing.T) string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // our own self-signed loopback endpoint
	resp, err := client.Get("https://127.0.0.1:" + e.port + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scheduler /metrics: %s", resp.Status)
	}
	return string(body)
}

// apiserverNLSGets is the API server's count and total seconds of
// NodeLocalStorage GETs so far.
func (e *env) apiserverNLSGets(t *testing.T) [2]float64 {
	t.Helper()
	body, err := e.kube.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var count, sum float64
	for _, m := range nlsGetRE.FindAllStringSubmatch(string(body), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		if m[1] == "sum" {
			sum += v
		} else {
			count += v
		}
	}
	return [2]float64{count, sum}
}

// reportCost prints the cost numbers of the capacity authority.
func (e *env) reportCost(t *testing.T, apiBefore [2]float64) {
	t.Helper()
	text := e.schedulerMetrics(t)
	plugins := means(text, pluginRE, func(m []string) string {
		if m[3] != "OpenLocal" && m[3] != "VolumeBinding" {
			return ""
		}
		return m[3] + "/" + m[2]
	}, func(m []string) string { return m[4] })
	points := means(text, pointRE, func(m []string) string {
		switch m[2] {
		case "Reserve", "PreBind", "PreFilter", "Filter":
			return m[2]
		}
		return ""
	}, func(m []string) string { return m[3] })
	for _, k := range []string{"OpenLocal/Reserve", "OpenLocal/PreBind", "VolumeBinding/PreBind"} {
		if v, ok := plugins[k]; ok {
			t.Logf("cost: scheduler plugin %s mean %.2f ms (%.0f sampled calls)", k, v[0]*1e3, v[1])
		}
	}
	for _, k := range []string{"PreFilter", "Filter", "Reserve", "PreBind"} {
		if v, ok := points[k]; ok {
			t.Logf("cost: scheduler extension point %s mean %.2f ms per pod (%.0f calls)", k, v[0]*1e3, v[1])
		}
	}
	after := e.apiserverNLSGets(t)
	gets, secs := after[0]-apiBefore[0], after[1]-apiBefore[1]
	if gets > 0 {
		t.Logf("cost: %.0f NodeLocalStorage GETs during the burst (agent admissions, CSI controller and node checks), mean %.2f ms at the API server",
			gets, secs/gets*1e3)
	}
}
