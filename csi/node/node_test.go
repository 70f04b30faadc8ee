/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package node_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-local/open-local/apis/client/clientset/versioned"
	"github.com/open-local/open-local/apis/client/clientset/versioned/fake"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/csi/node"
	"github.com/open-local/open-local/csi/node/iolimit/iolimittest"
	"github.com/open-local/open-local/lvm"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/loopvg"
)

func TestMain(m *testing.M) {
	iolimittest.WorkerMain() // the IO measurements' worker processes are this binary
	cluster.Main(m)
}

const mib = int64(1) << 20

// env is a node with a VG, the LVM layer and a LocalVolume store: the local
// cluster on the host; in the VM (no cluster runs there) the generated fake
// clientset, the only stand-in, for the API side only.
type env struct {
	name string
	vg   *loopvg.VG
	lvm  *lvm.Client
	act  lvm.Activator
	ol   versioned.Interface
	dir  string
}

func newEnv(t *testing.T, vg string, sizes ...int64) *env {
	t.Helper()
	capability.Require(t, capability.Root, capability.LoopDevices, capability.LVM)
	e := &env{name: "node-" + vg, vg: loopvg.New(t, vg, sizes...), dir: t.TempDir()}
	mode, opts := lvm.ModeDeviceMapper, []lvm.Option(nil)
	if !e.vg.Config.FullMode {
		mode, opts = lvm.ModeLoop, []lvm.Option{lvm.WithAlloc(lvm.AllocContiguous)}
	}
	e.lvm = lvm.New(&lvm.ExecRunner{Env: e.vg.Config.Env()}, opts...)
	var err error
	if e.act, err = lvm.NewActivator(mode, e.lvm, filepath.Join(e.dir, "activation.lock")); err != nil {
		t.Fatal(err)
	}
	if capability.InVM() {
		e.ol = fake.NewSimpleClientset()
	} else {
		e.ol = cluster.ForTest(t).OpenLocalClient()
	}
	return e
}

// volume creates an LV as the agent does (tagged, activated, edges wiped
// where lvcreate cannot) and its Ready LocalVolume.
func (e *env) volume(t *testing.T, name string, size int64) *v1alpha1.LocalVolume {
	t.Helper()
	ctx := t.Context()
	lv, err := e.lvm.CreateLV(ctx, lvm.CreateLVOptions{VG: e.vg.Name, Name: name, Size: uint64(size), Tags: []string{lvm.OwnedTag}})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := e.act.Activate(ctx, e.vg.Name, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.act.Deactivate(context.Background(), e.vg.Name, name) })
	if e.act.Mode() == lvm.ModeLoop {
		if err := lvm.WipeEdges(dev); err != nil {
			t.Fatal(err)
		}
	}
	obj := &v1alpha1.LocalVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.LocalVolumeSpec{NodeName: e.name, VolumeType: v1alpha1.VolumeTypeLVM, VGName: e.vg.Name,
			Size: *resource.NewQuantity(size, resource.BinarySI)},
	}
	lvs := e.ol.CsiV1alpha1().LocalVolumes()
	created, err := lvs.Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lvs.Delete(context.Background(), name, metav1.DeleteOptions{}) })
	created, err = cluster.Update(ctx, lvs.Get, lvs.UpdateStatus, name, func(cur *v1alpha1.LocalVolume) {
		cur.Status = v1alpha1.LocalVolumeStatus{Phase: v1alpha1.PhaseReady, DevicePath: dev,
			CurrentSize: resource.NewQuantity(int64(lv.Size), resource.BinarySI), ObservedGeneration: cur.Generation}
	})
	if err != nil {
		t.Fatal(err)
	}
	return created
}

