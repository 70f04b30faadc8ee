/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package node is the CSI Node service: it resolves a volume ID to its
// LocalVolume, the LocalVolume to a block device (through the LVM layer's
// Activator for LVs, or the whole device), and stages (format + mount),
// publishes (bind mount; raw block: the device bind-mounted onto a file),
// expands and reports stats.
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"
	utilexec "k8s.io/utils/exec"

	"github.com/open-local/open-local/apis/client/clientset/versioned"
	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/blockdev"
	"github.com/open-local/open-local/csi/inflight"
	"github.com/open-local/open-local/csi/node/iolimit"
)

// Activator resolves an LV to a block device on this node.
type Activator interface {
	// Activate returns the block device of vg/lv, making it available if
	// needed. It is idempotent, and the device it returns has the LV's
	// current size (after an lvextend, activating again grows it).
	Activate(ctx context.Context, vg, lv string) (string, error)
	// Deactivate releases what Activate set up, if anything. Idempotent.
	Deactivate(ctx context.Context, vg, lv string) error
}

// Options configure the Node service.
type Options struct {
	// NodeID is this node's name: the CSI node ID and the topology value.
	NodeID string
	// MaxVolumes is reported as max_volumes_per_node (0: no limit).
	MaxVolumes int64
	Client     versioned.Interface
	Activator  Activator
	// Mounter formats and mounts; Exec runs fsck/resize tools. Both
	// default to the real ones (mount-utils, k8s.io/utils/exec).
	Mounter *mount.SafeFormatAndMount
	// OnlineExtResize says whether resize2fs can grow a mounted ext
	// filesystem here (it needs CAP_SYS_RESOURCE); default: detected.
	OnlineExtResize *bool
	// IOLimits enforces bps/iops in the pod's cgroup at publish. Nil: a
	// volume with limits fails to publish (FailedPrecondition).
	IOLimits *iolimit.Manager
	// InlineReadyTimeout bounds the wait for the agent to create an inline
	// volume's LV (default DefaultInlineReadyTimeout).
	InlineReadyTimeout time.Duration
	// InlineStrategy chooses the VG of an inline volume whose attributes
	// name none, and DefaultInlineSize is the size of one without a size
	// (0: parameters.DefaultInlineSize): the scheduler's strategy and
	// defaultInlineVolumeSize, so the node spends what the scheduler
	// counted from the pod.
	InlineStrategy    ledger.Strategy
	DefaultInlineSize int64
	// Sysfs is where sysfs is mounted (default /sys): a Device volume's
	// disk is found by its identity there.
	Sysfs string
}

// Server implements csi.NodeServer.
type Server struct {
	csi.UnimplementedNodeServer
	opts    Options
	mounter *mount.SafeFormatAndMount
	resizer *mount.ResizeFs
	exec    utilexec.Interface
	guard   *inflight.Guard
	online  bool
	// createMu serialises inline volumes allocated by this node.
	createMu sync.Mutex
}

// New returns the Node service.
func New(opts Options) (*Server, error) {
	if opts.NodeID == "" || opts.Client == nil || opts.Activator == nil {
		return nil, errors.New("node: NodeID, Client and Activator are required")
	}
	m := opts.Mounter
	if m == nil {
		m = mount.NewSafeFormatAndMount(mount.NewWithoutSystemd(""), utilexec.New())
	}
	if opts.DefaultInlineSize == 0 {
		opts.DefaultInlineSize = parameters.DefaultInlineSize
	}
	online := hasCapSysResource()
	if opts.OnlineExtResize != nil {
		online = *opts.OnlineExtResize
	}
	return &Server{opts: opts, mounter: m, resizer: mount.NewResizeFs(m.Exec), exec: m.Exec, guard: inflight.New(), online: online}, nil
}

// NodeGetInfo: the node name, its topology segment and the volume limit.
func (s *Server) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{
		NodeId:             s.opts.NodeID,
		MaxVolumesPerNode:  s.opts.MaxVolumes,
		AccessibleTopology: &csi.Topology{Segments: map[string]string{parameters.TopologyKey: s.opts.NodeID}},
	}, nil
}

