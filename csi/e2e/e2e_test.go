/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package e2e_test runs the driver end to end on the local real cluster:
// csi-provisioner, csi-resizer and kube-controller-manager drive our CSI
// controller binary; the LocalVolume reconciler carries volumes out on real
// lvm2; the test plays kubelet against our CSI node binary (no kubelet runs
// here): stage, publish, expand, unpublish, unstage, with real mkfs and mounts.
package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/config/profile"
	"github.com/open-local/open-local/csi/identity"
	"github.com/open-local/open-local/lvm"
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

// env is the running system under test.
type env struct {
	c    *cluster.Cluster
	kube kubernetes.Interface
	node *csitest.Node
	csi  csi.NodeClient
	dir  string
}

func setup(t *testing.T) *env {
	capability.Require(t, capability.Root, capability.LoopDevices, capability.LVM, capability.XFS, capability.Ext4)
	c := cluster.ForTest(t)
	ctx := t.Context()
	e := &env{c: c, kube: c.Client(), dir: t.TempDir()}
	e.node = csitest.NewAgentNode(t, c, "e2e-node", "ole2e", 4*gib, 4*gib)

	drv, err := identity.CSIDriver(identity.DefaultDriverName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.kube.StorageV1().CSIDrivers().Create(ctx, drv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}

	run := strings.ReplaceAll(t.Name(), "/", "-")
	ctrlSock, nodeSock := e.node.StartDriverProcesses(t, c, e.dir, "-"+run)
	csitest.StartSidecars(t, c, ctrlSock, "-"+run, csitest.Sidecar{Container: launcher.Provisioner, Changes: csitest.FastRetries},
		csitest.Sidecar{Container: launcher.Resizer, Changes: csitest.FastRetries})
	e.csi = csi.NewNodeClient(csitest.Dial(t, "unix://"+nodeSock))
	csitest.StartScheduler(t, c, "open-local-scheduler-"+run, 2*time.Minute)
	return e
}

func (e *env) storageClass(t *testing.T, name string, params map[string]string) {
	t.Helper()
	wffc := storagev1.VolumeBindingWaitForFirstConsumer
	del := corev1.PersistentVolumeReclaimDelete
	yes := true
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: identity.DefaultDriverName,
		Parameters: params, VolumeBindingMode: &wffc, ReclaimPolicy: &del, AllowVolumeExpansion: &yes}
	if _, err := e.kube.StorageV1().StorageClasses().Create(t.Context(), sc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.kube.StorageV1().StorageClasses().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// placement says who puts the pod on the node.
type placement int

const (
	// byScheduler: our scheduler places the pod; its PreBind writes the
	// LocalVolume, VolumeBinding sets selected-node.
	byScheduler placement = iota
	// byOtherScheduler: the pod is placed by someone else (here the test
	// sets nodeName and selected-node itself); CreateVolume places the
	// volume on that node.
	byOtherScheduler
)

// provision creates a PVC and a pod using it and waits for the PV to be
// bound. It returns the time from the pod's creation to the bound PVC.
func (e *env) provision(t *testing.T, name, sc string, size int64, mode corev1.PersistentVolumeMode, by placement, edits ...func(*corev1.PersistentVolumeClaim)) (*corev1.PersistentVolumeClaim, *corev1.PersistentVolume, time.Duration) {
	t.Helper()
	ctx := t.Context()
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: &sc,
			VolumeMode:       &mode,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(size, resource.BinarySI)}},
		},
	}
	for _, edit := range edits {
		edit(pvc)
	}
	pvc, err := e.kube.CoreV1().PersistentVolumeClaims("default").Create(ctx, pvc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: "app"}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name}}}},
		},
	}
	if by == byScheduler {
		pod.Spec.SchedulerName = profile.SchedulerName
		pod.Spec.NodeSelector = map[string]string{parameters.TopologyKey: e.node.Name}
	} else {
		pod.Spec.NodeName = e.node.Name
	}
	start := time.Now()
	if _, err := e.kube.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.kube.CoreV1().Pods("default").Delete(context.Background(), name, *metav1.NewDeleteOptions(0))
	})
	if by == byOtherScheduler {
		// What VolumeBinding's PreBind does once a scheduler placed the pod.
		patch := fmt.Sprintf(`{"metadata":{"annotations":{"volume.kubernetes.io/selected-node":%q}}}`, e.node.Name)
		if _, err := e.kube.CoreV1().PersistentVolumeClaims("default").Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pvc = e.waitPVC(t, name, func(p *corev1.PersistentVolumeClaim) bool { return p.Status.Phase == corev1.ClaimBound })
	took := time.Since(start)
	pv, err := e.kube.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Who wrote the allocation: our scheduler's PreBind, or (for pods it
	// did not place) the CSI controller.
	lv, err := e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Get(ctx, "pvc-"+string(pvc.UID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var writer string
	for _, mf := range lv.ManagedFields {
		if mf.FieldsV1 != nil && strings.Contains(string(mf.FieldsV1.Raw), `"f:spec"`) {
			writer = mf.Manager
		}
	}
	if fromController := writer == "open-local-csi-controller"; fromController != (by == byOtherScheduler) {
		t.Fatalf("LocalVolume %s written by %q", lv.Name, writer)
	}
	if by == byScheduler {
		// VolumeBinding's PreBind waits for the PV, then the pod is bound.
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			got, err := e.kube.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			return err == nil && got.Spec.NodeName == e.node.Name, nil
		})
		if err != nil {
			t.Fatalf("pod %s not bound to %s by the scheduler: %v", name, e.node.Name, err)
		}
	}
	return pvc, pv, took
}

