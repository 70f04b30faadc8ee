// Package validation checks OpenLocal plugin args. The scheduler framework
// validates only in-tree plugin args, so the plugin calls this in New.
package validation

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/config"
)

// maxWeight bounds every weight: scores are 0–100.
const maxWeight = 100

// ValidateOpenLocalArgs returns every problem of args at path.
func ValidateOpenLocalArgs(path *field.Path, args *config.OpenLocalArgs) error {
	var errs field.ErrorList
	switch args.Strategy {
	case config.StrategyBinpack, config.StrategySpread:
	default:
		errs = append(errs, field.NotSupported(path.Child("strategy"), args.Strategy,
			[]string{string(config.StrategyBinpack), string(config.StrategySpread)}))
	}
	w := path.Child("scoreWeights")
	errs = append(errs, validateWeight(w.Child("lvm"), args.ScoreWeights.LVM)...)
	errs = append(errs, validateWeight(w.Child("device"), args.ScoreWeights.Device)...)
	if args.ScoreWeights.LVM == 0 && args.ScoreWeights.Device == 0 {
		errs = append(errs, field.Invalid(w, args.ScoreWeights, "at least one weight must be positive"))
	}
	errs = append(errs, validateWeight(path.Child("storageFreePodAntiAffinityWeight"), args.StorageFreePodAntiAffinityWeight)...)
	p := path.Child("provisioners")
	if len(args.Provisioners) == 0 {
		errs = append(errs, field.Required(p, "at least one provisioner name"))
	}
	seen := map[string]bool{}
	for i, name := range args.Provisioners {
		// CSI driver names are DNS-1123 subdomains of at most 63 characters.
		for _, msg := range validation.IsDNS1123Subdomain(name) {
			errs = append(errs, field.Invalid(p.Index(i), name, msg))
		}
		if len(name) > 63 {
			errs = append(errs, field.TooLong(p.Index(i), name, 63))
		}
		if seen[name] {
			errs = append(errs, field.Duplicate(p.Index(i), name))
		}
		seen[name] = true
	}
	if _, err := parameters.ParseSize(args.DefaultInlineVolumeSize); err != nil {
		errs = append(errs, field.Invalid(path.Child("defaultInlineVolumeSize"), args.DefaultInlineVolumeSize.String(), err.Error()))
	}
	fill := path.Child("thinPoolFillThresholds")
	errs = append(errs, validatePercent(fill.Child("dataPercent"), args.ThinPoolFillThresholds.DataPercent)...)
	errs = append(errs, validatePercent(fill.Child("metadataPercent"), args.ThinPoolFillThresholds.MetadataPercent)...)
	return errs.ToAggregate()
}

func validatePercent(path *field.Path, p int32) field.ErrorList {
	if p < ledger.MinFillPercent || p > ledger.MaxFillPercent {
		return field.ErrorList{field.Invalid(path, p, fmt.Sprintf("must be in the range [%d, %d]", ledger.MinFillPercent, ledger.MaxFillPercent))}
	}
	return nil
}

func validateWeight(path *field.Path, w int32) field.ErrorList {
	if w < 0 || w > maxWeight {
		return field.ErrorList{field.Invalid(path, w, fmt.Sprintf("must be in the range [0, %d]", maxWeight))}
	}
	return nil
}
