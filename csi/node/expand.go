/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// NodeExpandVolume grows the filesystem of a published volume to its LV's
// new size (after the controller's lvextend). Block volumes need only the
// device to show the new size.
func (s *Server) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	id, path := req.GetVolumeId(), req.GetVolumePath()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	case path == "":
		return nil, status.Error(codes.InvalidArgument, "volume_path is required")
	}
	if c := req.GetVolumeCapability(); c != nil {
		if err := checkCapability(c); err != nil {
			return nil, err
		}
	}
	release, err := s.guard.Acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()
	lv, err := s.volume(ctx, id)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.NotFound, "volume path %s does not exist", path)
	}
	dev, err := s.device(ctx, lv)
	if err != nil {
		return nil, err
	}
	size, err := blockSize(dev)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "size of %s: %v", dev, err)
	}
	if req.GetCapacityRange().GetRequiredBytes() > size {
		return nil, status.Errorf(codes.FailedPrecondition, "device %s has %d bytes, less than the %d requested: the LV was not extended yet", dev, size, req.GetCapacityRange().GetRequiredBytes())
	}
	if blk, err := isBlockDevice(path); err == nil && blk || req.GetVolumeCapability().GetBlock() != nil {
		return &csi.NodeExpandVolumeResponse{CapacityBytes: size}, nil
	}
	// Grow through the staging mount when known (the filesystem's home);
	// the published bind mount works as well.
	mnt := path
	if st := req.GetStagingTargetPath(); st != "" {
		if m, err := s.mountedDevice(st); err == nil && m != "" {
			mnt = st
		}
	}
	mounted, err := s.mountedDevice(mnt)
	if err != nil {
		return nil, err
	}
	if mounted == "" {
		return nil, status.Errorf(codes.NotFound, "volume %s is not mounted at %s", id, mnt)
	}
	if !sameDevice(mounted, dev) {
		return nil, status.Errorf(codes.FailedPrecondition, "%s holds %s, not volume %s (%s)", mnt, mounted, id, dev)
	}
	format, err := s.mounter.GetDiskFormat(dev)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "probe filesystem on %s: %v", dev, err)
	}
	if strings.HasPrefix(format, "ext") && !s.online {
		need, err := s.resizer.NeedResize(dev, mnt)
		if err == nil && !need {
			return &csi.NodeExpandVolumeResponse{CapacityBytes: size}, nil
		}
		return nil, status.Errorf(codes.FailedPrecondition,
			"growing mounted %s on %s needs CAP_SYS_RESOURCE, which this process lacks: the filesystem is grown offline when the volume is next staged", format, dev)
	}
	if err := s.resize(dev, mnt); err != nil {
		return nil, err
	}
	klog.FromContext(ctx).Info("Expanded filesystem", "volume", id, "device", dev, "size", size, "path", mnt)
	return &csi.NodeExpandVolumeResponse{CapacityBytes: size}, nil
}

// NodeGetVolumeStats reports bytes and inodes of a mounted volume, or the
// bytes of a block volume.
func (s *Server) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	id, path := req.GetVolumeId(), req.GetVolumePath()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	case path == "":
		return nil, status.Error(codes.InvalidArgument, "volume_path is required")
	}
	if _, err := s.volume(ctx, id); err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.NotFound, "volume path %s does not exist", path)
	}
	if blk, _ := isBlockDevice(path); blk {
		size, err := blockSize(path)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "size of block volume at %s: %v", path, err)
		}
		return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{{Unit: csi.VolumeUsage_BYTES, Total: size}}}, nil
	}
	if mounted, err := s.mountedDevice(path); err != nil {
		return nil, err
	} else if mounted == "" {
		return nil, status.Errorf(codes.NotFound, "volume %s is not mounted at %s", id, path)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return nil, status.Errorf(codes.Internal, "statfs %s: %v", path, err)
	}
	bsize := fs.Bsize
	return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: int64(fs.Blocks) * bsize, Available: int64(fs.Bavail) * bsize,
			Used: int64(fs.Blocks-fs.Bfree) * bsize},
		{Unit: csi.VolumeUsage_INODES, Total: int64(fs.Files), Available: int64(fs.Ffree), Used: int64(fs.Files - fs.Ffree)},
	}}, nil
}

// Reasons of volume health entries.
const (
	HealthAgentFailed   = "NodeAgentFailed"
	HealthDeviceMissing = "DeviceMissing"
	HealthNotMounted    = "NotMounted"
	HealthUnreadable    = "Unreadable"
)

// NodeGetVolumeHealth reports what is wrong with a volume on this node (an
// empty list: nothing known): the node agent's failure, a device that is
// gone, a staging or publish path that lost its mount, a filesystem that
// cannot be read.
func (s *Server) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	lv, err := s.volume(ctx, id)
	if err != nil {
		return nil, err
	}
	h := &csi.VolumeHealth{VolumeId: id}
	add := func(st csi.VolumeHealthErrorType, reason, msg string) {
		h.HealthStatuses = append(h.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{Status: st, Reason: reason, Message: msg})
	}
	if lv.Status.Phase == v1alpha1.PhaseFailed {
		add(csi.VolumeHealthErrorType_DEGRADED, HealthAgentFailed, fmt.Sprintf("node agent reports %s: %s", lv.Status.Code, lv.Status.Message))
	}
	var dev string
	if lv.Spec.VolumeType == v1alpha1.VolumeTypeDevice {
		dev = lv.Spec.Device
	} else if lv.Status.DevicePath != "" {
		dev = lv.Status.DevicePath
	}
	// A block volume's publish path is the device itself and its staging
	// path a plain directory; everything else must be a live mount.
	block := false
	if p := req.GetVolumePublishPath(); p != "" {
		block, _ = isBlockDevice(p)
	}
	for _, p := range []string{req.GetStagingTargetPath(), req.GetVolumePublishPath()} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			add(csi.VolumeHealthErrorType_INACCESSIBLE, HealthNotMounted, fmt.Sprintf("%s: %v", p, err))
			continue
		}
		if block {
			continue
		}
		mounted, err := s.mountedDevice(p)
		switch {
		case err != nil:
			add(csi.VolumeHealthErrorType_INACCESSIBLE, HealthUnreadable, status.Convert(err).Message())
		case mounted == "":
			add(csi.VolumeHealthErrorType_INACCESSIBLE, HealthNotMounted, p+" is not mounted")
		default:
			dev = mounted
			var fs unix.Statfs_t
			if err := unix.Statfs(p, &fs); err != nil {
				add(csi.VolumeHealthErrorType_INACCESSIBLE, HealthUnreadable, fmt.Sprintf("statfs %s: %v", p, err))
			}
		}
	}
	if dev != "" {
		if _, err := os.Stat(dev); err != nil {
			add(csi.VolumeHealthErrorType_INACCESSIBLE, HealthDeviceMissing, fmt.Sprintf("device %s is gone: %v", dev, err))
		}
	}
	return &csi.NodeGetVolumeHealthResponse{VolumeHealth: h}, nil
}

// capSysResource is CAP_SYS_RESOURCE's bit in linux/capability.h.
const capSysResource = 24

// hasCapSysResource reads the effective capability set of this process:
// resize2fs of a mounted ext filesystem fails with EPERM without it.
func hasCapSysResource() bool {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<capSysResource) != 0
		}
	}
	return false
}
