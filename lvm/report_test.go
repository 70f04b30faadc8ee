/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package lvm

import (
	"reflect"
	"testing"
	"time"
)

func TestParseReports(t *testing.T) {
	// Shapes as lvm2 2.03.16 prints them.
	vgs, err := parseVGs([]byte(`  {
      "report": [
          {
              "vg": [
                  {"vg_name":"vga", "vg_uuid":"oDUe", "vg_size":"1069547520", "vg_free":"964689920", "vg_extent_size":"4194304", "vg_extent_count":"255", "vg_free_count":"230", "pv_count":"1", "lv_count":"1", "vg_tags":"", "vg_attr":"wz--n-"}
              ]
          }
      ]
  }`))
	if err != nil {
		t.Fatal(err)
	}
	wantVG := []VG{{Name: "vga", UUID: "oDUe", Size: 1069547520, Free: 964689920, ExtentSize: 4194304, ExtentCount: 255, FreeCount: 230, PVCount: 1, LVCount: 1, Attr: "wz--n-"}}
	if !reflect.DeepEqual(vgs, wantVG) {
		t.Errorf("VGs = %+v\nwant %+v", vgs, wantVG)
	}

	lvs, err := parseLVs([]byte(`{"report":[{"lv":[
		{"lv_name":"x", "vg_name":"vga", "lv_uuid":"lJBx", "lv_size":"104857600", "lv_tags":"csi.aliyun.com/open-local,t2", "lv_attr":"-wi-XX----", "lv_layout":"linear", "origin":"", "pool_lv":"", "seg_count":"1", "lv_path":"/dev/vga/x", "lv_active":"unknown", "data_percent":""},
		{"lv_name":"s", "vg_name":"vga", "lv_size":"4194304", "lv_attr":"swi-a-s---", "lv_layout":"linear", "origin":"x", "seg_count":"1", "lv_active":"active", "data_percent":"12.50", "origin_size":"104857600", "lv_time":"2026-11-26 00:16:59 +0000"},
		{"lv_name":"pool", "vg_name":"vga", "lv_size":"8388608", "lv_layout":"thin,pool", "seg_count":"1", "lv_active":"active", "data_percent":"40.00", "metadata_percent":"10.25", "lv_metadata_size":"4194304"},
		{"lv_name":"gone", "vg_name":"vga", "lv_size":"4194304", "lv_attr":"swi-I-s---", "origin":"x", "seg_count":"1", "data_percent":"100.00", "lv_time":"not a time"},
		{"lv_name":"t", "vg_name":"vga", "lv_size":"1073741824", "lv_attr":"Vwi-a-tz--", "lv_layout":"thin,sparse", "origin":"t0", "pool_lv":"pool", "seg_count":"1", "data_percent":"0.00"},
		{"lv_name":"[lvol0_pmspare]", "vg_name":"vga", "lv_size":"4194304"}
	]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	wantLV := []LV{
		{Name: "x", VG: "vga", UUID: "lJBx", Size: 104857600, Tags: []string{OwnedTag, "t2"}, Attr: "-wi-XX----", Layout: "linear", Segments: 1, Path: "/dev/vga/x", Active: "unknown", DataPercent: -1, MetadataPercent: -1},
		{Name: "s", VG: "vga", Size: 4194304, Attr: "swi-a-s---", Layout: "linear", Origin: "x", Segments: 1, Active: "active", DataPercent: 12.5, MetadataPercent: -1,
			OriginSize: 104857600, Time: time.Date(2026, 11, 26, 0, 16, 59, 0, time.FixedZone("", 0))},
		{Name: "pool", VG: "vga", Size: 8388608, Layout: "thin,pool", Segments: 1, Active: "active", DataPercent: 40, MetadataPercent: 10.25, MetadataSize: 4194304},
		{Name: "gone", VG: "vga", Size: 4194304, Attr: "swi-I-s---", Origin: "x", Segments: 1, DataPercent: 100, MetadataPercent: -1},
		{Name: "t", VG: "vga", Size: 1 << 30, Attr: "Vwi-a-tz--", Layout: "thin,sparse", Origin: "t0", Pool: "pool", Segments: 1, DataPercent: 0, MetadataPercent: -1},
	}
	if len(lvs) != len(wantLV) {
		t.Fatalf("LVs = %+v\nwant %+v", lvs, wantLV)
	}
	for i := range wantLV {
		// Times compare by instant, not by location pointer.
		if !lvs[i].Time.Equal(wantLV[i].Time) {
			t.Errorf("LV %s time = %v, want %v", lvs[i].Name, lvs[i].Time, wantLV[i].Time)
		}
		lvs[i].Time, wantLV[i].Time = time.Time{}, time.Time{}
	}
	if !reflect.DeepEqual(lvs, wantLV) {
		t.Errorf("LVs = %+v\nwant %+v", lvs, wantLV)
	}
	helpers := []struct {
		lv                                   int
		invalid, thin, classicSnapshot, pool bool
	}{
		{lv: 0},
		{lv: 1, classicSnapshot: true},
		{lv: 2, pool: true},
		{lv: 3, invalid: true, classicSnapshot: true},
		{lv: 4, thin: true},
	}
	for _, h := range helpers {
		lv := &lvs[h.lv]
		if lv.IsInvalidSnapshot() != h.invalid || lv.IsThin() != h.thin || lv.IsClassicSnapshot() != h.classicSnapshot || lv.IsThinPool() != h.pool {
			t.Errorf("LV %s: invalid=%v thin=%v classicSnapshot=%v pool=%v, want %+v", lv.Name,
				lv.IsInvalidSnapshot(), lv.IsThin(), lv.IsClassicSnapshot(), lv.IsThinPool(), h)
		}
	}
	if !lvs[0].HasTag(OwnedTag) || lvs[1].HasTag(OwnedTag) || !lvs[1].IsSnapshot() || !lvs[2].IsThinPool() || lvs[0].IsThinPool() {
		t.Error("tag/snapshot helpers disagree with the data")
	}

	pvs, err := parsePVs([]byte(`{"report":[{"pv":[{"pv_name":"/dev/loop0", "vg_name":"", "pv_size":"1073741824", "pv_free":"1073741824", "dev_size":"1073741824", "pe_start":"1048576", "pv_major":"7", "pv_minor":"0", "pv_attr":"---"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	wantPV := []PV{{Name: "/dev/loop0", Size: 1 << 30, Free: 1 << 30, DevSize: 1 << 30, PEStart: 1 << 20, Major: 7, Minor: 0, Attr: "---"}}
	if !reflect.DeepEqual(pvs, wantPV) {
		t.Errorf("PVs = %+v\nwant %+v", pvs, wantPV)
	}
}

func TestParseReportErrors(t *testing.T) {
	for _, in := range []string{
		`not json`,
		`{"report":[{"vg":[{"vg_name":"a","vg_size":"12.5"}]}]}`,
		`{"report":[{"vg":[{"vg_name":"a","vg_size":"-1"}]}]}`,
	} {
		if _, err := parseVGs([]byte(in)); err == nil {
			t.Errorf("parseVGs(%q) accepted bad input", in)
		}
	}
}

func TestLinearExtent(t *testing.T) {
	pvs := []PV{{Name: "/dev/loop3", PEStart: 1 << 20}}
	seg := func(segtype, devices, size string) map[string]string {
		return map[string]string{"segtype": segtype, "devices": devices, "seg_size_pe": size, "vg_extent_size": "4194304"}
	}
	tests := []struct {
		name    string
		segs    []map[string]string
		want    Extent
		wantErr bool
	}{
		// Offset from the physical extent in brackets, not seg_start_pe.
		{name: "second LV on the PV", segs: []map[string]string{seg("linear", "/dev/loop3(25)", "2")},
			want: Extent{PV: "/dev/loop3", Offset: 1<<20 + 25*4194304, Size: 2 * 4194304}},
		{name: "first LV", segs: []map[string]string{seg("linear", "/dev/loop3(0)", "25")},
			want: Extent{PV: "/dev/loop3", Offset: 1 << 20, Size: 25 * 4194304}},
		{name: "two segments", segs: []map[string]string{seg("linear", "/dev/loop3(0)", "25"), seg("linear", "/dev/loop3(27)", "25")}, wantErr: true},
		{name: "striped", segs: []map[string]string{seg("striped", "/dev/loop3(0),/dev/loop4(0)", "26")}, wantErr: true},
		{name: "unknown PV", segs: []map[string]string{seg("linear", "/dev/loop9(0)", "1")}, wantErr: true},
		{name: "no segments", segs: nil, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := linearExtent("vg/lv", tt.segs, pvs)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("linearExtent = %+v, %v; want %+v, err=%v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
