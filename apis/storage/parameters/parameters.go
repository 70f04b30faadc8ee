/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package parameters parses open-local's StorageClass parameters (the CSI
// CreateVolume parameters) and defines the volume context keys the
// controller hands to the node. Keys and values stay compatible with
// alibaba/open-local, so its StorageClasses work unchanged.
package parameters

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// StorageClass parameter keys (open-local's names).
const (
	VolumeType = "volumeType"
	VGName     = "vgName"
	MediaType  = "mediaType"
	LVMType    = "lvmType"
	IOPS       = "iops"
	BPS        = "bps"

	// ThinPool (our addition) makes volumes thin LVs in the named pool,
	// counted by virtual size against the pool's overprovisioned size.
	ThinPool = "thinPool"
	// FSType is set by users in the StorageClass; csi-provisioner moves it
	// into the volume capability, so it usually does not reach CreateVolume.
	FSType = "csi.storage.k8s.io/fstype"
)

// Keys csi-provisioner adds with --extra-create-metadata.
const (
	PVCName      = "csi.storage.k8s.io/pvc/name"
	PVCNamespace = "csi.storage.k8s.io/pvc/namespace"
	PVName       = "csi.storage.k8s.io/pv/name"
)

// sidecarPrefix marks keys the CSI sidecars reserve; they are accepted (and
// ignored unless listed above) because no user typo can produce them.
const sidecarPrefix = "csi.storage.k8s.io/"

// Volume context keys written by CreateVolume in addition to the parameters.
const (
	// ContextDevice is the whole device of a Device volume (open-local's key).
	ContextDevice = "Device"
	// ContextNode is the node holding the volume.
	ContextNode = "csi.aliyun.com/node"
	// ContextFSType is the filesystem chosen at CreateVolume (from the
	// capability), so the node formats what the controller validated.
	ContextFSType = "csi.aliyun.com/fstype"
)

// TopologyKey is the topology segment of a node: volumes are reachable
// from one node only (the PV's node affinity).
const TopologyKey = "kubernetes.io/hostname"

// Media types of Device volumes (and of disks in NodeLocalStorage).
const (
	MediaSSD = "ssd"
	MediaHDD = "hdd"
)

// Filesystems the node can format.
var FSTypes = []string{"ext4", "ext3", "xfs"}

// DefaultFSType is what an unset fstype means (open-local's default).
const DefaultFSType = "ext4"

// Params is a validated set of StorageClass parameters.
type Params struct {
	VolumeType v1alpha1.VolumeType
	VGName     string
	MediaType  string
	LVMType    v1alpha1.LVMType
	ThinPool   string
	FSType     string
	// IOPS and BPS are IO limits (0: none), enforced by the node in the
	// pod's cgroup at NodePublishVolume.
	IOPS int64
	BPS  int64
	// PVCName/PVCNamespace are set when csi-provisioner runs with
	// --extra-create-metadata.
	PVCName      string
	PVCNamespace string
}

// Striped tells whether the volume is a striped thick LV, which LVM
// allocates as stripes × ceil(extents/stripes): both the scheduler and the
// CSI controller count it that way (ledger.Volume.Striped).
func (p Params) Striped() bool {
	return p.VolumeType == v1alpha1.VolumeTypeLVM && p.ThinPool == "" && p.LVMType == v1alpha1.LVMTypeStriping
}

// Error is a malformed or unknown parameter. Callers return it as
// InvalidArgument.
type Error struct {
	Key, Value, Reason string
	// What names the kind of key ("StorageClass parameter" when empty).
	What string
}

func (e *Error) Error() string {
	what := e.What
	if what == "" {
		what = "StorageClass parameter"
	}
	return fmt.Sprintf("%s %q=%q: %s", what, e.Key, e.Value, e.Reason)
}

var known = []string{VolumeType, VGName, MediaType, LVMType, ThinPool, IOPS, BPS}

