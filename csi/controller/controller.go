/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package controller is the CSI Controller service. It talks only to the
// Kubernetes API: a volume is a LocalVolume (docs/localvolume.md) that the
// scheduler's PreBind or this service writes, and that the agent on the
// volume's node carries out; the service waits for the agent's status.
package controller

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"

	"github.com/open-local/open-local/apis/client/clientset/versioned"
	"github.com/open-local/open-local/apis/storage/awaitvolume"
	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/csi/inflight"
)

// DefaultVolumeSize is the size of a volume whose request names none.
const DefaultVolumeSize = 1 << 30

// Server implements csi.ControllerServer.
type Server struct {
	csi.UnimplementedControllerServer
	client versioned.Interface
	kube   kubernetes.Interface
	guard  *inflight.Guard
	// allocate serialises the controller's own capacity decisions (VG
	// choice, expansion checks), so two calls never spend the same free
	// space. The scheduler's decisions arrive as LocalVolumes it persisted
	// before the PVC got its node, so they are seen by the next read.
	allocate sync.Mutex
	// fill: the thin pool fill thresholds, the scheduler's (its args
	// thinPoolFillThresholds; the chart passes both the same values).
	fill ledger.Fill
	// refusedClasses holds the parse errors of StorageClass parameters
	// GetCapacity has logged: csi-provisioner asks every minute for every
	// node, so each is logged once (grpc_server_handled_total{grpc_method=
	// "GetCapacity",grpc_code="InvalidArgument"} counts every call).
	refusedClasses sync.Map
}

// New returns the Controller service, with ledger.DefaultFill.
func New(client versioned.Interface, kube kubernetes.Interface) *Server {
	return &Server{client: client, kube: kube, guard: inflight.New(), fill: ledger.DefaultFill}
}

// SetFill sets the thin pool fill thresholds (see ledger.Fill).
func (s *Server) SetFill(f ledger.Fill) error {
	if err := f.Validate(); err != nil {
		return err
	}
	s.fill = f
	return nil
}

// ControllerGetCapabilities: create/delete, expand, capacity, snapshots and clones.
func (s *Server) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	var caps []*csi.ControllerServiceCapability
	for _, t := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
		csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
		csi.ControllerServiceCapability_RPC_GET_CAPACITY,
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
		csi.ControllerServiceCapability_RPC_GET_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
	} {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// CreateVolume finds the LocalVolume the scheduler wrote for the PVC, or
// places the volume itself, and waits until the node has carried it out.
func (s *Server) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is required")
	}
	fsType, block, err := CheckCapabilities(req.GetVolumeCapabilities())
	if err != nil {
		return nil, err
	}
	params, err := parameters.Parse(req.GetParameters())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if !block && fsType == "" {
		fsType = params.FSType
	}
	if fsType == "" {
		fsType = parameters.DefaultFSType
	}
	var restore *restorePlan
	if cs := req.GetVolumeContentSource(); cs != nil {
		if restore, err = s.planRestore(ctx, cs, params, req.GetCapacityRange(), fsType, block); err != nil {
			return nil, err
		}
		if restore.readOnly && block {
			// The restore would be the snapshot's LV itself, and a
			// read-only bind mount does not stop writes to a device node.
			return nil, status.Errorf(codes.InvalidArgument, "snapshot %s is read-only (csi.aliyun.com/readonly): its restores are shared views that cannot be raw block devices; use volumeMode Filesystem, or restore from a snapshot taken without csi.aliyun.com/readonly",
				restore.origin.Name)
		}
	}
	size, err := requestedSize(req.GetCapacityRange())
	if err != nil {
		return nil, err
	}
	if restore != nil {
		size = restore.size
	}

	id, claim, err := s.volumeID(ctx, req.GetName(), params)
	if err != nil {
		return nil, err
	}
	release, err := s.guard.Acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()
	logger := klog.FromContext(ctx).WithValues("volume", id)

	lv, err := s.client.CsiV1alpha1().LocalVolumes().Get(ctx, id, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		node, err := preferredNode(req.GetAccessibilityRequirements())
		if err != nil {
			return nil, err
		}
		if restore != nil {
			if lv, err = s.createRestore(ctx, id, node, restore, params, claim); err != nil {
				return nil, err
			}
		} else if lv, err = s.createLocalVolume(ctx, id, node, size, params, claim); err != nil {
			return nil, err
		}
		logger.Info("Placed volume", "node", lv.Spec.NodeName, "vg", lv.Spec.VGName, "device", lv.Spec.Device, "size", lv.Spec.Size.String())
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "get LocalVolume %s: %v", id, err)
	default:
		if err := compatible(lv, size, req.GetCapacityRange().GetLimitBytes(), params, restore); err != nil {
			return nil, err
		}
	}

	lv, err = awaitvolume.Ready(ctx, s.client, id)
	if err != nil {
		if status.Code(err) == codes.ResourceExhausted && lv != nil {
			// The node cannot hold it: let the pod be rescheduled, and
			// let whoever places it next write a fresh record.
			s.deleteFailed(ctx, lv)
		}
		return nil, err
	}
	if limit := req.GetCapacityRange().GetLimitBytes(); limit > 0 && lv.Status.CurrentSize.Value() > limit {
		return nil, status.Errorf(codes.OutOfRange, "volume %s has %d bytes, more than limit_bytes %d", id, lv.Status.CurrentSize.Value(), limit)
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:           id,
		CapacityBytes:      lv.Status.CurrentSize.Value(),
		VolumeContext:      volumeContext(req.GetParameters(), lv, fsType, block),
		ContentSource:      req.GetVolumeContentSource(),
		AccessibleTopology: []*csi.Topology{{Segments: map[string]string{parameters.TopologyKey: lv.Spec.NodeName}}},
	}}, nil
}

