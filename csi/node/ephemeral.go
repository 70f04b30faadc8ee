/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package node

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/klog/v2"

	"github.com/open-local/open-local/apis/storage/awaitvolume"
	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// DefaultInlineReadyTimeout bounds NodePublishVolume's wait for the agent to
// create an inline volume's LV (kubelet gives NodePublishVolume 2 min and
// retries; a later call finds the LocalVolume and waits again).
const DefaultInlineReadyTimeout = 90 * time.Second

// publishEphemeral publishes a CSI ephemeral inline volume: kubelet calls
// NodePublishVolume only (no staging), with the volume handle
// v1alpha1.InlineVolumeName (csi-<sha256(podUID+volumeName)>) as volume ID, the pod's volumeAttributes
// and podInfoOnMount keys. The LocalVolume of that name is created here
// (the scheduler counts the volume from the bound pod and writes none; one
// an older scheduler's PreBind wrote is used as is); once the agent made
// its LV, it is formatted and mounted at the target. NodeUnpublishVolume deletes it (releaseInline).
func (s *Server) publishEphemeral(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	id, target, vc := req.GetVolumeId(), req.GetTargetPath(), req.GetVolumeCapability()
	if vc.GetMount() == nil {
		return nil, status.Errorf(codes.InvalidArgument, "inline volume %s: only filesystem access is possible for CSI inline volumes", id)
	}
	if len(validation.IsDNS1123Subdomain(id)) > 0 {
		return nil, status.Errorf(codes.InvalidArgument, "inline volume ID %q is not a valid LocalVolume name (kubelet's handles are csi-<sha256>)", id)
	}
	attrs, err := parameters.ParseInline(req.GetVolumeContext(), s.opts.DefaultInlineSize)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "inline volume %s: %v", id, err)
	}
	pod, ok := parameters.PodOf(req.GetVolumeContext())
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "inline volume %s: the volume context lacks the pod (%s, %s, %s): the CSIDriver needs podInfoOnMount: true",
			id, parameters.PodNamespace, parameters.PodName, parameters.PodUID)
	}
	fsName := vc.GetMount().GetFsType()
	if fsName == "" {
		fsName = attrs.FSType
	}
	fsType, err := parameters.ParseFSType(fsName)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "inline volume %s: %v", id, err)
	}
	release, err := s.guard.Acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()

	lv, err := s.inlineVolume(ctx, id, attrs, pod)
	if err != nil {
		return nil, err
	}
	dev, err := s.device(ctx, lv)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Errorf(codes.Internal, "create target path %s: %v", target, err)
	}
	mounted, err := s.mountedDevice(target)
	if err != nil {
		return nil, err
	}
	ro := req.GetReadonly() || readOnly(vc)
	justMounted := false
	switch {
	case mounted != "" && !sameDevice(mounted, dev):
		return nil, status.Errorf(codes.AlreadyExists, "target path %s holds %s, not inline volume %s (%s)", target, mounted, id, dev)
	case mounted == "":
		opts := slices.Clone(vc.GetMount().GetMountFlags())
		if fsType == "xfs" && !slices.Contains(opts, "nouuid") {
			opts = append(opts, "nouuid")
		}
		if ro {
			opts = append(opts, "ro")
		}
		if err := s.mounter.FormatAndMount(dev, target, fsType, opts); err != nil {
			return nil, status.Errorf(codes.Internal, "format and mount inline volume %s (%s, %s) at %s: %v", id, dev, fsType, target, err)
		}
		justMounted = true
	}
	if err := s.setIOLimits(ctx, id, target, req.GetVolumeContext()); err != nil {
		if justMounted {
			s.undoMount(ctx, target)
		}
		return nil, err
	}
	klog.FromContext(ctx).Info("Published inline volume", "volume", id, "pod", klog.KRef(pod.Namespace, pod.Name), "vg", lv.Spec.VGName,
		"size", lv.Spec.Size.String(), "device", dev, "fsType", fsType, "target", target, "readOnly", ro)
	return &csi.NodePublishVolumeResponse{}, nil
}

// inlineVolume returns the inline volume's LocalVolume once its LV exists,
// creating the record if it does not exist yet.
func (s *Server) inlineVolume(ctx context.Context, id string, attrs parameters.Inline, pod parameters.Pod) (*v1alpha1.LocalVolume, error) {
	lv, err := s.opts.Client.CsiV1alpha1().LocalVolumes().Get(ctx, id, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		if lv, err = s.createInline(ctx, id, attrs, pod); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "get LocalVolume %s: %v", id, err)
	}
	switch {
	case lv.Spec.NodeName != s.opts.NodeID:
		return nil, status.Errorf(codes.FailedPrecondition, "inline volume %s of pod %s/%s is allocated on node %s, not on %s",
			id, pod.Namespace, pod.Name, lv.Spec.NodeName, s.opts.NodeID)
	case lv.Spec.PodRef == nil || lv.Spec.PodRef.UID != pod.UID:
		return nil, status.Errorf(codes.FailedPrecondition, "LocalVolume %s is not the inline volume of pod %s/%s (uid %s)", id, pod.Namespace, pod.Name, pod.UID)
	}
	return s.waitReady(ctx, lv)
}