// Parse validates parameters. An absent volumeType means LVM (open-local
// requires it; defaulting keeps generic CSI tools working).
func Parse(in map[string]string) (Params, error) {
	p := Params{VolumeType: v1alpha1.VolumeTypeLVM, LVMType: v1alpha1.LVMTypeLinear}
	// Sorted, so the error for several bad keys is deterministic.
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := in[k]
		bad := func(reason string, args ...any) error {
			return &Error{Key: k, Value: v, Reason: fmt.Sprintf(reason, args...)}
		}
		switch k {
		case VolumeType:
			switch v1alpha1.VolumeType(v) {
			case v1alpha1.VolumeTypeLVM, v1alpha1.VolumeTypeDevice:
				p.VolumeType = v1alpha1.VolumeType(v)
			default:
				return p, bad("want %s or %s (MountPoint is not supported)", v1alpha1.VolumeTypeLVM, v1alpha1.VolumeTypeDevice)
			}
		case VGName:
			if err := ValidVGName(v); err != nil {
				return p, bad("%v", err)
			}
			p.VGName = v
		case MediaType:
			if v != MediaSSD && v != MediaHDD {
				return p, bad("want %s or %s", MediaSSD, MediaHDD)
			}
			p.MediaType = v
		case LVMType:
			switch v1alpha1.LVMType(v) {
			case v1alpha1.LVMTypeLinear, v1alpha1.LVMTypeStriping:
				p.LVMType = v1alpha1.LVMType(v)
			default:
				return p, bad("want %s or %s", v1alpha1.LVMTypeLinear, v1alpha1.LVMTypeStriping)
			}
		case ThinPool:
			if err := ValidLVName(v); err != nil {
				return p, bad("%v", err)
			}
			p.ThinPool = v
		case FSType:
			fs, err := ParseFSType(v)
			if err != nil {
				return p, bad("%v", err)
			}
			p.FSType = fs
		case IOPS:
			n, err := parseIOPS(v)
			if err != nil {
				return p, bad("%v", err)
			}
			p.IOPS = n
		case BPS:
			n, err := parseBPS(v)
			if err != nil {
				return p, bad("%v", err)
			}
			p.BPS = n
		case PVCName:
			p.PVCName = v
		case PVCNamespace:
			p.PVCNamespace = v
		default:
			if strings.HasPrefix(k, sidecarPrefix) {
				continue
			}
			return p, bad("unknown parameter (known: %s, and %s* keys)", strings.Join(known, ", "), sidecarPrefix)
		}
	}
	if p.VolumeType == v1alpha1.VolumeTypeDevice {
		if p.MediaType == "" {
			return p, &Error{Key: MediaType, Reason: "required for volumeType Device"}
		}
		if p.VGName != "" {
			return p, &Error{Key: VGName, Value: p.VGName, Reason: "not allowed for volumeType Device"}
		}
		if p.ThinPool != "" {
			return p, &Error{Key: ThinPool, Value: p.ThinPool, Reason: "not allowed for volumeType Device"}
		}
	}
	if p.ThinPool != "" && p.LVMType == v1alpha1.LVMTypeStriping {
		return p, &Error{Key: ThinPool, Value: p.ThinPool, Reason: "a thin volume's layout is its pool's: not with lvmType striping"}
	}
	if (p.PVCName == "") != (p.PVCNamespace == "") {
		return p, &Error{Key: PVCName, Value: p.PVCName, Reason: "pvc/name and pvc/namespace come together"}
	}
	return p, nil
}

// ParseFSType accepts "" (the default) and the filesystems the node formats.
func ParseFSType(v string) (string, error) {
	if v == "" {
		return DefaultFSType, nil
	}
	if !slices.Contains(FSTypes, v) {
		return "", fmt.Errorf("filesystem %q is not supported (want one of %s)", v, strings.Join(FSTypes, ", "))
	}
	return v, nil
}

// ValidVGName applies LVM's naming rules for VG names.
func ValidVGName(v string) error {
	if v == "" || len(v) > 127 {
		return fmt.Errorf("a VG name has 1 to 127 characters")
	}
	if v == "." || v == ".." || v[0] == '-' {
		return fmt.Errorf("not a valid VG name")
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("+_.-", r)) {
			return fmt.Errorf("a VG name may contain only a-z A-Z 0-9 + _ . -")
		}
	}
	return nil
}
