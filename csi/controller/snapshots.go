/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package controller

import (
	"context"
	"sort"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/klog/v2"

	"github.com/open-local/open-local/apis/storage/awaitvolume"
	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// getSnapshot returns the snapshot LocalVolume id, or NotFound.
func (s *Server) getSnapshot(ctx context.Context, id string) (*v1alpha1.LocalVolume, error) {
	if !strings.HasPrefix(id, v1alpha1.SnapshotPrefix) || len(validation.IsDNS1123Subdomain(id)) > 0 {
		return nil, status.Errorf(codes.NotFound, "snapshot %s not found", id)
	}
	lv, err := s.client.CsiV1alpha1().LocalVolumes().Get(ctx, id, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, status.Errorf(codes.NotFound, "snapshot %s not found", id)
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "get LocalVolume %s: %v", id, err)
	case lv.Spec.Kind != v1alpha1.KindSnapshot:
		return nil, status.Errorf(codes.NotFound, "snapshot %s not found (%s is a volume)", id, id)
	}
	return lv, nil
}

// CreateSnapshot writes a snapshot LocalVolume of the source volume, on its
// node and in its VG, and waits until the agent took it: the response's
// creation_time is when the snapshot was cut, so a caller that quiesced
// its application may resume. A classic snapshot starts with
// csi.aliyun.com/snapshot-initial-size of copy-on-write space (at most the
// volume's size), grown by the agent past the expansion threshold; a thin
// volume's snapshot is a thin snapshot in the same pool.
func (s *Server) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	switch {
	case req.GetName() == "":
		return nil, status.Error(codes.InvalidArgument, "name is required")
	case req.GetSourceVolumeId() == "":
		return nil, status.Error(codes.InvalidArgument, "source_volume_id is required")
	}
	params, err := parameters.ParseSnapshot(req.GetParameters())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	id := v1alpha1.SnapshotVolumeName(req.GetName())
	release, err := s.guard.Acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()
	logger := klog.FromContext(ctx).WithValues("snapshot", id, "source", req.GetSourceVolumeId())

	snap, err := s.client.CsiV1alpha1().LocalVolumes().Get(ctx, id, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		src, err := s.getVolume(ctx, req.GetSourceVolumeId())
		if err != nil {
			return nil, err
		}
		if snap, err = s.createSnapshotVolume(ctx, id, src, params); err != nil {
			return nil, nothingInProgress(err)
		}
		logger.Info("Requested snapshot", "node", snap.Spec.NodeName, "vg", snap.Spec.VGName, "thinPool", snap.Spec.ThinPool, "size", snap.Spec.Size.String())
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "get LocalVolume %s: %v", id, err)
	case snap.Spec.Kind != v1alpha1.KindSnapshot || snap.Spec.Source == nil || snap.Spec.Source.Volume != req.GetSourceVolumeId():
		return nil, status.Errorf(codes.AlreadyExists, "snapshot %s exists for another source volume", req.GetName())
	case snap.DeletionTimestamp != nil:
		return nil, status.Errorf(codes.Aborted, "snapshot %s is being deleted", id)
	}

	snap, err = awaitvolume.Until(ctx, s.client, id, func(lv *v1alpha1.LocalVolume) (bool, error) {
		switch {
		case lv == nil:
			return false, status.Errorf(codes.Aborted, "snapshot %s was deleted while being created", id)
		case lv.Status.Phase == v1alpha1.PhaseReady && lv.Status.SnapshotTime != nil && lv.Status.RestoreSize != nil:
			return true, nil
		case lv.Status.Phase == v1alpha1.PhaseFailed && lv.Status.ObservedGeneration >= lv.Generation:
			return false, awaitvolume.Failure(lv)
		}
		return false, nil
	})
	if err != nil {
		if snap != nil && snap.Status.Phase == v1alpha1.PhaseFailed && snap.Status.SnapshotTime == nil {
			// Never taken: drop the record, so nothing is left behind if the
			// VolumeSnapshot goes, and a retry starts afresh.
			if s.deleteFailed(ctx, snap) {
				return nil, nothingInProgress(err)
			}
		}
		return nil, err
	}
	return &csi.CreateSnapshotResponse{Snapshot: csiSnapshot(snap)}, nil
}

