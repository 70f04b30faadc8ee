/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package controller_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/test/cluster"
)

// The snapshot and restore paths of the controller against the real API
// server. The agent's part is played by the test (this kernel has no
// device-mapper, so the real agent cannot take snapshots here); the real
// agent takes them in the VM suites (agent/volumes, csi/sanity/snapshots,
// csi/snapshot).

// withThinPool adds thin pool pool (allocatable bytes of virtual size) to
// VG vg of the fixture's NodeLocalStorage.
func (f *fixture) withThinPool(t *testing.T, vg, pool string, allocatable int64) {
	t.Helper()
	api := f.ol.CsiV1alpha1().NodeLocalStorages()
	_, err := cluster.Update(t.Context(), api.Get, api.UpdateStatus, f.node, func(nls *v1alpha1.NodeLocalStorage) {
		for i := range nls.Status.NodeStorageInfo.VolumeGroups {
			g := &nls.Status.NodeStorageInfo.VolumeGroups[i]
			if g.Name == vg {
				g.ThinPools = append(g.ThinPools, v1alpha1.ThinPool{Name: pool, Total: uint64(allocatable / 2),
					OverprovisionRatio: resource.MustParse("2"), Allocatable: uint64(allocatable)})
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// volume creates a Ready volume (the test answering for the agent).
func (f *fixture) volume(t *testing.T, name string, size int64, params map[string]string) *csi.Volume {
	t.Helper()
	done := make(chan *csi.CreateVolumeResponse, 1)
	errc := make(chan error, 1)
	go func() {
		r, err := f.srv.CreateVolume(t.Context(), createReq(name, f.node, size, params))
		errc <- err
		done <- r
	}()
	f.agent(t, name, readyAs)
	if err := <-errc; err != nil {
		t.Fatalf("CreateVolume %s: %v", name, err)
	}
	return (<-done).Volume
}

// snapshotTaken is what the agent reports once it took a snapshot of an
// origin of originSize bytes.
func snapshotTaken(originSize int64, at time.Time) func(*v1alpha1.LocalVolume) {
	return func(lv *v1alpha1.LocalVolume) {
		readyAs(lv)
		lv.Status.RestoreSize = resource.NewQuantity(originSize, resource.BinarySI)
		t := metav1.NewTime(at)
		lv.Status.SnapshotTime = &t
	}
}

type snapCall struct {
	resp *csi.CreateSnapshotResponse
	err  error
}

func (f *fixture) snapshotAsync(ctx context.Context, name, source string, params map[string]string) chan snapCall {
	c := make(chan snapCall, 1)
	go func() {
		r, err := f.srv.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: name, SourceVolumeId: source, Parameters: params})
		c <- snapCall{r, err}
	}()
	return c
}

func (f *fixture) get(t *testing.T, name string) *v1alpha1.LocalVolume {
	t.Helper()
	lv, err := f.ol.CsiV1alpha1().LocalVolumes().Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return lv
}

// CreateSnapshot writes snap-<UID> beside its origin with open-local's
// class parameters, waits for the cut, and reports what a restore holds.
func TestCreateSnapshot(t *testing.T) {
	f := newFixture(t, "ctl-snap", map[string]int64{"pool0": 20 * gib, "tiny": 10 * gib}, nil)
	f.withThinPool(t, "pool0", "tp", 40*gib)
	ctx := t.Context()
	f.volume(t, "vol-origin", 8*gib, nil)
	f.volume(t, "vol-thin", 6*gib, map[string]string{"thinPool": "tp", "vgName": "pool0"})
	taken := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	t.Run("classic", func(t *testing.T) {
		call := f.snapshotAsync(ctx, "snapshot-0b1e2a4c-uid-1", "vol-origin", map[string]string{
			"csi.aliyun.com/snapshot-initial-size": "2Gi", "csi.aliyun.com/snapshot-expansion-threshold": "70%",
			"csi.aliyun.com/snapshot-expansion-size": "512Mi", "csi.storage.k8s.io/volumesnapshot/name": "s"})
		f.agent(t, "snap-0b1e2a4c-uid-1", snapshotTaken(8*gib, taken))
		c := <-call
		if c.err != nil {
			t.Fatal(c.err)
		}
		s := c.resp.Snapshot
		if s.SnapshotId != "snap-0b1e2a4c-uid-1" || s.SourceVolumeId != "vol-origin" || s.SizeBytes != 8*gib || !s.ReadyToUse || !s.CreationTime.AsTime().Equal(taken) {
			t.Errorf("snapshot = %+v", s)
		}
		lv := f.get(t, s.SnapshotId)
		got := fmt.Sprintf("%s node=%s vg=%s pool=%q size=%s readOnly=%v policy=%d%%+%s", lv.Spec.Kind, lv.Spec.NodeName, lv.Spec.VGName,
			lv.Spec.ThinPool, lv.Spec.Size.String(), lv.Spec.ReadOnly, lv.Spec.SnapshotPolicy.ExpansionThresholdPercent, lv.Spec.SnapshotPolicy.ExpansionSize.String())
		if want := `Snapshot node=ctl-snap vg=pool0 pool="" size=2Gi readOnly=false policy=70%+512Mi`; got != want {
			t.Errorf("LocalVolume %s\nwant        %s", got, want)
		}
		// Idempotent: the same name and source return the same snapshot.
		again, err := f.srv.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snapshot-0b1e2a4c-uid-1", SourceVolumeId: "vol-origin"})
		if err != nil || again.Snapshot.SnapshotId != s.SnapshotId {
			t.Errorf("repeated CreateSnapshot = %v, %v", again, err)
		}
		_, err = f.srv.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snapshot-0b1e2a4c-uid-1", SourceVolumeId: "vol-thin"})
		if status.Code(err) != codes.AlreadyExists {
			t.Errorf("same name, other source: %v, want AlreadyExists", err)
		}
	})

	t.Run("default initial size is capped at the origin", func(t *testing.T) {
		f.volume(t, "vol-small", gib, nil)
		call := f.snapshotAsync(ctx, "snapshot-small", "vol-small", map[string]string{"csi.aliyun.com/readonly": "true"})
		f.agent(t, "snap-small", snapshotTaken(gib, taken))
		if c := <-call; c.err != nil {
			t.Fatal(c.err)
		}
		lv := f.get(t, "snap-small")
		if lv.Spec.Size.Value() != gib || !lv.Spec.ReadOnly || lv.Spec.SnapshotPolicy.ExpansionThresholdPercent != 50 || lv.Spec.SnapshotPolicy.ExpansionSize.Value() != gib {
			t.Errorf("spec = %+v, want 1Gi (not 4Gi), read-only, 50%% / 1Gi", lv.Spec)
		}
	})

	t.Run("thin", func(t *testing.T) {
		call := f.snapshotAsync(ctx, "snapshot-thin", "vol-thin", nil)
		f.agent(t, "snap-thin", snapshotTaken(6*gib, taken))
		if c := <-call; c.err != nil {
			t.Fatal(c.err)
		}
		lv := f.get(t, "snap-thin")
		if lv.Spec.ThinPool != "tp" || lv.Spec.Size.Value() != 6*gib || lv.Spec.SnapshotPolicy != nil {
			t.Errorf("thin snapshot spec = %+v, want pool tp, the origin's 6Gi, no policy", lv.Spec)
		}
		// The pool now holds 6 + 6 of its 40Gi: a 30Gi thin volume does not fit.
		_, err := f.srv.CreateVolume(ctx, createReq("vol-thin-big", f.node, 30*gib, map[string]string{"thinPool": "tp"}))
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "free 28Gi") {
			t.Errorf("thin volume beyond the pool: %v", err)
		}
	})

	t.Run("the agent fails: the code, and no record left", func(t *testing.T) {
		call := f.snapshotAsync(ctx, "snapshot-refused", "vol-origin", nil)
		f.agent(t, "snap-refused", func(lv *v1alpha1.LocalVolume) {
			lv.Status.Phase, lv.Status.Code = v1alpha1.PhaseFailed, "FailedPrecondition"
			lv.Status.Message = "lvcreate: not supported by this node's kernel (device-mapper)"
		})
		c := <-call
		if status.Code(c.err) != codes.FailedPrecondition || !strings.Contains(c.err.Error(), "device-mapper") {
			t.Fatalf("CreateSnapshot = %v, want the agent's FailedPrecondition", c.err)
		}
		err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
			lv, err := f.ol.CsiV1alpha1().LocalVolumes().Get(ctx, "snap-refused", metav1.GetOptions{})
			return apierrors.IsNotFound(err) || (err == nil && lv.DeletionTimestamp != nil), nil
		})
		if err != nil {
			t.Fatal("the record of a snapshot never taken was kept")
		}
	})

	for _, tt := range []struct {
		name    string
		req     *csi.CreateSnapshotRequest
		code    codes.Code
		mention string
	}{
		{"no name", &csi.CreateSnapshotRequest{SourceVolumeId: "vol-origin"}, codes.InvalidArgument, "name"},
		{"no source", &csi.CreateSnapshotRequest{Name: "snapshot-x"}, codes.InvalidArgument, "source_volume_id"},
		{"unknown source", &csi.CreateSnapshotRequest{Name: "snapshot-x", SourceVolumeId: "vol-nope"}, codes.NotFound, "vol-nope"},
		{"bad threshold", &csi.CreateSnapshotRequest{Name: "snapshot-x", SourceVolumeId: "vol-origin",
			Parameters: map[string]string{"csi.aliyun.com/snapshot-expansion-threshold": "0%"}}, codes.InvalidArgument, "snapshot-expansion-threshold"},
		{"unknown parameter", &csi.CreateSnapshotRequest{Name: "snapshot-x", SourceVolumeId: "vol-origin",
			Parameters: map[string]string{"readonly": "true"}}, codes.InvalidArgument, `"readonly"`},
		{"no room for the copy-on-write space", &csi.CreateSnapshotRequest{Name: "snapshot-x", SourceVolumeId: "vol-origin",
			Parameters: map[string]string{"csi.aliyun.com/snapshot-initial-size": "8Gi"}}, codes.FailedPrecondition, "need 8Gi"},
		{"snapshot of a snapshot", &csi.CreateSnapshotRequest{Name: "snapshot-x", SourceVolumeId: "snap-0b1e2a4c-uid-1"}, codes.InvalidArgument, "snapshots of snapshots"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.srv.CreateSnapshot(ctx, tt.req)
			if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.mention) {
				t.Fatalf("CreateSnapshot = %v, want %s mentioning %s", err, tt.code, tt.mention)
			}
		})
	}
}

