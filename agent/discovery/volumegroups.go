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
	"math/big"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
)

// DefaultLegacyLVPrefix is open-local's --lvname default.
const DefaultLegacyLVPrefix = "local"

// Ownership decides which LVs look like open-local's: those tagged
// lvm.OwnedTag, and, for volumes open-local created before tags, names
// starting with LegacyPrefix (open-local's --lvname) or "csi-". It no longer
// makes space allocatable (only a LocalVolume naming the LV does, see
// VolumeGroups); it tells orphans, which an operator should adopt or
// remove, from LVs that were never ours.
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

// Accounted is the set of LVs the node's LocalVolumes name, and so the
// scheduler's ledger counts: by VG, LV name, and whether the LocalVolume is
// a thin one (spec.thinPool; counted in its pool, not in the VG).
type Accounted map[string]map[string]bool

// AccountedBy collects the LVs lvs own (v1alpha1.LocalVolume.LVName in
// spec.vgName); Device volumes and read-only restores own none.
func AccountedBy(lvs []*v1alpha1.LocalVolume) Accounted {
	a := Accounted{}
	for _, lv := range lvs {
		s := &lv.Spec
		if s.VolumeType != v1alpha1.VolumeTypeLVM || s.VGName == "" || s.IsReadOnlyRestore() {
			continue
		}
		if a[s.VGName] == nil {
			a[s.VGName] = map[string]bool{}
		}
		a[s.VGName][lv.LVName()] = s.ThinPool != ""
	}
	return a
}

