/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package controller

import (
	"context"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-local/open-local/apis/storage/awaitvolume"
	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// planClone validates a volume content source (CLONE_VOLUME): a Ready LVM
// volume of ours with an LV of its own, the clone in its VG, at least its
// size, in its volume mode. The codes are the CSI spec's for CreateVolume:
// NotFound for a source that does not exist, InvalidArgument for one that
// is incompatible, OutOfRange for a capacity below the source's. Where the
// clone goes and what it takes is createRestore's (the same path as a
// writable restore: the agent makes a thin snapshot when source and clone
// share a thin pool, else a new LV filled by the restore's block copy).
func (s *Server) planClone(ctx context.Context, id string, p parameters.Params, r *csi.CapacityRange, fsType string, block bool) (*restorePlan, error) {
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_content_source names no volume_id")
	}
	src, err := s.getVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	switch {
	case src.Spec.Kind == v1alpha1.KindSnapshot:
		return nil, status.Errorf(codes.NotFound, "source volume %s not found (%s is a snapshot: name it as a snapshot source)", id, id)
	case p.VolumeType != v1alpha1.VolumeTypeLVM:
		return nil, status.Errorf(codes.InvalidArgument, "a %s volume cannot be a clone (LVM only)", p.VolumeType)
	case src.Spec.VolumeType != v1alpha1.VolumeTypeLVM:
		return nil, status.Errorf(codes.InvalidArgument, "volume %s is a whole device (%s): only LVM volumes can be cloned", id, src.Spec.Device)
	case src.Spec.IsReadOnlyRestore():
		return nil, status.Errorf(codes.InvalidArgument, "volume %s is a read-only view of snapshot %s: restore that snapshot instead of cloning the view", id, src.Spec.Source.Snapshot)
	case p.VGName != "" && p.VGName != src.Spec.VGName:
		return nil, status.Errorf(codes.InvalidArgument, "StorageClass vgName %s differs from VG %s of volume %s: a clone stays in its source's VG", p.VGName, src.Spec.VGName, id)
	case src.DeletionTimestamp != nil:
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is being deleted", id)
	case src.Status.Phase != v1alpha1.PhaseReady || src.Status.CurrentSize == nil:
		return nil, status.Errorf(codes.Unavailable, "volume %s is not ready yet%s", id, awaitvolume.Describe(src))
	}
	// The source's requested size: its LV (extent-rounded) holds no more
	// than a clone of that size gets in the same VG.
	srcSize := src.Spec.Size.Value()
	switch req, limit := r.GetRequiredBytes(), r.GetLimitBytes(); {
	case req > 0 && req < srcSize:
		return nil, status.Errorf(codes.OutOfRange, "required_bytes %d is smaller than source volume %s (%d bytes): a clone is at least as large as its source", req, id, srcSize)
	case limit > 0 && limit < src.Status.CurrentSize.Value():
		return nil, status.Errorf(codes.OutOfRange, "limit_bytes %d is smaller than source volume %s (%d bytes)", limit, id, src.Status.CurrentSize.Value())
	}
	if err := s.checkCloneMode(ctx, src, fsType, block); err != nil {
		return nil, err
	}
	return &restorePlan{origin: src, size: max(r.GetRequiredBytes(), srcSize)}, nil
}

// checkCloneMode refuses a clone in another volume mode than its source's
// (a filesystem read as a raw device, or a raw device's bytes mounted), or
// with another filesystem type. What the source is used as is recorded in
// its PV (volumeMode, and the fsType CreateVolume put in its volume
// context); a source without a claim (made outside Kubernetes, e.g. by
// csi-sanity) has no record, and its caller answers for the mode.
func (s *Server) checkCloneMode(ctx context.Context, src *v1alpha1.LocalVolume, fsType string, block bool) error {
	ref := src.Spec.ClaimRef
	if ref == nil {
		return nil
	}
	pvc, err := s.kube.CoreV1().PersistentVolumeClaims(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return status.Errorf(codes.Unavailable, "get PVC %s/%s of volume %s: %v", ref.Namespace, ref.Name, src.Name, err)
	case ref.UID != "" && pvc.UID != ref.UID, pvc.Spec.VolumeName == "":
		return nil
	}
	pv, err := s.kube.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return status.Errorf(codes.Unavailable, "get PV %s of volume %s: %v", pvc.Spec.VolumeName, src.Name, err)
	}
	srcBlock := pv.Spec.VolumeMode != nil && *pv.Spec.VolumeMode == corev1.PersistentVolumeBlock
	mode := func(b bool) string {
		if b {
			return "Block"
		}
		return "Filesystem"
	}
	if srcBlock != block {
		return status.Errorf(codes.InvalidArgument, "volume %s (PVC %s/%s) has volumeMode %s, the clone asks for %s: a clone keeps its source's volume mode",
			src.Name, ref.Namespace, ref.Name, mode(srcBlock), mode(block))
	}
	if !block && pv.Spec.CSI != nil {
		if have := pv.Spec.CSI.VolumeAttributes[parameters.ContextFSType]; have != "" && have != fsType {
			return status.Errorf(codes.InvalidArgument, "volume %s (PVC %s/%s) holds a %s filesystem, the clone asks for %s: a clone keeps its source's filesystem (use a StorageClass with fsType %s)",
				src.Name, ref.Namespace, ref.Name, have, fsType, have)
		}
	}
	return nil
}
