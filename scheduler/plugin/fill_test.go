/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package plugin

import (
	"fmt"
	"testing"

	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// A pool crossing a fill threshold is reported once per crossing, as an
// Event on its NodeLocalStorage: Warning ThinPoolFilled naming the pool,
// its fill and the threshold; Normal ThinPoolBelowFill when it drops back.
func TestFillChanges(t *testing.T) {
	pct := func(v int32) *int32 { return &v }
	withPool := func(data, metadata *int32) *v1alpha1.NodeLocalStorage {
		o := nodeStorage("n1", []vg{{"pool0", 100}})
		o.Status.NodeStorageInfo.VolumeGroups[0].ThinPools = []v1alpha1.ThinPool{{Name: "tp", DataPercent: data, MetadataPercent: metadata}}
		return o
	}
	for _, tt := range []struct {
		name     string
		old, new *v1alpha1.NodeLocalStorage
		want     string
	}{
		{name: "crosses data", old: withPool(pct(90), pct(10)), new: withPool(pct(91), pct(10)),
			want: "[Warning ThinPoolFilled: thin pool pool0/tp: data 91% full, above the 90% threshold: no new volumes go there]"},
		{name: "already over: no repeat", old: withPool(pct(91), nil), new: withPool(pct(95), nil), want: "[]"},
		{name: "new NLS already over (scheduler start)", new: withPool(nil, pct(81)),
			want: "[Warning ThinPoolFilled: thin pool pool0/tp: metadata 81% full, above the 80% threshold: no new volumes go there]"},
		{name: "drops back", old: withPool(pct(95), nil), new: withPool(pct(50), nil),
			want: "[Normal ThinPoolBelowFill: thin pool pool0/tp: data and metadata within the thresholds (90%, 80%): new volumes may go there]"},
		{name: "becomes unknown: not over", old: withPool(pct(95), nil), new: withPool(nil, nil),
			want: "[Normal ThinPoolBelowFill: thin pool pool0/tp: data and metadata within the thresholds (90%, 80%): new volumes may go there]"},
		{name: "below, stays below", old: withPool(pct(10), pct(10)), new: withPool(pct(20), pct(20)), want: "[]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, c := range fillChanges(ledger.DefaultFill, tt.old, tt.new) {
				got = append(got, fmt.Sprintf("%s %s: %s", c.eventType, c.reason, c.note))
			}
			if fmt.Sprint(got) != tt.want {
				t.Errorf("events %v\nwant   %s", got, tt.want)
			}
		})
	}
}
