/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package metrics

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	listers "github.com/open-local/open-local/apis/client/listers/storage/v1alpha1"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
)

const gi = int64(1) << 30

func nls(node string) *v1alpha1.NodeLocalStorage {
	return &v1alpha1.NodeLocalStorage{
		ObjectMeta: metav1.ObjectMeta{Name: node},
		Status: v1alpha1.NodeLocalStorageStatus{
			NodeStorageInfo: v1alpha1.NodeStorageInfo{
				VolumeGroups: []v1alpha1.VolumeGroup{
					{Name: "pool0", Total: uint64(100 * gi), Allocatable: uint64(90 * gi)},
					{Name: "system", Total: uint64(50 * gi), Allocatable: uint64(10 * gi)},
				},
				DeviceInfos: []v1alpha1.DeviceInfo{
					{Name: "/dev/sdb", MediaType: "ssd", Total: uint64(200 * gi)},
					{Name: "/dev/sdc", MediaType: "hdd", Total: uint64(400 * gi)},
					{Name: "/dev/sda", MediaType: "ssd", Total: uint64(20 * gi)},
				},
			},
			FilteredStorageInfo: v1alpha1.FilteredStorageInfo{
				VolumeGroups: []string{"pool0"},
				Devices:      []string{"/dev/sdb", "/dev/sdc"},
			},
		},
	}
}

type lvOpt func(*v1alpha1.LocalVolume)

func localVolume(name, node string, size int64, opts ...lvOpt) *v1alpha1.LocalVolume {
	lv := &v1alpha1.LocalVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.LocalVolumeSpec{NodeName: node, VolumeType: v1alpha1.VolumeTypeLVM, VGName: "pool0",
			Kind: v1alpha1.KindVolume, Size: *resource.NewQuantity(size, resource.BinarySI)},
	}
	for _, o := range opts {
		o(lv)
	}
	return lv
}

func claim(ns, name string) lvOpt {
	return func(lv *v1alpha1.LocalVolume) {
		lv.Spec.ClaimRef = &v1alpha1.ObjectReference{Namespace: ns, Name: name}
	}
}
func pod(ns, name string) lvOpt {
	return func(lv *v1alpha1.LocalVolume) { lv.Spec.PodRef = &v1alpha1.ObjectReference{Namespace: ns, Name: name} }
}
func ready(path string) lvOpt {
	return func(lv *v1alpha1.LocalVolume) {
		lv.Status.Phase, lv.Status.DevicePath = v1alpha1.PhaseReady, path
	}
}
func phase(p v1alpha1.LocalVolumePhase) lvOpt {
	return func(lv *v1alpha1.LocalVolume) { lv.Status.Phase = p }
}
func device(dev string) lvOpt {
	return func(lv *v1alpha1.LocalVolume) {
		lv.Spec.VolumeType, lv.Spec.VGName, lv.Spec.Device = v1alpha1.VolumeTypeDevice, "", dev
	}
}
func snapshotOf(origin string) lvOpt {
	return func(lv *v1alpha1.LocalVolume) {
		lv.Spec.Kind, lv.Spec.Source = v1alpha1.KindSnapshot, &v1alpha1.LocalVolumeSource{Volume: origin}
	}
}

func listersOf(t *testing.T, objs ...any) (listers.NodeLocalStorageLister, listers.LocalVolumeLister) {
	t.Helper()
	nlsIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	lvIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *v1alpha1.NodeLocalStorage:
			err = nlsIdx.Add(o)
		case *v1alpha1.LocalVolume:
			err = lvIdx.Add(o)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return listers.NewNodeLocalStorageLister(nlsIdx), listers.NewLocalVolumeLister(lvIdx)
}

// fakeProc writes a diskstats file (kernel 5.5+ layout, 20 fields) and
// returns proc and sys directories for blockdevice.NewFS.
func fakeProc(t *testing.T, lines ...string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	proc, sys := filepath.Join(dir, "proc"), filepath.Join(dir, "sys")
	for _, d := range []string{proc, sys} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(proc, "diskstats"), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return proc, sys
}

