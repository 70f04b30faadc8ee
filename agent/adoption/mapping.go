/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package adoption imports the volumes alibaba/open-local provisioned: for
// each of its PVs without a LocalVolume it writes the LocalVolume that
// describes the PV exactly, labelled v1alpha1.AdoptedLabel, so the
// scheduler's ledger counts it and NodePublish, expansion and delete find
// it. The node's agent then verifies the LV (agent/volumes) before the
// volume is Ready. It runs in the leader-elected controller (agent
// --mode=controller --adopt-open-local).
package adoption

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// Keys open-local v0.8.0 writes on its PVs (pkg/utils/common.go
// GetVGNameFromCsiPV, pkg/csi/controllerserver.go, pkg/types.go).
const (
	// AllocatedAnnotation is {"vgName","deviceName","volumeType"}, written by
	// its scheduling-framework PreBind or controller; it takes precedence
	// over volumeAttributes.
	AllocatedAnnotation = "csi.aliyun.com/pv-allocated"
	// Snapshot restores carry these in volumeAttributes.
	attrSnapshotID   = "csi.aliyun.com/snapshot-id"
	attrSourceVolume = "csi.aliyun.com/source-volume-id"
	attrReadOnly     = "csi.aliyun.com/readonly"
	// volumePrefix: csi-provisioner --volume-name-prefix=local in its chart
	// (helm/templates/controller.yaml): PV name = volume handle = LV name.
	volumePrefix = "local-"
	// MountPoint is open-local's volume type for a directory on a mounted
	// disk; not carried out here (issue 16, item 4).
	volumeTypeMountPoint = "MountPoint"
)

// Drivers are the CSI driver names open-local's PVs carry.
var Drivers = []string{"local.csi.aliyun.com", "yodaplugin.csi.alibabacloud.com"}

// Reasons a PV is not adopted (the Warning Event's reason on the PV).
const (
	ReasonNoNode          = "AdoptNoNode"          // node affinity missing or not one hostname
	ReasonBadName         = "AdoptBadName"         // handle no LocalVolume / LV name
	ReasonBadSize         = "AdoptBadSize"         // capacity missing or outside 1 byte..1Ei
	ReasonBadLocation     = "AdoptBadLocation"     // VG or device missing or malformed
	ReasonUnsupportedType = "AdoptUnsupportedType" // MountPoint, or unknown volumeType
	ReasonSnapshot        = "AdoptSnapshotRestore" // restored from an open-local snapshot
)

// Refusal says why a PV of open-local's cannot be adopted.
type Refusal struct {
	Reason  string
	Message string
}

func (r *Refusal) Error() string { return r.Reason + ": " + r.Message }