// NodeGetCapabilities: stage/unstage, expand, stats and volume health.
func (s *Server) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	var caps []*csi.NodeServiceCapability
	for _, t := range []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
	} {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: t}}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// volume returns the LocalVolume of id, which must be on this node and have
// been created by its agent.
func (s *Server) volume(ctx context.Context, id string) (*v1alpha1.LocalVolume, error) {
	if len(validation.IsDNS1123Subdomain(id)) > 0 {
		return nil, status.Errorf(codes.NotFound, "volume %s not found (not a LocalVolume name)", id)
	}
	lv, err := s.opts.Client.CsiV1alpha1().LocalVolumes().Get(ctx, id, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, status.Errorf(codes.NotFound, "volume %s not found", id)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "get LocalVolume %s: %v", id, err)
	}
	if lv.Spec.NodeName != s.opts.NodeID {
		return nil, status.Errorf(codes.NotFound, "volume %s is on node %s, not on %s", id, lv.Spec.NodeName, s.opts.NodeID)
	}
	if lv.Status.CurrentSize == nil {
		return nil, status.Errorf(codes.Unavailable, "volume %s has not been created on node %s yet%s", id, s.opts.NodeID, statusNote(lv))
	}
	return lv, nil
}

func statusNote(lv *v1alpha1.LocalVolume) string {
	if lv.Status.Message == "" {
		return ""
	}
	return fmt.Sprintf(" (%s %s: %s)", lv.Status.Phase, lv.Status.Code, lv.Status.Message)
}

// device returns the volume's block device on this node.
func (s *Server) device(ctx context.Context, lv *v1alpha1.LocalVolume) (string, error) {
	switch lv.Spec.VolumeType {
	case v1alpha1.VolumeTypeDevice:
		// By the identity the agent recorded, never by the kernel name
		// alone: after a reboot or hot-plug that name may be another
		// tenant's disk or the OS disk, which NodeStage would format.
		id := lv.Status.DeviceIdentity
		if id == "" {
			return "", status.Errorf(codes.FailedPrecondition, "volume %s records no identity for its disk %s (the agent records it when it hands the disk out); refusing to use the disk", lv.Name, lv.Spec.Device)
		}
		sysfs := s.opts.Sysfs
		if sysfs == "" {
			sysfs = "/sys"
		}
		dev, err := blockdev.Resolve(sysfs, id)
		if err != nil {
			return "", status.Errorf(codes.FailedPrecondition, "the disk of volume %s (%s, recorded at %s) is not on this node: %v; refusing to use what is at %s now", lv.Name, id, lv.Spec.Device, err, lv.Spec.Device)
		}
		return dev, nil
	case v1alpha1.VolumeTypeLVM:
		vg, name, err := s.dataLV(ctx, lv)
		if err != nil {
			return "", err
		}
		dev, err := s.opts.Activator.Activate(ctx, vg, name)
		if err != nil {
			return "", status.Errorf(codes.Internal, "activate LV %s/%s: %v", vg, name, err)
		}
		return dev, nil
	}
	return "", status.Errorf(codes.FailedPrecondition, "volume %s has unknown volumeType %q", lv.Name, lv.Spec.VolumeType)
}

// dataLV is the LV holding lv's data: its own, or, for a read-only
// restore, its snapshot's LV (docs/localvolume.md), which it shares.
func (s *Server) dataLV(ctx context.Context, lv *v1alpha1.LocalVolume) (vg, name string, err error) {
	if !lv.Spec.IsReadOnlyRestore() {
		return lv.Spec.VGName, lv.LVName(), nil
	}
	snap, err := s.opts.Client.CsiV1alpha1().LocalVolumes().Get(ctx, lv.Spec.Source.Snapshot, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", "", status.Errorf(codes.NotFound, "volume %s is a read-only view of snapshot %s, which is gone", lv.Name, lv.Spec.Source.Snapshot)
	}
	if err != nil {
		return "", "", status.Errorf(codes.Unavailable, "get LocalVolume %s: %v", lv.Spec.Source.Snapshot, err)
	}
	return snap.Spec.VGName, snap.LVName(), nil
}

