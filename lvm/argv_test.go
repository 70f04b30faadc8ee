/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package lvm

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// recorder is a Runner that records argv and answers lvm's report commands
// from canned JSON, so the argv of operations this kernel cannot run
// (snapshots, thin pools, striping) is checked here; the VM runs them for real.
type recorder struct {
	calls   [][]string
	reports map[string]string // "vgs" | "lvs" | "pvs" -> JSON
}

func (r *recorder) Run(_ context.Context, argv ...string) ([]byte, error) {
	r.calls = append(r.calls, argv)
	if len(argv) > 1 && argv[0] == "lvm" {
		if out, ok := r.reports[argv[1]]; ok && strings.Contains(strings.Join(argv, " "), "--reportformat json") {
			return []byte(out), nil
		}
	}
	return nil, nil
}

// changes are the recorded commands that are not reports.
func (r *recorder) changes() [][]string {
	var c [][]string
	for _, a := range r.calls {
		if !strings.Contains(strings.Join(a, " "), "--reportformat") {
			c = append(c, a)
		}
	}
	return c
}

func report(section string, rows ...string) string {
	return fmt.Sprintf(`{"report":[{%q:[%s]}]}`, section, strings.Join(rows, ","))
}

const (
	mib = uint64(1) << 20
	gib = uint64(1) << 30
)

var (
	cannedVG = report("vg", `{"vg_name":"vg0","vg_size":"32212254720","vg_free":"22548578304","vg_extent_size":"4194304","pv_count":"3","lv_count":"1"}`)
	cannedPV = report("pv",
		`{"pv_name":"/dev/sdb","vg_name":"vg0","pv_size":"10737418240","pv_free":"10737418240","pe_start":"1048576","pv_major":"8","pv_minor":"16"}`,
		`{"pv_name":"/dev/sdc","vg_name":"vg0","pv_size":"10737418240","pv_free":"10737418240","pe_start":"1048576","pv_major":"8","pv_minor":"32"}`,
		`{"pv_name":"/dev/sdd","vg_name":"vg0","pv_size":"10737418240","pv_free":"1073741824","pe_start":"1048576","pv_major":"8","pv_minor":"48"}`,
		`{"pv_name":"/dev/sde","vg_name":"other","pv_size":"10737418240","pv_free":"10737418240","pe_start":"1048576","pv_major":"8","pv_minor":"64"}`)
	lvRow = func(name, size, extra string) string {
		return fmt.Sprintf(`{"lv_name":%q,"vg_name":"vg0","lv_size":%q,"lv_layout":"linear","seg_count":"1"%s}`, name, size, extra)
	}
)

