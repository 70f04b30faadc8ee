/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package volumes_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"google.golang.org/grpc/codes"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/open-local/open-local/agent/volumes"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/blockdev"
	"github.com/open-local/open-local/lvm"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/loopvg"
)

func TestMain(m *testing.M) { cluster.Main(m) }

const mib = int64(1) << 20

// node is one test's node: a VG and a running reconciler.
type node struct {
	name string
	vg   *loopvg.VG
	lvm  *lvm.Client
	act  lvm.Activator
	c    *cluster.Cluster
	// zero is the reconciler's ZeroNewLVs (takes effect at start).
	zero   bool
	cancel context.CancelFunc
	done   chan error
	// tweak, when set, changes the reconciler's options before each start.
	tweak func(*volumes.Options)
}

func newNode(t *testing.T, name, vg string, sizes ...int64) *node {
	t.Helper()
	return newNodeWith(t, name, vg, nil, sizes...)
}

func newNodeWith(t *testing.T, name, vg string, tweak func(*volumes.Options), sizes ...int64) *node {
	t.Helper()
	capability.Require(t, capability.Root, capability.LoopDevices, capability.LVM)
	c := cluster.ForTest(t)
	v := loopvg.New(t, vg, sizes...)
	mode, opts := lvm.ModeDeviceMapper, []lvm.Option(nil)
	if !v.Config.FullMode {
		mode, opts = lvm.ModeLoop, []lvm.Option{lvm.WithAlloc(lvm.AllocContiguous)}
	}
	client := lvm.New(&lvm.ExecRunner{Env: v.Config.Env()}, opts...)
	act, err := lvm.NewActivator(mode, client, filepath.Join(t.TempDir(), "activation.lock"))
	if err != nil {
		t.Fatal(err)
	}
	n := &node{name: name, vg: v, lvm: client, act: act, c: c, tweak: tweak}
	n.start(t)
	t.Cleanup(func() { n.cleanup(t) })
	return n
}

func (n *node) start(t *testing.T) {
	t.Helper()
	opts := volumes.Options{NodeName: n.name, Client: n.c.OpenLocalClient(), Kube: n.c.Client(),
		LVM: n.lvm, Activator: n.act, RetryBase: 100 * time.Millisecond, RetryMax: 2 * time.Second,
		SnapshotCheck: 300 * time.Millisecond, CopyProgress: 300 * time.Millisecond, ZeroNewLVs: n.zero}
	if n.tweak != nil {
		n.tweak(&opts)
	}
	r, err := volumes.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.done = cancel, make(chan error, 1)
	go func() { n.done <- r.Run(ctx) }()
}

func (n *node) stop(t *testing.T) {
	t.Helper()
	if n.cancel == nil {
		return
	}
	n.cancel()
	if err := <-n.done; err != nil {
		t.Errorf("reconciler: %v", err)
	}
	n.cancel = nil
}

// cleanup deletes what the test left (finalizers of refused volumes are
// dropped by hand, as an operator would) and stops the reconciler.
func (n *node) cleanup(t *testing.T) {
	ctx := context.Background()
	lvs := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes()
	list, _ := lvs.List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + n.name})
	for _, lv := range list.Items {
		_ = lvs.Delete(ctx, lv.Name, metav1.DeleteOptions{})
	}
	_ = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := lvs.List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + n.name})
		return err == nil && len(list.Items) == 0, nil
	})
	list, _ = lvs.List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + n.name})
	for _, lv := range list.Items {
		_, _ = cluster.Update(ctx, lvs.Get, lvs.Update, lv.Name, func(lv *v1alpha1.LocalVolume) { lv.Finalizers = nil })
	}
	n.stop(t)
}

func (n *node) create(t *testing.T, name string, spec v1alpha1.LocalVolumeSpec) {
	t.Helper()
	spec.NodeName = n.name
	lv := &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: name, Finalizers: []string{v1alpha1.LocalVolumeFinalizer}}, Spec: spec}
	if _, err := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Create(t.Context(), lv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (n *node) waitFor(t *testing.T, name string, what string, cond func(*v1alpha1.LocalVolume) bool) *v1alpha1.LocalVolume {
	t.Helper()
	var last *v1alpha1.LocalVolume
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, waitTimeout(), true, func(ctx context.Context) (bool, error) {
		lv, err := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			last = nil
			return cond(nil), nil
		}
		if err != nil {
			return false, err
		}
		last = lv
		return cond(lv), nil
	})
	if err != nil {
		t.Fatalf("LocalVolume %s: %s: %v; last: %+v", name, what, err, last)
	}
	return last
}