// nothingInProgress rewrites the error of a CreateSnapshot that left
// nothing behind (refused before a record was written, or its record
// dropped) to a code csi-snapshotter takes as final. It keeps the
// content's volumesnapshot-being-created annotation, and so the content's
// finalizer and a deleted VolumeSnapshot's namespace, after any of
// Canceled, DeadlineExceeded, Unavailable, ResourceExhausted and Aborted
// (v8.7.0 isCSIFinalError; kubernetes-csi/external-snapshotter#1434): a
// full VG must not hold a namespace in Terminating until the next retry.
// It retries CreateSnapshot after a final code all the same, so a snapshot
// still gets taken once room is freed.
func nothingInProgress(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.ResourceExhausted, codes.Aborted:
		return status.Error(codes.FailedPrecondition, st.Message())
	}
	return err
}

// createSnapshotVolume checks the source and the room for the snapshot
// and writes its LocalVolume.
func (s *Server) createSnapshotVolume(ctx context.Context, id string, src *v1alpha1.LocalVolume, p parameters.SnapshotParams) (*v1alpha1.LocalVolume, error) {
	switch {
	case src.Spec.Kind == v1alpha1.KindSnapshot:
		return nil, status.Errorf(codes.InvalidArgument, "%s is a snapshot: snapshots of snapshots are not supported (restore it and snapshot the volume)", src.Name)
	case src.Spec.VolumeType != v1alpha1.VolumeTypeLVM:
		return nil, status.Errorf(codes.InvalidArgument, "volume %s is a whole device (%s): only LVM volumes can be snapshotted", src.Name, src.Spec.Device)
	case src.Spec.IsReadOnlyRestore():
		return nil, status.Errorf(codes.InvalidArgument, "volume %s is a read-only view of snapshot %s: snapshot that instead", src.Name, src.Spec.Source.Snapshot)
	case src.DeletionTimestamp != nil:
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is being deleted", src.Name)
	}
	s.allocate.Lock()
	defer s.allocate.Unlock()
	ns, err := s.readNode(ctx, src.Spec.NodeName)
	if err != nil {
		return nil, err
	}
	spec := v1alpha1.LocalVolumeSpec{
		NodeName:   src.Spec.NodeName,
		VolumeType: v1alpha1.VolumeTypeLVM,
		Kind:       v1alpha1.KindSnapshot,
		VGName:     src.Spec.VGName,
		LVName:     lvNameFor(id),
		ThinPool:   src.Spec.ThinPool,
		Source:     &v1alpha1.LocalVolumeSource{Volume: src.Name},
		ReadOnly:   p.ReadOnly,
	}
	if src.Spec.ThinPool != "" {
		// A thin snapshot can diverge from its origin completely: counted
		// at the origin's virtual size in the pool, like any thin volume.
		size := src.Spec.Size.Value()
		if err := ns.checkPool(s.ledgerOf(ns), src.Spec.VGName, src.Spec.ThinPool, size, "snapshot "+id); err != nil {
			return nil, err
		}
		spec.Size = *resource.NewQuantity(size, resource.BinarySI)
	} else {
		cow := min(p.InitialSize, src.Spec.Size.Value())
		if err := ns.checkVG(s.ledgerOf(ns), src.Spec.VGName, cow, "the copy-on-write space of snapshot "+id); err != nil {
			return nil, err
		}
		spec.Size = *resource.NewQuantity(cow, resource.BinarySI)
		spec.SnapshotPolicy = &v1alpha1.SnapshotPolicy{ExpansionThresholdPercent: p.ThresholdPercent,
			ExpansionSize: *resource.NewQuantity(p.ExpansionSize, resource.BinarySI)}
	}
	return s.persist(ctx, &v1alpha1.LocalVolume{
		ObjectMeta: metav1.ObjectMeta{Name: id, Finalizers: []string{v1alpha1.LocalVolumeFinalizer}},
		Spec:       spec,
	})
}

// csiSnapshot describes a snapshot LocalVolume: size_bytes is what a
// restore holds (the origin's size when it was taken).
func csiSnapshot(lv *v1alpha1.LocalVolume) *csi.Snapshot {
	created := lv.CreationTimestamp.Time
	if lv.Status.SnapshotTime != nil {
		created = lv.Status.SnapshotTime.Time
	}
	var size int64
	if lv.Status.RestoreSize != nil {
		size = lv.Status.RestoreSize.Value()
	}
	return &csi.Snapshot{
		SnapshotId:     lv.Name,
		SourceVolumeId: lv.Spec.Source.Volume,
		SizeBytes:      size,
		CreationTime:   timestamppb.New(created),
		ReadyToUse:     lv.Status.Phase == v1alpha1.PhaseReady && lv.Status.SnapshotTime != nil && lv.DeletionTimestamp == nil,
	}
}