// extend grows the LV and its record as the agent would after the
// controller raised spec.size.
func (e *env) extend(t *testing.T, name string, size int64) {
	t.Helper()
	ctx := t.Context()
	lv, err := e.lvm.ExtendLV(ctx, e.vg.Name, name, uint64(size))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.act.Activate(ctx, e.vg.Name, name); err != nil {
		t.Fatal(err)
	}
	lvs := e.ol.CsiV1alpha1().LocalVolumes()
	_, err = cluster.Update(ctx, lvs.Get, lvs.UpdateStatus, name, func(obj *v1alpha1.LocalVolume) {
		obj.Status.CurrentSize = resource.NewQuantity(int64(lv.Size), resource.BinarySI)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (e *env) server(t *testing.T, act node.Activator) *node.Server {
	t.Helper()
	if act == nil {
		act = e.act
	}
	s, err := node.New(node.Options{NodeID: e.name, MaxVolumes: 10, Client: e.ol, Activator: act})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mountCap(fs string, mode csi.VolumeCapability_AccessMode_Mode, flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fs, MountFlags: flags}}}
}

func blockCap() *csi.VolumeCapability {
	return &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}}
}

func fsBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks) * st.Bsize
}

func mountOptions(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 5 && f[4] == path {
			return f[5] + " " + l[strings.Index(l, " - ")+3:]
		}
	}
	t.Fatalf("%s is not in mountinfo", path)
	return ""
}

// TestNodeFilesystemLifecycle stages (mkfs + mount), publishes, writes,
// grows the LV and then the filesystem, and tears down, calling every RPC
// twice. ext4's online growth needs CAP_SYS_RESOURCE: in the VM it is
// online; on a host without it the node refuses clearly and the next
// staging grows it offline.
func TestNodeFilesystemLifecycle(t *testing.T) {
	for _, fs := range []string{"ext4", "xfs"} {
		t.Run(fs, func(t *testing.T) {
			capability.Require(t, map[string]capability.Capability{"ext4": capability.Ext4, "xfs": capability.XFS}[fs])
			e := newEnv(t, "olnode"+fs, 1024*mib)
			ctx := t.Context()
			id := "vol-" + fs
			e.volume(t, id, 320*mib)
			s := e.server(t, nil)
			staging, target := filepath.Join(e.dir, "staging"), filepath.Join(e.dir, "pod", "target")
			vc := mountCap(fs, csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "noatime")
			stage := func() {
				for range 2 {
					if _, err := s.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: vc}); err != nil {
						t.Fatalf("NodeStageVolume: %v", err)
					}
					if _, err := s.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target, VolumeCapability: vc}); err != nil {
						t.Fatalf("NodePublishVolume: %v", err)
					}
				}
			}
			unstage := func() {
				ctx := context.Background() // also runs as a cleanup, after t.Context() ended
				for range 2 {
					if _, err := s.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
						t.Fatalf("NodeUnpublishVolume: %v", err)
					}
					if _, err := s.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
						t.Fatalf("NodeUnstageVolume: %v", err)
					}
				}
			}
			stage()
			t.Cleanup(unstage)
			opts := mountOptions(t, staging)
			if !strings.Contains(opts, fs) || !strings.Contains(opts, "noatime") || (fs == "xfs" && !strings.Contains(opts, "nouuid")) {
				t.Errorf("staging mount options %q: want %s, noatime (and nouuid for xfs)", opts, fs)
			}
			if err := os.WriteFile(filepath.Join(target, "f"), []byte("data"), 0o644); err != nil {
				t.Fatalf("published volume is not writable: %v", err)
			}
			stats, err := s.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: id, VolumePath: target})
			if err != nil || len(stats.Usage) != 2 || stats.Usage[0].Total < 250*mib {
				t.Fatalf("stats: %v %v", stats, err)
			}
			health, err := s.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: id, VolumePublishPath: target, StagingTargetPath: staging})
			if err != nil || len(health.VolumeHealth.HealthStatuses) != 0 {
				t.Fatalf("health of a good volume: %v %v", health, err)
			}

			before := fsBytes(t, target)
			e.extend(t, id, 640*mib)
			req := &csi.NodeExpandVolumeRequest{VolumeId: id, VolumePath: target, StagingTargetPath: staging, VolumeCapability: vc,
				CapacityRange: &csi.CapacityRange{RequiredBytes: 640 * mib}}
			_, err = s.NodeExpandVolume(ctx, req)
			online, _ := capability.Has(capability.CapSysResource)
			switch {
			case err == nil:
				_, err = s.NodeExpandVolume(ctx, req) // idempotent
				if err != nil {
					t.Fatalf("second NodeExpandVolume: %v", err)
				}
			case fs == "ext4" && !online && status.Code(err) == codes.FailedPrecondition:
				t.Logf("online ext4 growth refused without CAP_SYS_RESOURCE (%v); growing offline", err)
				unstage()
				stage()
			default:
				t.Fatalf("NodeExpandVolume: %v", err)
			}
			if after := fsBytes(t, target); after < before+250*mib {
				t.Fatalf("filesystem did not grow: %d -> %d", before, after)
			}
			if b, err := os.ReadFile(filepath.Join(target, "f")); err != nil || string(b) != "data" {
				t.Fatalf("data lost: %q %v", b, err)
			}
			t.Logf("%s grew %d -> %d bytes (online resize possible: %v, device-mapper: %v)", fs, before, fsBytes(t, target), online, e.vg.Config.FullMode)
		})
	}
}