// Restores: on the snapshot's node and VG, at least its size; read-only
// ones exactly its size, taking no room; writable ones checked for room as
// thick or thin volumes.
func TestRestore(t *testing.T) {
	f := newFixture(t, "ctl-restore", map[string]int64{"pool0": 10 * gib}, nil)
	f.withThinPool(t, "pool0", "tp", 8*gib)
	ctx := t.Context()
	f.volume(t, "vol-src", 2*gib, nil)
	taken := time.Now().Truncate(time.Second)
	for _, s := range []struct {
		name   string
		params map[string]string
	}{{"snapshot-rw", nil}, {"snapshot-ro", map[string]string{"csi.aliyun.com/readonly": "true", "csi.aliyun.com/snapshot-initial-size": "1Gi"}}} {
		call := f.snapshotAsync(ctx, s.name, "vol-src", s.params)
		f.agent(t, strings.Replace(s.name, "snapshot-", "snap-", 1), snapshotTaken(2*gib, taken))
		if c := <-call; c.err != nil {
			t.Fatal(c.err)
		}
	}
	// pool0: 2Gi volume + 2Gi + 1Gi copy-on-write = 5Gi used of 10.
	fromSnap := func(name, snap string, size int64, params map[string]string) *csi.CreateVolumeRequest {
		r := createReq(name, f.node, size, params)
		r.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: snap}}}
		return r
	}

	for _, tt := range []struct {
		name    string
		req     *csi.CreateVolumeRequest
		code    codes.Code
		mention string
	}{
		{"unknown snapshot", fromSnap("vol-r", "snap-nope", 2*gib, nil), codes.NotFound, "snap-nope"},
		{"a volume is not a snapshot", fromSnap("vol-r", "vol-src", 2*gib, nil), codes.NotFound, "vol-src"},
		{"smaller than the snapshot", fromSnap("vol-r", "snap-rw", gib, nil), codes.OutOfRange, "smaller than snapshot snap-rw"},
		{"limit below the snapshot", func() *csi.CreateVolumeRequest {
			r := fromSnap("vol-r", "snap-rw", 0, nil)
			r.CapacityRange = &csi.CapacityRange{LimitBytes: gib}
			return r
		}(), codes.OutOfRange, "limit_bytes"},
		{"read-only restores have the snapshot's size", fromSnap("vol-r", "snap-ro", 3*gib, nil), codes.OutOfRange, "read-only"},
		{"a read-only restore cannot be a raw block device", func() *csi.CreateVolumeRequest {
			r := fromSnap("vol-r", "snap-ro", 0, nil)
			r.VolumeCapabilities = []*csi.VolumeCapability{{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
				AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}}}
			return r
		}(), codes.InvalidArgument, "raw block"},
		{"another node", func() *csi.CreateVolumeRequest {
			r := fromSnap("vol-r", "snap-rw", 2*gib, nil)
			r.AccessibilityRequirements = onNode("elsewhere")
			return r
		}(), codes.ResourceExhausted, "on node ctl-restore"},
		{"another VG", fromSnap("vol-r", "snap-rw", 2*gib, map[string]string{"vgName": "pool9"}), codes.InvalidArgument, "pool9"},
		{"a Device volume", fromSnap("vol-r", "snap-rw", 2*gib, map[string]string{"volumeType": "Device", "mediaType": "ssd"}), codes.InvalidArgument, "Device"},
		{"no room for a thick copy", fromSnap("vol-r", "snap-rw", 6*gib, nil), codes.ResourceExhausted, "VG pool0 on node ctl-restore: need 6Gi"},
		{"no room in the pool", fromSnap("vol-r", "snap-rw", 9*gib, map[string]string{"thinPool": "tp"}), codes.ResourceExhausted, "thin pool pool0/tp"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.srv.CreateVolume(ctx, tt.req)
			if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.mention) {
				t.Fatalf("CreateVolume = %v, want %s mentioning %q", err, tt.code, tt.mention)
			}
			if _, err := f.ol.CsiV1alpha1().LocalVolumes().Get(ctx, "vol-r", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Fatalf("a refused restore left a LocalVolume: %v", err)
			}
		})
	}

	for _, tt := range []struct {
		name, snap string
		size       int64
		params     map[string]string
		want       string
	}{
		{"writable thick", "snap-rw", 3 * gib, nil, "vg=pool0 pool= size=3Gi readOnly=false"},
		{"writable thin", "snap-rw", 4 * gib, map[string]string{"thinPool": "tp"}, "vg=pool0 pool=tp size=4Gi readOnly=false"},
		{"read-only (even from a thin class)", "snap-ro", 0, map[string]string{"thinPool": "tp"}, "vg=pool0 pool= size=2Gi readOnly=true"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			name := "vol-" + strings.ReplaceAll(strings.Fields(tt.name)[0], "-", "") + "-" + strings.TrimPrefix(tt.snap, "snap-")
			if tt.params["thinPool"] != "" && tt.snap == "snap-rw" {
				name += "-thin"
			}
			done := make(chan snapCall, 1)
			var resp *csi.CreateVolumeResponse
			go func() {
				var err error
				resp, err = f.srv.CreateVolume(ctx, fromSnap(name, tt.snap, tt.size, tt.params))
				done <- snapCall{err: err}
			}()
			f.agent(t, name, readyAs)
			if c := <-done; c.err != nil {
				t.Fatal(c.err)
			}
			lv := f.get(t, name)
			got := fmt.Sprintf("vg=%s pool=%s size=%s readOnly=%v", lv.Spec.VGName, lv.Spec.ThinPool, lv.Spec.Size.String(), lv.Spec.ReadOnly)
			if got != tt.want || lv.Spec.Source == nil || lv.Spec.Source.Snapshot != tt.snap {
				t.Errorf("LocalVolume %s source %+v\nwant        %s from %s", got, lv.Spec.Source, tt.want, tt.snap)
			}
			v := resp.Volume
			if v.ContentSource.GetSnapshot().GetSnapshotId() != tt.snap || v.VolumeContext["csi.aliyun.com/snapshot-id"] != tt.snap ||
				(v.VolumeContext["csi.aliyun.com/readonly"] == "true") != lv.Spec.ReadOnly {
				t.Errorf("response %+v", v)
			}
		})
	}
	// What the ledger holds now: a read-only restore counted nothing, the
	// thin one counted in the pool; the thick one 3Gi in the VG.
	r, err := f.srv.GetCapacity(ctx, &csi.GetCapacityRequest{AccessibleTopology: &csi.Topology{Segments: map[string]string{"kubernetes.io/hostname": f.node}}})
	if err != nil || r.AvailableCapacity != 2*gib {
		t.Errorf("VG capacity after the restores = %v, %v; want 10 - 2 - 2 - 1 - 3 = 2Gi", r, err)
	}
	r, err = f.srv.GetCapacity(ctx, &csi.GetCapacityRequest{Parameters: map[string]string{"thinPool": "tp"},
		AccessibleTopology: &csi.Topology{Segments: map[string]string{"kubernetes.io/hostname": f.node}}})
	if err != nil || r.AvailableCapacity != 4*gib {
		t.Errorf("pool capacity after the restores = %v, %v; want 8 - 4 = 4Gi", r, err)
	}
}