// volumeID is the LocalVolume name: pvc-<PVC UID> when csi-provisioner told
// us the PVC (the name the scheduler's PreBind writes), else the request
// name when it is a valid object name, else a hash of it.
func (s *Server) volumeID(ctx context.Context, name string, p parameters.Params) (string, *v1alpha1.ObjectReference, error) {
	if p.PVCName != "" {
		pvc, err := s.kube.CoreV1().PersistentVolumeClaims(p.PVCNamespace).Get(ctx, p.PVCName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return "", nil, status.Errorf(codes.NotFound, "PVC %s/%s not found", p.PVCNamespace, p.PVCName)
		}
		if err != nil {
			return "", nil, status.Errorf(codes.Unavailable, "get PVC %s/%s: %v", p.PVCNamespace, p.PVCName, err)
		}
		return v1alpha1.PVCVolumeName(pvc.UID), &v1alpha1.ObjectReference{Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID}, nil
	}
	// snap- names are snapshots' (v1alpha1.SnapshotVolumeName).
	if len(validation.IsDNS1123Subdomain(name)) == 0 && !strings.HasPrefix(name, v1alpha1.SnapshotPrefix) {
		return name, nil, nil
	}
	return v1alpha1.RequestVolumeName(name), nil, nil
}

// lvNamePattern is LVM's LV name alphabet; names that fit it and are short
// enough for device-mapper names are used as they are.
var lvNamePattern = regexp.MustCompile(`^[a-zA-Z0-9+_.][a-zA-Z0-9+_.-]{0,62}$`)

// lvNameFor returns the spec.lvName for a LocalVolume name: empty (use the
// name) when the name is a good LV name, else a short stable hash.
func lvNameFor(id string) string {
	if lvNamePattern.MatchString(id) && id != "." && id != ".." && parameters.ValidLVName(id) == nil {
		return ""
	}
	return v1alpha1.GeneratedLVName(id)
}

// preferredNode is the node of the first preferred (else requisite) topology
// segment; "" when the CO did not say (then any node with room will do).
func preferredNode(req *csi.TopologyRequirement) (string, error) {
	for _, list := range [][]*csi.Topology{req.GetPreferred(), req.GetRequisite()} {
		for _, t := range list {
			if n, ok := t.GetSegments()[parameters.TopologyKey]; ok && n != "" {
				return n, nil
			}
		}
	}
	if len(req.GetPreferred())+len(req.GetRequisite()) > 0 {
		return "", status.Errorf(codes.InvalidArgument, "accessibility requirements name no %s segment", parameters.TopologyKey)
	}
	return "", nil
}

