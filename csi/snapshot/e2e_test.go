/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package snapshot_test runs snapshots and restores end to end on the local
// real cluster: snapshot-controller and csi-snapshotter (external-snapshotter
// v8.7) drive our CSI controller binary; csi-provisioner restores
// VolumeSnapshots into PVCs that our scheduler places on the snapshot's
// node; the agent binary takes the LVM snapshots (classic and thin), creates
// the thin pool from its configuration, restores by block copy or thin
// snapshot; the test plays kubelet against our CSI node binary (stage,
// publish) to write data before the snapshot, change it after, and read the
// snapshot's data back from the restored volumes.
//
// LVM snapshots need device-mapper, which this repository's CI host lacks:
// the test runs in the VM suite (test/vm), with the cluster started inside
// the guest.
package snapshot_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

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

// timeout bounds each wait: every lvm command takes ~1 s in the emulated VM.
const timeout = 4 * time.Minute

type env struct {
	c     *cluster.Cluster
	kube  kubernetes.Interface
	snaps snapclient.Interface
	node  *csitest.Node
	csi   csi.NodeClient
	dir   string
	ns    string // the namespace of claims, pods and VolumeSnapshots
}

// setupOptions vary setup: the snapshot and restore test needs
// device-mapper and a thin pool; the failed-snapshot test neither.
type setupOptions struct {
	node, vg string
	caps     []capability.Capability
	thinPool bool
	// snapshotterRetries are csi-snapshotter's retry flags (none: the
	// sidecar's defaults).
	snapshotterRetries []string
}

func setup(t *testing.T) *env {
	return setupWith(t, setupOptions{node: "snap-e2e-node", vg: "olsnape2e",
		caps: []capability.Capability{capability.DeviceMapper, capability.Root, capability.LoopDevices, capability.LVM, capability.Ext4}, thinPool: true,
		snapshotterRetries: csitest.FastRetries})
}