func (e *env) waitPVC(t *testing.T, name string, cond func(*corev1.PersistentVolumeClaim) bool) *corev1.PersistentVolumeClaim {
	t.Helper()
	var last *corev1.PersistentVolumeClaim
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := e.kube.CoreV1().PersistentVolumeClaims("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = p
		return cond(p), nil
	})
	if err != nil {
		events, _ := e.kube.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		var msgs []string
		for _, ev := range events.Items {
			msgs = append(msgs, ev.Reason+": "+ev.Message)
		}
		t.Fatalf("PVC %s: %v; last status %+v; events:\n%s", name, err, last.Status, strings.Join(msgs, "\n"))
	}
	return last
}

// checkPV verifies node affinity, the volume handle and the LV on the node.
func (e *env) checkPV(t *testing.T, pvc *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume, size int64) {
	t.Helper()
	if want := "pvc-" + string(pvc.UID); pv.Spec.CSI == nil || pv.Spec.CSI.VolumeHandle != want {
		t.Fatalf("PV %s volume handle = %+v, want %s", pv.Name, pv.Spec.CSI, want)
	}
	terms := pv.Spec.NodeAffinity.Required.NodeSelectorTerms
	if len(terms) != 1 || len(terms[0].MatchExpressions) != 1 || terms[0].MatchExpressions[0].Key != parameters.TopologyKey ||
		terms[0].MatchExpressions[0].Values[0] != e.node.Name {
		t.Fatalf("PV node affinity = %+v, want %s=%s", terms, parameters.TopologyKey, e.node.Name)
	}
	e.checkLV(t, pv.Spec.CSI.VolumeHandle, size)
}

func (e *env) checkLV(t *testing.T, name string, size int64) {
	t.Helper()
	lv, err := e.node.LVM.GetLV(t.Context(), e.node.VG.Name, name)
	if err != nil {
		t.Fatalf("LV of %s: %v", name, err)
	}
	if int64(lv.Size) < size || int64(lv.Size) > size+4*mib || !lv.HasTag(lvm.OwnedTag) {
		t.Fatalf("LV %s: size %d, tags %v; want %d bytes (rounded to extents) and tag %s", name, lv.Size, lv.Tags, size, lvm.OwnedTag)
	}
}

// stage and publish as kubelet does for a PV.
func (e *env) stagePublish(t *testing.T, pv *corev1.PersistentVolume, name string) (staging, target string, vc *csi.VolumeCapability) {
	t.Helper()
	ctx := t.Context()
	vc = &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
	if pv.Spec.VolumeMode != nil && *pv.Spec.VolumeMode == corev1.PersistentVolumeBlock {
		vc.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
	} else {
		vc.AccessType = &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: pv.Spec.CSI.FSType}}
	}
	staging = filepath.Join(e.dir, name, "globalmount")
	target = filepath.Join(e.dir, name, "pod", "mount")
	if err := os.MkdirAll(staging, 0o750); err != nil {
		t.Fatal(err)
	}
	id, attrs := pv.Spec.CSI.VolumeHandle, pv.Spec.CSI.VolumeAttributes
	for range 2 { // kubelet retries: every call is idempotent
		if _, err := e.csi.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: vc, VolumeContext: attrs}); err != nil {
			t.Fatalf("NodeStageVolume: %v", err)
		}
		if _, err := e.csi.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: vc, VolumeContext: attrs}); err != nil {
			t.Fatalf("NodePublishVolume: %v", err)
		}
	}
	return staging, target, vc
}