// createLocalVolume places a volume the scheduler did not place (the pod was
// placed by another scheduler, or there is no pod) and persists the choice.
func (s *Server) createLocalVolume(ctx context.Context, id, node string, size int64, p parameters.Params, claim *v1alpha1.ObjectReference) (*v1alpha1.LocalVolume, error) {
	s.allocate.Lock()
	defer s.allocate.Unlock()
	var nodes []*nodeStorage
	if node != "" {
		ns, err := s.readNode(ctx, node)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, ns)
	} else {
		var err error
		if nodes, err = s.readAllNodes(ctx); err != nil {
			return nil, err
		}
	}
	l := s.ledgerOf(nodes...)
	var pl placement
	var bestFree int64 = -1
	var lastErr error = status.Error(codes.ResourceExhausted, "no node has a NodeLocalStorage")
	for _, ns := range nodes {
		cand, err := ns.place(l, id, p, size)
		if err != nil {
			lastErr = err
			continue
		}
		// Without a node from the CO: the node with the most room.
		if _, free := ns.capacity(l, p); free > bestFree {
			pl, bestFree = cand, free
		}
	}
	if bestFree < 0 {
		return nil, lastErr
	}
	lv := &v1alpha1.LocalVolume{
		ObjectMeta: metav1.ObjectMeta{Name: id, Finalizers: []string{v1alpha1.LocalVolumeFinalizer}},
		Spec: v1alpha1.LocalVolumeSpec{
			NodeName:   pl.node,
			VolumeType: p.VolumeType,
			Kind:       v1alpha1.KindVolume,
			VGName:     pl.vg,
			Device:     pl.device,
			LVName:     lvNameFor(id),
			Size:       *resource.NewQuantity(size, resource.BinarySI),
			ThinPool:   pl.thinPool,
			ClaimRef:   claim,
		},
	}
	if p.VolumeType == v1alpha1.VolumeTypeLVM {
		lv.Spec.LVMType = p.LVMType
	} else {
		lv.Spec.LVName = ""
	}
	return s.persist(ctx, lv)
}

// persist creates lv, or returns the object of that name someone else
// (the scheduler's PreBind) wrote concurrently.
func (s *Server) persist(ctx context.Context, lv *v1alpha1.LocalVolume) (*v1alpha1.LocalVolume, error) {
	id := lv.Name
	created, err := s.client.CsiV1alpha1().LocalVolumes().Create(ctx, lv, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// Written concurrently (the scheduler's PreBind): use that one.
		created, err = s.client.CsiV1alpha1().LocalVolumes().Get(ctx, id, metav1.GetOptions{})
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "create LocalVolume %s: %v", id, err)
	}
	return created, nil
}

// compatible checks an existing LocalVolume against a repeated (or the
// scheduler-prepared) CreateVolume: same name, different size or class is
// AlreadyExists, as the CSI spec asks.
func compatible(lv *v1alpha1.LocalVolume, size, limit int64, p parameters.Params, restore *restorePlan) error {
	if lv.Spec.Kind == v1alpha1.KindSnapshot {
		return status.Errorf(codes.AlreadyExists, "%s is a snapshot, not a volume", lv.Name)
	}
	var want, have v1alpha1.LocalVolumeSource
	if restore != nil {
		want = *restore.source()
	}
	if lv.Spec.Source != nil {
		have = *lv.Spec.Source
	}
	if want != have {
		return status.Errorf(codes.AlreadyExists, "volume %s exists with source %+v, not %+v", lv.Name, have, want)
	}
	if restore == nil || !restore.readOnly {
		if lv.Spec.ThinPool != p.ThinPool {
			return status.Errorf(codes.AlreadyExists, "volume %s exists in thin pool %q, not %q", lv.Name, lv.Spec.ThinPool, p.ThinPool)
		}
	}
	if got := lv.Spec.Size.Value(); got < size || (limit > 0 && got > limit) {
		return status.Errorf(codes.AlreadyExists, "volume %s exists with size %d bytes, incompatible with the requested %d (limit %d)", lv.Name, got, size, limit)
	}
	if lv.Spec.VolumeType != p.VolumeType {
		return status.Errorf(codes.AlreadyExists, "volume %s exists with volumeType %s, not %s", lv.Name, lv.Spec.VolumeType, p.VolumeType)
	}
	if p.VGName != "" && lv.Spec.VGName != p.VGName {
		return status.Errorf(codes.AlreadyExists, "volume %s exists in VG %s, not %s", lv.Name, lv.Spec.VGName, p.VGName)
	}
	if lv.DeletionTimestamp != nil {
		return status.Errorf(codes.Aborted, "volume %s is being deleted", lv.Name)
	}
	return nil
}