// counts reports whether a LocalVolume accounts for lv the way the ledger
// counts it: a thin LV by a thin LocalVolume, a thick LV by a thick one.
func (a Accounted) counts(lv lvm.LV) bool {
	thin, ok := a[lv.VG][lv.Name]
	return ok && thin == lv.IsThin()
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

// ThinConfig is the thin-pool configuration of a node's VGs
// (spec.resourceToBeInited.vgs[].thinPool), by VG name.
type ThinConfig map[string]v1alpha1.ThinPoolToBeInited

// ThinConfigOf collects the thin-pool configuration of a NodeLocalStorage spec.
func ThinConfigOf(vgs []v1alpha1.VGToBeInited) ThinConfig {
	c := ThinConfig{}
	for _, vg := range vgs {
		if vg.ThinPool != nil {
			c[vg.Name] = *vg.ThinPool
		}
	}
	return c
}

// one is the overprovision ratio of a pool nobody configured: no
// overprovisioning, so nothing is ever promised that the pool cannot hold.
var one = resource.MustParse("1")

// Ratio is the overprovision ratio of pool in vg, and an error when the
// configured value is below 1 (then 1 applies: a typo never over-commits).
func (c ThinConfig) Ratio(vg, pool string) (resource.Quantity, error) {
	cfg, ok := c[vg]
	if !ok || cfg.Name != pool || cfg.OverprovisionRatio == nil {
		return one.DeepCopy(), nil
	}
	if cfg.OverprovisionRatio.Cmp(one) < 0 {
		return one.DeepCopy(), fmt.Errorf("thin pool %s/%s: overprovisionRatio %s is below 1; using 1", vg, pool, cfg.OverprovisionRatio.String())
	}
	return cfg.OverprovisionRatio.DeepCopy(), nil
}

// VolumeGroups builds the status of every VG: its PVs, LVs and thin pools,
// Total (size), Available (free) and Allocatable = Total − the reserve −
// everything open-local's LocalVolumes do not account for: thick LVs no
// LocalVolume of the node names (accounted), whoever made them, thin pools
// (their space is handed out by virtual size, see v1alpha1.ThinPool), and
// extents of hidden LVs (pool metadata and its spare, raid images), never
// below 0. The ledger counts only LocalVolumes, so an LV none names is
// counted here or nowhere. Thin LVs are not counted in the VG (their space
// is their pool's); a thin LV no LocalVolume names is taken out of its
// pool's allocatable instead. An unaccounted LV that own says is
// open-local's (a force-deleted LocalVolume, an admin's "localbackup", a
// legacy open-local "local-<uuid>") is marked Orphan, for the operator.
// Condition is DiskFull when the VG has no free extent. Everything is
// sorted by name, so equal inventories give equal statuses. Configuration
// errors (a ratio below 1) are returned beside a safe status.
func VolumeGroups(vgs []lvm.VG, lvs []lvm.LV, pvs []lvm.PV, own Ownership, accounted Accounted, reserve Reserve, thin ThinConfig) ([]v1alpha1.VolumeGroup, error) {
	out := make([]v1alpha1.VolumeGroup, 0, len(vgs))
	var errs []error
	for _, vg := range vgs {
		s := v1alpha1.VolumeGroup{
			Name:            vg.Name,
			PhysicalVolumes: []string{},
			Total:           vg.Size,
			Available:       vg.Free,
			ExtentSize:      vg.ExtentSize,
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
		var foreign, visible uint64
		unaccountedThin := map[string]uint64{} // pool -> virtual bytes
		for _, lv := range lvs {
			if lv.VG != vg.Name {
				continue
			}
			isPool := lv.IsThinPool()
			counted := isPool || accounted.counts(lv)
			s.LogicalVolumes = append(s.LogicalVolumes, v1alpha1.LogicalVolume{
				Name:      lv.Name,
				VGName:    lv.VG,
				Total:     lv.Size,
				ReadOnly:  len(lv.Attr) > 1 && lv.Attr[1] == 'r',
				Condition: v1alpha1.StorageReady,
				Orphan:    !counted && own.Owns(lv),
			})
			if lv.IsThin() {
				if !counted {
					unaccountedThin[lv.Pool] = satAdd(unaccountedThin[lv.Pool], lv.Size)
				}
				continue
			}
			visible += lv.Size
			switch {
			case isPool:
				foreign += lv.Size
				pool, err := thinPoolStatus(vg.Name, lv, thin)
				if err != nil {
					errs = append(errs, err)
				}
				s.ThinPools = append(s.ThinPools, pool)
			case !counted:
				foreign += lv.Size
			}
		}
		for i := range s.ThinPools {
			p := &s.ThinPools[i]
			p.Allocatable -= min(p.Allocatable, unaccountedThin[p.Name])
		}
		if used := vg.Size - min(vg.Free, vg.Size); used > visible {
			foreign += used - visible
		}
		sort.Slice(s.LogicalVolumes, func(i, j int) bool { return s.LogicalVolumes[i].Name < s.LogicalVolumes[j].Name })
		sort.Slice(s.ThinPools, func(i, j int) bool { return s.ThinPools[i].Name < s.ThinPools[j].Name })
		reserved, ok := reserve.reserved(vg.Name, vg.Size)
		if ok && foreign+reserved < vg.Size && foreign+reserved >= foreign {
			s.Allocatable = vg.Size - foreign - reserved
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, errors.Join(errs...)
}

func satAdd(a, b uint64) uint64 {
	if a+b < a {
		return math.MaxUint64
	}
	return a + b
}

// fillPercent is an lvm percentage rounded up (a fill threshold is never
// passed unseen), nil when lvm reports none (negative).
func fillPercent(p float64) *int32 {
	if p < 0 {
		return nil
	}
	v := int32(math.Ceil(min(p, 100)))
	return &v
}

// thinPoolStatus reports one pool: its sizes, how full it is, and the
// virtual size its ratio allows.
func thinPoolStatus(vg string, lv lvm.LV, thin ThinConfig) (v1alpha1.ThinPool, error) {
	ratio, err := thin.Ratio(vg, lv.Name)
	p := v1alpha1.ThinPool{Name: lv.Name, Total: lv.Size, OverprovisionRatio: ratio}
	if lv.DataPercent > 0 {
		p.Used = uint64(math.Ceil(float64(lv.Size) * min(lv.DataPercent, 100) / 100))
	}
	p.DataPercent, p.MetadataPercent = fillPercent(lv.DataPercent), fillPercent(lv.MetadataPercent)
	// ratio × size without overflow or float rounding: milli-units in big ints.
	v := new(big.Int).Mul(new(big.Int).SetUint64(lv.Size), big.NewInt(ratio.MilliValue()))
	v.Quo(v, big.NewInt(1000))
	if v.IsUint64() {
		p.Allocatable = v.Uint64()
	} else {
		p.Allocatable = math.MaxUint64
	}
	return p, err
}