func (e *env) unpublishUnstage(t *testing.T, id, staging, target string) {
	t.Helper()
	ctx := t.Context()
	for range 2 {
		if _, err := e.csi.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
			t.Fatalf("NodeUnpublishVolume: %v", err)
		}
		if _, err := e.csi.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
			t.Fatalf("NodeUnstageVolume: %v", err)
		}
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("target %s still exists after NodeUnpublishVolume: %v", target, err)
	}
}

// deletePVC deletes the claim and waits until the PV, the LocalVolume and
// the LV are gone.
func (e *env) deletePVC(t *testing.T, pvc *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume) time.Duration {
	t.Helper()
	ctx := t.Context()
	_ = e.kube.CoreV1().Pods("default").Delete(ctx, pvc.Name, *metav1.NewDeleteOptions(0))
	start := time.Now()
	if err := e.kube.CoreV1().PersistentVolumeClaims("default").Delete(ctx, pvc.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := e.kube.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("PV %s not deleted: %v", pv.Name, err)
	}
	took := time.Since(start)
	if _, err := e.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Get(ctx, pv.Spec.CSI.VolumeHandle, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("LocalVolume %s still exists after its PV was deleted: %v", pv.Spec.CSI.VolumeHandle, err)
	}
	if _, err := e.node.LVM.GetLV(ctx, e.node.VG.Name, pv.Spec.CSI.VolumeHandle); !errors.Is(err, lvm.ErrNotFound) {
		t.Fatalf("LV %s still exists after its PV was deleted: %v", pv.Spec.CSI.VolumeHandle, err)
	}
	return took
}

// expandPVC asks for a larger claim and waits until csi-resizer reports
// the controller side done (PV capacity grown).
func (e *env) expandPVC(t *testing.T, pvc *corev1.PersistentVolumeClaim, size int64) time.Duration {
	t.Helper()
	start := time.Now()
	patch := fmt.Sprintf(`{"spec":{"resources":{"requests":{"storage":"%d"}}}}`, size)
	if _, err := e.kube.CoreV1().PersistentVolumeClaims("default").Patch(t.Context(), pvc.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		pv, err := e.kube.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		q := pv.Spec.Capacity[corev1.ResourceStorage]
		return q.Value() >= size, nil
	})
	if err != nil {
		t.Fatalf("PV of %s did not grow to %d: %v", pvc.Name, size, err)
	}
	return time.Since(start)
}

func fsSize(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks) * st.Bsize
}

func writeAndCheck(t *testing.T, path, content string) {
	t.Helper()
	f := filepath.Join(path, "data.txt")
	if content != "" {
		if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
			t.Fatalf("write to the published volume: %v", err)
		}
		return
	}
	if _, err := os.ReadFile(f); err != nil {
		t.Fatalf("data written before is gone: %v", err)
	}
}

// TestFilesystemVolumes: a WFFC PVC per filesystem is provisioned on the
// node, mounted writable, expanded (xfs online; ext4 online where the
// process has CAP_SYS_RESOURCE, else by the offline path: restage) and
// deleted.
func TestFilesystemVolumes(t *testing.T) {
	e := setup(t)
	for _, fs := range []string{"xfs", "ext4"} {
		t.Run(fs, func(t *testing.T) {
			sc := "open-local-lvm-" + fs
			e.storageClass(t, sc, map[string]string{parameters.VolumeType: "LVM", parameters.FSType: fs})
			name := "data-" + fs
			pvc, pv, took := e.provision(t, name, sc, 512*mib, corev1.PersistentVolumeFilesystem, byScheduler)
			t.Logf("%s: pod created to PVC bound (scheduler, provisioner, agent) %v", fs, took.Round(time.Millisecond))
			e.checkPV(t, pvc, pv, 512*mib)
			id := pv.Spec.CSI.VolumeHandle

			staging, target, vc := e.stagePublish(t, pv, name)
			writeAndCheck(t, target, "hello "+fs)
			before := fsSize(t, target)
			if before < 400*mib || before > 512*mib {
				t.Fatalf("filesystem at %s has %d bytes, want about 512 MiB", target, before)
			}

			took = e.expandPVC(t, pvc, 1*gib)
			t.Logf("%s: controller expansion %v", fs, took.Round(time.Millisecond))
			e.checkLV(t, id, 1*gib)
			_, err := e.csi.NodeExpandVolume(t.Context(), &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: target,
				StagingTargetPath: staging, VolumeCapability: vc, CapacityRange: &csi.CapacityRange{RequiredBytes: 1 * gib}})
			online, _ := capability.Has(capability.CapSysResource)
			switch {
			case err == nil:
			case fs == "ext4" && !online && status.Code(err) == codes.FailedPrecondition:
				// The offline path: kubelet restages the volume (pod restart).
				t.Logf("ext4 online growth refused as expected without CAP_SYS_RESOURCE: %v", err)
				e.unpublishUnstage(t, id, staging, target)
				staging, target, _ = e.stagePublish(t, pv, name)
			default:
				t.Fatalf("NodeExpandVolume: %v", err)
			}
			after := fsSize(t, target)
			if after < before+400*mib {
				t.Fatalf("filesystem did not grow: %d -> %d bytes", before, after)
			}
			writeAndCheck(t, target, "")
			t.Logf("%s: filesystem %d -> %d bytes", fs, before, after)

			e.unpublishUnstage(t, id, staging, target)
			took = e.deletePVC(t, pvc, pv)
			t.Logf("%s: PVC delete to LV gone %v", fs, took.Round(time.Millisecond))
		})
	}
}