// deleteFailed removes a LocalVolume whose node cannot hold it, unless it
// changed meanwhile (UID and resourceVersion preconditions); it reports
// whether the record is gone or going.
func (s *Server) deleteFailed(ctx context.Context, lv *v1alpha1.LocalVolume) bool {
	uid, rv := lv.UID, lv.ResourceVersion
	err := s.client.CsiV1alpha1().LocalVolumes().Delete(context.WithoutCancel(ctx), lv.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
	if err != nil && !apierrors.IsNotFound(err) {
		klog.FromContext(ctx).Info("Could not delete the LocalVolume of a failed placement", "volume", lv.Name, "err", err)
		return false
	}
	return true
}

// volumeContext is what NodeStage/NodePublish get: the StorageClass
// parameters (as open-local passes them) plus where the volume is.
func volumeContext(params map[string]string, lv *v1alpha1.LocalVolume, fsType string, block bool) map[string]string {
	ctx := maps.Clone(params)
	if ctx == nil {
		ctx = map[string]string{}
	}
	ctx[parameters.VolumeType] = string(lv.Spec.VolumeType)
	ctx[parameters.ContextNode] = lv.Spec.NodeName
	if lv.Spec.VGName != "" {
		ctx[parameters.VGName] = lv.Spec.VGName
	}
	if lv.Spec.Device != "" {
		ctx[parameters.ContextDevice] = lv.Spec.Device
	}
	if src := lv.Spec.Source; src != nil && src.Snapshot != "" {
		ctx[parameters.ContextSnapshotID] = src.Snapshot
		if lv.Spec.ReadOnly {
			ctx[parameters.ContextReadOnly] = "true"
		}
	}
	if !block {
		ctx[parameters.ContextFSType] = fsType
	}
	return ctx
}

// requestedSize is the size a capacity range asks for, within
// parameters.MaxVolumeSize (a size near 2^63 would wrap in any sum).
func requestedSize(r *csi.CapacityRange) (int64, error) {
	req, limit := r.GetRequiredBytes(), r.GetLimitBytes()
	switch {
	case req < 0 || limit < 0:
		return 0, status.Error(codes.InvalidArgument, "capacity range must not be negative")
	case limit > 0 && req > limit:
		return 0, status.Errorf(codes.InvalidArgument, "required_bytes %d exceeds limit_bytes %d", req, limit)
	case req > 0:
		if err := parameters.CheckSize(req); err != nil {
			return 0, status.Errorf(codes.OutOfRange, "required_bytes: %v", err)
		}
		return req, nil
	case limit > 0:
		return min(limit, DefaultVolumeSize), nil
	}
	return DefaultVolumeSize, nil
}

// CheckCapabilities validates volume capabilities: single-node access
// modes, block or a filesystem the node formats. It returns the requested
// filesystem ("" if none) and whether block access is requested.
func CheckCapabilities(caps []*csi.VolumeCapability) (fsType string, block bool, err error) {
	if len(caps) == 0 {
		return "", false, status.Error(codes.InvalidArgument, "volume_capabilities are required")
	}
	for _, c := range caps {
		if msg := unsupported(c); msg != "" {
			return "", false, status.Error(codes.InvalidArgument, msg)
		}
		if c.GetBlock() != nil {
			block = true
		}
		if m := c.GetMount(); m != nil && m.GetFsType() != "" {
			if fsType != "" && fsType != m.GetFsType() {
				return "", false, status.Errorf(codes.InvalidArgument, "capabilities ask for filesystems %s and %s", fsType, m.GetFsType())
			}
			fsType = m.GetFsType()
		}
	}
	return fsType, block, nil
}

// unsupported explains why a capability cannot be served ("" if it can).
func unsupported(c *csi.VolumeCapability) string {
	switch c.GetAccessMode().GetMode() {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY:
	default:
		return fmt.Sprintf("access mode %s is not supported: a local volume is reachable from one node (use ReadWriteOnce)", c.GetAccessMode().GetMode())
	}
	switch {
	case c.GetBlock() != nil:
	case c.GetMount() != nil:
		if _, err := parameters.ParseFSType(c.GetMount().GetFsType()); err != nil {
			return err.Error()
		}
	default:
		return "access type (block or mount) is required"
	}
	return ""
}

// DeleteVolume deletes the LocalVolume and waits until the node removed the
// LV (the finalizer is gone). Unknown volumes are already deleted, and so
// are snapshot IDs (DeleteSnapshot deletes those). A volume with
// copy-on-write snapshots is refused with FailedPrecondition while they
// exist (lvm cannot remove their origin; open-local refused too):
// csi-provisioner retries, and the PV goes once the VolumeSnapshots do.
// Thin snapshots are volumes of their own and do not hold their origin.
func (s *Server) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if len(validation.IsDNS1123Subdomain(id)) > 0 {
		return &csi.DeleteVolumeResponse{}, nil // no LocalVolume can have this name
	}
	release, err := s.guard.Acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()
	lv, err := s.client.CsiV1alpha1().LocalVolumes().Get(ctx, id, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return &csi.DeleteVolumeResponse{}, nil
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "get LocalVolume %s: %v", id, err)
	case lv.Spec.Kind == v1alpha1.KindSnapshot:
		return &csi.DeleteVolumeResponse{}, nil // not a volume: nothing of that ID to delete
	}
	if lv.DeletionTimestamp == nil {
		snaps, err := s.snapshotsOf(ctx, lv)
		if err != nil {
			return nil, err
		}
		if classic := classicSnapshots(snaps); len(classic) > 0 {
			return nil, errSnapshotsPrecondition(lv, "delete", classic)
		}
		// A clone being filled reads this volume's LV (the agent refuses
		// the same).
		users, err := s.restoresNeeding(ctx, lv)
		if err != nil {
			return nil, err
		}
		if len(users) > 0 {
			return nil, status.Errorf(codes.FailedPrecondition, "volume %s is still needed by %s: delete them (or wait for their copy to finish) first",
				id, strings.Join(users, ", "))
		}
	}
	if err := s.deleteLocalVolume(ctx, lv); err != nil {
		return nil, err
	}
	klog.FromContext(ctx).Info("Deleted volume", "volume", id)
	return &csi.DeleteVolumeResponse{}, nil
}