func refuse(reason, format string, args ...any) *Refusal {
	return &Refusal{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// IsOpenLocalPV tells whether pv is one alibaba/open-local provisioned: of
// one of its driver names, with a volume handle local-… equal to the PV's
// name. Our own PVs (handles pvc-<uid>, csi-…) never match, so a volume of
// ours whose LocalVolume is being deleted is never imported back.
func IsOpenLocalPV(pv *corev1.PersistentVolume) bool {
	csi := pv.Spec.CSI
	if csi == nil {
		return false
	}
	ours := false
	for _, d := range Drivers {
		ours = ours || csi.Driver == d
	}
	return ours && strings.HasPrefix(csi.VolumeHandle, volumePrefix) && csi.VolumeHandle == pv.Name
}

// allocated is the AllocatedAnnotation's value.
type allocated struct {
	VGName     string `json:"vgName"`
	DeviceName string `json:"deviceName"`
	VolumeType string `json:"volumeType"`
}

// LocalVolumeFor is the LocalVolume that describes pv, an open-local PV
// (IsOpenLocalPV): named by its volume handle (what NodePublish and
// DeleteVolume look up), on the node of its node affinity, in the VG or on
// the device open-local recorded, LV named after the PV, of the PV's
// capacity, for its claim. A PV that cannot be described exactly is
// refused: nothing is guessed.
func LocalVolumeFor(pv *corev1.PersistentVolume) (*v1alpha1.LocalVolume, *Refusal) {
	csi := pv.Spec.CSI
	name := csi.VolumeHandle
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return nil, refuse(ReasonBadName, "volume handle %q is no object name: %s", name, strings.Join(errs, "; "))
	}
	if err := parameters.ValidLVName(name); err != nil {
		return nil, refuse(ReasonBadName, "volume handle %q is no LV name: %v", name, err)
	}
	node, r := nodeOf(pv)
	if r != nil {
		return nil, r
	}
	size, r := sizeOf(pv)
	if r != nil {
		return nil, r
	}
	attrs := csi.VolumeAttributes
	if attrs[attrSnapshotID] != "" || attrs[attrSourceVolume] != "" || attrs[attrReadOnly] == "true" {
		// A read-only restore is open-local's snapshot LV itself, and a
		// read-write one is filled by restic at its first NodePublish,
		// which we do not do: neither is described by a plain volume.
		return nil, refuse(ReasonSnapshot, "restored from open-local snapshot %q (source volume %q): snapshot restores are not adopted",
			attrs[attrSnapshotID], attrs[attrSourceVolume])
	}
	alloc := allocated{VGName: attrs[parameters.VGName], DeviceName: attrs[parameters.ContextDevice], VolumeType: attrs[parameters.VolumeType]}
	if a, ok := pv.Annotations[AllocatedAnnotation]; ok {
		var ann allocated
		if err := json.Unmarshal([]byte(a), &ann); err != nil {
			return nil, refuse(ReasonBadLocation, "annotation %s is not JSON: %v", AllocatedAnnotation, err)
		}
		// Field by field, as open-local reads it: the annotation wins where set.
		if ann.VGName != "" {
			alloc.VGName = ann.VGName
		}
		if ann.DeviceName != "" {
			alloc.DeviceName = ann.DeviceName
		}
		if ann.VolumeType != "" {
			alloc.VolumeType = ann.VolumeType
		}
	}
	spec := v1alpha1.LocalVolumeSpec{NodeName: node, Kind: v1alpha1.KindVolume, Size: size, LVName: name}
	switch alloc.VolumeType {
	case string(v1alpha1.VolumeTypeLVM), "":
		// An empty type with a VG is LVM: open-local's inline and vgName-only classes.
		if err := parameters.ValidVGName(alloc.VGName); err != nil || alloc.VGName == "" {
			return nil, refuse(ReasonBadLocation, "VG %q (volumeAttributes %s or annotation %s): %v", alloc.VGName, parameters.VGName, AllocatedAnnotation, err)
		}
		spec.VolumeType, spec.VGName = v1alpha1.VolumeTypeLVM, alloc.VGName
		if attrs[parameters.LVMType] == string(v1alpha1.LVMTypeStriping) {
			spec.LVMType = v1alpha1.LVMTypeStriping
		}
	case string(v1alpha1.VolumeTypeDevice):
		if err := validDevice(alloc.DeviceName); err != nil {
			return nil, refuse(ReasonBadLocation, "device %q (volumeAttributes %s or annotation %s): %v", alloc.DeviceName, parameters.ContextDevice, AllocatedAnnotation, err)
		}
		spec.VolumeType, spec.Device, spec.LVName = v1alpha1.VolumeTypeDevice, alloc.DeviceName, ""
	case volumeTypeMountPoint:
		return nil, refuse(ReasonUnsupportedType, "MountPoint volumes (%s) are not supported yet", attrs[volumeTypeMountPoint])
	default:
		return nil, refuse(ReasonUnsupportedType, "unknown volumeType %q", alloc.VolumeType)
	}
	if ref := pv.Spec.ClaimRef; ref != nil && ref.Name != "" {
		spec.ClaimRef = &v1alpha1.ObjectReference{Namespace: ref.Namespace, Name: ref.Name, UID: ref.UID}
	}
	return &v1alpha1.LocalVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Labels:      map[string]string{v1alpha1.AdoptedLabel: "true"},
			Annotations: map[string]string{v1alpha1.AdoptedPVAnnotation: pv.Name},
			Finalizers:  []string{v1alpha1.LocalVolumeFinalizer},
		},
		Spec: spec,
	}, nil
}

// nodeOf is the one hostname of the PV's required node affinity
// (open-local: kubernetes.io/hostname In [node], from AccessibleTopology).
func nodeOf(pv *corev1.PersistentVolume) (string, *Refusal) {
	na := pv.Spec.NodeAffinity
	if na == nil || na.Required == nil || len(na.Required.NodeSelectorTerms) == 0 {
		return "", refuse(ReasonNoNode, "PV has no required node affinity: its node is unknown")
	}
	node := ""
	for _, term := range na.Required.NodeSelectorTerms {
		for _, e := range term.MatchExpressions {
			if e.Key != parameters.TopologyKey {
				continue
			}
			if e.Operator != corev1.NodeSelectorOpIn || len(e.Values) != 1 {
				return "", refuse(ReasonNoNode, "node affinity %s %s %v names no single node", e.Key, e.Operator, e.Values)
			}
			if node != "" && node != e.Values[0] {
				return "", refuse(ReasonNoNode, "node affinity names two nodes, %s and %s", node, e.Values[0])
			}
			node = e.Values[0]
		}
	}
	if node == "" {
		return "", refuse(ReasonNoNode, "node affinity has no %s term: its node is unknown", parameters.TopologyKey)
	}
	if errs := validation.IsDNS1123Subdomain(node); len(errs) > 0 {
		return "", refuse(ReasonNoNode, "node %q is no node name: %s", node, strings.Join(errs, "; "))
	}
	return node, nil
}

// sizeOf is the PV's capacity in whole bytes, by the one size rule
// (parameters.ParseSize: at least a byte, at most 1Ei, fractions up).
func sizeOf(pv *corev1.PersistentVolume) (resource.Quantity, *Refusal) {
	q, ok := pv.Spec.Capacity[corev1.ResourceStorage]
	if !ok {
		return q, refuse(ReasonBadSize, "PV has no storage capacity")
	}
	n, err := parameters.ParseSize(q)
	if err != nil {
		return q, refuse(ReasonBadSize, "capacity %s: %v", q.String(), err)
	}
	return *resource.NewQuantity(n, resource.BinarySI), nil
}

// validDevice accepts an absolute, clean device path under /dev.
func validDevice(d string) error {
	switch {
	case d == "":
		return fmt.Errorf("no device recorded")
	case path.Clean(d) != d || !strings.HasPrefix(d, "/dev/") || strings.ContainsAny(d, " ;\n\t"):
		return fmt.Errorf("not a clean path under /dev")
	}
	return nil
}