func TestOperationArgv(t *testing.T) {
	lv1G := report("lv", lvRow("pvc-1", "1073741824", ""))
	tests := []struct {
		name    string
		opts    []Option
		lvs     string
		op      func(ctx context.Context, c *Client) error
		want    [][]string
		wantErr error
	}{
		{
			name: "linear LV with owner tag",
			lvs:  lv1G,
			op: func(ctx context.Context, c *Client) error {
				_, err := c.CreateLV(ctx, CreateLVOptions{VG: "vg0", Name: "pvc-1", Size: gib, Tags: []string{OwnedTag}})
				return err
			},
			want: [][]string{{"lvm", "lvcreate", "--yes", "--wipesignatures", "y", "--name", "pvc-1", "--size", "1073741824b", "--addtag", OwnedTag, "vg0"}},
		},
		{
			name: "contiguous by client default",
			opts: []Option{WithAlloc(AllocContiguous)},
			lvs:  lv1G,
			op: func(ctx context.Context, c *Client) error {
				_, err := c.CreateLV(ctx, CreateLVOptions{VG: "vg0", Name: "pvc-1", Size: 3*mib + 1})
				return err
			},
			want: [][]string{{"lvm", "lvcreate", "--yes", "--wipesignatures", "y", "--name", "pvc-1", "--size", "3146240b", "--alloc", "contiguous", "vg0"}},
		},
		{
			name: "explicit alloc wins over default",
			opts: []Option{WithAlloc(AllocContiguous)},
			lvs:  lv1G,
			op: func(ctx context.Context, c *Client) error {
				_, err := c.CreateLV(ctx, CreateLVOptions{VG: "vg0", Name: "pvc-1", Size: gib, Alloc: AllocAnywhere})
				return err
			},
			want: [][]string{{"lvm", "lvcreate", "--yes", "--wipesignatures", "y", "--name", "pvc-1", "--size", "1073741824b", "--alloc", "anywhere", "vg0"}},
		},
		{
			// 6 GiB over sdb, sdc (10 GiB free) and sdd (1 GiB free): a third
			// share (2 GiB) does not fit sdd, halves (3 GiB) fit the others.
			name: "striped over the PVs that fit",
			lvs:  lv1G,
			op: func(ctx context.Context, c *Client) error {
				_, err := c.CreateLV(ctx, CreateLVOptions{VG: "vg0", Name: "pvc-1", Size: 6 * gib, Striped: true, Tags: []string{OwnedTag}})
				return err
			},
			want: [][]string{{"lvm", "lvcreate", "--yes", "--wipesignatures", "y", "--name", "pvc-1", "--size", "6442450944b", "--stripes", "2", "--addtag", OwnedTag, "vg0"}},
		},
		{
			name: "striped, explicit count",
			lvs:  lv1G,
			op: func(ctx context.Context, c *Client) error {
				_, err := c.CreateLV(ctx, CreateLVOptions{VG: "vg0", Name: "pvc-1", Size: gib, Stripes: 3})
				return err
			},
			want: [][]string{{"lvm", "lvcreate", "--yes", "--wipesignatures", "y", "--name", "pvc-1", "--size", "1073741824b", "--stripes", "3", "vg0"}},
		},
		{
			name: "striped, too large for any PV set",
			lvs:  lv1G,
			op: func(ctx context.Context, c *Client) error {
				_, err := c.CreateLV(ctx, CreateLVOptions{VG: "vg0", Name: "pvc-1", Size: 40 * gib, Striped: true})
				return err
			},
			wantErr: ErrInsufficientSpace,
		},
		{
			name: "extend grows",
			lvs:  lv1G,
			op: func(ctx context.Context, c *Client) error {
				_, err := c.ExtendLV(ctx, "vg0", "pvc-1", 2*gib)
				return err
			},
			want: [][]string{{"lvm", "lvextend", "--size", "2147483648b", "vg0/pvc-1"}},
		},
		{
			name: "extend with contiguous default",
			opts: []Option{WithAlloc(AllocContiguous)},
			lvs:  lv1G,
			op: func(ctx context.Context, c *Client) error {
				_, err := c.ExtendLV(ctx, "vg0", "pvc-1", 2*gib)
				return err
			},
			want: [][]string{{"lvm", "lvextend", "--size", "2147483648b", "--alloc", "contiguous", "vg0/pvc-1"}},
		},
		{
			name: "extend to a smaller size is a no-op",
			lvs:  lv1G,
			op: func(ctx context.Context, c *Client) error {
				_, err := c.ExtendLV(ctx, "vg0", "pvc-1", 512*mib)
				return err
			},
		},
		{
			name: "remove exactly vg/lv",
			lvs:  report("lv", lvRow("pvc-1", "1073741824", ""), lvRow("pvc-2", "1073741824", "")),
			op:   func(ctx context.Context, c *Client) error { return c.RemoveLV(ctx, "vg0", "pvc-1") },
			want: [][]string{{"lvm", "lvremove", "--yes", "vg0/pvc-1"}},
		},
		{
			name:    "remove refuses an origin with snapshots",
			lvs:     report("lv", lvRow("pvc-1", "1073741824", ""), lvRow("snap-1", "1073741824", `,"origin":"pvc-1"`)),
			op:      func(ctx context.Context, c *Client) error { return c.RemoveLV(ctx, "vg0", "pvc-1") },
			wantErr: ErrInUse,
		},
		{
			// Thin snapshots are volumes of their own in the pool.
			name: "remove of a thin origin with thin snapshots",
			lvs: report("lv", lvRow("thin-1", "1073741824", `,"pool_lv":"pool0","lv_layout":"thin,sparse"`),
				lvRow("tsnap-1", "1073741824", `,"pool_lv":"pool0","origin":"thin-1","lv_layout":"thin,sparse"`)),
			op:   func(ctx context.Context, c *Client) error { return c.RemoveLV(ctx, "vg0", "thin-1") },
			want: [][]string{{"lvm", "lvremove", "--yes", "vg0/thin-1"}},
		},
		{
			name:    "remove refuses a thin pool with thin LVs",
			lvs:     report("lv", lvRow("pool0", "10737418240", `,"lv_layout":"thin,pool"`), lvRow("thin-1", "1073741824", `,"pool_lv":"pool0"`)),
			op:      func(ctx context.Context, c *Client) error { return c.RemoveLV(ctx, "vg0", "pool0") },
			wantErr: ErrInUse,
		},
		{
			name:    "remove refuses a protected LV",
			lvs:     report("lv", lvRow("keep", "1073741824", `,"lv_tags":"a,protected"`)),
			op:      func(ctx context.Context, c *Client) error { return c.RemoveLV(ctx, "vg0", "keep") },
			wantErr: ErrInUse,
		},
		{
			name:    "remove of a missing LV",
			lvs:     report("lv", lvRow("pvc-2", "1073741824", "")),
			op:      func(ctx context.Context, c *Client) error { return c.RemoveLV(ctx, "vg0", "pvc-1") },
			wantErr: ErrNotFound,
		},
		{
			name: "classic snapshot",
			lvs:  lv1G,
			op: func(ctx context.Context, c *Client) error {
				_, err := c.CreateSnapshot(ctx, SnapshotOptions{VG: "vg0", Origin: "pvc-1", Name: "snap-1", Size: 512 * mib, Tags: []string{OwnedTag}})
				return err
			},
			want: [][]string{{"lvm", "lvcreate", "--yes", "--snapshot", "--name", "snap-1", "--size", "536870912b", "--addtag", OwnedTag, "vg0/pvc-1"}},
		},
		{
			name: "thin pool",
			lvs:  lv1G,
			op: func(ctx context.Context, c *Client) error {
				_, err := c.CreateThinPool(ctx, ThinPoolOptions{VG: "vg0", Name: "pool0", Size: 10 * gib})
				return err
			},
			want: [][]string{{"lvm", "lvcreate", "--yes", "--type", "thin-pool", "--name", "pool0", "--size", "10737418240b", "vg0"}},
		},
		{
			name: "thin LV",
			lvs:  lv1G,
			op: func(ctx context.Context, c *Client) error {
				_, err := c.CreateThinLV(ctx, ThinLVOptions{VG: "vg0", Pool: "pool0", Name: "thin-1", VirtualSize: 5 * gib, Tags: []string{OwnedTag}})
				return err
			},
			want: [][]string{{"lvm", "lvcreate", "--yes", "--type", "thin", "--name", "thin-1", "--virtualsize", "5368709120b", "--thinpool", "pool0", "--addtag", OwnedTag, "vg0"}},
		},
		{
			name: "thin snapshot",
			lvs:  lv1G,
			op: func(ctx context.Context, c *Client) error {
				_, err := c.CreateThinSnapshot(ctx, "vg0", "thin-1", "tsnap-1", OwnedTag)
				return err
			},
			want: [][]string{{"lvm", "lvcreate", "--yes", "--snapshot", "--setactivationskip", "n", "--name", "tsnap-1", "--addtag", OwnedTag, "vg0/thin-1"}},
		},
		{
			name: "add tags",
			op:   func(ctx context.Context, c *Client) error { return c.AddTags(ctx, "vg0", "pvc-1", OwnedTag, "x") },
			want: [][]string{{"lvm", "lvchange", "--addtag", OwnedTag, "--addtag", "x", "vg0/pvc-1"}},
		},
		{
			name: "remove tags",
			op:   func(ctx context.Context, c *Client) error { return c.RemoveTags(ctx, "vg0", "pvc-1", OwnedTag) },
			want: [][]string{{"lvm", "lvchange", "--deltag", OwnedTag, "vg0/pvc-1"}},
		},
		// Bad input never reaches lvm.
		{
			name: "reserved LV name",
			op: func(ctx context.Context, c *Client) error {
				_, err := c.CreateLV(ctx, CreateLVOptions{VG: "vg0", Name: "snapshot-1", Size: gib})
				return err
			},
			wantErr: ErrInvalidArgument,
		},
		{
			name: "option-like VG name",
			op: func(ctx context.Context, c *Client) error {
				_, err := c.CreateLV(ctx, CreateLVOptions{VG: "--force", Name: "a", Size: gib})
				return err
			},
			wantErr: ErrInvalidArgument,
		},
		{
			name: "zero size",
			op: func(ctx context.Context, c *Client) error {
				_, err := c.CreateLV(ctx, CreateLVOptions{VG: "vg0", Name: "a"})
				return err
			},
			wantErr: ErrInvalidArgument,
		},
		{
			name:    "bad tag",
			op:      func(ctx context.Context, c *Client) error { return c.AddTags(ctx, "vg0", "a", "two words") },
			wantErr: ErrInvalidArgument,
		},
		{
			name: "snapshot of a reserved origin name",
			op: func(ctx context.Context, c *Client) error {
				_, err := c.CreateSnapshot(ctx, SnapshotOptions{VG: "vg0", Origin: "../x", Name: "s", Size: gib})
				return err
			},
			wantErr: ErrInvalidArgument,
		},
		{
			name:    "remove with path traversal",
			op:      func(ctx context.Context, c *Client) error { return c.RemoveLV(ctx, "vg0", "a/../../b") },
			wantErr: ErrInvalidArgument,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{reports: map[string]string{"vgs": cannedVG, "pvs": cannedPV, "lvs": tt.lvs}}
			err := tt.op(t.Context(), New(r, tt.opts...))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if ch := r.changes(); len(ch) > 0 {
					t.Fatalf("a refused operation ran %q", ch)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := r.changes(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("commands:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestReportArgv(t *testing.T) {
	r := &recorder{reports: map[string]string{"vgs": cannedVG, "pvs": cannedPV, "lvs": report("lv")}}
	c := New(r)
	ctx := t.Context()
	if _, err := c.ListVGs(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListLVs(ctx, "vg0"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListPVs(ctx); err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"lvm", "vgs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", strings.Join(vgFields, ",")},
		{"lvm", "lvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", strings.Join(lvFields, ","), "vg0"},
		{"lvm", "pvs", "--reportformat", "json", "--units", "b", "--nosuffix", "-o", strings.Join(pvFields, ",")},
	}
	if !reflect.DeepEqual(r.calls, want) {
		t.Errorf("commands:\n got %q\nwant %q", r.calls, want)
	}
}
