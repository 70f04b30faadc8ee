package v1

import (
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/utils/ptr"

	"github.com/open-local/open-local/config"
)

// Convert_v1_OpenLocalArgs_To_config_OpenLocalArgs converts defaulted
// versioned args to the internal type (unset pointers become zero values).
//
//nolint:revive,staticcheck // conversion-gen naming convention
func Convert_v1_OpenLocalArgs_To_config_OpenLocalArgs(in *OpenLocalArgs, out *config.OpenLocalArgs, _ conversion.Scope) error {
	out.Strategy = config.Strategy(ptr.Deref(in.Strategy, ""))
	out.ScoreWeights = config.ScoreWeights{}
	if in.ScoreWeights != nil {
		out.ScoreWeights.LVM = ptr.Deref(in.ScoreWeights.LVM, 0)
		out.ScoreWeights.Device = ptr.Deref(in.ScoreWeights.Device, 0)
	}
	out.StorageFreePodAntiAffinityWeight = ptr.Deref(in.StorageFreePodAntiAffinityWeight, 0)
	out.Provisioners = append([]string(nil), in.Provisioners...)
	out.DefaultInlineVolumeSize = ptr.Deref(in.DefaultInlineVolumeSize, config.OpenLocalArgs{}.DefaultInlineVolumeSize).DeepCopy()
	out.ThinPoolFillThresholds = config.ThinPoolFillThresholds{}
	if in.ThinPoolFillThresholds != nil {
		out.ThinPoolFillThresholds.DataPercent = ptr.Deref(in.ThinPoolFillThresholds.DataPercent, 0)
		out.ThinPoolFillThresholds.MetadataPercent = ptr.Deref(in.ThinPoolFillThresholds.MetadataPercent, 0)
	}
	return nil
}

// Convert_config_OpenLocalArgs_To_v1_OpenLocalArgs converts internal args to
// the versioned type (every field set).
//
//nolint:revive,staticcheck // conversion-gen naming convention
func Convert_config_OpenLocalArgs_To_v1_OpenLocalArgs(in *config.OpenLocalArgs, out *OpenLocalArgs, _ conversion.Scope) error {
	out.Strategy = ptr.To(string(in.Strategy))
	out.ScoreWeights = &ScoreWeights{LVM: ptr.To(in.ScoreWeights.LVM), Device: ptr.To(in.ScoreWeights.Device)}
	out.StorageFreePodAntiAffinityWeight = ptr.To(in.StorageFreePodAntiAffinityWeight)
	out.Provisioners = append([]string(nil), in.Provisioners...)
	size := in.DefaultInlineVolumeSize.DeepCopy()
	out.DefaultInlineVolumeSize = &size
	out.ThinPoolFillThresholds = &ThinPoolFillThresholds{DataPercent: ptr.To(in.ThinPoolFillThresholds.DataPercent),
		MetadataPercent: ptr.To(in.ThinPoolFillThresholds.MetadataPercent)}
	return nil
}
