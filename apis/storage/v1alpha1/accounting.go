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