// createInline writes the LocalVolume of an inline volume on this node,
// after checking that the VG has room with the scheduler's ledger over this
// node's NodeLocalStorage and LocalVolumes (whole extents, as LVM allocates).
// Without a vgName attribute it chooses the VG by the ledger's binpack rule,
// the scheduler's default (the scheduler writes no record for inline
// volumes; it counts them from the pod and defers to this LocalVolume once
// it exists). Creations here are serialised so they never spend the same
// space twice.
func (s *Server) createInline(ctx context.Context, id string, attrs parameters.Inline, pod parameters.Pod) (*v1alpha1.LocalVolume, error) {
	s.createMu.Lock()
	defer s.createMu.Unlock()
	nls, err := s.opts.Client.CsiV1alpha1().NodeLocalStorages().Get(ctx, s.opts.NodeID, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s has no NodeLocalStorage: is the open-local agent running there?", s.opts.NodeID)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "get NodeLocalStorage %s: %v", s.opts.NodeID, err)
	}
	if attrs.VGName != "" && !slices.Contains(nls.Status.FilteredStorageInfo.VolumeGroups, attrs.VGName) {
		return nil, status.Errorf(codes.InvalidArgument, "inline volume %s: VG %s is not one of open-local's VGs on node %s (have: %v)",
			id, attrs.VGName, s.opts.NodeID, nls.Status.FilteredStorageInfo.VolumeGroups)
	}
	list, err := s.opts.Client.CsiV1alpha1().LocalVolumes().List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", s.opts.NodeID).String()})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "list LocalVolumes of node %s: %v", s.opts.NodeID, err)
	}
	// A one-node ledger: the scheduler's and the CSI controller's rules
	// (whole extents, striping, snapshots' copy-on-write space, thin pools).
	volumes := make([]*v1alpha1.LocalVolume, len(list.Items))
	for i := range list.Items {
		volumes[i] = &list.Items[i]
	}
	l := ledger.ForNode(s.opts.NodeID, nls, volumes)
	want := ledger.Volume{Name: id, Desc: fmt.Sprintf("inline volume %s of pod %s/%s", id, pod.Namespace, pod.Name),
		Type: v1alpha1.VolumeTypeLVM, VG: attrs.VGName, Size: attrs.Size}
	placed, sf := l.Place(s.opts.NodeID, want, s.opts.InlineStrategy)
	if sf != nil {
		code := codes.FailedPrecondition // the node's storage is not usable (a fault, a silent agent)
		if sf.Kind == ledger.VGFull || sf.Kind == ledger.NoVGFits {
			code = codes.ResourceExhausted
		}
		return nil, status.Errorf(code, "%s: %s", want.Desc, sf.Detail())
	}
	lv := v1alpha1.InlineLocalVolume(id, s.opts.NodeID, placed.VG, attrs.Size,
		v1alpha1.ObjectReference{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID})
	created, err := s.opts.Client.CsiV1alpha1().LocalVolumes().Create(ctx, lv, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// Another publish of the same volume (or an older scheduler's PreBind) was first: use its record.
		created, err = s.opts.Client.CsiV1alpha1().LocalVolumes().Get(ctx, id, metav1.GetOptions{})
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "create LocalVolume %s: %v", id, err)
	}
	klog.FromContext(ctx).Info("Allocated inline volume on this node", "volume", id, "pod", klog.KRef(pod.Namespace, pod.Name),
		"vg", placed.VG, "size", bytes(attrs.Size))
	return created, nil
}

func bytes(n int64) string { return resource.NewQuantity(n, resource.BinarySI).String() }

// waitReady waits until the agent reports lv's LV created at its size.
func (s *Server) waitReady(ctx context.Context, lv *v1alpha1.LocalVolume) (*v1alpha1.LocalVolume, error) {
	timeout := s.opts.InlineReadyTimeout
	if timeout <= 0 {
		timeout = DefaultInlineReadyTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return awaitvolume.Ready(ctx, s.opts.Client, lv.Name)
}

// releaseInline deletes the LocalVolume of an inline volume after its
// unpublish (the agent then removes the LV). Volumes of PVCs, of other
// nodes, or unknown are left alone.
func (s *Server) releaseInline(ctx context.Context, id string) error {
	if len(validation.IsDNS1123Subdomain(id)) > 0 {
		return nil
	}
	lvs := s.opts.Client.CsiV1alpha1().LocalVolumes()
	lv, err := lvs.Get(ctx, id, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return status.Errorf(codes.Unavailable, "get LocalVolume %s: %v", id, err)
	}
	if lv.Spec.PodRef == nil || lv.Spec.ClaimRef != nil || lv.Spec.NodeName != s.opts.NodeID || lv.DeletionTimestamp != nil {
		return nil
	}
	if lv.Spec.VolumeType == v1alpha1.VolumeTypeLVM {
		if err := s.opts.Activator.Deactivate(ctx, lv.Spec.VGName, lv.LVName()); err != nil {
			return status.Errorf(codes.Internal, "release LV %s/%s of inline volume %s: %v", lv.Spec.VGName, lv.LVName(), id, err)
		}
	}
	err = lvs.Delete(ctx, id, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &lv.UID}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return status.Errorf(codes.Unavailable, "delete LocalVolume %s: %v", id, err)
	}
	klog.FromContext(ctx).Info("Released inline volume", "volume", id, "pod", klog.KRef(lv.Spec.PodRef.Namespace, lv.Spec.PodRef.Name))
	return nil
}

// undoMount unmounts a target this call mounted, when a later step failed,
// so that a failed NodePublishVolume leaves nothing behind.
func (s *Server) undoMount(ctx context.Context, target string) {
	if err := s.mounter.Unmount(target); err != nil {
		klog.FromContext(ctx).Error(err, "Undoing the mount of a failed publish", "target", target)
	}
}
