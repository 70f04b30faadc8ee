/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package parameters

import (
	"strings"
	"testing"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      map[string]string
		want    Params
		wantErr string // the parameter the error must name
	}{
		{name: "empty means LVM linear", in: nil,
			want: Params{VolumeType: v1alpha1.VolumeTypeLVM, LVMType: v1alpha1.LVMTypeLinear}},
		{name: "open-local lvm class with sidecar keys", in: map[string]string{
			"volumeType": "LVM", "vgName": "open-local-pool-0", "csi.storage.k8s.io/fstype": "xfs", "lvmType": "striping",
			"csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "db", "csi.storage.k8s.io/pv/name": "pvc-1",
			"csi.storage.k8s.io/provisioner-secret-name": "x"},
			want: Params{VolumeType: v1alpha1.VolumeTypeLVM, VGName: "open-local-pool-0", FSType: "xfs", LVMType: v1alpha1.LVMTypeStriping,
				PVCName: "data", PVCNamespace: "db"}},
		{name: "io throttling", in: map[string]string{"volumeType": "LVM", "iops": "1000", "bps": "10Mi"},
			want: Params{VolumeType: v1alpha1.VolumeTypeLVM, LVMType: v1alpha1.LVMTypeLinear, IOPS: 1000, BPS: 10 << 20}},
		{name: "device", in: map[string]string{"volumeType": "Device", "mediaType": "ssd"},
			want: Params{VolumeType: v1alpha1.VolumeTypeDevice, MediaType: "ssd", LVMType: v1alpha1.LVMTypeLinear}},
		{name: "device without mediaType", in: map[string]string{"volumeType": "Device"}, wantErr: "mediaType"},
		{name: "device with vgName", in: map[string]string{"volumeType": "Device", "mediaType": "hdd", "vgName": "vg"}, wantErr: "vgName"},
		{name: "MountPoint is not supported", in: map[string]string{"volumeType": "MountPoint"}, wantErr: "volumeType"},
		{name: "lower-case volume type", in: map[string]string{"volumeType": "lvm"}, wantErr: "volumeType"},
		{name: "typo in a key", in: map[string]string{"vgname": "pool"}, wantErr: "vgname"},
		{name: "bad vg name", in: map[string]string{"vgName": "a/b"}, wantErr: "vgName"},
		{name: "bad media", in: map[string]string{"mediaType": "nvme"}, wantErr: "mediaType"},
		{name: "bad lvmType", in: map[string]string{"lvmType": "raid1"}, wantErr: "lvmType"},
		{name: "bad fstype", in: map[string]string{"csi.storage.k8s.io/fstype": "btrfs"}, wantErr: "fstype"},
		{name: "bad iops", in: map[string]string{"iops": "-3"}, wantErr: "iops"},
		{name: "bad bps", in: map[string]string{"bps": "fast"}, wantErr: "bps"},
		{name: "pvc name without namespace", in: map[string]string{"csi.storage.k8s.io/pvc/name": "x"}, wantErr: "pvc/name"},
		{name: "thin", in: map[string]string{"volumeType": "LVM", "thinPool": "pool0"},
			want: Params{VolumeType: v1alpha1.VolumeTypeLVM, LVMType: v1alpha1.LVMTypeLinear, ThinPool: "pool0"}},
		{name: "thin and striped", in: map[string]string{"thinPool": "pool0", "lvmType": "striping"}, wantErr: "thinPool"},
		{name: "thin device", in: map[string]string{"volumeType": "Device", "mediaType": "ssd", "thinPool": "pool0"}, wantErr: "thinPool"},
		{name: "bad pool name", in: map[string]string{"thinPool": "snapshot0"}, wantErr: "thinPool"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%v) error = %v, want one naming %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Parse(%v) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestValidVGName(t *testing.T) {
	for _, ok := range []string{"vg0", "open-local-pool-0", "a+b_c.d"} {
		if err := ValidVGName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "-vg", "a b", "a/b", strings.Repeat("v", 128)} {
		if ValidVGName(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	in := map[string]string{"volumeType": "LVM", "vgName": "open-local-pool-0", "csi.storage.k8s.io/fstype": "xfs",
		"csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "db", "bps": "10Mi", "iops": "100"}
	for b.Loop() {
		if _, err := Parse(in); err != nil {
			b.Fatal(err)
		}
	}
}