func setupWith(t *testing.T, o setupOptions) *env {
	capability.Require(t, o.caps...)
	c := cluster.ForTest(t)
	ctx := t.Context()
	e := &env{c: c, kube: c.Client(), snaps: snapclient.NewForConfigOrDie(c.RESTConfig()), dir: t.TempDir(), ns: "default"}
	e.node = csitest.NewAgentNode(t, c, o.node, o.vg, 2*gib)
	if o.thinPool {
		e.configureThinPool(t)
	}

	drv, err := identity.CSIDriver(identity.DefaultDriverName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.kube.StorageV1().CSIDrivers().Create(ctx, drv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	ctrlSock, nodeSock := e.node.StartDriverProcesses(t, c, e.dir, "")
	// csi-provisioner publishes CSIStorageCapacity: the CSIDriver says
	// storageCapacity, so VolumeBinding places no WaitForFirstConsumer
	// claim until it exists.
	csitest.StartSidecars(t, c, ctrlSock, "", csitest.Sidecar{Container: launcher.Provisioner, Changes: csitest.FastRetries},
		csitest.Sidecar{Container: launcher.Snapshotter, Changes: o.snapshotterRetries},
		csitest.Sidecar{Container: launcher.SnapshotController, Changes: csitest.FastRetries})
	e.csi = csi.NewNodeClient(csitest.Dial(t, "unix://"+nodeSock))
	csitest.StartScheduler(t, c, "open-local-scheduler", timeout)
	return e
}

// configureThinPool names a thin pool in the node's configuration (as the
// NodeLocalStorageInitConfig would): the agent creates it in its VG and
// reports it with its overprovision ratio.
func (e *env) configureThinPool(t *testing.T) {
	t.Helper()
	api := e.c.OpenLocalClient().CsiV1alpha1().NodeLocalStorages()
	var devs []string
	for _, d := range e.node.VG.Devices {
		devs = append(devs, d.Path)
	}
	ratio := resource.MustParse("3")
	// The agent writes the status meanwhile.
	_, err := cluster.Update(t.Context(), api.Get, api.Update, e.node.Name, func(nls *v1alpha1.NodeLocalStorage) {
		nls.Spec.ResourceToBeInited.VGs = []v1alpha1.VGToBeInited{{Name: e.node.VG.Name, Devices: devs,
			ThinPool: &v1alpha1.ThinPoolToBeInited{Name: "tp", Size: "512Mi", OverprovisionRatio: &ratio}}}
	})
	if err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		nls, err := api.Get(ctx, e.node.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, vg := range nls.Status.NodeStorageInfo.VolumeGroups {
			for _, p := range vg.ThinPools {
				if p.Name == "tp" && p.Allocatable == 3*p.Total && p.Total >= uint64(512*mib) {
					return true, nil
				}
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("the agent did not create and report thin pool tp: %v", err)
	}
}

func (e *env) storageClass(t *testing.T, name string, params map[string]string) {
	t.Helper()
	wffc := storagev1.VolumeBindingWaitForFirstConsumer
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: identity.DefaultDriverName,
		Parameters: params, VolumeBindingMode: &wffc, AllowVolumeExpansion: ptr.To(true)}
	if _, err := e.kube.StorageV1().StorageClasses().Create(t.Context(), sc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.kube.StorageV1().StorageClasses().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

func (e *env) snapshotClass(t *testing.T, name string, params map[string]string) {
	t.Helper()
	vsc := &snapv1.VolumeSnapshotClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Driver: identity.DefaultDriverName,
		DeletionPolicy: snapv1.VolumeSnapshotContentDelete, Parameters: params}
	if _, err := e.snaps.SnapshotV1().VolumeSnapshotClasses().Create(t.Context(), vsc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.snaps.SnapshotV1().VolumeSnapshotClasses().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// claim creates a PVC (restored from snapshot when it is set) and a pod
// using it, placed by our scheduler, and waits until the claim is bound.
func (e *env) claim(t *testing.T, name, class string, size int64, snapshot string) (*corev1.PersistentVolumeClaim, *corev1.PersistentVolume) {
	t.Helper()
	ctx := t.Context()
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: &class,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(size, resource.BinarySI)}},
		},
	}
	if snapshot != "" {
		pvc.Spec.DataSource = &corev1.TypedLocalObjectReference{APIGroup: ptr.To(snapv1.GroupName), Kind: "VolumeSnapshot", Name: snapshot}
	}
	if _, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec: corev1.PodSpec{
			SchedulerName: profile.SchedulerName,
			Containers:    []corev1.Container{{Name: "app", Image: "app"}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name}}}},
		},
	}
	if _, err := e.kube.CoreV1().Pods(e.ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var last *corev1.PersistentVolumeClaim
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		p, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = p
		return p.Status.Phase == corev1.ClaimBound, nil
	})
	if err != nil {
		t.Fatalf("PVC %s not bound: %v; last %+v; events:\n%s", name, err, last.Status, e.events(name))
	}
	pv, err := e.kube.CoreV1().PersistentVolumes().Get(ctx, last.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The claim binds during the scheduler's PreBind; the pod's own binding
	// comes right after it.
	var got *corev1.Pod
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		got, err = e.kube.CoreV1().Pods(e.ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && got.Spec.NodeName != "", nil
	})
	if err != nil || got == nil || got.Spec.NodeName != e.node.Name {
		node := ""
		if got != nil {
			node = got.Spec.NodeName
		}
		t.Fatalf("pod %s on node %q (%v), want %s", name, node, err, e.node.Name)
	}
	return last, pv
}

func (e *env) events(name string) string {
	evs, _ := e.kube.CoreV1().Events("").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	var out []string
	for _, ev := range evs.Items {
		out = append(out, ev.Reason+": "+ev.Message)
	}
	return strings.Join(out, "\n")
}

// mounted stages and publishes the PV's volume as kubelet would (read-only
// when ro), runs use on the mount, and unpublishes and unstages it.
func (e *env) mounted(t *testing.T, pv *corev1.PersistentVolume, ro bool, use func(dir string)) {
	t.Helper()
	ctx := t.Context()
	mode := csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
	if ro {
		mode = csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
	}
	vc := &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: pv.Spec.CSI.FSType}}}
	base := filepath.Join(e.dir, pv.Name)
	staging, target := filepath.Join(base, "globalmount"), filepath.Join(base, "pod", "mount")
	if err := os.MkdirAll(staging, 0o750); err != nil {
		t.Fatal(err)
	}
	id, attrs := pv.Spec.CSI.VolumeHandle, pv.Spec.CSI.VolumeAttributes
	if _, err := e.csi.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: vc, VolumeContext: attrs}); err != nil {
		t.Fatalf("NodeStageVolume %s: %v", id, err)
	}
	if _, err := e.csi.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target,
		VolumeCapability: vc, VolumeContext: attrs, Readonly: ro}); err != nil {
		t.Fatalf("NodePublishVolume %s: %v", id, err)
	}
	use(target)
	if _, err := e.csi.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
		t.Fatalf("NodeUnpublishVolume %s: %v", id, err)
	}
	if _, err := e.csi.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
		t.Fatalf("NodeUnstageVolume %s: %v", id, err)
	}
}