// DeleteSnapshot deletes the snapshot LocalVolume and waits until its LV is
// gone. It refuses (FailedPrecondition) while volumes still need it:
// read-only restores (they are the snapshot's LV) and restores being
// filled from it by a block copy (the agent refuses the same). Unknown
// IDs, and IDs of volumes, are already-deleted snapshots.
func (s *Server) DeleteSnapshot(ctx context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	id := req.GetSnapshotId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot_id is required")
	}
	release, err := s.guard.Acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()
	snap, err := s.getSnapshot(ctx, id)
	if status.Code(err) == codes.NotFound {
		return &csi.DeleteSnapshotResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	if snap.DeletionTimestamp == nil {
		users, err := s.restoresNeeding(ctx, snap)
		if err != nil {
			return nil, err
		}
		if len(users) > 0 {
			return nil, status.Errorf(codes.FailedPrecondition, "snapshot %s is still needed by %s: delete them (or wait for their restore to finish) first",
				id, strings.Join(users, ", "))
		}
	}
	if err := s.deleteLocalVolume(ctx, snap); err != nil {
		return nil, err
	}
	klog.FromContext(ctx).Info("Deleted snapshot", "snapshot", id)
	return &csi.DeleteSnapshotResponse{}, nil
}

// restoresNeeding lists the volumes that still need snap, a snapshot
// (read-only restores, restores being filled from it) or a volume (clones
// being filled from it).
func (s *Server) restoresNeeding(ctx context.Context, snap *v1alpha1.LocalVolume) ([]string, error) {
	list, err := s.client.CsiV1alpha1().LocalVolumes().List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", snap.Spec.NodeName).String()})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "list LocalVolumes of node %s: %v", snap.Spec.NodeName, err)
	}
	var users []string
	for _, v := range list.Items {
		if v.Spec.Source == nil || v.Spec.Kind == v1alpha1.KindSnapshot ||
			(v.Spec.Source.Snapshot != snap.Name && v.Spec.Source.Volume != snap.Name) {
			continue
		}
		if v.Spec.IsReadOnlyRestore() {
			users = append(users, v.Name+" (a read-only restore)")
		} else if c := v.Status.Copy; c != nil && c.CompletionTime == nil && v.DeletionTimestamp == nil {
			users = append(users, v.Name+" (being filled from it)")
		}
	}
	sort.Strings(users)
	return users, nil
}

// snapshotsOf lists the snapshots of volume vol (on its node).
func (s *Server) snapshotsOf(ctx context.Context, vol *v1alpha1.LocalVolume) ([]v1alpha1.LocalVolume, error) {
	list, err := s.client.CsiV1alpha1().LocalVolumes().List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", vol.Spec.NodeName).String()})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "list LocalVolumes of node %s: %v", vol.Spec.NodeName, err)
	}
	var out []v1alpha1.LocalVolume
	for _, v := range list.Items {
		if v.Spec.Kind == v1alpha1.KindSnapshot && v.Spec.Source != nil && v.Spec.Source.Volume == vol.Name {
			out = append(out, v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// classicSnapshots names the copy-on-write snapshots among snaps: they
// need their origin (thin snapshots are volumes of their own).
func classicSnapshots(snaps []v1alpha1.LocalVolume) []string {
	var names []string
	for _, v := range snaps {
		if v.Spec.ThinPool == "" {
			names = append(names, v.Name)
		}
	}
	return names
}

// ListSnapshots lists snapshot LocalVolumes by name, optionally one
// snapshot or the snapshots of one volume; starting_token is the name to
// continue from.
func (s *Server) ListSnapshots(ctx context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	if req.GetMaxEntries() < 0 {
		return nil, status.Error(codes.InvalidArgument, "max_entries must not be negative")
	}
	var snaps []v1alpha1.LocalVolume
	if id := req.GetSnapshotId(); id != "" {
		snap, err := s.getSnapshot(ctx, id)
		if status.Code(err) == codes.NotFound {
			return &csi.ListSnapshotsResponse{}, nil
		}
		if err != nil {
			return nil, err
		}
		snaps = append(snaps, *snap)
	} else {
		list, err := s.client.CsiV1alpha1().LocalVolumes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "list LocalVolumes: %v", err)
		}
		for _, v := range list.Items {
			if v.Spec.Kind == v1alpha1.KindSnapshot {
				snaps = append(snaps, v)
			}
		}
	}
	var entries []*csi.ListSnapshotsResponse_Entry
	for i := range snaps {
		if src := req.GetSourceVolumeId(); src != "" && (snaps[i].Spec.Source == nil || snaps[i].Spec.Source.Volume != src) {
			continue
		}
		entries = append(entries, &csi.ListSnapshotsResponse_Entry{Snapshot: csiSnapshot(&snaps[i])})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Snapshot.SnapshotId < entries[j].Snapshot.SnapshotId })
	if tok := req.GetStartingToken(); tok != "" {
		i := sort.Search(len(entries), func(i int) bool { return entries[i].Snapshot.SnapshotId >= tok })
		entries = entries[i:]
	}
	next := ""
	if n := int(req.GetMaxEntries()); n > 0 && len(entries) > n {
		next = entries[n].Snapshot.SnapshotId
		entries = entries[:n]
	}
	return &csi.ListSnapshotsResponse{Entries: entries, NextToken: next}, nil
}