// checkCapability validates a node-side volume capability.
func checkCapability(c *csi.VolumeCapability) error {
	if c == nil {
		return status.Error(codes.InvalidArgument, "volume_capability is required")
	}
	switch c.GetAccessMode().GetMode() {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY:
	default:
		return status.Errorf(codes.InvalidArgument, "access mode %s is not supported", c.GetAccessMode().GetMode())
	}
	if c.GetBlock() == nil && c.GetMount() == nil {
		return status.Error(codes.InvalidArgument, "access type (block or mount) is required")
	}
	return nil
}

// checkAccessType refuses raw block access to a read-only restore: the
// "ro" bind flag does not stop writes through a device node, and the LV
// is its snapshot's, shared with the snapshot and its other restores. The
// controller refuses it at CreateVolume; this catches volumes created
// before it did, or a capability changed since.
func checkAccessType(lv *v1alpha1.LocalVolume, c *csi.VolumeCapability) error {
	if c.GetBlock() != nil && lv.Spec.IsReadOnlyRestore() {
		return status.Errorf(codes.InvalidArgument, "volume %s is a read-only view of snapshot %s, which cannot be used as a raw block device (a read-only bind mount does not stop writes to a device): use volumeMode Filesystem, or restore from a snapshot taken without csi.aliyun.com/readonly",
			lv.Name, lv.Spec.Source.Snapshot)
	}
	return nil
}

// fsTypeOf is the filesystem to format: the capability's, else the one the
// controller recorded, else the StorageClass's, else ext4.
func fsTypeOf(c *csi.VolumeCapability, volumeContext map[string]string) (string, error) {
	fs := c.GetMount().GetFsType()
	for _, k := range []string{parameters.ContextFSType, parameters.FSType} {
		if fs == "" {
			fs = volumeContext[k]
		}
	}
	fs, err := parameters.ParseFSType(fs)
	if err != nil {
		return "", status.Error(codes.InvalidArgument, err.Error())
	}
	return fs, nil
}

func readOnly(c *csi.VolumeCapability) bool {
	return c.GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
}

// NodeStageVolume formats (if blank) and mounts a filesystem volume at the
// staging path; a block volume only gets its device activated.
func (s *Server) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	id, staging := req.GetVolumeId(), req.GetStagingTargetPath()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	case staging == "":
		return nil, status.Error(codes.InvalidArgument, "staging_target_path is required")
	}
	if err := checkCapability(req.GetVolumeCapability()); err != nil {
		return nil, err
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
	if err := checkAccessType(lv, req.GetVolumeCapability()); err != nil {
		return nil, err
	}
	dev, err := s.device(ctx, lv)
	if err != nil {
		return nil, err
	}
	if req.GetVolumeCapability().GetBlock() != nil {
		return &csi.NodeStageVolumeResponse{}, nil
	}
	fsType, err := fsTypeOf(req.GetVolumeCapability(), req.GetVolumeContext())
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(staging, 0o750); err != nil {
		return nil, status.Errorf(codes.Internal, "create staging path %s: %v", staging, err)
	}
	mounted, err := s.mountedDevice(staging)
	if err != nil {
		return nil, err
	}
	if mounted != "" {
		if !sameDevice(mounted, dev) {
			return nil, status.Errorf(codes.AlreadyExists, "staging path %s holds %s, not volume %s (%s)", staging, describePath(mounted), id, dev)
		}
		return &csi.NodeStageVolumeResponse{}, nil
	}
	// A read-only restore is its snapshot: mounted read-only, never
	// formatted (mount-utils refuses to format for a read-only mount) or grown.
	ro := readOnly(req.GetVolumeCapability()) || lv.Spec.ReadOnly
	if !ro {
		if err := s.growOffline(ctx, dev); err != nil {
			return nil, err
		}
	}
	opts := slices.Clone(req.GetVolumeCapability().GetMount().GetMountFlags())
	if fsType == "xfs" && !slices.Contains(opts, "nouuid") {
		// Snapshots and clones carry the origin's UUID; xfs refuses a
		// second mount of one UUID without this.
		opts = append(opts, "nouuid")
	}
	if ro {
		opts = append(opts, "ro")
	}
	if err := s.mounter.FormatAndMount(dev, staging, fsType, opts); err != nil {
		return nil, status.Errorf(codes.Internal, "format and mount %s (%s) at %s: %v", dev, fsType, staging, err)
	}
	if fsType == "xfs" && !ro {
		// xfs grows only while mounted: catch up with an expansion that
		// happened while the volume was not staged.
		if err := s.resize(dev, staging); err != nil {
			return nil, err
		}
	}
	klog.FromContext(ctx).Info("Staged volume", "volume", id, "device", dev, "fsType", fsType, "path", staging)
	return &csi.NodeStageVolumeResponse{}, nil
}

