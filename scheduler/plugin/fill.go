/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package plugin

import (
	"fmt"

	v1 "k8s.io/api/core/v1"

	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// Event reasons on a NodeLocalStorage whose thin pool crosses a fill
// threshold (the scheduler's, which is what decides placement).
const (
	ReasonThinPoolFilled    = "ThinPoolFilled"
	ReasonThinPoolBelowFill = "ThinPoolBelowFill"
)

type fillChange struct {
	eventType, reason, note string
}

// fillChanges lists the thin pools of nls that crossed a threshold of f
// since old (nil: none was over), by the ledger's rule.
func fillChanges(f ledger.Fill, old, nls *v1alpha1.NodeLocalStorage) []fillChange {
	wasOver := map[[2]string]bool{}
	if old != nil {
		for _, g := range old.Status.NodeStorageInfo.VolumeGroups {
			for _, p := range g.ThinPools {
				_, _, _, over := f.Exceeded(p)
				wasOver[[2]string{g.Name, p.Name}] = over
			}
		}
	}
	var out []fillChange
	for _, g := range nls.Status.NodeStorageInfo.VolumeGroups {
		for _, p := range g.ThinPools {
			what, fill, threshold, over := f.Exceeded(p)
			switch before := wasOver[[2]string{g.Name, p.Name}]; {
			case over && !before:
				out = append(out, fillChange{v1.EventTypeWarning, ReasonThinPoolFilled,
					fmt.Sprintf("thin pool %s/%s: %s %d%% full, above the %d%% threshold: no new volumes go there", g.Name, p.Name, what, fill, threshold)})
			case !over && before:
				out = append(out, fillChange{v1.EventTypeNormal, ReasonThinPoolBelowFill,
					fmt.Sprintf("thin pool %s/%s: data and metadata within the thresholds (%d%%, %d%%): new volumes may go there", g.Name, p.Name, f.DataPercent, f.MetadataPercent)})
			}
		}
	}
	return out
}

// reportFill records fillChanges as Events on the NodeLocalStorage.
func (pl *OpenLocal) reportFill(old, obj any) {
	nls, ok := obj.(*v1alpha1.NodeLocalStorage)
	if !ok || pl.handle == nil || pl.handle.EventRecorder() == nil {
		return
	}
	prev, _ := old.(*v1alpha1.NodeLocalStorage)
	for _, c := range fillChanges(pl.fill, prev, nls) {
		pl.handle.EventRecorder().Eventf(nls, nil, c.eventType, c.reason, "Scheduling", "%s", c.note)
	}
}