func writeFile(t *testing.T, dir, content string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "data.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func readFile(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "data.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// snapshot creates a VolumeSnapshot of pvc and waits until it is ready.
func (e *env) snapshot(t *testing.T, name, pvc, class string) *snapv1.VolumeSnapshot {
	t.Helper()
	ctx := t.Context()
	vs := &snapv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec: snapv1.VolumeSnapshotSpec{Source: snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: &pvc}, VolumeSnapshotClassName: &class}}
	if _, err := e.snaps.SnapshotV1().VolumeSnapshots(e.ns).Create(ctx, vs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var last *snapv1.VolumeSnapshot
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		got, err := e.snaps.SnapshotV1().VolumeSnapshots(e.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = got
		return got.Status != nil && got.Status.ReadyToUse != nil && *got.Status.ReadyToUse, nil
	})
	if err != nil {
		t.Fatalf("VolumeSnapshot %s not ready: %v; last status %+v; events:\n%s", name, err, last.Status, e.events(name))
	}
	return last
}

func (e *env) localVolume(t *testing.T, name string) *v1alpha1.LocalVolume {
	t.Helper()
	lv, err := e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return lv
}

// deleteAndWait deletes a pod and its claim, or a VolumeSnapshot, and
// waits until the LocalVolume behind it is gone.
func (e *env) deleteAndWait(t *testing.T, kind, name, localVolume string) {
	t.Helper()
	ctx := t.Context()
	switch kind {
	case "pvc":
		_ = e.kube.CoreV1().Pods(e.ns).Delete(ctx, name, *metav1.NewDeleteOptions(0))
		if err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	case "snapshot":
		if err := e.snaps.SnapshotV1().VolumeSnapshots(e.ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	e.waitGone(t, localVolume)
}

func (e *env) waitGone(t *testing.T, localVolume string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		_, err := e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Get(ctx, localVolume, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("LocalVolume %s not gone: %v", localVolume, err)
	}
}

// TestSnapshotAndRestore: for a thick volume with copy-on-write snapshots,
// and a thin volume with thin snapshots, data written before a
// VolumeSnapshot is what its restores hold, whatever is written after:
// a writable restore (block copy, or thin snapshot of the snapshot) and
// open-local's read-only restore (the snapshot's LV, mounted read-only).
// Restored PVCs land on the snapshot's node. A volume with a copy-on-write
// snapshot is deleted only once the snapshot is (its PV waits, Released).
func TestSnapshotAndRestore(t *testing.T) {
	e := setup(t)
	e.snapshotClass(t, "lvm-rw", map[string]string{parameters.SnapshotInitialSize: "64Mi"})
	e.snapshotClass(t, "lvm-ro", map[string]string{parameters.SnapshotReadOnly: "true", parameters.SnapshotInitialSize: "64Mi"})
	for _, tc := range []struct {
		name, class string
		params      map[string]string
	}{
		{name: "thick", params: map[string]string{parameters.VolumeType: "LVM", parameters.FSType: "ext4"}},
		{name: "thin", params: map[string]string{parameters.VolumeType: "LVM", parameters.FSType: "ext4", parameters.ThinPool: "tp"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := "lvm-" + tc.name
			e.storageClass(t, sc, tc.params)
			src := "src-" + tc.name
			start := time.Now()
			pvc, pv := e.claim(t, src, sc, 256*mib, "")
			t.Logf("%s: source bound in %v", tc.name, time.Since(start).Round(time.Millisecond))
			srcLV := e.localVolume(t, pv.Spec.CSI.VolumeHandle)
			if srcLV.Spec.ThinPool != tc.params[parameters.ThinPool] {
				t.Fatalf("source LocalVolume thin pool %q", srcLV.Spec.ThinPool)
			}
			e.mounted(t, pv, false, func(dir string) { writeFile(t, dir, "before the snapshot") })

			snaps := map[string]*snapv1.VolumeSnapshot{}
			for _, class := range []string{"lvm-rw", "lvm-ro"} {
				name := tc.name + "-" + class
				start := time.Now()
				vs := e.snapshot(t, name, src, class)
				snaps[class] = vs
				t.Logf("%s: VolumeSnapshot %s ready in %v", tc.name, name, time.Since(start).Round(time.Millisecond))
				if vs.Status.RestoreSize == nil || vs.Status.RestoreSize.Value() < 256*mib {
					t.Errorf("restore size %v, want the source's 256Mi", vs.Status.RestoreSize)
				}
				lv := e.localVolume(t, "snap-"+string(vs.UID))
				if lv.Spec.Kind != v1alpha1.KindSnapshot || lv.Spec.NodeName != e.node.Name || lv.Spec.ReadOnly != (class == "lvm-ro") ||
					lv.Spec.ThinPool != srcLV.Spec.ThinPool {
					t.Errorf("snapshot LocalVolume %+v", lv.Spec)
				}
			}
			e.mounted(t, pv, false, func(dir string) { writeFile(t, dir, "after the snapshot") })

			restored := map[string]*corev1.PersistentVolumeClaim{}
			for _, class := range []string{"lvm-rw", "lvm-ro"} {
				name := "restored-" + tc.name + "-" + strings.TrimPrefix(class, "lvm-")
				start := time.Now()
				rpvc, rpv := e.claim(t, name, sc, 256*mib, snaps[class].Name)
				restored[class] = rpvc
				t.Logf("%s: %s bound in %v", tc.name, name, time.Since(start).Round(time.Millisecond))
				lv := e.localVolume(t, "pvc-"+string(rpvc.UID))
				if lv.Spec.Source == nil || lv.Spec.Source.Snapshot != "snap-"+string(snaps[class].UID) || lv.Spec.ReadOnly != (class == "lvm-ro") {
					t.Errorf("restored LocalVolume %+v", lv.Spec)
				}
				e.mounted(t, rpv, false, func(dir string) {
					if got := readFile(t, dir); got != "before the snapshot" {
						t.Errorf("%s holds %q, want the snapshot's data", name, got)
					}
					err := os.WriteFile(filepath.Join(dir, "new.txt"), []byte("x"), 0o644)
					if class == "lvm-ro" && !errors.Is(err, syscall.EROFS) {
						t.Errorf("writing a read-only restore: %v, want EROFS", err)
					}
					if class == "lvm-rw" && err != nil {
						t.Errorf("writing a writable restore: %v", err)
					}
				})
			}
			// The source still has its own latest data.
			e.mounted(t, pv, false, func(dir string) {
				if got := readFile(t, dir); got != "after the snapshot" {
					t.Errorf("source holds %q", got)
				}
			})

			// Deletion. A writable restore is a volume of its own.
			rw := restored["lvm-rw"]
			e.deleteAndWait(t, "pvc", rw.Name, "pvc-"+string(rw.UID))
			srcID := pv.Spec.CSI.VolumeHandle
			_ = e.kube.CoreV1().Pods(e.ns).Delete(t.Context(), src, *metav1.NewDeleteOptions(0))
			if err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Delete(t.Context(), pvc.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			if tc.name == "thick" {
				// The source's PV waits: DeleteVolume is refused while
				// copy-on-write snapshots need the LV; csi-provisioner retries.
				err := wait.PollUntilContextTimeout(t.Context(), 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
					return strings.Contains(e.events(pv.Name), "copy-on-write snapshots"), nil
				})
				if err != nil {
					t.Fatalf("no event explaining why PV %s stays: %s", pv.Name, e.events(pv.Name))
				}
				if lv := e.localVolume(t, srcID); lv.DeletionTimestamp != nil {
					t.Fatal("the source LocalVolume is being deleted while its snapshots exist")
				}
			} else {
				// Thin snapshots do not hold their origin.
				e.waitGone(t, srcID)
			}
			e.deleteAndWait(t, "snapshot", snaps["lvm-rw"].Name, "snap-"+string(snaps["lvm-rw"].UID))
			// The read-only snapshot is kept while its read-only restore
			// exists (DeleteSnapshot is refused; csi-snapshotter retries).
			ro, roSnap := restored["lvm-ro"], snaps["lvm-ro"]
			if err := e.snaps.SnapshotV1().VolumeSnapshots(e.ns).Delete(t.Context(), roSnap.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Second)
			if lv := e.localVolume(t, "snap-"+string(roSnap.UID)); lv.DeletionTimestamp != nil {
				t.Fatal("the snapshot of a read-only restore is being deleted")
			}
			e.deleteAndWait(t, "pvc", ro.Name, "pvc-"+string(ro.UID))
			e.waitGone(t, "snap-"+string(roSnap.UID))
			e.waitGone(t, srcID)
			e.waitPVGone(t, pv.Name)
			if names := e.lvNames(t); len(names) != 1 || names[0] != "tp" {
				t.Errorf("LVs left after everything was deleted: %v, want only the thin pool", names)
			}
		})
	}
}

func (e *env) waitPVGone(t *testing.T, name string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		_, err := e.kube.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("PV %s not deleted: %v\n%s", name, err, e.events(name))
	}
}

func (e *env) lvNames(t *testing.T) []string {
	t.Helper()
	lvs, err := e.node.LVM.ListLVs(t.Context(), e.node.VG.Name)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range lvs {
		names = append(names, l.Name)
	}
	return names
}

// TestFailedSnapshotDoesNotBlockNamespace (issue 14 item 6): a VolumeSnapshot
// whose CreateSnapshot is refused for lack of room (the VG is full: the
// controller's room check, before the agent is asked, so no device-mapper
// is needed) leaves its VolumeSnapshotContent without csi-snapshotter's
// volumesnapshot-being-created annotation, and once the source PVC is
// deleted, its namespace terminates at once. csi-snapshotter runs with its
// default retries (1 s doubling to 5 min), as in a cluster: before the
// fix, the answer (ResourceExhausted) kept the annotation and the content's
// finalizer until a retry long after the source was gone.
func TestFailedSnapshotDoesNotBlockNamespace(t *testing.T) {
	e := setupWith(t, setupOptions{node: "snapfail-node", vg: "olsnapfail",
		caps: []capability.Capability{capability.Root, capability.LoopDevices, capability.LVM}})
	ctx := t.Context()
	e.ns = "snapfail-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 36)
	if _, err := e.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.storageClass(t, "lvm-snapfail", map[string]string{parameters.VolumeType: "LVM"})
	// The VG has ~2Gi: after the claim, less than the snapshot's 512Mi.
	e.snapshotClass(t, "snapfail", map[string]string{parameters.SnapshotInitialSize: "512Mi"})
	_, pv := e.claim(t, "src", "lvm-snapfail", 1800*mib, "")

	vs := &snapv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Name: "snap", Namespace: e.ns},
		Spec: snapv1.VolumeSnapshotSpec{Source: snapv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To("src")}, VolumeSnapshotClassName: ptr.To("snapfail")}}
	vs, err := e.snaps.SnapshotV1().VolumeSnapshots(e.ns).Create(ctx, vs, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	content := "snapcontent-" + string(vs.UID)
	var last *snapv1.VolumeSnapshotContent
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		c, err := e.snaps.SnapshotV1().VolumeSnapshotContents().Get(ctx, content, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		last = c
		_, creating := c.Annotations["snapshot.storage.kubernetes.io/volumesnapshot-being-created"]
		return c.Status != nil && c.Status.Error != nil && !creating, nil
	})
	if err != nil {
		t.Fatalf("content %s: want a final error and no being-created annotation: %v; last %+v", content, err, last)
	}
	if msg := ptr.Deref(last.Status.Error.Message, ""); !strings.Contains(msg, "FailedPrecondition") || !strings.Contains(msg, "need 512Mi") {
		t.Errorf("content error %q, want the controller's FailedPrecondition naming the 512Mi", msg)
	}

	// The source goes, then the namespace: nothing may hold it.
	_ = e.kube.CoreV1().Pods(e.ns).Delete(ctx, "src", *metav1.NewDeleteOptions(0))
	if err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Delete(ctx, "src", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := e.kube.CoreV1().Namespaces().Delete(ctx, e.ns, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := e.kube.CoreV1().Namespaces().Get(ctx, e.ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		c, _ := e.snaps.SnapshotV1().VolumeSnapshotContents().Get(context.Background(), content, metav1.GetOptions{})
		t.Fatalf("namespace %s still there after %v; content %+v; events:\n%s", e.ns, time.Since(start).Round(time.Second), c, e.events(content))
	}
	t.Logf("namespace %s gone %v after its deletion", e.ns, time.Since(start).Round(100*time.Millisecond))
	if _, err := e.snaps.SnapshotV1().VolumeSnapshotContents().Get(ctx, content, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("content %s left: %v", content, err)
	}
	e.waitGone(t, pv.Spec.CSI.VolumeHandle)
}