// growOffline grows an unmounted ext filesystem to its device: the path
// for expansions that happened while the volume was not staged, and for
// nodes where online ext resize is impossible.
func (s *Server) growOffline(ctx context.Context, dev string) error {
	format, err := s.mounter.GetDiskFormat(dev)
	if err != nil {
		return status.Errorf(codes.Internal, "probe filesystem on %s: %v", dev, err)
	}
	if !strings.HasPrefix(format, "ext") {
		return nil
	}
	need, err := s.resizer.NeedResize(dev, "")
	if err != nil || !need {
		return nil // a filesystem that cannot be measured is left to fsck at mount
	}
	// resize2fs insists on a fresh check of an unmounted filesystem; -p
	// repairs only what is safe without a human.
	if out, err := s.exec.CommandContext(ctx, "e2fsck", "-f", "-p", dev).CombinedOutput(); err != nil {
		return status.Errorf(codes.Internal, "e2fsck -f -p %s before offline resize: %v: %s", dev, err, out)
	}
	if _, err := s.resizer.Resize(dev, ""); err != nil {
		return status.Errorf(codes.Internal, "offline resize of %s: %v", dev, err)
	}
	klog.FromContext(ctx).Info("Grew filesystem offline", "device", dev)
	return nil
}

func (s *Server) resize(dev, path string) error {
	need, err := s.resizer.NeedResize(dev, path)
	if err != nil {
		return status.Errorf(codes.Internal, "check size of filesystem on %s: %v", dev, err)
	}
	if !need {
		return nil
	}
	if _, err := s.resizer.Resize(dev, path); err != nil {
		return status.Errorf(codes.Internal, "grow filesystem on %s at %s: %v", dev, path, err)
	}
	return nil
}

