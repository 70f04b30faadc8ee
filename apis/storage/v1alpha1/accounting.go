package v1alpha1

import (
	"math"

	"k8s.io/apimachinery/pkg/api/resource"
)

// MaxSize (1 EiB) is the largest size of a volume: LocalVolume.spec.size's
// CRD maximum and parameters.MaxVolumeSize, which every parsed size is
// checked against. It keeps sizes far from 2^63, where
// resource.Quantity.Value() wraps (2^64 − 200Gi reads as −200Gi), and sums
// of many volumes inside int64.
const MaxSize int64 = 1 << 60

// maxSize is MaxSize as a quantity, for comparisons that cannot wrap.
var maxSize = *resource.NewQuantity(MaxSize, resource.BinarySI)

// CountedSize is how many bytes an LVM LocalVolume takes on its node, the
// one rule the scheduler's ledger and the CSI controller both count by: from
// spec.thinPool (virtual size) when it is set, else from spec.vgName. It is
// spec.size, except for a volume restored read-only from a snapshot, which
// is that snapshot's LV and takes nothing of its own. A size outside
// (0, MaxSize], which the CRD refuses but an object written before that
// rule may hold, counts as MaxSize: a record nobody can trust holds space
// rather than freeing it.
func (s *LocalVolumeSpec) CountedSize() int64 {
	if s.IsReadOnlyRestore() {
		return 0
	}
	if s.Size.Sign() <= 0 || s.Size.Cmp(maxSize) > 0 {
		return MaxSize
	}
	return s.Size.Value()
}

// CountedSize is what the LocalVolume holds on its node: its spec's
// CountedSize, except when the agent refused this generation for room
// (Failed, ResourceExhausted, observedGeneration = generation): then what
// its LV has (status.currentSize), nothing for a create. A refused record
// holds no space: the CSI controller raises spec.size before the agent
// decides a growth, and a refused create's record stays until its writer
// deletes it; counting either held space nobody got, so pods waited for
// room LVM still had, and the agent refused volumes that fit. The agent
// retries, and its admission decides again then.
func (lv *LocalVolume) CountedSize() int64 {
	n := lv.Spec.CountedSize()
	st := &lv.Status
	if st.Phase != PhaseFailed || st.Code != "ResourceExhausted" || st.ObservedGeneration != lv.Generation {
		return n
	}
	if st.CurrentSize == nil {
		return 0
	}
	if c := st.CurrentSize; c.Sign() >= 0 && c.Cmp(lv.Spec.Size) < 0 {
		return min(c.Value(), n)
	}
	return n
}

// Striped reports a striped thick LV, which LVM allocates as stripes ×
// ceil(extents/stripes) (LVTake).
func (s *LocalVolumeSpec) Striped() bool {
	return s.VolumeType == VolumeTypeLVM && s.ThinPool == "" && s.LVMType == LVMTypeStriping
}

// IsReadOnlyRestore reports a volume that is a read-only view of the
// snapshot source.snapshot: it owns no LV.
func (s *LocalVolumeSpec) IsReadOnlyRestore() bool {
	return s.ReadOnly && s.Kind != KindSnapshot && s.Source != nil && s.Source.Snapshot != ""
}

// DefaultExtentSize is LVM's default extent size, assumed for a VG whose
// status gives none (open-local's agent does not report it).
const DefaultExtentSize = 4 << 20

// ExtentRounded is the space an LV of size bytes takes in a VG whose extent
// size is extent (0: DefaultExtentSize). LVM allocates whole extents, so
// counting bare sizes would let many odd-sized volumes over-commit a VG by
// up to an extent each. The scheduler's ledger and the CSI controller both
// count thick LVs so.
//
// 0 is 0 (a read-only restore takes nothing). A negative size or one past
// MaxSize is never a real LV: it counts as MaxSize, so it can only fill a
// VG, never add free space to it (a negative count would).
func ExtentRounded(size, extent int64) int64 {
	if extent <= 0 || extent > MaxSize {
		extent = DefaultExtentSize
	}
	switch {
	case size == 0:
		return 0
	case size < 0 || size > MaxSize:
		return MaxSize
	}
	// size, extent ≤ 2^60: the sum cannot wrap.
	return min((size+extent-1)/extent*extent, math.MaxInt64)
}

// LVName is the LV a LocalVolume names in its VG: spec.lvName when set, else
// the object's name (docs/localvolume.md). The agent, the CSI node plugin and
// the agent's count of orphan LVs all resolve it so.
func (lv *LocalVolume) LVName() string {
	if lv.Spec.LVName != "" {
		return lv.Spec.LVName
	}
	return lv.Name
}

// CountsThickLV reports whether the LocalVolume accounts for a thick LV of
// its VG (spec.vgName/LVName()): an LVM volume or classic snapshot outside a
// thin pool that is not a read-only restore (those own no LV).
func (s *LocalVolumeSpec) CountsThickLV() bool {
	return s.VolumeType == VolumeTypeLVM && s.ThinPool == "" && !s.IsReadOnlyRestore()
}

// ExtentFloor is the largest multiple of extent (0: DefaultExtentSize) not
// above free: the biggest LV that fits in free bytes of a VG.
func ExtentFloor(free, extent int64) int64 {
	if extent <= 0 {
		extent = DefaultExtentSize
	}
	if free <= 0 {
		return 0
	}
	return free / extent * extent
}

// StripedExtentRounded is the space a striped LV of size bytes over
// stripes PVs takes: LVM gives every stripe the same whole number of
// extents, so stripes × ceil(extents/stripes) (4 stripes, 1Gi+1B with
// 4MiB extents: 260 extents, not 257). lvextend keeps the stripe count and
// rounds the same way, so the rule holds for the total after every extend.
func StripedExtentRounded(size, extent int64, stripes int) int64 {
	if extent <= 0 {
		extent = DefaultExtentSize
	}
	if size <= 0 || size > math.MaxInt64/2 {
		return ExtentRounded(size, extent)
	}
	extents := (size + extent - 1) / extent
	if stripes <= 1 {
		return extents * extent
	}
	s := int64(stripes)
	return (extents + s - 1) / s * s * extent
}

// LVTake is what a thick LV of size bytes is counted as in a VG with the
// given extent size and PV count: whole extents, and for open-local's
// "striping" layout the worst case over every stripe count the agent may
// pick (1 to pvs). The agent chooses the count at lvcreate time from the
// PVs' free space (lvm.RequiredStripes), which no one else can know in
// advance and which no object records, so the scheduler, the CSI controller
// and the agent all count the largest allocation it can lead to: at most
// pvs-1 extents more than a linear LV, never less than LVM allocates.
func LVTake(size, extent int64, striped bool, pvs int) int64 {
	if !striped || pvs <= 1 {
		return ExtentRounded(size, extent)
	}
	worst := int64(0)
	for s := 1; s <= pvs; s++ {
		worst = max(worst, StripedExtentRounded(size, extent, s))
	}
	return worst
}
