/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package lvm

// RequiredStripes is open-local's stripe count for a "striping" LV of size
// bytes over pvs (the PVs of one VG): start with every PV, drop those whose
// free space cannot hold their share (size/N, in whole extents), and repeat
// until N is stable. 0 means no set of PVs can hold the LV.
//
// open-local computed the same, but mutated the slice it ranged over and
// ignored extent rounding; this follows lvm's own arithmetic, so a count it
// returns is one lvcreate accepts.
func RequiredStripes(pvs []PV, size, extentSize uint64) int {
	if size == 0 || extentSize == 0 {
		return 0
	}
	extents := (size + extentSize - 1) / extentSize
	candidates := pvs
	for len(candidates) > 0 {
		n := uint64(len(candidates))
		share := (extents + n - 1) / n * extentSize
		var fit []PV
		for _, pv := range candidates {
			if pv.Free >= share {
				fit = append(fit, pv)
			}
		}
		if len(fit) == len(candidates) {
			return len(fit)
		}
		candidates = fit
	}
	return 0
}