// waitTimeout bounds a wait for the reconciler: lvm commands take ~1 s
// each in the emulated VM, ~70 ms on a host.
func waitTimeout() time.Duration {
	if capability.InVM() {
		return 3 * time.Minute
	}
	return 30 * time.Second
}

func ready(size int64) func(*v1alpha1.LocalVolume) bool {
	return func(lv *v1alpha1.LocalVolume) bool {
		return lv != nil && lv.Status.Phase == v1alpha1.PhaseReady && lv.Status.CurrentSize != nil &&
			lv.Status.CurrentSize.Value() >= size && lv.Status.ObservedGeneration == lv.Generation
	}
}

func failed(code string) func(*v1alpha1.LocalVolume) bool {
	return func(lv *v1alpha1.LocalVolume) bool {
		return lv != nil && lv.Status.Phase == v1alpha1.PhaseFailed && lv.Status.Code == code
	}
}

func gone(lv *v1alpha1.LocalVolume) bool { return lv == nil }

func lvmSpec(vg string, size int64) v1alpha1.LocalVolumeSpec {
	return v1alpha1.LocalVolumeSpec{VolumeType: v1alpha1.VolumeTypeLVM, Kind: v1alpha1.KindVolume, VGName: vg,
		Size: *resource.NewQuantity(size, resource.BinarySI)}
}

func (n *node) lvNames(t *testing.T) []string {
	t.Helper()
	lvs, err := n.lvm.ListLVs(t.Context(), n.vg.Name)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range lvs {
		names = append(names, l.Name)
	}
	return names
}

// The life cycle: create (tagged, Ready with device and size), grow,
// restart-safe re-reconcile, delete (LV gone, finalizer gone).
func TestLifecycle(t *testing.T) {
	n := newNode(t, "vol-life", "olvlife", 256*mib)
	ctx := t.Context()
	n.create(t, "life-1", lvmSpec("olvlife", 20*mib))
	lv := n.waitFor(t, "life-1", "Ready", ready(20*mib))
	got, err := n.lvm.GetLV(ctx, "olvlife", "life-1")
	if err != nil || !got.HasTag(lvm.OwnedTag) || got.Size < uint64(20*mib) {
		t.Fatalf("LV after create: %+v, %v", got, err)
	}
	if lv.Status.DevicePath == "" || lv.Status.Code != "" {
		t.Fatalf("status %+v: want a device path and no code", lv.Status)
	}
	if _, err := os.Stat(lv.Status.DevicePath); err != nil {
		t.Fatalf("device %s: %v", lv.Status.DevicePath, err)
	}

	// Restart safety: a spec change made while no agent runs is carried
	// out by the next one.
	n.stop(t)
	lvs := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes()
	_, err = cluster.Update(ctx, lvs.Get, lvs.Update, "life-1", func(lv *v1alpha1.LocalVolume) {
		lv.Spec.Size = *resource.NewQuantity(48*mib, resource.BinarySI)
	})
	if err != nil {
		t.Fatal(err)
	}
	n.start(t)
	lv = n.waitFor(t, "life-1", "grown", ready(48*mib))
	if got, _ := n.lvm.GetLV(ctx, "olvlife", "life-1"); got == nil || got.Size < uint64(48*mib) {
		t.Fatalf("LV not extended: %+v", got)
	}
	if size, err := deviceSize(lv.Status.DevicePath); err != nil || size < 48*mib {
		t.Fatalf("device %s has %d bytes after the extension (%v)", lv.Status.DevicePath, size, err)
	}

	if err := lvs.Delete(ctx, "life-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	n.waitFor(t, "life-1", "deleted", gone)
	if _, err := n.lvm.GetLV(ctx, "olvlife", "life-1"); !errors.Is(err, lvm.ErrNotFound) {
		t.Fatalf("LV still there after delete: %v", err)
	}
}

func deviceSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, 2)
}

