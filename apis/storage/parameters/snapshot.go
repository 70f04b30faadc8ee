/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package parameters

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// VolumeSnapshotClass parameters (open-local's names).
const (
	// SnapshotReadOnly "true": restores of the snapshot are read-only views
	// of it (open-local's read-only snapshot: no copy, no space of their
	// own). Otherwise a restore is a new writable volume with its data.
	SnapshotReadOnly = "csi.aliyun.com/readonly"
	// SnapshotInitialSize is a classic snapshot's first copy-on-write space.
	SnapshotInitialSize = "csi.aliyun.com/snapshot-initial-size"
	// SnapshotExpansionThreshold: grow the copy-on-write space when it is
	// fuller than this percentage.
	SnapshotExpansionThreshold = "csi.aliyun.com/snapshot-expansion-threshold"
	// SnapshotExpansionSize is added each time the threshold is passed.
	SnapshotExpansionSize = "csi.aliyun.com/snapshot-expansion-size"
)

// Defaults of the snapshot parameters (open-local's).
const (
	DefaultSnapshotInitialSize      = 4 << 30
	DefaultSnapshotThresholdPercent = 50
	DefaultSnapshotExpansionSize    = 1 << 30
)

// Volume context keys of restored volumes (open-local's names).
const (
	ContextReadOnly       = SnapshotReadOnly
	ContextSnapshotID     = "csi.aliyun.com/snapshot-id"
	ContextSourceVolumeID = "csi.aliyun.com/source-volume-id"
)

// SnapshotParams is a validated set of VolumeSnapshotClass parameters.
type SnapshotParams struct {
	ReadOnly bool
	// InitialSize is the copy-on-write space a classic snapshot starts with
	// (capped at its origin's size by the caller).
	InitialSize int64
	// ThresholdPercent and ExpansionSize are the growth policy.
	ThresholdPercent int32
	ExpansionSize    int64
}

var knownSnapshot = []string{SnapshotReadOnly, SnapshotInitialSize, SnapshotExpansionThreshold, SnapshotExpansionSize}

// ParseSnapshot validates VolumeSnapshotClass parameters (the CSI
// CreateSnapshot parameters). csi.storage.k8s.io/* keys of the sidecars are
// accepted; any other unknown key is an error naming it.
func ParseSnapshot(in map[string]string) (SnapshotParams, error) {
	p := SnapshotParams{InitialSize: DefaultSnapshotInitialSize, ThresholdPercent: DefaultSnapshotThresholdPercent,
		ExpansionSize: DefaultSnapshotExpansionSize}
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := in[k]
		bad := func(reason string, args ...any) error {
			return &Error{What: "VolumeSnapshotClass parameter", Key: k, Value: v, Reason: fmt.Sprintf(reason, args...)}
		}
		switch k {
		case SnapshotReadOnly:
			b, err := strconv.ParseBool(v)
			if err != nil {
				return p, bad("want true or false")
			}
			p.ReadOnly = b
		case SnapshotInitialSize, SnapshotExpansionSize:
			n, err := ParseSizeString(v)
			if err != nil {
				return p, bad("%v", err)
			}
			if k == SnapshotInitialSize {
				p.InitialSize = n
			} else {
				p.ExpansionSize = n
			}
		case SnapshotExpansionThreshold:
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "%")))
			if err != nil || n < 1 || n > 100 {
				return p, bad("want a percentage from 1%% to 100%%, such as 50%%")
			}
			p.ThresholdPercent = int32(n)
		default:
			if strings.HasPrefix(k, sidecarPrefix) {
				continue
			}
			return p, bad("unknown parameter (known: %s, and %s* keys)", strings.Join(knownSnapshot, ", "), sidecarPrefix)
		}
	}
	return p, nil
}

// ValidLVName applies LVM's naming rules for LV names (a thin pool's).
func ValidLVName(v string) error {
	if err := ValidVGName(v); err != nil {
		return fmt.Errorf("%s", strings.ReplaceAll(err.Error(), "VG", "LV"))
	}
	for _, reserved := range []string{"snapshot", "pvmove"} {
		if strings.HasPrefix(v, reserved) {
			return fmt.Errorf("an LV name must not start with %q", reserved)
		}
	}
	return nil
}
