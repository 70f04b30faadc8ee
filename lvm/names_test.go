/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package lvm

import (
	"errors"
	"strings"
	"testing"
)

// nameCases are checked against our validation here, and against lvm itself
// (lvcreate/vgcreate --test) in TestNameRulesAgreeWithLVM.
var nameCases = []struct {
	name     string
	vgOK     bool
	lvOK     bool
	lvmCheck bool // also ask lvm (false for names lvm's argv parsing mangles)
}{
	{name: "vg0", vgOK: true, lvOK: true, lvmCheck: true},
	{name: "open-local-pool-0", vgOK: true, lvOK: true, lvmCheck: true},
	{name: "a+b_c.d-e", vgOK: true, lvOK: true, lvmCheck: true},
	{name: "pvc-0b2c8f1e-5d7a-4c1b-9f3e-2a6b8c9d0e1f", vgOK: true, lvOK: true, lvmCheck: true},
	{name: strings.Repeat("a", 127), vgOK: true, lvOK: true},
	{name: strings.Repeat("a", 128), vgOK: false, lvOK: false, lvmCheck: true},
	{name: "", vgOK: false, lvOK: false},
	{name: "-vg", vgOK: false, lvOK: false, lvmCheck: true},
	{name: ".", vgOK: false, lvOK: false, lvmCheck: true},
	{name: "..", vgOK: false, lvOK: false, lvmCheck: true},
	{name: "...", vgOK: true, lvOK: true, lvmCheck: true},
	{name: "bad name", vgOK: false, lvOK: false, lvmCheck: true},
	{name: "bad/name", vgOK: false, lvOK: false},
	{name: "bäd", vgOK: false, lvOK: false, lvmCheck: true},
	{name: "semi;colon", vgOK: false, lvOK: false, lvmCheck: true},
	{name: "snapshot", vgOK: true, lvOK: false, lvmCheck: true},
	{name: "snapshot-1f2e", vgOK: true, lvOK: false, lvmCheck: true},
	{name: "pvmove0", vgOK: true, lvOK: false, lvmCheck: true},
	{name: "mysnapshot", vgOK: true, lvOK: true, lvmCheck: true},
	{name: "data_tmeta", vgOK: true, lvOK: false, lvmCheck: true},
	{name: "x_rimage_0", vgOK: true, lvOK: false, lvmCheck: true},
	{name: "x_mlog", vgOK: true, lvOK: false, lvmCheck: true},
	{name: "x_cdata", vgOK: true, lvOK: false, lvmCheck: true},
	{name: "x_cpool", vgOK: true, lvOK: false, lvmCheck: true},
	{name: "x_vorigin", vgOK: true, lvOK: false, lvmCheck: true},
	{name: "x_pmspare", vgOK: true, lvOK: false, lvmCheck: true},
	{name: "x_imeta", vgOK: true, lvOK: false, lvmCheck: true},
	{name: "x_iorig", vgOK: true, lvOK: false, lvmCheck: true},
	{name: "x_vdata", vgOK: true, lvOK: false, lvmCheck: true},
	{name: "x_rmeta", vgOK: true, lvOK: false, lvmCheck: true},
	{name: "x_tdata", vgOK: true, lvOK: false, lvmCheck: true},
	{name: "x_mimage", vgOK: true, lvOK: false, lvmCheck: true},
	{name: "x_corig", vgOK: true, lvOK: false, lvmCheck: true},
	{name: "x_cmeta", vgOK: true, lvOK: false, lvmCheck: true},
	{name: "tmeta", vgOK: true, lvOK: true, lvmCheck: true},
}

func TestValidateNames(t *testing.T) {
	for _, tt := range nameCases {
		t.Run(tt.name, func(t *testing.T) {
			if err := ValidateVGName(tt.name); (err == nil) != tt.vgOK {
				t.Errorf("ValidateVGName(%q) = %v, want ok=%v", tt.name, err, tt.vgOK)
			} else if err != nil && !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("ValidateVGName(%q) = %v, not ErrInvalidArgument", tt.name, err)
			}
			if err := ValidateLVName(tt.name); (err == nil) != tt.lvOK {
				t.Errorf("ValidateLVName(%q) = %v, want ok=%v", tt.name, err, tt.lvOK)
			}
		})
	}
}

func TestValidateTag(t *testing.T) {
	tests := []struct {
		tag string
		ok  bool
	}{
		{OwnedTag, true},
		{ProtectedTag, true},
		{"a.b_c+d-e/f=g!h:i&j#k", true},
		{"", false},
		{"-x", false},
		{"has space", false},
		{"comma,separated", false},
		{"quote\"", false},
		{strings.Repeat("t", 1024), true},
		{strings.Repeat("t", 1025), false},
	}
	for _, tt := range tests {
		if err := ValidateTag(tt.tag); (err == nil) != tt.ok {
			t.Errorf("ValidateTag(%q) = %v, want ok=%v", tt.tag, err, tt.ok)
		}
	}
}
