/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package parameters

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
)

const wrapped = "18446743858961186816" // 2^64 − 200Gi: Quantity.Value() is −200Gi

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "1", want: 1},
		{in: "1Gi", want: 1 << 30},
		{in: "1.1Gi", want: 1181116007}, // a fraction of a byte rounds up, as in Kubernetes
		{in: "2G", want: 2e9},
		{in: "1Ei", want: MaxVolumeSize},
		{in: "1.5", want: 2},
		{in: wrapped, wantErr: "more than 1Ei"},
		{in: "9223372036854775808", wantErr: "more than 1Ei"}, // 2^63
		{in: "9223372036854775807", wantErr: "more than 1Ei"}, // 2^63 − 1
		{in: "1152921504606846977", wantErr: "more than 1Ei"}, // 1Ei + 1
		{in: "8Ei", wantErr: "more than 1Ei"},
		{in: "1e30", wantErr: "more than 1Ei"},
		{in: "0", wantErr: "not positive"},
		{in: "-1", wantErr: "not positive"},
		{in: "-" + wrapped, wantErr: "not positive"},
		{in: "0.5", wantErr: "less than one byte"},
		{in: "1m", wantErr: "less than one byte"},
		{in: "999m", wantErr: "less than one byte"},
		{in: "1n", wantErr: "less than one byte"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSize(resource.MustParse(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseSize(%s) = %d, %v; want an error containing %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseSize(%s) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
	for _, bad := range []string{"", "lots", "1Gb", "1 Gi", "$(reboot)", "1Gi;rm"} {
		if n, err := ParseSizeString(bad); err == nil {
			t.Errorf("ParseSizeString(%q) = %d", bad, n)
		}
	}
	for n, want := range map[int64]string{0: "not positive", -1: "not positive", MaxVolumeSize + 1: "more than 1Ei", 1<<63 - 1: "more than 1Ei"} {
		if err := CheckSize(n); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckSize(%d) = %v, want %q", n, err, want)
		}
	}
	if err := CheckSize(MaxVolumeSize); err != nil {
		t.Errorf("CheckSize(MaxVolumeSize) = %v", err)
	}
}

// Hostile values of every key that holds a size, a rate or a name: each is
// refused with an error naming the key (issue 13).
func TestHostileParameters(t *testing.T) {
	type parser func(map[string]string) error
	class := func(m map[string]string) error { _, err := Parse(m); return err }
	inline := func(m map[string]string) error { _, err := ParseInline(m, DefaultInlineSize); return err }
	snapshot := func(m map[string]string) error { _, err := ParseSnapshot(m); return err }
	limits := func(m map[string]string) error { _, err := ParseIOLimits(m); return err }
	for _, tc := range []struct {
		what  string
		parse parser
		key   string
		value string
		want  string
	}{
		{"class", class, BPS, wrapped, "more than 1Pi"},
		{"class", class, BPS, "9223372036854775808", "more than 1Pi"},
		{"class", class, BPS, "1e30", "more than 1Pi"},
		{"class", class, BPS, "-1", "not positive"},
		{"class", class, BPS, "0", "not positive"},
		{"class", class, BPS, "1m", "less than one byte"},
		{"class", class, IOPS, "9223372036854775808", "positive integer"},
		{"class", class, IOPS, "1000000001", "positive integer"},
		{"class", class, IOPS, "1e3", "positive integer"},
		{"class", class, IOPS, "abc", "positive integer"},
		{"class", class, VGName, "..", "not a valid VG name"},
		{"class", class, VGName, "../../etc", "may contain only"},
		{"class", class, VGName, "vg;reboot", "may contain only"},
		{"class", class, VGName, "$(reboot)", "may contain only"},
		{"class", class, VGName, "`id`", "may contain only"},
		{"class", class, VGName, "-ff", "not a valid VG name"},
		{"class", class, ThinPool, "pool/../x", "may contain only"},
		{"class", class, ThinPool, "pvmove0", "must not start with"},
		{"class", class, VolumeType, "spdk", "want LVM or Device"},
		{"class", class, "vgname", "x", "unknown parameter"},
		{"class", class, "spdk", "true", "unknown parameter"},
		{"inline", inline, InlineSize, wrapped, "more than 1Ei"},
		{"inline", inline, InlineSize, "1e30", "more than 1Ei"},
		{"inline", inline, InlineSize, "-1Gi", "not positive"},
		{"inline", inline, InlineSize, "0.5", "less than one byte"},
		{"inline", inline, InlineSize, "1m", "less than one byte"},
		{"inline", inline, BPS, wrapped, "more than 1Pi"},
		{"inline", inline, IOPS, "-1", "positive integer"},
		{"inline", inline, VGName, "a/b", "may contain only"},
		{"inline", inline, "size ", "1Gi", "unknown"},
		{"snapshot class", snapshot, SnapshotInitialSize, wrapped, "more than 1Ei"},
		{"snapshot class", snapshot, SnapshotInitialSize, "1m", "less than one byte"},
		{"snapshot class", snapshot, SnapshotExpansionSize, "9223372036854775808", "more than 1Ei"},
		{"snapshot class", snapshot, SnapshotExpansionSize, "-1Gi", "not positive"},
		{"snapshot class", snapshot, SnapshotExpansionThreshold, "101%", "percentage"},
		{"volume context", limits, BPS, wrapped, "more than 1Pi"},
		{"volume context", limits, IOPS, "99999999999999999999", "positive integer"},
	} {
		t.Run(tc.what+" "+tc.key+"="+tc.value, func(t *testing.T) {
			err := tc.parse(map[string]string{tc.key: tc.value})
			var pe *Error
			if !errors.As(err, &pe) || pe.Key != tc.key || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want one naming %q and containing %q", err, tc.key, tc.want)
			}
		})
	}
	// The volumeType combinations the node cannot serve.
	for _, bad := range []map[string]string{
		{VolumeType: "Device", MediaType: "ssd", VGName: "pool0"},
		{VolumeType: "Device", MediaType: "ssd", ThinPool: "tp"},
		{VolumeType: "Device"},
		{VolumeType: "MountPoint"},
		{ThinPool: "tp", LVMType: "striping"},
	} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%v) accepted", bad)
		}
	}
}