// TestNodeReadOnlyAndBlock: a read-only publish refuses writes; a block
// publish is the LV's device at the target file.
func TestNodeReadOnlyAndBlock(t *testing.T) {
	capability.Require(t, capability.Ext4)
	e := newEnv(t, "olnodero", 512*mib)
	ctx := t.Context()
	e.volume(t, "vol-ro", 64*mib)
	e.volume(t, "vol-blk", 32*mib)
	s := e.server(t, nil)

	staging, target := filepath.Join(e.dir, "ro-staging"), filepath.Join(e.dir, "ro-target")
	vc := mountCap("ext4", csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	if _, err := s.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "vol-ro", StagingTargetPath: staging, VolumeCapability: vc}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "vol-ro", StagingTargetPath: staging, TargetPath: target, VolumeCapability: vc, Readonly: true}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "x"), nil, 0o644); err == nil {
		t.Error("write to a read-only publish succeeded")
	}
	if _, err := s.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "vol-ro", TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: "vol-ro", StagingTargetPath: staging}); err != nil {
		t.Fatal(err)
	}

	bstaging, btarget := filepath.Join(e.dir, "blk-staging"), filepath.Join(e.dir, "blk", "dev")
	if err := os.MkdirAll(bstaging, 0o750); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := s.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "vol-blk", StagingTargetPath: bstaging, VolumeCapability: blockCap()}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "vol-blk", StagingTargetPath: bstaging, TargetPath: btarget, VolumeCapability: blockCap()}); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.OpenFile(btarget, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	size, _ := f.Seek(0, 2)
	_, werr := f.WriteAt([]byte("block"), 0)
	f.Close()
	if size != 32*mib || werr != nil {
		t.Fatalf("block target: %d bytes (want %d), write %v", size, 32*mib, werr)
	}
	stats, err := s.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "vol-blk", VolumePath: btarget})
	if err != nil || stats.Usage[0].Total != 32*mib {
		t.Fatalf("block stats: %v %v", stats, err)
	}
	e.extend(t, "vol-blk", 48*mib)
	exp, err := s.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: "vol-blk", VolumePath: btarget, VolumeCapability: blockCap()})
	if err != nil || exp.CapacityBytes != 48*mib {
		t.Fatalf("block expand: %v %v", exp, err)
	}
	for range 2 {
		if _, err := s.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "vol-blk", TargetPath: btarget}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: "vol-blk", StagingTargetPath: bstaging}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(btarget); !os.IsNotExist(err) {
		t.Fatalf("block target left behind: %v", err)
	}
}

// blockingActivator holds Activate until released, so a second call on the
// same volume provably overlaps the first.
type blockingActivator struct {
	node.Activator
	lv      string // the LV whose first activation blocks
	entered chan struct{}
	release chan struct{}
	mu      sync.Mutex
	blocked bool
}

func (b *blockingActivator) Activate(ctx context.Context, vg, lv string) (string, error) {
	b.mu.Lock()
	first := lv == b.lv && !b.blocked
	b.blocked = b.blocked || first
	b.mu.Unlock()
	if first {
		close(b.entered)
		<-b.release
	}
	return b.Activator.Activate(ctx, vg, lv)
}

