/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package node

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/csi/node/iolimit"
)

// setIOLimits enforces the volume's bps/iops (StorageClass parameters in
// the volume context, or inline attributes) on the device behind target,
// in the cgroup of the pod kubelet names in the volume context. A volume
// without limits clears any an earlier publication to target left.
func (s *Server) setIOLimits(ctx context.Context, id, target string, volumeContext map[string]string) error {
	lim, err := parameters.ParseIOLimits(volumeContext)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "volume %s: %v", id, err)
	}
	if lim == (parameters.IOLimits{}) {
		return s.clearIOLimits(ctx, id, target)
	}
	if s.opts.IOLimits == nil {
		return status.Errorf(codes.FailedPrecondition, "volume %s has IO limits (bps %d, iops %d) but this node plugin enforces none (no cgroup access configured)",
			id, lim.BPS, lim.IOPS)
	}
	pod, ok := parameters.PodOf(volumeContext)
	if !ok {
		return status.Errorf(codes.FailedPrecondition, "volume %s has IO limits, which need the pod's UID: kubelet passes %s when the CSIDriver has podInfoOnMount: true",
			id, parameters.PodUID)
	}
	dev, err := iolimit.DeviceOf(target)
	if err != nil {
		return status.Errorf(codes.Internal, "volume %s: device behind %s: %v", id, target, err)
	}
	applied, err := s.opts.IOLimits.Apply(ctx, iolimit.Request{VolumeID: id, TargetPath: target, PodUID: pod.UID, Device: dev,
		Limits: iolimit.Symmetric(uint64(lim.BPS), uint64(lim.IOPS))})
	switch {
	case errors.Is(err, iolimit.ErrNoController), errors.Is(err, iolimit.ErrPodCgroupNotFound):
		return status.Errorf(codes.FailedPrecondition, "volume %s: IO limits for pod %s/%s: %v", id, pod.Namespace, pod.Name, err)
	case err != nil:
		return status.Errorf(codes.Internal, "volume %s: IO limits for pod %s/%s: %v", id, pod.Namespace, pod.Name, err)
	}
	klog.FromContext(ctx).Info("Set IO limits", "volume", id, "pod", klog.KRef(pod.Namespace, pod.Name), "device", dev,
		"bps", lim.BPS, "iops", lim.IOPS, "cgroup", applied.Cgroup, "cgroupVersion", applied.Version)
	return nil
}

// clearIOLimits removes what setIOLimits set for target.
func (s *Server) clearIOLimits(ctx context.Context, id, target string) error {
	if s.opts.IOLimits == nil {
		return nil
	}
	if err := s.opts.IOLimits.Remove(ctx, target); err != nil {
		return status.Errorf(codes.Internal, "volume %s: remove IO limits of %s: %v", id, target, err)
	}
	return nil
}
