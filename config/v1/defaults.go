package v1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/config"
)

// SetDefaults_OpenLocalArgs fills every unset field.
//
//nolint:revive,staticcheck // the SetDefaults_<Type> name is the apimachinery convention
func SetDefaults_OpenLocalArgs(obj *OpenLocalArgs) {
	if obj.Strategy == nil {
		obj.Strategy = ptr.To(string(config.StrategyBinpack))
	}
	if obj.ScoreWeights == nil {
		obj.ScoreWeights = &ScoreWeights{}
	}
	if obj.ScoreWeights.LVM == nil {
		obj.ScoreWeights.LVM = ptr.To[int32](1)
	}
	if obj.ScoreWeights.Device == nil {
		obj.ScoreWeights.Device = ptr.To[int32](1)
	}
	if obj.StorageFreePodAntiAffinityWeight == nil {
		obj.StorageFreePodAntiAffinityWeight = ptr.To[int32](0)
	}
	if len(obj.Provisioners) == 0 {
		obj.Provisioners = []string{config.ProvisionerName, config.LegacyProvisionerName}
	}
	if obj.DefaultInlineVolumeSize == nil {
		obj.DefaultInlineVolumeSize = resource.NewQuantity(parameters.DefaultInlineSize, resource.BinarySI)
	}
	if obj.ThinPoolFillThresholds == nil {
		obj.ThinPoolFillThresholds = &ThinPoolFillThresholds{}
	}
	if obj.ThinPoolFillThresholds.DataPercent == nil {
		obj.ThinPoolFillThresholds.DataPercent = ptr.To(ledger.DefaultFill.DataPercent)
	}
	if obj.ThinPoolFillThresholds.MetadataPercent == nil {
		obj.ThinPoolFillThresholds.MetadataPercent = ptr.To(ledger.DefaultFill.MetadataPercent)
	}
}
