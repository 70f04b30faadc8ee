/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package lvm

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// VG is a volume group. Sizes are bytes.
type VG struct {
	Name        string
	UUID        string
	Size        uint64
	Free        uint64
	ExtentSize  uint64
	ExtentCount uint64
	FreeCount   uint64
	PVCount     int
	LVCount     int
	Tags        []string
	Attr        string
}

// LV is a logical volume. Sizes are bytes.
type LV struct {
	Name string
	VG   string
	UUID string
	Size uint64
	Tags []string
	// Attr is lvm's lv_attr string, e.g. "-wi-a-----".
	Attr string
	// Layout is lvm's lv_layout: "linear", "striped", "thin", "thin,pool",
	// "thin,sparse" (thin LVs), ...
	Layout string
	// Origin is the origin LV of a snapshot (classic or thin); empty otherwise.
	Origin string
	// Pool is the thin pool of a thin LV; empty otherwise.
	Pool string
	// Segments is the number of segments; only single-segment linear LVs can
	// be exposed as a loop device (see LoopActivator).
	Segments int
	// Path is /dev/<vg>/<lv>, which exists only while the LV is active.
	Path string
	// Active is lvm's lv_active: "active", "" or "unknown" (metadata mode).
	Active string
	// DataPercent is how full a snapshot's COW space or a thin LV/pool is
	// (lvm's data_percent), or -1 when lvm does not report it (inactive LV,
	// metadata mode, linear LV).
	DataPercent float64
	// MetadataPercent is how full a thin pool's metadata LV is (lvm's
	// metadata_percent), or -1 when lvm does not report it (not a thin
	// pool, inactive). A full metadata LV stops every thin LV of the pool.
	MetadataPercent float64
	// OriginSize is, for a snapshot, the size of its origin (lvm's
	// origin_size): what a restore of the snapshot holds.
	OriginSize uint64
	// MetadataSize is, for a thin pool, the size of its metadata LV.
	MetadataSize uint64
	// Time is when the LV was created (lvm's lv_time); zero if unknown.
	Time time.Time
}

// IsInvalidSnapshot reports a classic snapshot whose copy-on-write space
// overflowed: lvm dropped it (lv_attr state I, or S while suspended) and
// its data is gone for good.
func (lv *LV) IsInvalidSnapshot() bool {
	return len(lv.Attr) > 4 && (lv.Attr[4] == 'I' || lv.Attr[4] == 'S')
}

// IsThin reports a thin LV (a volume or snapshot in a thin pool).
func (lv *LV) IsThin() bool { return lv.Pool != "" }

// IsClassicSnapshot reports a copy-on-write snapshot outside thin pools.
func (lv *LV) IsClassicSnapshot() bool { return lv.Origin != "" && lv.Pool == "" }

// HasTag reports whether the LV carries tag.
func (lv *LV) HasTag(tag string) bool { return slices.Contains(lv.Tags, tag) }

// IsThinPool reports whether the LV is a thin pool.
func (lv *LV) IsThinPool() bool {
	return strings.Contains(lv.Layout, "pool") && strings.Contains(lv.Layout, "thin")
}

// IsSnapshot reports whether the LV is a snapshot (classic or thin) of another LV.
func (lv *LV) IsSnapshot() bool { return lv.Origin != "" }

// PV is a physical volume. VG is empty for a PV that belongs to no VG.
type PV struct {
	Name string
	VG   string
	UUID string
	Size uint64
	Free uint64
	// DevSize is the size of the underlying device.
	DevSize uint64
	// PEStart is the offset of the first physical extent on the device.
	PEStart uint64
	Major   int
	Minor   int
	Tags    []string
	Attr    string
}

// Report fields, in the order lvm prints them.
var (
	vgFields = []string{"vg_name", "vg_uuid", "vg_size", "vg_free", "vg_extent_size", "vg_extent_count",
		"vg_free_count", "pv_count", "lv_count", "vg_tags", "vg_attr"}
	lvFields = []string{"lv_name", "vg_name", "lv_uuid", "lv_size", "lv_tags", "lv_attr", "lv_layout",
		"origin", "pool_lv", "seg_count", "lv_path", "lv_active", "data_percent", "metadata_percent",
		"origin_size", "lv_metadata_size", "lv_time"}
	pvFields = []string{"pv_name", "vg_name", "pv_uuid", "pv_size", "pv_free", "dev_size", "pe_start",
		"pv_major", "pv_minor", "pv_tags", "pv_attr"}
)

// reportArgs are the arguments every report command gets: JSON, sizes in
// bytes without a unit suffix.
var reportArgs = []string{"--reportformat", "json", "--units", "b", "--nosuffix"}