// GetSnapshot describes one snapshot.
func (s *Server) GetSnapshot(ctx context.Context, req *csi.GetSnapshotRequest) (*csi.GetSnapshotResponse, error) {
	if req.GetSnapshotId() == "" {
		return nil, status.Error(codes.InvalidArgument, "snapshot_id is required")
	}
	snap, err := s.getSnapshot(ctx, req.GetSnapshotId())
	if err != nil {
		return nil, err
	}
	return &csi.GetSnapshotResponse{Snapshot: csiSnapshot(snap)}, nil
}

// restorePlan is a CreateVolume from a snapshot (a restore) or from a
// volume (a clone): where and how large.
type restorePlan struct {
	// origin is the snapshot restored or the volume cloned; the new
	// volume goes on its node and in its VG.
	origin *v1alpha1.LocalVolume
	// size of the new volume: at least what the origin holds.
	size int64
	// readOnly: the volume is a read-only view of the snapshot's LV
	// (snapshots taken with csi.aliyun.com/readonly), of exactly its size.
	readOnly bool
}

// isClone tells a clone (the origin is a volume) from a restore.
func (r *restorePlan) isClone() bool { return r.origin.Spec.Kind != v1alpha1.KindSnapshot }

// source is the LocalVolume source the new volume records.
func (r *restorePlan) source() *v1alpha1.LocalVolumeSource {
	if r.isClone() {
		return &v1alpha1.LocalVolumeSource{Volume: r.origin.Name}
	}
	return &v1alpha1.LocalVolumeSource{Snapshot: r.origin.Name}
}

// String names the origin for messages.
func (r *restorePlan) String() string {
	if r.isClone() {
		return "volume " + r.origin.Name
	}
	return "snapshot " + r.origin.Name
}

// planRestore validates a content source: only Ready snapshots of ours,
// LVM volumes in the snapshot's VG, at least the snapshot's size; volume
// sources are clones (planClone).
func (s *Server) planRestore(ctx context.Context, cs *csi.VolumeContentSource, p parameters.Params, r *csi.CapacityRange, fsType string, block bool) (*restorePlan, error) {
	if cs.GetVolume() != nil {
		return s.planClone(ctx, cs.GetVolume().GetVolumeId(), p, r, fsType, block)
	}
	id := cs.GetSnapshot().GetSnapshotId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_content_source names no snapshot_id")
	}
	snap, err := s.getSnapshot(ctx, id)
	if err != nil {
		return nil, err
	}
	switch {
	case p.VolumeType != v1alpha1.VolumeTypeLVM:
		return nil, status.Errorf(codes.InvalidArgument, "a %s volume cannot be restored from a snapshot (LVM only)", p.VolumeType)
	case p.VGName != "" && p.VGName != snap.Spec.VGName:
		return nil, status.Errorf(codes.InvalidArgument, "StorageClass vgName %s differs from VG %s of snapshot %s: a restore stays in its snapshot's VG", p.VGName, snap.Spec.VGName, id)
	case snap.DeletionTimestamp != nil:
		return nil, status.Errorf(codes.FailedPrecondition, "snapshot %s is being deleted", id)
	case snap.Status.Phase == v1alpha1.PhaseFailed && snap.Status.SnapshotTime != nil:
		return nil, status.Errorf(codes.FailedPrecondition, "snapshot %s cannot be restored: %s", id, snap.Status.Message)
	case snap.Status.Phase != v1alpha1.PhaseReady || snap.Status.RestoreSize == nil:
		return nil, status.Errorf(codes.Unavailable, "snapshot %s is not ready to use yet%s", id, awaitvolume.Describe(snap))
	}
	restoreSize := snap.Status.RestoreSize.Value()
	plan := &restorePlan{origin: snap, size: max(r.GetRequiredBytes(), restoreSize), readOnly: snap.Spec.ReadOnly}
	switch req, limit := r.GetRequiredBytes(), r.GetLimitBytes(); {
	case req > 0 && req < restoreSize:
		return nil, status.Errorf(codes.OutOfRange, "required_bytes %d is smaller than snapshot %s (%d bytes): a restore is at least as large as its snapshot", req, id, restoreSize)
	case limit > 0 && limit < restoreSize:
		return nil, status.Errorf(codes.OutOfRange, "limit_bytes %d is smaller than snapshot %s (%d bytes)", limit, id, restoreSize)
	case plan.readOnly && req > restoreSize:
		return nil, status.Errorf(codes.OutOfRange, "snapshot %s is read-only (csi.aliyun.com/readonly): its restores are views of exactly %d bytes, not %d; request that size, or restore from a snapshot taken without csi.aliyun.com/readonly for a writable copy", id, restoreSize, req)
	}
	return plan, nil
}