// NodeUnstageVolume unmounts the staging path and releases the device.
func (s *Server) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	id, staging := req.GetVolumeId(), req.GetStagingTargetPath()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	case staging == "":
		return nil, status.Error(codes.InvalidArgument, "staging_target_path is required")
	}
	release, err := s.guard.Acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.unmount(staging, false); err != nil {
		return nil, err
	}
	lv, err := s.volume(ctx, id)
	if status.Code(err) == codes.NotFound {
		return &csi.NodeUnstageVolumeResponse{}, nil // nothing of ours to release
	}
	if err != nil {
		return nil, err
	}
	// A read-only restore's LV is its snapshot's, shared with the snapshot
	// and other restores: it stays active.
	if lv.Spec.VolumeType == v1alpha1.VolumeTypeLVM && !lv.Spec.IsReadOnlyRestore() {
		if err := s.opts.Activator.Deactivate(ctx, lv.Spec.VGName, lv.LVName()); err != nil {
			return nil, status.Errorf(codes.Internal, "release LV %s/%s: %v", lv.Spec.VGName, lv.LVName(), err)
		}
	}
	klog.FromContext(ctx).Info("Unstaged volume", "volume", id, "path", staging)
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// NodePublishVolume bind-mounts the staged filesystem, or the block device,
// onto the target path, then sets the volume's IO limits in the pod's
// cgroup. A CSI ephemeral inline volume is created, formatted and mounted
// at the target instead (publishEphemeral).
func (s *Server) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	id, target, staging := req.GetVolumeId(), req.GetTargetPath(), req.GetStagingTargetPath()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	case target == "":
		return nil, status.Error(codes.InvalidArgument, "target_path is required")
	}
	if err := checkCapability(req.GetVolumeCapability()); err != nil {
		return nil, err
	}
	if parameters.IsEphemeral(req.GetVolumeContext()) {
		return s.publishEphemeral(ctx, req)
	}
	block := req.GetVolumeCapability().GetBlock() != nil
	if staging == "" && !block {
		return nil, status.Errorf(codes.FailedPrecondition, "staging_target_path is required: the volume is staged first (an inline volume is recognised by %s=true, which kubelet passes when the CSIDriver has podInfoOnMount: true)",
			parameters.Ephemeral)
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
	if err := checkAccessType(lv, req.GetVolumeCapability()); err != nil {
		return nil, err
	}
	ro := req.GetReadonly() || readOnly(req.GetVolumeCapability()) || lv.Spec.ReadOnly
	opts := []string{"bind"}
	if ro {
		opts = append(opts, "ro")
	}
	var source string
	if block {
		if source, err = s.device(ctx, lv); err != nil {
			return nil, err
		}
		if err := ensureFile(target); err != nil {
			return nil, err
		}
	} else {
		if mounted, err := s.mountedDevice(staging); err != nil {
			return nil, err
		} else if mounted == "" {
			return nil, status.Errorf(codes.FailedPrecondition, "volume %s is not staged at %s", id, staging)
		}
		source = staging
		opts = append(opts, req.GetVolumeCapability().GetMount().GetMountFlags()...)
		if err := os.MkdirAll(target, 0o750); err != nil {
			return nil, status.Errorf(codes.Internal, "create target path %s: %v", target, err)
		}
	}
	notMnt, err := s.mounter.IsLikelyNotMountPoint(target)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "check target path %s: %v", target, err)
	}
	if !notMnt {
		// Whatever is mounted there may be another volume (a leftover of
		// another pod): it counts as this publish only if it is this one.
		if err := s.checkPublished(id, target, source, block, ro); err != nil {
			return nil, err
		}
	}
	if notMnt {
		if err := s.mounter.Mount(source, target, "", opts); err != nil {
			return nil, status.Errorf(codes.Internal, "bind mount %s at %s: %v", source, target, err)
		}
		klog.FromContext(ctx).Info("Published volume", "volume", id, "source", source, "target", target, "readOnly", ro, "block", block)
	}
	// Also when already mounted: a retry after a failed limit must set it.
	if err := s.setIOLimits(ctx, id, target, req.GetVolumeContext()); err != nil {
		if notMnt {
			s.undoMount(ctx, target)
		}
		return nil, err
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

// checkPublished verifies that the mount at target is this volume's
// publish: for a block volume the device node bind-mounted there is
// source's device; for a filesystem, target shows the staging directory
// itself (same filesystem and inode: a bind of the staging path), not
// another mount. A mount of the wrong read-only-ness is incompatible too
// (CSI: ALREADY_EXISTS for both).
func (s *Server) checkPublished(id, target, source string, block, ro bool) error {
	var got, want unix.Stat_t
	if err := unix.Stat(target, &got); err != nil {
		return status.Errorf(codes.Internal, "check target path %s: %v", target, err)
	}
	if err := unix.Stat(source, &want); err != nil {
		return status.Errorf(codes.Internal, "check %s: %v", source, err)
	}
	if block {
		if got.Mode&unix.S_IFMT != unix.S_IFBLK || got.Rdev != want.Rdev {
			return status.Errorf(codes.AlreadyExists, "target path %s holds %s, not volume %s (%s)", target, describeNode(&got), id, source)
		}
	} else if got.Dev != want.Dev || got.Ino != want.Ino {
		what, _, err := mount.GetDeviceNameFromMount(s.mounter, target)
		if err != nil || what == "" {
			what = "another mount"
		}
		return status.Errorf(codes.AlreadyExists, "target path %s holds %s (device %d:%d), not volume %s staged at %s",
			target, what, unix.Major(got.Dev), unix.Minor(got.Dev), id, source)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(target, &fs); err != nil {
		return status.Errorf(codes.Internal, "check target path %s: %v", target, err)
	}
	if isRO := fs.Flags&unix.ST_RDONLY != 0; isRO != ro {
		return status.Errorf(codes.AlreadyExists, "volume %s is published at %s with read-only %v, asked with read-only %v", id, target, isRO, ro)
	}
	return nil
}

// describeNode names what a stat found: a block device by its kernel name
// (from sysfs), numbers and device-mapper name (which says the VG and LV),
// anything else by its kind. Paths differ by activation (/dev/<vg>/<lv>,
// /dev/mapper/..., /dev/loopN); the kernel name is the one all agree on.
func describeNode(st *unix.Stat_t) string {
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return fmt.Sprintf("a file of mode %o, not a block device", st.Mode&unix.S_IFMT)
	}
	nums := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	l, err := os.Readlink("/sys/dev/block/" + nums)
	if err != nil {
		return "device " + nums
	}
	if dm, err := os.ReadFile("/sys/dev/block/" + nums + "/dm/name"); err == nil {
		return fmt.Sprintf("device /dev/%s (%s, device-mapper %s)", filepath.Base(l), nums, strings.TrimSpace(string(dm)))
	}
	return fmt.Sprintf("device /dev/%s (%s)", filepath.Base(l), nums)
}

// describePath is path as mountinfo shows it, and the device it is.
func describePath(path string) string {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return path
	}
	return path + ", " + describeNode(&st)
}