// deleteLocalVolume deletes lv (that object only: a UID precondition)
// unless its deletion already started, and waits until it is gone: the
// agent removed its LV and then its finalizer.
func (s *Server) deleteLocalVolume(ctx context.Context, lv *v1alpha1.LocalVolume) error {
	if lv.DeletionTimestamp == nil {
		uid := lv.UID
		err := s.client.CsiV1alpha1().LocalVolumes().Delete(ctx, lv.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return status.Errorf(codes.Unavailable, "delete LocalVolume %s: %v", lv.Name, err)
		}
	}
	waitCtx := ctx
	_, err := s.kube.CoreV1().Nodes().Get(ctx, lv.Spec.NodeName, metav1.GetOptions{})
	nodeGone := apierrors.IsNotFound(err)
	if nodeGone {
		// A machine whose Node object was deleted may still run its agent:
		// give it a moment, then say why, rather than DeadlineExceeded at
		// the sidecar's timeout on every retry (csi-provisioner retries any
		// error with backoff and puts the message in a PV Event).
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(ctx, nodeGoneWait)
		defer cancel()
	}
	// A released disk that waits for its wipe (Quarantined) is held by its
	// record until then; the PV need not wait with it (policy manual may
	// wait for an operator for days).
	_, err = awaitvolume.Until(waitCtx, s.client, lv.Name, func(lv *v1alpha1.LocalVolume) (bool, error) {
		return lv == nil || (lv.DeletionTimestamp != nil && lv.Status.Phase == v1alpha1.PhaseQuarantined), nil
	})
	if err != nil && nodeGone && ctx.Err() == nil {
		return status.Errorf(codes.FailedPrecondition,
			"LocalVolume %s is being deleted but its node %s has no Node object: no agent will remove its LV and finalizer (see its %s condition). "+
				"With the chart's controller.nodeLoss.cleanup the controller removes the finalizer once the node has been gone past its grace; "+
				"otherwise, once the data on %s is given up: kubectl patch localvolume %s --type=merge -p '{\"metadata\":{\"finalizers\":null}}'",
			lv.Name, lv.Spec.NodeName, v1alpha1.ConditionNodeGone, lv.Spec.NodeName, lv.Name)
	}
	return err
}