// Failures carry the gRPC code, a message and a Warning Event.
func TestFailures(t *testing.T) {
	n := newNode(t, "vol-fail", "olvfail", 64*mib)
	tests := []struct {
		name, code, reason string
		spec               v1alpha1.LocalVolumeSpec
	}{
		{name: "fail-space", code: "ResourceExhausted", reason: volumes.ReasonCreateFailed, spec: lvmSpec("olvfail", 512*mib)},
		{name: "fail-novg", code: "NotFound", reason: volumes.ReasonCreateFailed, spec: lvmSpec("olvmissing", 8*mib)},
		{name: "fail-nodevice", code: "NotFound", reason: volumes.ReasonDeviceFailed, spec: v1alpha1.LocalVolumeSpec{
			VolumeType: v1alpha1.VolumeTypeDevice, Device: "/dev/open-local-no-such-disk", Size: *resource.NewQuantity(mib, resource.BinarySI)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n.create(t, tt.name, tt.spec)
			lv := n.waitFor(t, tt.name, "Failed "+tt.code, failed(tt.code))
			if lv.Status.Message == "" {
				t.Error("no message")
			}
			t.Logf("%s: %s", tt.code, lv.Status.Message)
			waitEvent(t, n.c, tt.name, tt.reason)
			// A volume that never got storage is deleted without touching lvm.
			if err := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Delete(t.Context(), tt.name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			n.waitFor(t, tt.name, "deleted", gone)
		})
	}
}

func waitEvent(t *testing.T, c *cluster.Cluster, name, reason string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, waitTimeout(), true, func(ctx context.Context) (bool, error) {
		evs, err := c.Client().CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err != nil {
			return false, err
		}
		return slices.ContainsFunc(evs.Items, func(e corev1.Event) bool { return e.Reason == reason }), nil
	})
	if err != nil {
		t.Fatalf("no %s Event for %s: %v", reason, name, err)
	}
}