// ensureFile creates the file a block device is bind-mounted onto.
func ensureFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return status.Errorf(codes.Internal, "create parent of %s: %v", path, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o640)
	if err != nil {
		return status.Errorf(codes.Internal, "create target file %s: %v", path, err)
	}
	return f.Close()
}

// NodeUnpublishVolume unmounts and removes the target path, removes the IO
// limits its publish set, and deletes the LocalVolume of an inline volume.
func (s *Server) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	id, target := req.GetVolumeId(), req.GetTargetPath()
	switch {
	case id == "":
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	case target == "":
		return nil, status.Error(codes.InvalidArgument, "target_path is required")
	}
	release, err := s.guard.Acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := s.unmount(target, true); err != nil {
		return nil, err
	}
	if err := s.clearIOLimits(ctx, id, target); err != nil {
		return nil, err
	}
	if err := s.releaseInline(ctx, id); err != nil {
		return nil, err
	}
	klog.FromContext(ctx).Info("Unpublished volume", "volume", id, "target", target)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// unmount unmounts path if mounted; remove also deletes it (a target path),
// whereas staging paths belong to kubelet.
func (s *Server) unmount(path string, remove bool) error {
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if remove {
		if err := mount.CleanupMountPoint(path, s.mounter, true); err != nil {
			return status.Errorf(codes.Internal, "unmount %s: %v", path, err)
		}
		return nil
	}
	for {
		notMnt, err := s.mounter.IsLikelyNotMountPoint(path)
		if err != nil {
			return status.Errorf(codes.Internal, "check %s: %v", path, err)
		}
		if notMnt {
			return nil
		}
		if err := s.mounter.Unmount(path); err != nil {
			return status.Errorf(codes.Internal, "unmount %s: %v", path, err)
		}
	}
}

// mountedDevice is the device mounted at path ("" if path is not a mount point).
func (s *Server) mountedDevice(path string) (string, error) {
	notMnt, err := s.mounter.IsLikelyNotMountPoint(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", status.Errorf(codes.Internal, "check %s: %v", path, err)
	}
	if notMnt {
		return "", nil
	}
	dev, _, err := mount.GetDeviceNameFromMount(s.mounter, path)
	if err != nil {
		return "", status.Errorf(codes.Internal, "find the device mounted at %s: %v", path, err)
	}
	return dev, nil
}

// sameDevice compares two device paths by their device numbers, since one
// device has many names (/dev/vg/lv, /dev/mapper/vg-lv, /dev/dm-3).
func sameDevice(a, b string) bool {
	if a == b {
		return true
	}
	ra, errA := rdev(a)
	rb, errB := rdev(b)
	return errA == nil && errB == nil && ra == rb
}

func rdev(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, fmt.Errorf("%s is not a block device", path)
	}
	return st.Rdev, nil
}

// blockSize returns the size of a block device (or of the device
// bind-mounted onto a file).
func blockSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, io.SeekEnd)
}

func isBlockDevice(path string) (bool, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return false, err
	}
	return st.Mode&unix.S_IFMT == unix.S_IFBLK, nil
}
