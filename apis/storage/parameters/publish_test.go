/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package parameters

import (
	"errors"
	"testing"
)

func TestParseInline(t *testing.T) {
	podInfo := map[string]string{
		PodName: "web-0", PodNamespace: "default", PodUID: "0b7bd7b1-6d2a-4b8e-9a4c-3f1e2d5c6b7a",
		PodServiceAccount: "default", Ephemeral: "true",
	}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range podInfo {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		in      map[string]string
		want    Inline
		wantErr string // the attribute the error must name
	}{
		{name: "defaults", in: with(), want: Inline{Size: 1 << 30}},
		{name: "all", in: with("vgName", "pool0", "size", "512Mi", "fsType", "xfs", "bps", "10Mi", "iops", "300"),
			want: Inline{VGName: "pool0", Size: 512 << 20, FSType: "xfs", IOLimits: IOLimits{BPS: 10 << 20, IOPS: 300}}},
		{name: "decimal size", in: with("size", "2G"), want: Inline{Size: 2e9}},
		{name: "zero size", in: with("size", "0"), wantErr: "size"},
		{name: "negative size", in: with("size", "-1Gi"), wantErr: "size"},
		{name: "garbage size", in: with("size", "big"), wantErr: "size"},
		{name: "bad VG", in: with("vgName", "a/b"), wantErr: "vgName"},
		{name: "unsupported filesystem", in: with("fsType", "btrfs"), wantErr: "fsType"},
		{name: "bad iops", in: with("iops", "1.5"), wantErr: "iops"},
		{name: "bad bps", in: with("bps", "0"), wantErr: "bps"},
		{name: "typo", in: with("vgname", "pool0"), wantErr: "vgname"},
		{name: "open-local spdk", in: with("spdk", "true"), wantErr: "spdk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseInline(tt.in, DefaultInlineSize)
			if tt.wantErr != "" {
				var pe *Error
				if !errors.As(err, &pe) || pe.Key != tt.wantErr {
					t.Fatalf("error %v, want one naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestParseIOLimits(t *testing.T) {
	tests := []struct {
		in      map[string]string
		want    IOLimits
		wantErr bool
	}{
		{in: nil},
		{in: map[string]string{"volumeType": "LVM", "Device": "/dev/sdb", "csi.aliyun.com/node": "n"}},
		{in: map[string]string{"bps": "1048576", "iops": "1024"}, want: IOLimits{BPS: 1 << 20, IOPS: 1024}},
		{in: map[string]string{"bps": "10Mi"}, want: IOLimits{BPS: 10 << 20}},
		{in: map[string]string{"iops": "0"}, wantErr: true},
		{in: map[string]string{"bps": "x"}, wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseIOLimits(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseIOLimits(%v) = %+v, %v; want %+v (error %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestPodOf(t *testing.T) {
	if _, ok := PodOf(map[string]string{PodName: "a", PodNamespace: "b"}); ok {
		t.Error("a context without pod.uid yields a pod")
	}
	p, ok := PodOf(map[string]string{PodName: "a", PodNamespace: "b", PodUID: "c"})
	if !ok || p != (Pod{Namespace: "b", Name: "a", UID: "c"}) {
		t.Errorf("PodOf: %+v %v", p, ok)
	}
	if IsEphemeral(map[string]string{Ephemeral: "false"}) || !IsEphemeral(map[string]string{Ephemeral: "true"}) {
		t.Error("IsEphemeral")
	}
}