// nodeGoneWait is how long DeleteVolume waits for the agent of a node that
// has no Node object.
const nodeGoneWait = 15 * time.Second

// ControllerExpandVolume grows spec.size after checking the VG has room, and
// waits for the node's lvextend.
func (s *Server) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if req.GetCapacityRange() == nil {
		return nil, status.Error(codes.InvalidArgument, "capacity_range is required")
	}
	size, err := requestedSize(req.GetCapacityRange())
	if err != nil {
		return nil, err
	}
	block := req.GetVolumeCapability().GetBlock() != nil
	release, err := s.guard.Acquire(id)
	if err != nil {
		return nil, err
	}
	defer release()
	lv, err := s.getVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	if lv.DeletionTimestamp != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is being deleted", id)
	}
	if lv.Spec.Kind == v1alpha1.KindSnapshot {
		return nil, status.Errorf(codes.NotFound, "volume %s not found (it is a snapshot)", id)
	}
	if lv.Spec.IsReadOnlyRestore() {
		if size > lv.Spec.Size.Value() {
			return nil, status.Errorf(codes.FailedPrecondition, "volume %s is a read-only view of snapshot %s and cannot grow", id, lv.Spec.Source.Snapshot)
		}
		return &csi.ControllerExpandVolumeResponse{CapacityBytes: lv.Spec.Size.Value()}, nil
	}
	if lv.Spec.VolumeType == v1alpha1.VolumeTypeDevice {
		have := lv.Spec.Size.Value()
		if lv.Status.CurrentSize != nil {
			have = lv.Status.CurrentSize.Value()
		}
		if size > have {
			return nil, status.Errorf(codes.OutOfRange, "volume %s is the whole device %s (%d bytes) and cannot grow to %d bytes", id, lv.Spec.Device, have, size)
		}
		return &csi.ControllerExpandVolumeResponse{CapacityBytes: have, NodeExpansionRequired: false}, nil
	}
	if size > lv.Spec.Size.Value() {
		if lv.Spec.ThinPool == "" {
			// lvm resizes the origin of copy-on-write snapshots only while
			// inactive; open-local forbade it. Thin origins grow fine.
			snaps, err := s.snapshotsOf(ctx, lv)
			if err != nil {
				return nil, err
			}
			if classic := classicSnapshots(snaps); len(classic) > 0 {
				return nil, errSnapshotsPrecondition(lv, "expand", classic)
			}
		}
		if err := s.grow(ctx, lv, size); err != nil {
			return nil, err
		}
	}
	// The agent made the new size: spec.size is at least size now.
	lv, err = awaitvolume.Ready(ctx, s.client, id)
	if err != nil {
		return nil, err
	}
	logger := klog.FromContext(ctx)
	logger.Info("Expanded volume", "volume", id, "size", lv.Status.CurrentSize.String())
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: lv.Status.CurrentSize.Value(), NodeExpansionRequired: !block}, nil
}