// parseReport decodes lvm's JSON report: {"report":[{"<section>":[{field:value}]}]}.
func parseReport(out []byte, section string) ([]map[string]string, error) {
	var r struct {
		Report []map[string][]map[string]string `json:"report"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return nil, fmt.Errorf("lvm: parse %s report: %w: %q", section, err, truncate(out, 200))
	}
	var rows []map[string]string
	for _, sec := range r.Report {
		rows = append(rows, sec[section]...)
	}
	return rows, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// row reads typed fields of one report row and remembers the first error.
type row struct {
	m   map[string]string
	err error
}

func (r *row) str(f string) string { return r.m[f] }

func (r *row) uint(f string) uint64 {
	s := r.m[f]
	if s == "" {
		return 0
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil && r.err == nil {
		r.err = fmt.Errorf("lvm: field %s: %q is not a byte count", f, s)
	}
	return v
}

func (r *row) int(f string) int {
	s := r.m[f]
	if s == "" {
		return 0
	}
	v, err := strconv.Atoi(s)
	if err != nil && r.err == nil {
		r.err = fmt.Errorf("lvm: field %s: %q is not an integer", f, s)
	}
	return v
}

func (r *row) percent(f string) float64 {
	s := r.m[f]
	if s == "" {
		return -1
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return -1
	}
	return v
}

// lvTimeLayout is how lvm prints lv_time: "2024-11-26 00:16:59 +0000".
const lvTimeLayout = "2006-01-02 15:04:05 -0700"

// time reads a timestamp; one lvm cannot tell is the zero time, not an error.
func (r *row) time(f string) time.Time {
	t, err := time.Parse(lvTimeLayout, r.m[f])
	if err != nil {
		return time.Time{}
	}
	return t
}

func (r *row) tags(f string) []string {
	if r.m[f] == "" {
		return nil
	}
	return strings.Split(r.m[f], ",")
}

func parseVGs(out []byte) ([]VG, error) {
	rows, err := parseReport(out, "vg")
	if err != nil {
		return nil, err
	}
	vgs := make([]VG, 0, len(rows))
	for _, m := range rows {
		r := row{m: m}
		vg := VG{
			Name: r.str("vg_name"), UUID: r.str("vg_uuid"), Size: r.uint("vg_size"), Free: r.uint("vg_free"),
			ExtentSize: r.uint("vg_extent_size"), ExtentCount: r.uint("vg_extent_count"), FreeCount: r.uint("vg_free_count"),
			PVCount: r.int("pv_count"), LVCount: r.int("lv_count"), Tags: r.tags("vg_tags"), Attr: r.str("vg_attr"),
		}
		if r.err != nil {
			return nil, r.err
		}
		vgs = append(vgs, vg)
	}
	return vgs, nil
}

func parseLVs(out []byte) ([]LV, error) {
	rows, err := parseReport(out, "lv")
	if err != nil {
		return nil, err
	}
	lvs := make([]LV, 0, len(rows))
	for _, m := range rows {
		r := row{m: m}
		lv := LV{
			Name: r.str("lv_name"), VG: r.str("vg_name"), UUID: r.str("lv_uuid"), Size: r.uint("lv_size"),
			Tags: r.tags("lv_tags"), Attr: r.str("lv_attr"), Layout: r.str("lv_layout"), Origin: r.str("origin"),
			Pool: r.str("pool_lv"), Segments: r.int("seg_count"), Path: r.str("lv_path"), Active: r.str("lv_active"),
			DataPercent: r.percent("data_percent"), MetadataPercent: r.percent("metadata_percent"),
			OriginSize: r.uint("origin_size"), MetadataSize: r.uint("lv_metadata_size"), Time: r.time("lv_time"),
		}
		if r.err != nil {
			return nil, r.err
		}
		// Hidden internal LVs ([pool_tdata], [lvol0_pmspare]) are shown in
		// brackets only with -a; skip them should a caller ask for them.
		if strings.HasPrefix(lv.Name, "[") {
			continue
		}
		lvs = append(lvs, lv)
	}
	return lvs, nil
}

func parsePVs(out []byte) ([]PV, error) {
	rows, err := parseReport(out, "pv")
	if err != nil {
		return nil, err
	}
	pvs := make([]PV, 0, len(rows))
	for _, m := range rows {
		r := row{m: m}
		pv := PV{
			Name: r.str("pv_name"), VG: r.str("vg_name"), UUID: r.str("pv_uuid"), Size: r.uint("pv_size"),
			Free: r.uint("pv_free"), DevSize: r.uint("dev_size"), PEStart: r.uint("pe_start"),
			Major: r.int("pv_major"), Minor: r.int("pv_minor"), Tags: r.tags("pv_tags"), Attr: r.str("pv_attr"),
		}
		if r.err != nil {
			return nil, r.err
		}
		pvs = append(pvs, pv)
	}
	return pvs, nil
}