// devices maps device paths to numbers, as stat would on a node.
func devices(m map[string][2]uint32) func(string) (uint32, uint32, error) {
	return func(path string) (uint32, uint32, error) {
		n, ok := m[path]
		if !ok {
			return 0, 0, fmt.Errorf("%s: no such device", path)
		}
		return n[0], n[1], nil
	}
}

func TestNodeCollector(t *testing.T) {
	proc, sys := fakeProc(t,
		"   7       3 loop3 10 0 80 5 20 0 160 8 0 12 13 0 0 0 0 0 0",
		" 253       1 dm-1 1 0 8 1000 2 0 16 2000 1 3000 3000 0 0 0 0 0 0",
		"   8      16 sdb 4 0 32 4 4 0 32 4 0 8 8 0 0 0 0 0 0")
	devs := devices(map[string][2]uint32{"/dev/loop3": {7, 3}, "/dev/pool0/pvc-b": {253, 1}, "/dev/sdb": {8, 16}})

	for _, tc := range []struct {
		name    string
		objs    []any
		pools   []lvm.LV
		poolErr bool
		metrics []string // names compared
		want    string
	}{{
		name:    "no NodeLocalStorage yet",
		metrics: []string{"local_volume_group_total", "local_volume_group_used", "local_allocated_num", "open_local_local_volumes"},
		want: `
# HELP local_allocated_num Number of persistent volumes (LocalVolumes of PVCs, not snapshots or inline volumes) on the node.
# TYPE local_allocated_num gauge
local_allocated_num{nodename="n1"} 0
# HELP open_local_local_volumes LocalVolumes (volumes and snapshots) of the node by status phase; Failed ones are being retried by the agent.
# TYPE open_local_local_volumes gauge
open_local_local_volumes{nodename="n1",phase="Failed"} 0
open_local_local_volumes{nodename="n1",phase="Pending"} 0
open_local_local_volumes{nodename="n1",phase="Ready"} 0
`,
	}, {
		name: "VGs: total is allocatable of schedulable VGs, used sums LocalVolume sizes",
		objs: []any{nls("n1"), nls("n2"),
			localVolume("pvc-a", "n1", 10*gi, claim("db", "data-0"), ready("/dev/loop3")),
			localVolume("pvc-b", "n1", 5*gi, claim("db", "data-1"), phase(v1alpha1.PhaseFailed)),
			localVolume("snap-s", "n1", 1*gi, snapshotOf("pvc-a"), ready("/dev/pool0/snap-s")),
			localVolume("csi-0123", "n1", 2*gi, pod("web", "web-0")),
			localVolume("pvc-x", "n1", 3*gi, claim("db", "data-2"), func(lv *v1alpha1.LocalVolume) { lv.Spec.VGName = "other" }),
			localVolume("pvc-elsewhere", "n2", 7*gi, claim("db", "data-9")),
		},
		metrics: []string{"local_volume_group_total", "local_volume_group_used", "local_allocated_num", "local_local_pv",
			"local_inline_volume", "open_local_local_volumes"},
		want: `
# HELP local_allocated_num Number of persistent volumes (LocalVolumes of PVCs, not snapshots or inline volumes) on the node.
# TYPE local_allocated_num gauge
local_allocated_num{nodename="n1"} 3
# HELP local_inline_volume Requested bytes of a CSI ephemeral inline volume; volume_name is its LocalVolume name (the kubelet's volume handle).
# TYPE local_inline_volume gauge
local_inline_volume{nodename="n1",pod_name="web-0",pod_namespace="web",vgname="pool0",volume_name="csi-0123"} 2.147483648e+09
# HELP local_local_pv Requested bytes of a persistent volume on the node. pv_name is the LocalVolume (= PV) name, status the LocalVolume phase, storage_name the VG or device.
# TYPE local_local_pv gauge
local_local_pv{nodename="n1",pv_name="pvc-a",pv_type="LVM",pvc_name="data-0",pvc_ns="db",status="Ready",storage_name="pool0"} 1.073741824e+10
local_local_pv{nodename="n1",pv_name="pvc-b",pv_type="LVM",pvc_name="data-1",pvc_ns="db",status="Failed",storage_name="pool0"} 5.36870912e+09
local_local_pv{nodename="n1",pv_name="pvc-x",pv_type="LVM",pvc_name="data-2",pvc_ns="db",status="Pending",storage_name="other"} 3.221225472e+09
# HELP local_volume_group_total Allocatable bytes of a schedulable VG (NodeLocalStorage status allocatable).
# TYPE local_volume_group_total gauge
local_volume_group_total{nodename="n1",vgname="pool0"} 9.663676416e+10
# HELP local_volume_group_used Bytes of a VG allocated to LocalVolumes (the sum of their spec.size, snapshots and volumes being deleted included): what the scheduler counts as used.
# TYPE local_volume_group_used gauge
local_volume_group_used{nodename="n1",vgname="other"} 3.221225472e+09
local_volume_group_used{nodename="n1",vgname="pool0"} 1.9327352832e+10
# HELP open_local_local_volumes LocalVolumes (volumes and snapshots) of the node by status phase; Failed ones are being retried by the agent.
# TYPE open_local_local_volumes gauge
open_local_local_volumes{nodename="n1",phase="Failed"} 1
open_local_local_volumes{nodename="n1",phase="Pending"} 2
open_local_local_volumes{nodename="n1",phase="Ready"} 2
`,
	}, {
		name: "devices: schedulable ones, bound by Device volumes",
		objs: []any{nls("n1"),
			localVolume("pvc-d", "n1", 100*gi, claim("db", "wal"), device("/dev/sdb"), ready("/dev/sdb")),
		},
		metrics: []string{"local_device_total", "local_device_available", "local_device_bind", "local_local_pv"},
		want: `
# HELP local_device_available Size in bytes of a schedulable exclusive device when no volume holds it, else 0.
# TYPE local_device_available gauge
local_device_available{name="/dev/sdb",nodename="n1",type="ssd"} 0
local_device_available{name="/dev/sdc",nodename="n1",type="hdd"} 4.294967296e+11
# HELP local_device_bind 1 when a Device volume holds the device, else 0.
# TYPE local_device_bind gauge
local_device_bind{name="/dev/sdb",nodename="n1"} 1
local_device_bind{name="/dev/sdc",nodename="n1"} 0
# HELP local_device_total Size in bytes of a schedulable exclusive device.
# TYPE local_device_total gauge
local_device_total{name="/dev/sdb",nodename="n1",type="ssd"} 2.147483648e+11
local_device_total{name="/dev/sdc",nodename="n1",type="hdd"} 4.294967296e+11
# HELP local_local_pv Requested bytes of a persistent volume on the node. pv_name is the LocalVolume (= PV) name, status the LocalVolume phase, storage_name the VG or device.
# TYPE local_local_pv gauge
local_local_pv{nodename="n1",pv_name="pvc-d",pv_type="Device",pvc_name="wal",pvc_ns="db",status="Ready",storage_name="/dev/sdb"} 1.073741824e+11
`,
	}, {
		name: "IO of Ready volumes from diskstats; unresolvable devices are skipped",
		objs: []any{nls("n1"),
			localVolume("pvc-a", "n1", gi, claim("db", "data-0"), ready("/dev/loop3")),
			localVolume("pvc-b", "n1", gi, claim("db", "data-1"), ready("/dev/pool0/pvc-b")),
			localVolume("pvc-gone", "n1", gi, claim("db", "data-2"), ready("/dev/loop99")),
			localVolume("pvc-pending", "n1", gi, claim("db", "data-3")),
		},
		metrics: []string{"open_local_volume_reads_completed_total", "open_local_volume_written_bytes_total",
			"open_local_volume_write_time_seconds_total", "open_local_volume_io_now", "open_local_volume_io_time_seconds_total"},
		want: `
# HELP open_local_volume_io_now IOs in flight on the volume's device.
# TYPE open_local_volume_io_now gauge
open_local_volume_io_now{nodename="n1",pvc_name="data-0",pvc_ns="db",vgname="pool0",volume="pvc-a"} 0
open_local_volume_io_now{nodename="n1",pvc_name="data-1",pvc_ns="db",vgname="pool0",volume="pvc-b"} 1
# HELP open_local_volume_io_time_seconds_total Time the volume's device had IO in flight (its utilisation when divided by wall time).
# TYPE open_local_volume_io_time_seconds_total counter
open_local_volume_io_time_seconds_total{nodename="n1",pvc_name="data-0",pvc_ns="db",vgname="pool0",volume="pvc-a"} 0.012
open_local_volume_io_time_seconds_total{nodename="n1",pvc_name="data-1",pvc_ns="db",vgname="pool0",volume="pvc-b"} 3
# HELP open_local_volume_reads_completed_total Reads completed on the volume's block device.
# TYPE open_local_volume_reads_completed_total counter
open_local_volume_reads_completed_total{nodename="n1",pvc_name="data-0",pvc_ns="db",vgname="pool0",volume="pvc-a"} 10
open_local_volume_reads_completed_total{nodename="n1",pvc_name="data-1",pvc_ns="db",vgname="pool0",volume="pvc-b"} 1
# HELP open_local_volume_write_time_seconds_total Time all writes of the volume took.
# TYPE open_local_volume_write_time_seconds_total counter
open_local_volume_write_time_seconds_total{nodename="n1",pvc_name="data-0",pvc_ns="db",vgname="pool0",volume="pvc-a"} 0.008
open_local_volume_write_time_seconds_total{nodename="n1",pvc_name="data-1",pvc_ns="db",vgname="pool0",volume="pvc-b"} 2
# HELP open_local_volume_written_bytes_total Bytes written to the volume's block device.
# TYPE open_local_volume_written_bytes_total counter
open_local_volume_written_bytes_total{nodename="n1",pvc_name="data-0",pvc_ns="db",vgname="pool0",volume="pvc-a"} 81920
open_local_volume_written_bytes_total{nodename="n1",pvc_name="data-1",pvc_ns="db",vgname="pool0",volume="pvc-b"} 8192
`,
	}, {
		name: "thin pools of schedulable VGs only",
		objs: []any{nls("n1")},
		pools: []lvm.LV{
			{Name: "tp", VG: "pool0", Layout: "thin,pool", DataPercent: 42.5, MetadataPercent: 7.25},
			{Name: "tp-inactive", VG: "pool0", Layout: "thin,pool", DataPercent: -1, MetadataPercent: -1},
			{Name: "foreign", VG: "system", Layout: "thin,pool", DataPercent: 99, MetadataPercent: 99},
		},
		metrics: []string{"open_local_thin_pool_data_percent", "open_local_thin_pool_metadata_percent", "open_local_thin_pool_scrape_error"},
		want: `
# HELP open_local_thin_pool_data_percent How full a thin pool's data space is (lvm's data_percent), for thin pools in schedulable VGs.
# TYPE open_local_thin_pool_data_percent gauge
open_local_thin_pool_data_percent{nodename="n1",pool="tp",vgname="pool0"} 42.5
# HELP open_local_thin_pool_metadata_percent How full a thin pool's metadata space is (lvm's metadata_percent); at 100% every thin LV of the pool stops.
# TYPE open_local_thin_pool_metadata_percent gauge
open_local_thin_pool_metadata_percent{nodename="n1",pool="tp",vgname="pool0"} 7.25
# HELP open_local_thin_pool_scrape_error 1 when the last lvs run for thin pool metrics failed (the values are then from the last success), else 0.
# TYPE open_local_thin_pool_scrape_error gauge
open_local_thin_pool_scrape_error{nodename="n1"} 0
`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			nlsL, lvL := listersOf(t, tc.objs...)
			o := NodeOptions{NodeName: "n1", ProcFS: proc, SysFS: sys, DeviceNumber: devs}
			if tc.pools != nil {
				o.LVM = lvm.New(nil) // never run: the pools are set below
			}
			n := newNode(o, nlsL, lvL)
			n.pools, n.poolErr = tc.pools, tc.poolErr
			if err := testutil.CollectAndCompare(n, strings.NewReader(tc.want), tc.metrics...); err != nil {
				t.Error(err)
			}
			reg := prometheus.NewPedanticRegistry()
			reg.MustRegister(n)
			problems, err := testutil.GatherAndLint(reg)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range problems {
				// open-local named these gauges *_total; the names are kept for
				// its users' dashboards and alerts.
				if p.Metric != "local_volume_group_total" && p.Metric != "local_device_total" {
					t.Errorf("lint: %s: %s", p.Metric, p.Text)
				}
			}
		})
	}
}