// grow raises spec.size to size when the volume's VG has room for the
// difference.
func (s *Server) grow(ctx context.Context, lv *v1alpha1.LocalVolume, size int64) error {
	s.allocate.Lock()
	defer s.allocate.Unlock()
	ns, err := s.readNode(ctx, lv.Spec.NodeName)
	if err != nil {
		return err
	}
	// The new size must fit besides the volume's own current share (whole
	// extents of a thick LV, virtual size in a thin pool below its fill
	// thresholds: ResourceExhausted otherwise).
	if sf := s.ledgerOf(ns).FitGrowth(lv.Name, size); sf != nil {
		return shortfallError(sf, codes.FailedPrecondition)
	}
	return s.setSize(ctx, lv.Name, size)
}

// setSize raises spec.size of LocalVolume name to size (never lowers it).
func (s *Server) setSize(ctx context.Context, name string, size int64) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := s.client.CsiV1alpha1().LocalVolumes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.Spec.Size.Value() >= size {
			return nil
		}
		cur.Spec.Size = *resource.NewQuantity(size, resource.BinarySI)
		_, err = s.client.CsiV1alpha1().LocalVolumes().Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
}

func (s *Server) getVolume(ctx context.Context, id string) (*v1alpha1.LocalVolume, error) {
	if len(validation.IsDNS1123Subdomain(id)) > 0 {
		return nil, status.Errorf(codes.NotFound, "volume %s not found", id)
	}
	lv, err := s.client.CsiV1alpha1().LocalVolumes().Get(ctx, id, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, status.Errorf(codes.NotFound, "volume %s not found", id)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "get LocalVolume %s: %v", id, err)
	}
	return lv, nil
}

// ValidateVolumeCapabilities confirms the capabilities this driver serves.
func (s *Server) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume_capabilities are required")
	}
	if _, err := s.getVolume(ctx, req.GetVolumeId()); err != nil {
		return nil, err
	}
	for _, c := range req.GetVolumeCapabilities() {
		if msg := unsupported(c); msg != "" {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: msg}, nil
		}
	}
	if _, err := parameters.Parse(req.GetParameters()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

// GetCapacity reports free space for a StorageClass on a topology segment
// (one node) or, without one, on all nodes; maximum_volume_size is the
// largest volume that fits (an LV cannot span VGs).
func (s *Server) GetCapacity(ctx context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	for _, c := range req.GetVolumeCapabilities() {
		if msg := unsupported(c); msg != "" {
			return &csi.GetCapacityResponse{}, nil // nothing of that kind can be provisioned
		}
	}
	p, err := parameters.Parse(req.GetParameters())
	if err != nil {
		// The class's pods then stay Pending with "did not have enough
		// free storage" (no CSIStorageCapacity): say the real cause here.
		if _, seen := s.refusedClasses.LoadOrStore(err.Error(), true); !seen {
			klog.FromContext(ctx).Info("StorageClass parameters refused: no capacity is published for them, so its pods cannot be scheduled", "err", err, "parameters", req.GetParameters())
		}
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	var nodes []*nodeStorage
	if seg := req.GetAccessibleTopology().GetSegments(); len(seg) > 0 {
		node, ok := seg[parameters.TopologyKey]
		if !ok {
			return &csi.GetCapacityResponse{}, nil // a segment we do not serve
		}
		ns, err := s.readNode(ctx, node)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, ns)
	} else if nodes, err = s.readAllNodes(ctx); err != nil {
		return nil, err
	}
	l := s.ledgerOf(nodes...)
	var total, maxVol int64
	for _, ns := range nodes {
		t, m := ns.capacity(l, p)
		total += t
		maxVol = max(maxVol, m)
	}
	return &csi.GetCapacityResponse{
		AvailableCapacity: total,
		MaximumVolumeSize: wrapInt64(maxVol),
	}, nil
}

func wrapInt64(v int64) *wrapperspb.Int64Value { return wrapperspb.Int64(v) }