// TestBlockVolume: a Block PVC appears at the target as a block device of
// the requested size; deleting the claim removes the LV.
func TestBlockVolume(t *testing.T) {
	e := setup(t)
	e.storageClass(t, "open-local-lvm-block", map[string]string{parameters.VolumeType: "LVM"})
	pvc, pv, took := e.provision(t, "data-block", "open-local-lvm-block", 256*mib, corev1.PersistentVolumeBlock, byScheduler)
	t.Logf("block: pod created to PVC bound %v", took.Round(time.Millisecond))
	e.checkPV(t, pvc, pv, 256*mib)
	staging, target, _ := e.stagePublish(t, pv, "data-block")
	var st unix.Stat_t
	if err := unix.Stat(target, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		t.Fatalf("target %s is not a block device: %v mode %o", target, err, st.Mode)
	}
	f, err := os.OpenFile(target, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = f.WriteAt([]byte("raw block data"), 4096)
	}
	f.Close()
	if err != nil || size != 256*mib {
		t.Fatalf("block device at target: size %d (want %d), write: %v", size, 256*mib, err)
	}
	e.unpublishUnstage(t, pv.Spec.CSI.VolumeHandle, staging, target)
	took = e.deletePVC(t, pvc, pv)
	t.Logf("block: PVC delete to LV gone %v", took.Round(time.Millisecond))
}

// TestPlacedByAnotherScheduler: a pod another scheduler placed has no
// LocalVolume from our PreBind; CreateVolume chooses the VG on the selected
// node itself, and everything else works the same.
func TestPlacedByAnotherScheduler(t *testing.T) {
	e := setup(t)
	e.storageClass(t, "open-local-lvm-other", map[string]string{parameters.VolumeType: "LVM", parameters.FSType: "ext4"})
	pvc, pv, took := e.provision(t, "data-other", "open-local-lvm-other", 128*mib, corev1.PersistentVolumeFilesystem, byOtherScheduler)
	t.Logf("other scheduler: selected-node to PVC bound %v", took.Round(time.Millisecond))
	e.checkPV(t, pvc, pv, 128*mib)
	staging, target, _ := e.stagePublish(t, pv, "data-other")
	writeAndCheck(t, target, "placed elsewhere")
	e.unpublishUnstage(t, pv.Spec.CSI.VolumeHandle, staging, target)
	e.deletePVC(t, pvc, pv)
}

// TestStorageCapacity: csi-provisioner publishes CSIStorageCapacity from
// GetCapacity for the node's topology segment: the VG's free space.
func TestStorageCapacity(t *testing.T) {
	e := setup(t)
	e.storageClass(t, "open-local-lvm-capacity", map[string]string{parameters.VolumeType: "LVM"})
	vg, err := e.node.LVM.GetVG(t.Context(), e.node.VG.Name)
	if err != nil {
		t.Fatal(err)
	}
	var got *storagev1.CSIStorageCapacity
	err = wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := e.kube.StorageV1().CSIStorageCapacities("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for i, c := range list.Items {
			if c.StorageClassName == "open-local-lvm-capacity" && c.NodeTopology != nil &&
				c.NodeTopology.MatchLabels[parameters.TopologyKey] == e.node.Name && c.Capacity != nil {
				got = &list.Items[i]
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no CSIStorageCapacity for the node: %v", err)
	}
	if got.Capacity.Value() != int64(vg.Size) || got.MaximumVolumeSize == nil || got.MaximumVolumeSize.Value() != int64(vg.Size) {
		t.Fatalf("CSIStorageCapacity capacity %v max %v, want the VG's %d bytes", got.Capacity, got.MaximumVolumeSize, vg.Size)
	}
	t.Logf("CSIStorageCapacity for %s: %s (max volume %s)", e.node.Name, got.Capacity, got.MaximumVolumeSize)
}
