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

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
)

// Keys kubelet adds to NodePublishVolume's volume context when the
// CSIDriver has podInfoOnMount: true (k8s.io/kubernetes/pkg/volume/csi
// getPodInfoAttrs).
const (
	PodName           = "csi.storage.k8s.io/pod.name"
	PodNamespace      = "csi.storage.k8s.io/pod.namespace"
	PodUID            = "csi.storage.k8s.io/pod.uid"
	PodServiceAccount = "csi.storage.k8s.io/serviceAccount.name"
	// Ephemeral is "true" for a CSI ephemeral inline volume.
	Ephemeral = "csi.storage.k8s.io/ephemeral"
)

// Attributes of a CSI ephemeral inline volume (the pod's
// volumes[].csi.volumeAttributes; open-local's names). VGName, IOPS and BPS
// are also accepted there.
const (
	InlineSize   = "size"
	InlineFSType = "fsType"
)

// DefaultInlineSize is the size of an inline volume without a size
// attribute (open-local's default; the scheduler's defaultInlineVolumeSize
// defaults to it).
const DefaultInlineSize int64 = 1 << 30

// Pod is the pod a volume is published to, from podInfoOnMount.
type Pod struct {
	Namespace, Name string
	UID             types.UID
}

// PodOf reads the pod from a NodePublishVolume volume context; ok is false
// when kubelet did not pass it (podInfoOnMount off, or not kubelet).
func PodOf(volumeContext map[string]string) (p Pod, ok bool) {
	p = Pod{Namespace: volumeContext[PodNamespace], Name: volumeContext[PodName], UID: types.UID(volumeContext[PodUID])}
	return p, p.Namespace != "" && p.Name != "" && p.UID != ""
}

// IsEphemeral says whether kubelet publishes a CSI ephemeral inline volume.
func IsEphemeral(volumeContext map[string]string) bool { return volumeContext[Ephemeral] == "true" }

// IOLimits are a volume's bps and iops (0: none), from a StorageClass's
// parameters as CreateVolume put them into the volume context, or from an
// inline volume's attributes.
type IOLimits struct {
	BPS, IOPS int64
}

// ParseIOLimits reads bps and iops from a volume context; other keys are
// ignored (the context carries many).
func ParseIOLimits(volumeContext map[string]string) (IOLimits, error) {
	var l IOLimits
	if v, ok := volumeContext[BPS]; ok {
		n, err := parseBPS(v)
		if err != nil {
			return l, &Error{Key: BPS, Value: v, Reason: err.Error()}
		}
		l.BPS = n
	}
	if v, ok := volumeContext[IOPS]; ok {
		n, err := parseIOPS(v)
		if err != nil {
			return l, &Error{Key: IOPS, Value: v, Reason: err.Error()}
		}
		l.IOPS = n
	}
	return l, nil
}

func parseBPS(v string) (int64, error) {
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return 0, fmt.Errorf("want a positive quantity such as 10Mi")
	}
	return boundedBytes(q, MaxBPS)
}

func parseIOPS(v string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 || n > MaxIOPS {
		return 0, fmt.Errorf("want a positive integer up to %d", MaxIOPS)
	}
	return n, nil
}

// Inline is a validated set of inline volume attributes.
type Inline struct {
	// VGName is the VG to create the LV in ("" when not given: then only a
	// LocalVolume the scheduler wrote can serve the volume).
	VGName string
	// Size in bytes: the caller's default when not given.
	Size int64
	// FSType is the attribute's filesystem ("" when not given).
	FSType string
	IOLimits
}

var inlineKnown = []string{VGName, InlineSize, InlineFSType, BPS, IOPS}

// ParseInline validates an inline volume's attributes. The keys kubelet
// adds (csi.storage.k8s.io/*) are accepted; any other unknown key is an
// error naming it, so a typo ("vgname") is not silently ignored.
// defaultSize is the size without a size attribute: DefaultInlineSize on
// the node, the scheduler's configured defaultInlineVolumeSize there.
func ParseInline(attrs map[string]string, defaultSize int64) (Inline, error) {
	in := Inline{Size: defaultSize}
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := attrs[k]
		bad := func(reason string) error {
			return &Error{Key: k, Value: v, Reason: reason, What: "inline volume attribute"}
		}
		switch k {
		case VGName:
			if err := ValidVGName(v); err != nil {
				return in, bad(err.Error())
			}
			in.VGName = v
		case InlineSize:
			n, err := ParseSizeString(v)
			if err != nil {
				return in, bad(err.Error())
			}
			in.Size = n
		case InlineFSType:
			fs, err := ParseFSType(v)
			if err != nil {
				return in, bad(err.Error())
			}
			in.FSType = fs
		case BPS:
			n, err := parseBPS(v)
			if err != nil {
				return in, bad(err.Error())
			}
			in.BPS = n
		case IOPS:
			n, err := parseIOPS(v)
			if err != nil {
				return in, bad(err.Error())
			}
			in.IOPS = n
		default:
			if strings.HasPrefix(k, sidecarPrefix) {
				continue
			}
			return in, bad(fmt.Sprintf("unknown (known: %s, and %s* keys)", strings.Join(inlineKnown, ", "), sidecarPrefix))
		}
	}
	return in, nil
}
