/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package parameters

import (
	"strings"
	"testing"
)

func TestParseSnapshot(t *testing.T) {
	def := SnapshotParams{InitialSize: 4 << 30, ThresholdPercent: 50, ExpansionSize: 1 << 30}
	tests := []struct {
		name    string
		in      map[string]string
		want    SnapshotParams
		wantErr string
	}{
		{name: "defaults", want: def},
		{name: "open-local's read-only class", in: map[string]string{
			"csi.aliyun.com/readonly": "true", "csi.aliyun.com/snapshot-initial-size": "4Gi",
			"csi.aliyun.com/snapshot-expansion-threshold": "50%", "csi.aliyun.com/snapshot-expansion-size": "1Gi"},
			want: SnapshotParams{ReadOnly: true, InitialSize: 4 << 30, ThresholdPercent: 50, ExpansionSize: 1 << 30}},
		{name: "threshold without percent sign, sizes", in: map[string]string{
			"csi.aliyun.com/snapshot-expansion-threshold": "80", "csi.aliyun.com/snapshot-initial-size": "512Mi",
			"csi.aliyun.com/snapshot-expansion-size": "256Mi", "csi.aliyun.com/readonly": "false"},
			want: SnapshotParams{InitialSize: 512 << 20, ThresholdPercent: 80, ExpansionSize: 256 << 20}},
		{name: "sidecar metadata", in: map[string]string{"csi.storage.k8s.io/volumesnapshot/name": "s", "csi.storage.k8s.io/volumesnapshot/namespace": "n"}, want: def},
		{name: "bad readonly", in: map[string]string{"csi.aliyun.com/readonly": "yes please"}, wantErr: "csi.aliyun.com/readonly"},
		{name: "zero size", in: map[string]string{"csi.aliyun.com/snapshot-initial-size": "0"}, wantErr: "snapshot-initial-size"},
		{name: "threshold above 100", in: map[string]string{"csi.aliyun.com/snapshot-expansion-threshold": "150%"}, wantErr: "snapshot-expansion-threshold"},
		{name: "unknown key", in: map[string]string{"snapshotInitialSize": "1Gi"}, wantErr: "snapshotInitialSize"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSnapshot(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "VolumeSnapshotClass") {
					t.Fatalf("error = %v, want one naming the VolumeSnapshotClass parameter %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseSnapshot = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}