// TestNodeConcurrentCallsAborted: a call overlapping another on the same
// volume gets Aborted; other volumes are not blocked.
func TestNodeConcurrentCallsAborted(t *testing.T) {
	capability.Require(t, capability.Ext4)
	e := newEnv(t, "olnodeab", 256*mib)
	ctx := t.Context()
	e.volume(t, "vol-a", 16*mib)
	e.volume(t, "vol-b", 16*mib)
	ba := &blockingActivator{Activator: e.act, lv: "vol-a", entered: make(chan struct{}), release: make(chan struct{})}
	s := e.server(t, ba)
	vc := mountCap("ext4", csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	stageReq := func(id string) *csi.NodeStageVolumeRequest {
		return &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: filepath.Join(e.dir, id), VolumeCapability: vc}
	}
	first := make(chan error, 1)
	go func() {
		_, err := s.NodeStageVolume(ctx, stageReq("vol-a"))
		first <- err
	}()
	<-ba.entered
	for _, call := range []func() error{
		func() error { _, err := s.NodeStageVolume(ctx, stageReq("vol-a")); return err },
		func() error {
			_, err := s.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "vol-a", StagingTargetPath: filepath.Join(e.dir, "vol-a"),
				TargetPath: filepath.Join(e.dir, "t"), VolumeCapability: vc})
			return err
		},
		func() error {
			_, err := s.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: "vol-a", StagingTargetPath: filepath.Join(e.dir, "vol-a")})
			return err
		},
	} {
		if err := call(); status.Code(err) != codes.Aborted {
			t.Errorf("overlapping call: %v, want Aborted", err)
		}
	}
	if _, err := s.NodeStageVolume(ctx, stageReq("vol-b")); err != nil {
		t.Errorf("another volume was blocked: %v", err)
	}
	close(ba.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"vol-a", "vol-b"} {
		if _, err := s.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: filepath.Join(e.dir, id)}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNodeBadInput: clear codes, never a panic.