// Only the LV a record names is ever touched: an LV not created by
// open-local is neither adopted nor removed, and deleting one volume leaves
// its neighbours alone.
func TestTouchesOnlyItsOwnLV(t *testing.T) {
	n := newNode(t, "vol-own", "olvown", 128*mib)
	ctx := t.Context()
	if _, err := n.vg.Run(ctx, "lvcreate", "--yes", "--name", "foreign", "--size", "8m", "--alloc", "contiguous", "olvown"); err != nil {
		t.Fatal(err)
	}
	n.create(t, "own-a", lvmSpec("olvown", 8*mib))
	n.create(t, "own-b", lvmSpec("olvown", 8*mib))
	foreign := lvmSpec("olvown", 8*mib)
	foreign.LVName = "foreign"
	n.create(t, "own-foreign", foreign)
	n.waitFor(t, "own-a", "Ready", ready(8*mib))
	n.waitFor(t, "own-b", "Ready", ready(8*mib))
	n.waitFor(t, "own-foreign", "refused", failed("AlreadyExists"))
	waitEvent(t, n.c, "own-foreign", volumes.ReasonForeignLV)

	lvs := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes()
	for _, name := range []string{"own-a", "own-foreign"} {
		if err := lvs.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	n.waitFor(t, "own-a", "deleted", gone)
	n.waitFor(t, "own-foreign", "refused removal", failed("FailedPrecondition"))
	if names := n.lvNames(t); !slices.Equal(names, []string{"foreign", "own-b"}) {
		t.Fatalf("LVs after deleting own-a and own-foreign: %v, want [foreign own-b]", names)
	}
	// The operator's way out: drop the finalizer; the foreign LV stays.
	if _, err := cluster.Update(ctx, lvs.Get, lvs.Update, "own-foreign", func(lv *v1alpha1.LocalVolume) { lv.Finalizers = nil }); err != nil {
		t.Fatal(err)
	}
	n.waitFor(t, "own-foreign", "gone", gone)
	if names := n.lvNames(t); !slices.Contains(names, "foreign") {
		t.Fatalf("foreign LV removed: %v", names)
	}
}

// A Device volume is Ready as the whole device, and under policy manual
// deleting it does not write a byte to the disk (nor to any other).
func TestDeviceManualPolicyLeavesContent(t *testing.T) {
	disk := loopvg.NewDevices(t, 32*mib)[0] // first: detached after the node's cleanup
	n := newNodeWith(t, "vol-dev", "olvdev", func(o *volumes.Options) { o.DeviceWipe = blockdev.WipeManual }, 64*mib)
	pattern := bytes.Repeat([]byte("open-local keeps your data "), 4096)
	if err := os.WriteFile(disk.Path, pattern, 0); err != nil {
		t.Fatal(err)
	}
	sum := func() [32]byte {
		b, err := os.ReadFile(disk.File)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(b)
	}
	before := sum()
	n.create(t, "dev-1", v1alpha1.LocalVolumeSpec{VolumeType: v1alpha1.VolumeTypeDevice, Device: disk.Path,
		Size: *resource.NewQuantity(16*mib, resource.BinarySI)})
	lv := n.waitFor(t, "dev-1", "Ready", ready(32*mib))
	if lv.Status.DevicePath != disk.Path || lv.Status.CurrentSize.Value() != 32*mib {
		t.Fatalf("status %+v, want device %s of %d bytes", lv.Status, disk.Path, 32*mib)
	}
	if err := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Delete(t.Context(), "dev-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Policy manual: quarantined until the operator says the disk is done with.
	n.waitFor(t, "dev-1", "Quarantined", func(lv *v1alpha1.LocalVolume) bool { return lv != nil && lv.Status.Phase == v1alpha1.PhaseQuarantined })
	lvs := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes()
	if _, err := cluster.Update(t.Context(), lvs.Get, lvs.Update, "dev-1", func(l *v1alpha1.LocalVolume) {
		l.Annotations = map[string]string{blockdev.ReleasedAnnotation: lv.Status.DeviceIdentity}
	}); err != nil {
		t.Fatal(err)
	}
	n.waitFor(t, "dev-1", "deleted", gone)
	if sum() != before {
		t.Fatal("deleting a Device volume changed the disk's content")
	}
}

// Volumes of other nodes are not this agent's business.
func TestIgnoresOtherNodes(t *testing.T) {
	n := newNode(t, "vol-mine", "olvmine", 64*mib)
	other := &node{name: "vol-someone-else", c: n.c}
	other.create(t, "other-1", lvmSpec("olvmine", 8*mib))
	t.Cleanup(func() {
		// No agent runs for that node: drop the finalizer as an operator would.
		lvs := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes()
		_, _ = cluster.Update(context.Background(), lvs.Get, lvs.Update, "other-1", func(lv *v1alpha1.LocalVolume) { lv.Finalizers = nil })
		_ = lvs.Delete(context.Background(), "other-1", metav1.DeleteOptions{})
	})
	n.create(t, "mine-1", lvmSpec("olvmine", 8*mib))
	n.waitFor(t, "mine-1", "Ready", ready(8*mib))
	lv, err := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Get(t.Context(), "other-1", metav1.GetOptions{})
	if err != nil || lv.Status.Phase != "" {
		t.Fatalf("another node's volume was touched: %+v %v", lv.Status, err)
	}
	if names := n.lvNames(t); !slices.Equal(names, []string{"mine-1"}) {
		t.Fatalf("LVs: %v", names)
	}
}

// A new thick LV sits on extents that held another LV's data; lvcreate
// zeroes only its first 4 KiB (and, with device-mapper, known signatures).
// With ZeroNewLVs a raw block reader of the new volume reads zeros only;
// without it the earlier tenant's pattern shows (so the test can fail).
func TestNewThickLVsAreZeroed(t *testing.T) {
	n := newNode(t, "vol-zero", "olvzero", 160*mib)
	ctx := t.Context()
	pvs, err := n.lvm.ListPVs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var peStart int64 = -1
	for _, pv := range pvs {
		if pv.VG == "olvzero" {
			peStart = int64(pv.PEStart)
		}
	}
	if peStart < 0 {
		t.Fatalf("no PV of olvzero in %+v", pvs)
	}
	// The previous tenant's blocks: a pattern over the extents both LVs get.
	stale := bytes.Repeat([]byte("tenant-A"), int(128*mib)/8)
	loopvg.WriteAt(t, n.vg.Devices[0].Path, stale, peStart)

	const size = 48 * mib
	for _, tt := range []struct {
		name      string
		zero      bool
		wantStale bool
	}{
		{"zero-off", false, true},
		{"zero-on", true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n.stop(t)
			n.zero = tt.zero
			n.start(t)
			n.create(t, tt.name, lvmSpec("olvzero", size))
			lv := n.waitFor(t, tt.name, "Ready", ready(size))
			ext, err := n.lvm.LinearExtent(ctx, "olvzero", tt.name)
			if err != nil {
				t.Fatal(err)
			}
			if off := int64(ext.Offset) - peStart; off < 0 || off+size > int64(len(stale)) {
				t.Fatalf("LV at PV offset %d, outside the %d patterned bytes from %d", ext.Offset, len(stale), peStart)
			}
			got := loopvg.ReadAt(t, lv.Status.DevicePath, 0, int(size))
			zeros := make([]byte, size)
			middle := got[8*mib : 9*mib] // past what lvcreate or WipeEdges touch
			switch {
			case tt.wantStale && !bytes.Contains(middle, []byte("tenant-A")):
				t.Fatalf("without zeroing the stale pattern should show (else this test proves nothing); middle starts %q", middle[:16])
			case !tt.wantStale && !bytes.Equal(got, zeros):
				i := slices.IndexFunc(got, func(b byte) bool { return b != 0 })
				t.Fatalf("new LV is not all zeros: byte %d onwards reads %q", i, got[i:min(i+16, len(got))])
			}
		})
	}
}

// A restore whose block copy finished (its restoring tag removed) but whose
// Ready status never landed (a conflict with a progress update, a restart)
// looks like an LV created before a crash. Zeroing "new" LVs must not treat
// it as one: its data came from the snapshot.
func TestFinishedRestoreIsNotZeroed(t *testing.T) {
	n := newNode(t, "vol-restored", "olvrestored", 96*mib)
	ctx := t.Context()
	const size = 16 * mib
	// The state the copy leaves: an owned LV, no restoring tag, the
	// snapshot's data in it.
	if _, err := n.lvm.CreateLV(ctx, lvm.CreateLVOptions{VG: "olvrestored", Name: "restored", Size: uint64(size), Tags: []string{lvm.OwnedTag}}); err != nil {
		t.Fatal(err)
	}
	path, err := n.act.Activate(ctx, "olvrestored", "restored")
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("restored"), int(size)/8)
	loopvg.WriteAt(t, path, data, 0)
	n.stop(t)
	n.zero = true
	n.start(t)
	spec := lvmSpec("olvrestored", size)
	spec.Source = &v1alpha1.LocalVolumeSource{Snapshot: "snap-gone-since"}
	n.create(t, "restored", spec)
	lv := n.waitFor(t, "restored", "Ready", ready(size))
	got := loopvg.ReadAt(t, lv.Status.DevicePath, 0, int(size))
	if !bytes.Equal(got, data) {
		i := slices.IndexFunc(got, func(b byte) bool { return b != data[0] && b != 0 })
		t.Fatalf("the restored data was overwritten: %d of %d bytes differ (first at %d)", countDiff(got, data), size, i)
	}
}

