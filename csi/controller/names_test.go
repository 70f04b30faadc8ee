/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package controller

import (
	"testing"

	"github.com/open-local/open-local/apis/storage/parameters"
)

// The names of existing volumes never change: which requests get a
// generated name, and that name, are as before the hash schemes moved to
// apis/storage/v1alpha1/names.go (values taken from the code then).
func TestVolumeNamesNeverChange(t *testing.T) {
	s := &Server{}
	ids := []struct{ request, want string }{
		{"Bad_Name", "csi-5076bbac21f8b0c5cd4937d0e6aca4b516e1aa35"},
		{"pvc-1234", "pvc-1234"},
		{"snap-x", "csi-25a90a2d78c369c92618e3609c318d17c4e69692"}, // snap- names are snapshots'
		{"a/b", "csi-c14cddc033f64b9dea80ea675cf280a015e67251"},
		{"UPPER", "csi-9cba1c6593a62cf5e44b2d18a7331e5c20f715ca"},
		{"snapshot-x", "snapshot-x"},
	}
	for _, tt := range ids {
		if id, _, err := s.volumeID(t.Context(), tt.request, parameters.Params{}); err != nil || id != tt.want {
			t.Errorf("volumeID(%q) = %q, %v; want %q", tt.request, id, err, tt.want)
		}
	}
	lvs := []struct{ id, want string }{
		{"pvc-1234", ""},
		{"csi-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "lv-0b769ca6a312a5a1a13155f4b030d820"},
		{"snapshot-x", "lv-2ab880e60fac5ce4a8f274dfdd0ed755"},
		{"-lead", "lv-54e05a0bef38bd81404e5a27c05c9124"},
		{"a.b", ""},
		{"x/y", "lv-bd3c9047d6816c3172f52ddb42bf77c7"},
	}
	for _, tt := range lvs {
		if got := lvNameFor(tt.id); got != tt.want {
			t.Errorf("lvNameFor(%q) = %q, want %q", tt.id, got, tt.want)
		}
	}
}