// Deleting and expanding around snapshots: copy-on-write snapshots hold
// their origin (FailedPrecondition naming them), thin ones do not; a
// snapshot is kept while read-only restores use it; IDs of the other kind
// are never deleted by the wrong call.
func TestSnapshotDependencies(t *testing.T) {
	f := newFixture(t, "ctl-deps", map[string]int64{"pool0": 20 * gib}, nil)
	f.withThinPool(t, "pool0", "tp", 20*gib)
	ctx := t.Context()
	f.volume(t, "vol-thick", 2*gib, nil)
	f.volume(t, "vol-thinsrc", 2*gib, map[string]string{"thinPool": "tp"})
	for _, s := range [][2]string{{"snapshot-of-thick", "vol-thick"}, {"snapshot-of-thin", "vol-thinsrc"}} {
		call := f.snapshotAsync(ctx, s[0], s[1], map[string]string{"csi.aliyun.com/readonly": "true"})
		f.agent(t, strings.Replace(s[0], "snapshot-", "snap-", 1), snapshotTaken(2*gib, time.Now()))
		if c := <-call; c.err != nil {
			t.Fatal(c.err)
		}
	}
	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		t.Cleanup(cancel)
		return c
	}

	_, err := f.srv.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "vol-thick"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "snap-of-thick") {
		t.Errorf("DeleteVolume with a copy-on-write snapshot: %v", err)
	}
	_, err = f.srv.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: "vol-thick", CapacityRange: &csi.CapacityRange{RequiredBytes: 3 * gib}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "snap-of-thick") {
		t.Errorf("expansion with a copy-on-write snapshot: %v", err)
	}
	if lv := f.get(t, "vol-thick"); lv.DeletionTimestamp != nil || lv.Spec.Size.Value() != 2*gib {
		t.Errorf("refused calls changed the volume: %+v", lv)
	}
	// A thin origin grows (room permitting) and goes; its snapshot stays.
	if _, err := f.srv.ControllerExpandVolume(short(), &csi.ControllerExpandVolumeRequest{VolumeId: "vol-thinsrc",
		CapacityRange: &csi.CapacityRange{RequiredBytes: 3 * gib}}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("thin expansion waits for the agent: %v", err)
	}
	if _, err := f.srv.DeleteVolume(short(), &csi.DeleteVolumeRequest{VolumeId: "vol-thinsrc"}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("DeleteVolume of a thin origin waits for the agent: %v", err)
	}
	if lv := f.get(t, "vol-thinsrc"); lv.DeletionTimestamp == nil {
		t.Error("thin origin not deleted")
	}

	// A read-only restore keeps its snapshot.
	ro := createReq("vol-ro", f.node, 2*gib, nil)
	ro.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: "snap-of-thick"}}}
	done := make(chan error, 1)
	go func() { _, err := f.srv.CreateVolume(ctx, ro); done <- err }()
	f.agent(t, "vol-ro", readyAs)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_, err = f.srv.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: "snap-of-thick"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "vol-ro (a read-only restore)") {
		t.Errorf("DeleteSnapshot in use: %v", err)
	}
	if _, err := f.srv.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: "vol-ro",
		CapacityRange: &csi.CapacityRange{RequiredBytes: 3 * gib}}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("growing a read-only restore: %v", err)
	}

	// The wrong call for an ID's kind deletes nothing.
	if _, err := f.srv.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: "vol-thick"}); err != nil {
		t.Errorf("DeleteSnapshot of a volume ID: %v", err)
	}
	if _, err := f.srv.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "snap-of-thick"}); err != nil {
		t.Errorf("DeleteVolume of a snapshot ID: %v", err)
	}
	for _, name := range []string{"vol-thick", "snap-of-thick"} {
		if lv := f.get(t, name); lv.DeletionTimestamp != nil {
			t.Errorf("%s deleted by the call for the other kind", name)
		}
	}
	if _, err := f.srv.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("DeleteSnapshot without an ID: %v", err)
	}
	if _, err := f.srv.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: "reallyfakesnapshotid"}); err != nil {
		t.Errorf("DeleteSnapshot of an unknown ID: %v", err)
	}
}