func TestNodeBadInput(t *testing.T) {
	e := newEnv(t, "olnodebad", 64*mib)
	ctx := t.Context()
	e.volume(t, "vol-ok", 8*mib)
	s := e.server(t, nil)
	vc := mountCap("ext4", csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	other := &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: "vol-elsewhere"}, Spec: v1alpha1.LocalVolumeSpec{
		NodeName: "another-node", VolumeType: v1alpha1.VolumeTypeLVM, VGName: "x", Size: *resource.NewQuantity(mib, resource.BinarySI)}}
	if _, err := e.ol.CsiV1alpha1().LocalVolumes().Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.ol.CsiV1alpha1().LocalVolumes().Delete(context.Background(), other.Name, metav1.DeleteOptions{})
	})
	// A read-only restore of a snapshot, as the controller records it.
	snap := &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: "snap-bad"}, Spec: v1alpha1.LocalVolumeSpec{
		NodeName: e.name, VolumeType: v1alpha1.VolumeTypeLVM, Kind: v1alpha1.KindSnapshot, VGName: e.vg.Name, ReadOnly: true,
		Source: &v1alpha1.LocalVolumeSource{Volume: "vol-ok"}, Size: *resource.NewQuantity(8*mib, resource.BinarySI)}}
	restore := &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: "vol-ro-restore"}, Spec: v1alpha1.LocalVolumeSpec{
		NodeName: e.name, VolumeType: v1alpha1.VolumeTypeLVM, VGName: e.vg.Name, ReadOnly: true,
		Source: &v1alpha1.LocalVolumeSource{Snapshot: "snap-bad"}, Size: *resource.NewQuantity(8*mib, resource.BinarySI)}}
	for _, obj := range []*v1alpha1.LocalVolume{snap, restore} {
		created, err := e.ol.CsiV1alpha1().LocalVolumes().Create(ctx, obj, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = e.ol.CsiV1alpha1().LocalVolumes().Delete(context.Background(), obj.Name, metav1.DeleteOptions{})
		})
		created.Status = v1alpha1.LocalVolumeStatus{Phase: v1alpha1.PhaseReady, CurrentSize: resource.NewQuantity(8*mib, resource.BinarySI)}
		if _, err := e.ol.CsiV1alpha1().LocalVolumes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dir := e.dir
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"stage a read-only restore as a raw block device", func() error {
			_, err := s.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "vol-ro-restore", StagingTargetPath: dir, VolumeCapability: blockCap()})
			return err
		}, codes.InvalidArgument},
		{"publish a read-only restore as a raw block device", func() error {
			_, err := s.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "vol-ro-restore", TargetPath: filepath.Join(dir, "ro-blk"),
				VolumeCapability: blockCap(), Readonly: true})
			return err
		}, codes.InvalidArgument},
		{"stage without id", func() error {
			_, err := s.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{StagingTargetPath: dir, VolumeCapability: vc})
			return err
		}, codes.InvalidArgument},
		{"stage without capability", func() error {
			_, err := s.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "vol-ok", StagingTargetPath: dir})
			return err
		}, codes.InvalidArgument},
		{"stage with an unknown filesystem", func() error {
			_, err := s.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "vol-ok", StagingTargetPath: filepath.Join(dir, "s"),
				VolumeCapability: mountCap("ntfs", csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)})
			return err
		}, codes.InvalidArgument},
		{"stage with a multi-node access mode", func() error {
			_, err := s.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "vol-ok", StagingTargetPath: filepath.Join(dir, "s"),
				VolumeCapability: mountCap("ext4", csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)})
			return err
		}, codes.InvalidArgument},
		{"stage an unknown volume", func() error {
			_, err := s.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "no-such-volume", StagingTargetPath: dir, VolumeCapability: vc})
			return err
		}, codes.NotFound},
		{"stage a volume ID that is no object name", func() error {
			_, err := s.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "../../etc", StagingTargetPath: dir, VolumeCapability: vc})
			return err
		}, codes.NotFound},
		{"stage another node's volume", func() error {
			_, err := s.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "vol-elsewhere", StagingTargetPath: dir, VolumeCapability: vc})
			return err
		}, codes.NotFound},
		{"publish an unstaged volume", func() error {
			_, err := s.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "vol-ok", StagingTargetPath: filepath.Join(dir, "never"),
				TargetPath: filepath.Join(dir, "t"), VolumeCapability: vc})
			return err
		}, codes.FailedPrecondition},
		{"expand without a path", func() error {
			_, err := s.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: "vol-ok"})
			return err
		}, codes.InvalidArgument},
		{"expand at a missing path", func() error {
			_, err := s.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: "vol-ok", VolumePath: filepath.Join(dir, "missing")})
			return err
		}, codes.NotFound},
		{"stats at a missing path", func() error {
			_, err := s.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "vol-ok", VolumePath: filepath.Join(dir, "missing")})
			return err
		}, codes.NotFound},
		{"stats of a path that is not mounted", func() error {
			_, err := s.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "vol-ok", VolumePath: dir})
			return err
		}, codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if status.Code(err) != tt.want {
				t.Fatalf("got %v, want %s", err, tt.want)
			}
			if msg := status.Convert(err).Message(); len(msg) < 10 {
				t.Errorf("message %q does not explain", msg)
			}
		})
	}
	// Health reports a mount that disappeared.
	h, err := s.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: "vol-ok", VolumePublishPath: dir})
	if err != nil || len(h.VolumeHealth.HealthStatuses) == 0 || h.VolumeHealth.HealthStatuses[0].Reason != node.HealthNotMounted {
		t.Fatalf("health of an unmounted publish path: %v %v", h, err)
	}
	info, err := s.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil || info.NodeId != e.name || info.AccessibleTopology.Segments["kubernetes.io/hostname"] != e.name || info.MaxVolumesPerNode != 10 {
		t.Fatalf("NodeGetInfo: %v %v", info, err)
	}
}