// createRestore writes the LocalVolume of a restore on its snapshot's node
// and VG: a read-only view (no space of its own), or a new volume, thick or
// thin in p.ThinPool, checked for room as the scheduler counts it.
func (s *Server) createRestore(ctx context.Context, id, node string, r *restorePlan, p parameters.Params, claim *v1alpha1.ObjectReference) (*v1alpha1.LocalVolume, error) {
	snap := r.origin
	if node != "" && node != snap.Spec.NodeName {
		// csi-provisioner reschedules on ResourceExhausted (the CSI spec's
		// code for "cannot provision in accessible_topology"); our
		// scheduler places restores and clones on their origin's node in
		// the first place.
		return nil, status.Errorf(codes.ResourceExhausted, "%s is on node %s, the volume was asked for on node %s: a restore or clone stays on its origin's node (schedule the pod with open-local-scheduler)",
			r, snap.Spec.NodeName, node)
	}
	s.allocate.Lock()
	defer s.allocate.Unlock()
	spec := v1alpha1.LocalVolumeSpec{
		NodeName:   snap.Spec.NodeName,
		VolumeType: v1alpha1.VolumeTypeLVM,
		Kind:       v1alpha1.KindVolume,
		VGName:     snap.Spec.VGName,
		LVName:     lvNameFor(id),
		Size:       *resource.NewQuantity(r.size, resource.BinarySI),
		LVMType:    p.LVMType,
		Source:     r.source(),
		ReadOnly:   r.readOnly,
		ClaimRef:   claim,
	}
	if !r.readOnly {
		ns, err := s.readNode(ctx, snap.Spec.NodeName)
		if err != nil {
			return nil, err
		}
		if p.ThinPool != "" {
			spec.ThinPool = p.ThinPool
			err = ns.checkPool(s.ledgerOf(ns), snap.Spec.VGName, p.ThinPool, r.size, "volume "+id)
		} else {
			err = ns.checkVG(s.ledgerOf(ns), snap.Spec.VGName, r.size, "volume "+id)
		}
		if err != nil {
			return nil, err
		}
	}
	lv, err := s.persist(ctx, &v1alpha1.LocalVolume{
		ObjectMeta: metav1.ObjectMeta{Name: id, Finalizers: []string{v1alpha1.LocalVolumeFinalizer}},
		Spec:       spec,
	})
	if err != nil {
		return nil, err
	}
	klog.FromContext(ctx).Info("Placed restore", "volume", id, "from", r.String(), "node", spec.NodeName, "readOnly", r.readOnly, "thinPool", spec.ThinPool, "size", spec.Size.String())
	return lv, nil
}

// errSnapshotsPrecondition explains why a volume with classic snapshots
// cannot be deleted or expanded.
func errSnapshotsPrecondition(vol *v1alpha1.LocalVolume, what string, snaps []string) error {
	return status.Errorf(codes.FailedPrecondition, "volume %s has copy-on-write snapshots %s, which need it unchanged: delete those VolumeSnapshots before you %s it",
		vol.Name, strings.Join(snaps, ", "), what)
}
