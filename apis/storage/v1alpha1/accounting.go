package v1alpha1

import "math"

// CountedSize is how many bytes an LVM LocalVolume takes on its node, the
// one rule the scheduler's ledger and the CSI controller both count by: from
// spec.thinPool (virtual size) when it is set, else from spec.vgName. It is
// spec.size, except for a volume restored read-only from a snapshot, which
// is that snapshot's LV and takes nothing of its own.
func (s *LocalVolumeSpec) CountedSize() int64 {
	if s.IsReadOnlyRestore() {
		return 0
	}
	return s.Size.Value()
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
func ExtentRounded(size, extent int64) int64 {
	if extent <= 0 {
		extent = DefaultExtentSize
	}
	if size <= 0 || size > math.MaxInt64-extent {
		return size
	}
	return (size + extent - 1) / extent * extent
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
