/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package openlocalvalues

import (
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestConvertDefaults: open-local v0.8.0's default values become ours with
// its choices kept (spread, /dev/vdb, its five classes) and ours added.
func TestConvertDefaults(t *testing.T) {
	in, err := os.ReadFile("testdata/open-local-v0.8.0-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out, notes, err := Convert(in)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		DriverName string `json:"driverName"`
		KubeletDir string `json:"kubeletDir"`
		Agent      struct {
			MaxVolumesPerNode int `json:"maxVolumesPerNode"`
		} `json:"agent"`
		InitConfig struct {
			Device string `json:"device"`
		} `json:"initConfig"`
		Scheduler struct {
			Args struct {
				Strategy string `json:"strategy"`
			} `json:"args"`
		} `json:"scheduler"`
		StorageClasses []ourClass `json:"storageClasses"`
		Images         struct {
			PullPolicy string `json:"pullPolicy"`
		} `json:"images"`
		Monitoring map[string]any `json:"monitoring"`
	}
	if err := yaml.UnmarshalStrict(out, &got); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if got.DriverName != "local.csi.aliyun.com" || got.KubeletDir != "/var/lib/kubelet" || got.Agent.MaxVolumesPerNode != 256 ||
		got.InitConfig.Device != "/dev/vdb" || got.Scheduler.Args.Strategy != "spread" || got.Images.PullPolicy != "Always" {
		t.Errorf("scalars not carried over:\n%s", out)
	}
	if got.Monitoring != nil {
		t.Errorf("monitor.enabled false became %v", got.Monitoring)
	}
	want := map[string]string{"open-local-lvm": "ext4", "open-local-lvm-xfs": "xfs", "open-local-lvm-io-throttle": "",
		"open-local-device-ssd": "ext4", "open-local-device-hdd": "ext4", "open-local-lvm-io-throttling": "ext4"}
	if len(got.StorageClasses) != len(want) {
		t.Errorf("%d classes, want %d:\n%s", len(got.StorageClasses), len(want), out)
	}
	for _, c := range got.StorageClasses {
		fs, ok := want[c.Name]
		if !ok {
			t.Errorf("unexpected class %s", c.Name)
			continue
		}
		if c.Parameters["csi.storage.k8s.io/fstype"] != fs || !c.Enabled {
			t.Errorf("class %s: %+v", c.Name, c)
		}
		if strings.HasPrefix(c.Name, "open-local-device") == c.AllowVolumeExpansion {
			t.Errorf("class %s: allowVolumeExpansion %v", c.Name, c.AllowVolumeExpansion)
		}
		if c.Name != "open-local-lvm-io-throttling" && (c.VolumeBindingMode != "WaitForFirstConsumer" || c.ReclaimPolicy != "Delete") {
			t.Errorf("class %s: binding %q reclaim %q", c.Name, c.VolumeBindingMode, c.ReclaimPolicy)
		}
	}
	for _, n := range []string{"extender", "images", "namespace"} {
		if !strings.Contains(strings.Join(notes, "\n"), n) {
			t.Errorf("no note on %s: %q", n, notes)
		}
	}
	if !strings.Contains(string(out), "# note: extender") {
		t.Errorf("notes are not in the output:\n%s", out)
	}
}

func TestConvert(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string // substrings of the output
		err      string
	}{
		{name: "empty", in: "", want: []string{"# Values"}},
		{name: "binpack", in: "extender: {strategy: binpack}", want: []string{"strategy: binpack"}},
		{name: "yodaplugin driver", in: "driver: yodaplugin.csi.alibabacloud.com", want: []string{"driverName: yodaplugin.csi.alibabacloud.com"}},
		{name: "renamed release", in: "name: ol", want: []string{"fullnameOverride: ol"}},
		{name: "labels", in: "customLabels: {team: db}", want: []string{"team: db"}},
		{name: "dashboard", in: "monitor: {enabled: true, namespace: monitoring}", want: []string{"namespace: monitoring"}},
		{name: "class renamed, immediate", in: "storageclass: {lvm: {name: fast, volumeBindingMode: Immediate, parameters: {volumeType: LVM}}}",
			want: []string{"name: fast", "volumeBindingMode: Immediate"}},
		{name: "class disabled", in: "storageclass: {device_hdd: {enabled: false, parameters: {volumeType: Device, mediaType: hdd}}}",
			want: []string{"enabled: false"}},

		{name: "unknown key", in: "extender: {stratgy: spread}", err: "unknown field"},
		{name: "unknown top key", in: "spdk: true", err: "unknown field"},
		{name: "spdk", in: "agent: {spdk: true}", err: "SPDK"},
		{name: "bad strategy", in: "extender: {strategy: random}", err: "binpack or spread"},
		{name: "driver with slash", in: "driver: ../x;$(id)", err: "driver"},
		{name: "name too long", in: "name: " + strings.Repeat("a", 41), err: "at most 40"},
		{name: "volumes past int32", in: "agent: {max_volumes_per_node: 9223372036854775807}", err: "max_volumes_per_node"},
		{name: "volumes negative", in: "agent: {max_volumes_per_node: -1}", err: "max_volumes_per_node"},
		{name: "volumes past int64", in: "agent: {max_volumes_per_node: 9223372036854775808}", err: "max_volumes_per_node"},
		{name: "unknown class key", in: "storageclass: {spdk: {name: x}}", err: "no such class"},
		{name: "class name hostile", in: "storageclass: {lvm: {name: 'a/../b'}}", err: "storageclass.lvm.name"},
		{name: "class parameters refused", in: "storageclass: {lvm: {parameters: {bps: fast}}}", err: "storageclass.lvm.parameters"},
		{name: "class names collide", in: "storageclass: {lvm: {name: x}, lvm_xfs: {name: x}}", err: "also the name"},
		{name: "renamed onto ours", in: "storageclass: {lvm: {name: open-local-lvm-io-throttling}}", err: "named twice"},
		{name: "binding mode", in: "storageclass: {lvm: {volumeBindingMode: Later}}", err: "volumeBindingMode"},
		{name: "reclaim", in: "storageclass: {lvm: {reclaimPolicy: Recycle}}", err: "reclaimPolicy"},
		{name: "pull policy", in: "global: {ImagePullPolicy: Sometimes}", err: "ImagePullPolicy"},
		{name: "label key", in: "customLabels: {'a b': c}", err: "customLabels"},
		{name: "dashboard namespace", in: "monitor: {enabled: true, namespace: 'a;b'}", err: "monitor.namespace"},
		{name: "not yaml", in: "[", err: "not a values file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := Convert([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one with %q; output:\n%s", err, tc.err, out)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output has no %q:\n%s", w, out)
				}
			}
		})
	}
}
