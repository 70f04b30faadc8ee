package v1alpha1

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
