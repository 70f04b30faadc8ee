/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package lvm

import "testing"

func TestRequiredStripes(t *testing.T) {
	const ext = 4 * mib
	free := func(sizes ...uint64) []PV {
		var pvs []PV
		for _, s := range sizes {
			pvs = append(pvs, PV{Free: s})
		}
		return pvs
	}
	tests := []struct {
		name string
		pvs  []PV
		size uint64
		want int
	}{
		{"all equal", free(10*gib, 10*gib, 10*gib), 6 * gib, 3},
		{"one too small", free(10*gib, 10*gib, 1*gib), 6 * gib, 2},
		{"cascade down to one", free(10*gib, 2*gib, 1*gib), 6 * gib, 1},
		{"nothing fits", free(1*gib, 1*gib), 6 * gib, 0},
		{"exact fit", free(3*gib, 3*gib), 6 * gib, 2},
		// 25 extents over 2 PVs: lvm rounds to 13 each; 12 extents free is not enough, and 13 cannot hold all 25.
		{"extent rounding", free(13*ext, 12*ext), 25 * ext, 0},
		{"extent rounding fits", free(13*ext, 13*ext), 25 * ext, 2},
		{"no PVs", nil, gib, 0},
		{"zero size", free(gib), 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RequiredStripes(tt.pvs, tt.size, ext); got != tt.want {
				t.Errorf("RequiredStripes = %d, want %d", got, tt.want)
			}
		})
	}
}