// TestNodeTargetHoldsAnotherVolume: a staging or target path at which
// something else is mounted is refused, naming what is there, instead of
// being taken for this volume; the same volume published twice stays
// idempotent.
func TestNodeTargetHoldsAnotherVolume(t *testing.T) {
	capability.Require(t, capability.Ext4)
	e := newEnv(t, "olnodeown", 256*mib)
	ctx := t.Context()
	e.volume(t, "vol-mine", 16*mib)
	other := e.volume(t, "vol-other", 16*mib)
	e.volume(t, "blk-mine", 8*mib)
	s := e.server(t, nil)
	vc := mountCap("ext4", csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	dir := e.dir

	// vol-other staged and published as its own, as a second pod would have it.
	otherStaging, otherTarget := filepath.Join(dir, "other-staging"), filepath.Join(dir, "other-target")
	if _, err := s.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "vol-other", StagingTargetPath: otherStaging, VolumeCapability: vc}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = s.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: "vol-other", TargetPath: otherTarget})
		_, _ = s.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: "vol-other", StagingTargetPath: otherStaging})
	})
	if _, err := s.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "vol-other", StagingTargetPath: otherStaging, TargetPath: otherTarget, VolumeCapability: vc}); err != nil {
		t.Fatal(err)
	}
	staging := filepath.Join(dir, "mine-staging")
	if _, err := s.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "vol-mine", StagingTargetPath: staging, VolumeCapability: vc}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = s.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: "vol-mine", StagingTargetPath: staging})
	})
	// squat mounts source at a fresh path, as a leftover of another pod would be.
	squat := func(t *testing.T, source, path string, file bool) {
		t.Helper()
		if file {
			if err := os.WriteFile(path, nil, 0o640); err != nil {
				t.Fatal(err)
			}
		} else if err := os.MkdirAll(path, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount(source, path, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Unmount(path, unix.MNT_DETACH) })
	}
	// The kernel's name of vol-other's device: /dev/loopN with loop
	// activation, /dev/dm-N with device-mapper (whose mounts show
	// /dev/mapper/<vg>-<lv>, not the /dev/<vg>/<lv> the volume records).
	otherDev := other.Status.DevicePath
	var st unix.Stat_t
	if err := unix.Stat(otherDev, &st); err != nil {
		t.Fatal(err)
	}
	sysfs, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)))
	if err != nil {
		t.Fatal(err)
	}
	otherKernel := "/dev/" + filepath.Base(sysfs)
	tests := []struct {
		name    string
		source  string // what is mounted at the path first
		file    bool
		call    func(path string) error
		mention string
	}{
		{"stage where another volume's device is mounted", otherStaging, false, func(p string) error {
			_, err := s.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "vol-mine", StagingTargetPath: p, VolumeCapability: vc})
			return err
		}, otherKernel},
		{"publish where another volume's staging is bound", otherStaging, false, func(p string) error {
			_, err := s.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "vol-mine", StagingTargetPath: staging, TargetPath: p, VolumeCapability: vc})
			return err
		}, "vol-mine"},
		{"publish where an unrelated directory is bound", dir, false, func(p string) error {
			_, err := s.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "vol-mine", StagingTargetPath: staging, TargetPath: p, VolumeCapability: vc})
			return err
		}, "vol-mine"},
		{"publish a block volume where another volume's device is bound", otherDev, true, func(p string) error {
			_, err := s.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "blk-mine", TargetPath: p, VolumeCapability: blockCap()})
			return err
		}, otherKernel},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "squat", strings.Repeat("x", i+1))
			if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
				t.Fatal(err)
			}
			squat(t, tt.source, path, tt.file)
			err := tt.call(path)
			if status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), tt.mention) {
				t.Fatalf("got %v, want AlreadyExists mentioning %q", err, tt.mention)
			}
		})
	}

	// The same volume twice, and its read-only publish asked again
	// read-write, which the existing mount cannot serve.
	target, btarget := filepath.Join(dir, "mine-target"), filepath.Join(dir, "blk", "mine")
	for range 2 {
		if _, err := s.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "vol-mine", StagingTargetPath: staging, TargetPath: target, VolumeCapability: vc, Readonly: true}); err != nil {
			t.Fatalf("publish of the same volume again: %v", err)
		}
		if _, err := s.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "blk-mine", TargetPath: btarget, VolumeCapability: blockCap()}); err != nil {
			t.Fatalf("block publish of the same volume again: %v", err)
		}
	}
	t.Cleanup(func() {
		_, _ = s.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: "vol-mine", TargetPath: target})
		_, _ = s.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: "blk-mine", TargetPath: btarget})
	})
	if _, err := s.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "vol-mine", StagingTargetPath: staging, TargetPath: target, VolumeCapability: vc}); status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("read-write publish over the read-only one: %v, want AlreadyExists mentioning read-only", err)
	}
}