func countDiff(a, b []byte) int {
	n := 0
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

// The agent is the capacity authority of last resort: whoever wrote a
// LocalVolume (the scheduler, the CSI controller, an inline fallback, a
// snapshot's growth), the LVs it creates or grows on a VG never add up to
// more than the VG's allocatable in NodeLocalStorage. Volumes count in the
// order they were written (and any that already has its LV); the newest
// that does not fit is refused with ResourceExhausted, though LVM itself
// would still have room.
func TestAgentRefusesPastAllocatable(t *testing.T) {
	n := newNode(t, "vol-arbiter", "olvarbiter", 160*mib)
	ctx := t.Context()
	ol := n.c.OpenLocalClient().CsiV1alpha1()
	// 64Mi allocatable of the 160Mi VG (the rest reserved by the operator).
	nls := &v1alpha1.NodeLocalStorage{ObjectMeta: metav1.ObjectMeta{Name: n.name}, Spec: v1alpha1.NodeLocalStorageSpec{NodeName: n.name}}
	nls, err := ol.NodeLocalStorages().Create(ctx, nls, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ol.NodeLocalStorages().Delete(context.Background(), n.name, metav1.DeleteOptions{}) })
	nls.Status.NodeStorageInfo.VolumeGroups = []v1alpha1.VolumeGroup{{Name: "olvarbiter", Total: uint64(156 * mib), Allocatable: uint64(64 * mib), ExtentSize: uint64(4 * mib), PhysicalVolumes: []string{n.vg.Devices[0].Path}}}
	nls.Status.FilteredStorageInfo.VolumeGroups = []string{"olvarbiter"}
	if _, err := ol.NodeLocalStorages().UpdateStatus(ctx, nls, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	failed := func(code codes.Code) func(*v1alpha1.LocalVolume) bool {
		return func(lv *v1alpha1.LocalVolume) bool {
			return lv != nil && lv.Status.Phase == v1alpha1.PhaseFailed && lv.Status.Code == code.String()
		}
	}
	n.create(t, "first", lvmSpec("olvarbiter", 40*mib))
	n.waitFor(t, "first", "Ready", ready(40*mib))
	// 40 + 40 > 64: refused, though the VG has 116Mi free.
	n.create(t, "second", lvmSpec("olvarbiter", 40*mib))
	lv := n.waitFor(t, "second", "Failed ResourceExhausted", failed(codes.ResourceExhausted))
	t.Logf("second: %s", lv.Status.Message)
	if slices.Contains(n.lvNames(t), "second") {
		t.Fatalf("LV second was created past the VG's allocatable: %v", n.lvNames(t))
	}
	// 40 + 24 = 64 fits exactly.
	n.create(t, "third", lvmSpec("olvarbiter", 24*mib))
	n.waitFor(t, "third", "Ready", ready(24*mib))
	// Growing first by one extent would pass 64: refused, first keeps its LV.
	lvs := ol.LocalVolumes()
	if _, err := cluster.Update(ctx, lvs.Get, lvs.Update, "first", func(lv *v1alpha1.LocalVolume) {
		lv.Spec.Size = *resource.NewQuantity(44*mib, resource.BinarySI)
	}); err != nil {
		t.Fatal(err)
	}
	lv = n.waitFor(t, "first", "growth refused", failed(codes.ResourceExhausted))
	t.Logf("first: %s", lv.Status.Message)
	got, err := n.lvm.GetLV(ctx, "olvarbiter", "first")
	if err != nil || got.Size != uint64(40*mib) {
		t.Fatalf("first after a refused growth: %+v, %v", got, err)
	}
}

// The agent owns phase, size and code, not the conditions other
// controllers set (NodeGone): its status writes keep them.
func TestStatusWritesKeepConditions(t *testing.T) {
	n := newNode(t, "vol-cond", "olvcond", 128*mib)
	ctx := t.Context()
	n.create(t, "cond-1", lvmSpec("olvcond", 8*mib))
	n.waitFor(t, "cond-1", "Ready", ready(8*mib))
	n.stop(t)
	lvs := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes()
	lv, err := lvs.Get(ctx, "cond-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cond := metav1.Condition{Type: v1alpha1.ConditionNodeGone, Status: metav1.ConditionFalse,
		Reason: v1alpha1.ReasonNodeReturned, Message: "set by the test", LastTransitionTime: metav1.Now()}
	lv.Status.Conditions = []metav1.Condition{cond}
	if _, err := lvs.UpdateStatus(ctx, lv, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Update(ctx, lvs.Get, lvs.Update, "cond-1", func(lv *v1alpha1.LocalVolume) {
		lv.Spec.Size = *resource.NewQuantity(16*mib, resource.BinarySI)
	}); err != nil {
		t.Fatal(err)
	}
	n.start(t)
	lv = n.waitFor(t, "cond-1", "grown", ready(16*mib))
	if len(lv.Status.Conditions) != 1 || lv.Status.Conditions[0].Type != cond.Type || lv.Status.Conditions[0].Message != cond.Message {
		t.Fatalf("conditions after the agent's status write: %+v, want [%+v]", lv.Status.Conditions, cond)
	}
}
