/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package discovery

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
)

// DefaultLegacyLVPrefix is open-local's --lvname default.
const DefaultLegacyLVPrefix = "local"

// Ownership decides which LVs belong to open-local: those tagged
// lvm.OwnedTag, and, for volumes open-local created before tags, names
// starting with LegacyPrefix (open-local's --lvname) or "csi-".
type Ownership struct {
	// LegacyPrefix is open-local's --lvname; empty disables the check.
	LegacyPrefix string
}

// Owns reports whether lv is open-local's.
func (o Ownership) Owns(lv lvm.LV) bool {
	return lv.HasTag(lvm.OwnedTag) ||
		(o.LegacyPrefix != "" && strings.HasPrefix(lv.Name, o.LegacyPrefix)) ||
		strings.HasPrefix(lv.Name, "csi-")
}

// ReserveAnnotation on a NodeLocalStorage keeps space of VGs out of
// allocatable: {"vg":"100Gi","vg2":"10%"}.
const ReserveAnnotation = "csi.aliyun.com/storage-reserved"

// Reservation is space of one VG kept out of allocatable.
type Reservation struct {
	Bytes   uint64
	Percent float64 // of the VG's size, 0..100
	// Invalid: the value could not be parsed; the VG then gets no
	// allocatable space (never over-commit on a typo).
	Invalid bool
}

// Reserve is a parsed ReserveAnnotation.
type Reserve struct {
	ByVG map[string]Reservation
	// Invalid: the annotation is not a JSON object of strings; every VG then
	// gets no allocatable space, since any of them may be meant.
	Invalid bool
}

// sizeRE is open-local's size syntax (docker/go-units RAMInBytes): a number
// and an optional binary unit: 100Gi, 100G, 100gb, 512m (MiB), 1.5T.
var sizeRE = regexp.MustCompile(`^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?$`)

// ParseReserve parses ReserveAnnotation's value. Sizes use open-local's
// binary units ("10G" and "10Gi" are both 10×2^30 bytes; "m" is MiB, not
// Kubernetes' milli); percentages are "10%" or "12.5%". Both kinds work:
// open-local computed percentages but then subtracted 0 for them. On error the
// returned Reserve is still usable and marks what was invalid.
func ParseReserve(annotation string) (Reserve, error) {
	var raw map[string]string
	if err := json.Unmarshal([]byte(annotation), &raw); err != nil {
		return Reserve{Invalid: true}, fmt.Errorf("annotation %s=%q is not a JSON object of VG names to sizes or percentages: %w", ReserveAnnotation, annotation, err)
	}
	r := Reserve{ByVG: make(map[string]Reservation, len(raw))}
	var errs []error
	for vg, v := range raw {
		res, err := parseReservation(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("VG %s: %w", vg, err))
			res = Reservation{Invalid: true}
		}
		r.ByVG[vg] = res
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	if len(errs) > 0 {
		return r, fmt.Errorf("annotation %s: %w", ReserveAnnotation, errors.Join(errs...))
	}
	return r, nil
}

func parseReservation(v string) (Reservation, error) {
	s := strings.TrimSpace(v)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		pct, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || pct < 0 || pct > 100 || math.IsNaN(pct) {
			return Reservation{}, fmt.Errorf("%q: want a percentage between 0%% and 100%%", v)
		}
		return Reservation{Percent: pct}, nil
	}
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return Reservation{}, fmt.Errorf("%q: want a size like 100Gi or a percentage like 10%%", v)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return Reservation{}, fmt.Errorf("%q: %w", v, err)
	}
	shift := map[string]uint{"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50}[strings.ToLower(m[2])]
	bytes := n * math.Exp2(float64(shift))
	if bytes >= math.MaxUint64 {
		return Reservation{}, fmt.Errorf("%q: too large", v)
	}
	return Reservation{Bytes: uint64(bytes)}, nil
}

// reserved is how many bytes of a VG of size total the reserve keeps, and
// false when nothing may be allocated at all.
func (r Reserve) reserved(vg string, total uint64) (uint64, bool) {
	if r.Invalid {
		return 0, false
	}
	res, ok := r.ByVG[vg]
	switch {
	case !ok:
		return 0, true
	case res.Invalid:
		return 0, false
	case res.Percent > 0:
		return uint64(math.Ceil(float64(total) * res.Percent / 100)), true
	default:
		return res.Bytes, true
	}
}

// VolumeGroups builds the status of every VG: its PVs and LVs, Total (size),
// Available (free) and Allocatable = Total − LVs open-local does not own −
// the reserve, never below 0. Thin LVs are not counted (their space is their
// pool's). Condition is DiskFull when the VG has no free extent. Everything
// is sorted by name, so equal inventories give equal statuses.
func VolumeGroups(vgs []lvm.VG, lvs []lvm.LV, pvs []lvm.PV, own Ownership, reserve Reserve) []v1alpha1.VolumeGroup {
	out := make([]v1alpha1.VolumeGroup, 0, len(vgs))
	for _, vg := range vgs {
		s := v1alpha1.VolumeGroup{
			Name:            vg.Name,
			PhysicalVolumes: []string{},
			Total:           vg.Size,
			Available:       vg.Free,
			Condition:       v1alpha1.StorageReady,
		}
		if vg.Free == 0 {
			s.Condition = v1alpha1.StorageFull
		}
		for _, pv := range pvs {
			if pv.VG == vg.Name {
				s.PhysicalVolumes = append(s.PhysicalVolumes, pv.Name)
			}
		}
		sort.Strings(s.PhysicalVolumes)
		var foreign uint64
		for _, lv := range lvs {
			if lv.VG != vg.Name {
				continue
			}
			s.LogicalVolumes = append(s.LogicalVolumes, v1alpha1.LogicalVolume{
				Name:      lv.Name,
				VGName:    lv.VG,
				Total:     lv.Size,
				ReadOnly:  len(lv.Attr) > 1 && lv.Attr[1] == 'r',
				Condition: v1alpha1.StorageReady,
			})
			if lv.Pool == "" && !own.Owns(lv) {
				foreign += lv.Size
			}
		}
		sort.Slice(s.LogicalVolumes, func(i, j int) bool { return s.LogicalVolumes[i].Name < s.LogicalVolumes[j].Name })
		reserved, ok := reserve.reserved(vg.Name, vg.Size)
		if ok && foreign+reserved < vg.Size && foreign+reserved >= foreign {
			s.Allocatable = vg.Size - foreign - reserved
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