// ListSnapshots pages through snapshots by name and filters by snapshot
// or source; GetSnapshot finds one.
func TestListAndGetSnapshots(t *testing.T) {
	f := newFixture(t, "ctl-list", map[string]int64{"pool0": 40 * gib}, nil)
	ctx := t.Context()
	f.volume(t, "vol-l1", gib, nil)
	f.volume(t, "vol-l2", gib, nil)
	for i, src := range []string{"vol-l1", "vol-l1", "vol-l2"} {
		name := fmt.Sprintf("snapshot-list-%d", i)
		call := f.snapshotAsync(ctx, name, src, nil)
		f.agent(t, fmt.Sprintf("snap-list-%d", i), snapshotTaken(gib, time.Now()))
		if c := <-call; c.err != nil {
			t.Fatal(c.err)
		}
	}
	ids := func(r *csi.ListSnapshotsResponse) []string {
		var out []string
		for _, e := range r.Entries {
			if strings.HasPrefix(e.Snapshot.SnapshotId, "snap-list-") {
				out = append(out, e.Snapshot.SnapshotId)
			}
		}
		return out
	}
	r, err := f.srv.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SourceVolumeId: "vol-l1"})
	if err != nil || fmt.Sprint(ids(r)) != "[snap-list-0 snap-list-1]" {
		t.Errorf("by source = %v, %v", r, err)
	}
	r, err = f.srv.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SnapshotId: "snap-list-2"})
	if err != nil || len(r.Entries) != 1 || r.Entries[0].Snapshot.SourceVolumeId != "vol-l2" || !r.Entries[0].Snapshot.ReadyToUse {
		t.Errorf("by ID = %v, %v", r, err)
	}
	for _, id := range []string{"snap-none", "vol-l1"} {
		if r, err := f.srv.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SnapshotId: id}); err != nil || len(r.Entries) != 0 {
			t.Errorf("ListSnapshots(%s) = %v, %v; want empty", id, r, err)
		}
	}
	// Pages of 2 over everything (other tests' snapshots included).
	all, err := f.srv.ListSnapshots(ctx, &csi.ListSnapshotsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var paged []string
	token := ""
	for range 100 {
		r, err := f.srv.ListSnapshots(ctx, &csi.ListSnapshotsRequest{MaxEntries: 2, StartingToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range r.Entries {
			paged = append(paged, e.Snapshot.SnapshotId)
		}
		if token = r.NextToken; token == "" {
			break
		}
	}
	if len(paged) != len(all.Entries) {
		t.Errorf("paged through %d snapshots, %d exist", len(paged), len(all.Entries))
	}
	g, err := f.srv.GetSnapshot(ctx, &csi.GetSnapshotRequest{SnapshotId: "snap-list-1"})
	if err != nil || g.Snapshot.SourceVolumeId != "vol-l1" || g.Snapshot.SizeBytes != gib {
		t.Errorf("GetSnapshot = %v, %v", g, err)
	}
	if _, err := f.srv.GetSnapshot(ctx, &csi.GetSnapshotRequest{SnapshotId: "snap-none"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetSnapshot of an unknown ID: %v", err)
	}
}

// snapshotterRetries are the codes csi-snapshotter (external-snapshotter
// v8.7.0, pkg/sidecar-controller isCSIFinalError) takes as "CreateSnapshot
// may still be in progress": it keeps the content's
// volumesnapshot-being-created annotation, and with it the content's
// finalizer, so a deleted VolumeSnapshot (and its namespace) waits for a
// later answer. Every other code lets the deletion go on; the sidecar
// still retries CreateSnapshot after any error.
var snapshotterRetries = map[codes.Code]bool{codes.Canceled: true, codes.DeadlineExceeded: true,
	codes.Unavailable: true, codes.ResourceExhausted: true, codes.Aborted: true}

// A CreateSnapshot that started nothing answers with a code csi-snapshotter
// takes as final, so a VolumeSnapshot that failed (VG or pool full, source
// gone) never blocks its deletion; a snapshot never taken deletes as OK,
// however often asked (alibaba/open-local issue 14 item 6).
func TestFailedSnapshotAnswersAreFinal(t *testing.T) {
	f := newFixture(t, "ctl-snapfail", map[string]int64{"pool0": 10 * gib, "roomy": 20 * gib}, nil)
	f.withThinPool(t, "pool0", "tp", 8*gib)
	ctx := t.Context()
	f.volume(t, "vol-full", 9*gib, map[string]string{"vgName": "pool0"})
	f.volume(t, "vol-thinfull", 5*gib, map[string]string{"thinPool": "tp", "vgName": "pool0"})
	f.volume(t, "vol-roomy", gib, map[string]string{"vgName": "roomy"})

	for _, tt := range []struct {
		name, snapshot, source string
		params                 map[string]string
		agent                  func(*v1alpha1.LocalVolume) // nil: the agent is never asked
		code                   codes.Code
		mention                string
	}{
		{name: "VG full", snapshot: "snapshot-vgfull", source: "vol-full",
			params: map[string]string{"csi.aliyun.com/snapshot-initial-size": "2Gi"}, code: codes.FailedPrecondition, mention: "VG pool0 on node ctl-snapfail: need 2Gi"},
		{name: "thin pool full", snapshot: "snapshot-poolfull", source: "vol-thinfull",
			code: codes.FailedPrecondition, mention: "thin pool pool0/tp"},
		{name: "source gone", snapshot: "snapshot-nosource", source: "vol-deleted-meanwhile", code: codes.NotFound, mention: "vol-deleted-meanwhile"},
		{name: "the agent ran out of room, record dropped", snapshot: "snapshot-agentfull", source: "vol-roomy",
			agent: func(lv *v1alpha1.LocalVolume) {
				lv.Status.Phase, lv.Status.Code, lv.Status.Message = v1alpha1.PhaseFailed, "ResourceExhausted", "lvcreate: insufficient free space"
			}, code: codes.FailedPrecondition, mention: "insufficient free space"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			call := f.snapshotAsync(ctx, tt.snapshot, tt.source, tt.params)
			id := "snap-" + strings.TrimPrefix(tt.snapshot, "snapshot-")
			if tt.agent != nil {
				f.agent(t, id, tt.agent)
			}
			c := <-call
			if status.Code(c.err) != tt.code || !strings.Contains(c.err.Error(), tt.mention) {
				t.Fatalf("CreateSnapshot = %v, want %s mentioning %q", c.err, tt.code, tt.mention)
			}
			if snapshotterRetries[status.Code(c.err)] {
				t.Fatalf("CreateSnapshot = %v: csi-snapshotter would keep the content's finalizer", c.err)
			}
			api := f.ol.CsiV1alpha1().LocalVolumes()
			err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
				lv, err := api.Get(ctx, id, metav1.GetOptions{})
				if err == nil && lv.DeletionTimestamp != nil {
					// The agent's part: nothing on disk, the finalizer goes.
					lv.Finalizers = nil
					_, err = api.Update(ctx, lv, metav1.UpdateOptions{})
					return false, err
				}
				return apierrors.IsNotFound(err), nil
			})
			if err != nil {
				t.Fatalf("LocalVolume %s of a snapshot never taken is left: %v", id, err)
			}
			for range 2 {
				if _, err := f.srv.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: id}); err != nil {
					t.Fatalf("DeleteSnapshot of a snapshot never taken = %v, want OK", err)
				}
			}
		})
	}
}
