/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package discovery

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/loopvg"
)

const gib = uint64(1) << 30

func TestFilter(t *testing.T) {
	names := []string{"open-local-pool-0", "open-local-pool-1", "open-local-pool-10", "yoda-pool0", "system", "ackdistro-pool"}
	tests := []struct {
		name             string
		include, exclude []string
		want             []string
		wantErr          string
	}{
		{name: "nothing included", want: nil},
		{name: "helm default", include: []string{"open-local-pool-[0-9]+", "yoda-pool[0-9]+", "ackdistro-pool"},
			want: []string{"ackdistro-pool", "open-local-pool-0", "open-local-pool-1", "open-local-pool-10", "yoda-pool0"}},
		{name: "full match only", include: []string{"open-local-pool-1"}, want: []string{"open-local-pool-1"}},
		{name: "substring does not match", include: []string{"pool"}, want: nil},
		{name: "exclude wins", include: []string{".*"}, exclude: []string{"system", "open-local-pool-1.*"},
			want: []string{"ackdistro-pool", "open-local-pool-0", "yoda-pool0"}},
		{name: "alternation is anchored as a whole", include: []string{"system|yoda-pool0"}, want: []string{"system", "yoda-pool0"}},
		{name: "invalid include", include: []string{"open-local-pool-[0-9"}, wantErr: `"open-local-pool-[0-9"`},
		{name: "invalid exclude", include: []string{".*"}, exclude: []string{"(a"}, wantErr: `"(a"`},
		{name: "cannot escape the anchors", include: []string{"x)|(.*"}, wantErr: `"x)|(.*"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Filter(names, tt.include, tt.exclude)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Filter = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestParseReserve(t *testing.T) {
	tests := []struct {
		in      string
		want    map[string]Reservation
		invalid bool
		wantErr bool
	}{
		{in: `{"vg":"100Gi"}`, want: map[string]Reservation{"vg": {Bytes: 100 << 30}}},
		{in: `{"vg":"100G"}`, want: map[string]Reservation{"vg": {Bytes: 100 << 30}}},
		{in: `{"vg":"512m","vg2":"1.5Ti","vg3":"4096"}`, want: map[string]Reservation{"vg": {Bytes: 512 << 20}, "vg2": {Bytes: 3 << 39}, "vg3": {Bytes: 4096}}},
		{in: `{"vg":"10%","vg2":"12.5 %"}`, want: map[string]Reservation{"vg": {Percent: 10}, "vg2": {Percent: 12.5}}},
		{in: `{}`, want: map[string]Reservation{}},
		{in: `{"vg":"ten"}`, want: map[string]Reservation{"vg": {Invalid: true}}, wantErr: true},
		{in: `{"vg":"150%","ok":"1Gi"}`, want: map[string]Reservation{"vg": {Invalid: true}, "ok": {Bytes: 1 << 30}}, wantErr: true},
		{in: `{"vg":"-1Gi"}`, want: map[string]Reservation{"vg": {Invalid: true}}, wantErr: true},
		{in: `not json`, invalid: true, wantErr: true},
		{in: `{"vg":10}`, invalid: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseReserve(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if got.Invalid != tt.invalid || (!tt.invalid && !reflect.DeepEqual(got.ByVG, tt.want)) {
				t.Errorf("ParseReserve = %+v, want %+v (invalid=%v)", got, tt.want, tt.invalid)
			}
		})
	}
}

func TestVolumeGroups(t *testing.T) {
	// pool-a: 40 GiB of visible thick LVs and pool data, 1 GiB of hidden
	// pool metadata and spare; pool-b: full.
	vgs := []lvm.VG{{Name: "pool-b", Size: 10 * gib, Free: 0}, {Name: "pool-a", Size: 100 * gib, Free: 59 * gib}}
	pvs := []lvm.PV{{Name: "/dev/sdc", VG: "pool-a"}, {Name: "/dev/sdb", VG: "pool-a"}, {Name: "/dev/sdd", VG: "pool-b"}, {Name: "/dev/sde"}}
	lvs := []lvm.LV{
		{Name: "pvc-1", VG: "pool-a", Size: 10 * gib, Tags: []string{lvm.OwnedTag}, Attr: "-wi-a-----"},
		{Name: "foreign", VG: "pool-a", Size: 20 * gib, Attr: "-ri-a-----"},
		{Name: "local-legacy", VG: "pool-a", Size: 5 * gib},
		{Name: "csi-inline", VG: "pool-a", Size: 1 * gib},
		{Name: "pool0", VG: "pool-a", Size: 4 * gib, Layout: "thin,pool", DataPercent: 25, MetadataPercent: 10.5, Tags: []string{lvm.OwnedTag}},
		{Name: "thin", VG: "pool-a", Size: 50 * gib, Pool: "pool0"},
		{Name: "all", VG: "pool-b", Size: 10 * gib},
	}
	own := Ownership{LegacyPrefix: DefaultLegacyLVPrefix}
	// LocalVolumes name pvc-1, csi-inline and the thin LV; local-legacy has none.
	acc := Accounted{"pool-a": {"pvc-1": false, "csi-inline": false, "thin": true}}
	base := func(reserve Reserve) map[string]uint64 {
		got := map[string]uint64{}
		vgs, err := VolumeGroups(vgs, lvs, pvs, own, acc, reserve, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, vg := range vgs {
			got[vg.Name] = vg.Allocatable
		}
		return got
	}
	// Counted by no LocalVolume in pool-a: "foreign" 20, the orphan
	// "local-legacy" 5, the thin pool 4 (though tagged: thin volumes are
	// counted in it, not in the VG) and 1 hidden; thin LVs are in the pool.
	tests := []struct {
		name    string
		reserve Reserve
		want    map[string]uint64
	}{
		{"no reserve", Reserve{}, map[string]uint64{"pool-a": 70 * gib, "pool-b": 0}},
		{"absolute", Reserve{ByVG: map[string]Reservation{"pool-a": {Bytes: 6 * gib}}}, map[string]uint64{"pool-a": 64 * gib, "pool-b": 0}},
		{"percent", Reserve{ByVG: map[string]Reservation{"pool-a": {Percent: 10}}}, map[string]uint64{"pool-a": 60 * gib, "pool-b": 0}},
		{"reserve beyond size", Reserve{ByVG: map[string]Reservation{"pool-a": {Bytes: 90 * gib}}}, map[string]uint64{"pool-a": 0, "pool-b": 0}},
		{"huge reserve does not wrap", Reserve{ByVG: map[string]Reservation{"pool-a": {Bytes: ^uint64(0) - gib}}}, map[string]uint64{"pool-a": 0, "pool-b": 0}},
		{"invalid entry blocks its VG", Reserve{ByVG: map[string]Reservation{"pool-a": {Invalid: true}}}, map[string]uint64{"pool-a": 0, "pool-b": 0}},
		{"invalid annotation blocks all", Reserve{Invalid: true}, map[string]uint64{"pool-a": 0, "pool-b": 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := base(tt.reserve); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("allocatable = %v, want %v", got, tt.want)
			}
		})
	}

	got, err := VolumeGroups(vgs, lvs, pvs, own, acc, Reserve{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Name != "pool-a" || got[1].Name != "pool-b" {
		t.Fatalf("not sorted: %v, %v", got[0].Name, got[1].Name)
	}
	a := got[0]
	if !reflect.DeepEqual(a.PhysicalVolumes, []string{"/dev/sdb", "/dev/sdc"}) || a.Total != 100*gib || a.Available != 59*gib || a.Condition != v1alpha1.StorageReady {
		t.Errorf("pool-a = %+v", a)
	}
	if len(a.LogicalVolumes) != 6 || a.LogicalVolumes[0].Name != "csi-inline" || !a.LogicalVolumes[1].ReadOnly || a.LogicalVolumes[1].VGName != "pool-a" {
		t.Errorf("pool-a LVs = %+v", a.LogicalVolumes)
	}
	if got[1].Condition != v1alpha1.StorageFull {
		t.Errorf("pool-b with no free extent: condition %s, want DiskFull", got[1].Condition)
	}

	wantPool := []v1alpha1.ThinPool{{Name: "pool0", Total: 4 * gib, Used: gib, DataPercent: ptr.To[int32](25), MetadataPercent: ptr.To[int32](11),
		OverprovisionRatio: resource.MustParse("1"), Allocatable: 4 * gib}}
	if !reflect.DeepEqual(a.ThinPools, wantPool) {
		t.Errorf("pool-a thin pools = %+v\nwant %+v", a.ThinPools, wantPool)
	}

	var orphans []string
	for _, lv := range a.LogicalVolumes {
		if lv.Orphan {
			orphans = append(orphans, lv.Name)
		}
	}
	if !reflect.DeepEqual(orphans, []string{"local-legacy"}) {
		t.Errorf("orphans = %v, want [local-legacy]", orphans)
	}
	// Without the legacy prefix local-legacy is plain foreign: counted the
	// same, but no orphan.
	noLegacy, _ := VolumeGroups(vgs, lvs, pvs, Ownership{}, acc, Reserve{}, nil)
	if noLegacy[0].Allocatable != 70*gib || noLegacy[0].LogicalVolumes[2].Orphan {
		t.Errorf("without the legacy prefix: allocatable %d GiB, LVs %+v; want 70 GiB, no orphan", noLegacy[0].Allocatable/gib, noLegacy[0].LogicalVolumes)
	}
}

// TestVolumeGroupsAccounted: only an LV a LocalVolume of the node names is
// allocatable (the ledger counts the LocalVolume); any other is kept out of
// allocatable, and those that look like open-local's are orphans.
func TestVolumeGroupsAccounted(t *testing.T) {
	vgs := []lvm.VG{{Name: "vg", Size: 100 * gib, Free: 90 * gib}}
	const thinPoolSize = 4 * gib
	lvol := func(name string, edit func(*v1alpha1.LocalVolumeSpec)) *v1alpha1.LocalVolume {
		lv := &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1alpha1.LocalVolumeSpec{VolumeType: v1alpha1.VolumeTypeLVM, VGName: "vg", Size: resource.MustParse("1Gi")}}
		if edit != nil {
			edit(&lv.Spec)
		}
		return lv
	}
	tagged := []string{lvm.OwnedTag}
	tests := []struct {
		name        string
		lv          lvm.LV
		volumes     []*v1alpha1.LocalVolume
		wantAlloc   uint64 // of the VG: 100 GiB − the 4 GiB pool − LVs no LocalVolume names
		wantOrphan  bool
		wantPoolAll uint64 // allocatable of pool0 (ratio 1)
	}{
		{name: "LV of a LocalVolume", lv: lvm.LV{Name: "pvc-1", Tags: tagged},
			volumes: []*v1alpha1.LocalVolume{lvol("pvc-1", nil)}, wantAlloc: 96 * gib},
		{name: "LV named by spec.lvName", lv: lvm.LV{Name: "lv-abc", Tags: tagged},
			volumes: []*v1alpha1.LocalVolume{lvol("pvc-1", func(s *v1alpha1.LocalVolumeSpec) { s.LVName = "lv-abc" })}, wantAlloc: 96 * gib},
		{name: "tagged LV whose LocalVolume was force-deleted", lv: lvm.LV{Name: "pvc-1", Tags: tagged},
			wantAlloc: 94 * gib, wantOrphan: true},
		{name: "admin LV named localbackup", lv: lvm.LV{Name: "localbackup"},
			wantAlloc: 94 * gib, wantOrphan: true},
		{name: "legacy open-local local-<uuid>", lv: lvm.LV{Name: "local-1f0e7f43-3bd2-4c39-9f62-1a9b6f0ad3c1"},
			wantAlloc: 94 * gib, wantOrphan: true},
		{name: "csi- LV without LocalVolume", lv: lvm.LV{Name: "csi-0123abcd"},
			wantAlloc: 94 * gib, wantOrphan: true},
		{name: "foreign LV: not allocatable, no orphan", lv: lvm.LV{Name: "data"},
			wantAlloc: 94 * gib},
		{name: "a LocalVolume of another VG does not count", lv: lvm.LV{Name: "pvc-1", Tags: tagged},
			volumes: []*v1alpha1.LocalVolume{lvol("pvc-1", func(s *v1alpha1.LocalVolumeSpec) { s.VGName = "other" })}, wantAlloc: 94 * gib, wantOrphan: true},
		{name: "a thin LocalVolume does not count a thick LV of its name", lv: lvm.LV{Name: "pvc-1", Tags: tagged},
			volumes: []*v1alpha1.LocalVolume{lvol("pvc-1", func(s *v1alpha1.LocalVolumeSpec) { s.ThinPool = "pool0" })}, wantAlloc: 94 * gib, wantOrphan: true},
		{name: "a read-only restore owns no LV", lv: lvm.LV{Name: "snap-1", Tags: tagged, Origin: "pvc-0"},
			volumes: []*v1alpha1.LocalVolume{lvol("pvc-2", func(s *v1alpha1.LocalVolumeSpec) {
				s.LVName, s.ReadOnly, s.Source = "snap-1", true, &v1alpha1.LocalVolumeSource{Snapshot: "snap-1"}
			})}, wantAlloc: 94 * gib, wantOrphan: true},
		{name: "a snapshot LocalVolume names its copy-on-write LV", lv: lvm.LV{Name: "snap-1", Tags: tagged, Origin: "pvc-0"},
			volumes: []*v1alpha1.LocalVolume{lvol("snap-1", func(s *v1alpha1.LocalVolumeSpec) { s.Kind = v1alpha1.KindSnapshot })}, wantAlloc: 96 * gib},
		{name: "a Device volume names no LV", lv: lvm.LV{Name: "pvc-1", Tags: tagged},
			volumes: []*v1alpha1.LocalVolume{lvol("pvc-1", func(s *v1alpha1.LocalVolumeSpec) { s.VolumeType = v1alpha1.VolumeTypeDevice })}, wantAlloc: 94 * gib, wantOrphan: true},
		{name: "thin LV of a thin LocalVolume", lv: lvm.LV{Name: "pvc-t", Tags: tagged, Pool: "pool0"},
			volumes: []*v1alpha1.LocalVolume{lvol("pvc-t", func(s *v1alpha1.LocalVolumeSpec) { s.ThinPool = "pool0" })}, wantAlloc: 96 * gib, wantPoolAll: thinPoolSize},
		{name: "orphan thin LV takes its virtual size out of the pool", lv: lvm.LV{Name: "pvc-t", Tags: tagged, Pool: "pool0"},
			wantAlloc: 96 * gib, wantOrphan: true, wantPoolAll: thinPoolSize - 2*gib},
		{name: "orphan thin LV larger than the pool", lv: lvm.LV{Name: "pvc-t", Tags: tagged, Pool: "pool0", Size: 50 * gib},
			wantAlloc: 96 * gib, wantOrphan: true, wantPoolAll: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lv := tt.lv
			lv.VG = "vg"
			if lv.Size == 0 {
				lv.Size = 2 * gib
			}
			// The pool is tagged yet never an orphan: no LocalVolume names
			// pools, their space is counted by virtual size.
			lvs := []lvm.LV{lv, {Name: "pool0", VG: "vg", Size: thinPoolSize, Layout: "thin,pool", Tags: tagged}}
			if !lv.IsThin() {
				// A thick LV's extents are in use: 4 GiB of pool plus this LV.
				vgs[0].Free = 100*gib - thinPoolSize - lv.Size
			} else {
				vgs[0].Free = 100*gib - thinPoolSize
			}
			got, err := VolumeGroups(vgs, lvs, nil, Ownership{LegacyPrefix: DefaultLegacyLVPrefix}, AccountedBy(tt.volumes), Reserve{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			vg := got[0]
			if vg.Allocatable != tt.wantAlloc {
				t.Errorf("allocatable = %d GiB, want %d GiB", vg.Allocatable/gib, tt.wantAlloc/gib)
			}
			orphans := map[string]bool{}
			for _, l := range vg.LogicalVolumes {
				orphans[l.Name] = l.Orphan
			}
			if orphans[lv.Name] != tt.wantOrphan || orphans["pool0"] {
				t.Errorf("orphan flags = %v, want %s: %v, pool0: false", orphans, lv.Name, tt.wantOrphan)
			}
			want := tt.wantPoolAll
			if !lv.IsThin() {
				want = thinPoolSize
			}
			if len(vg.ThinPools) != 1 || vg.ThinPools[0].Allocatable != want {
				t.Errorf("thin pools = %+v, want pool0 allocatable %d", vg.ThinPools, want)
			}
		})
	}
}

// The overprovision ratio comes from resourceToBeInited.vgs[].thinPool of
// the pool's own VG and name; anything else, or a ratio below 1, means 1.
func TestThinPoolRatio(t *testing.T) {
	vgs := []lvm.VG{{Name: "vg", Size: 10 * gib, Free: 6 * gib}}
	lvs := []lvm.LV{
		{Name: "pool0", VG: "vg", Size: 2 * gib, Layout: "thin,pool", DataPercent: -1, MetadataPercent: -1},
		{Name: "pool1", VG: "vg", Size: 2 * gib, Layout: "thin,pool", DataPercent: -1, MetadataPercent: -1},
	}
	ratio := func(s string) *resource.Quantity { q := resource.MustParse(s); return &q }
	tests := []struct {
		name    string
		cfg     []v1alpha1.VGToBeInited
		want    map[string]uint64 // pool -> allocatable
		wantErr bool
	}{
		{name: "unconfigured", want: map[string]uint64{"pool0": 2 * gib, "pool1": 2 * gib}},
		{name: "ratio 5 on pool0", cfg: []v1alpha1.VGToBeInited{{Name: "vg", ThinPool: &v1alpha1.ThinPoolToBeInited{Name: "pool0", OverprovisionRatio: ratio("5")}}},
			want: map[string]uint64{"pool0": 10 * gib, "pool1": 2 * gib}},
		{name: "fractional", cfg: []v1alpha1.VGToBeInited{{Name: "vg", ThinPool: &v1alpha1.ThinPoolToBeInited{Name: "pool1", OverprovisionRatio: ratio("1.5")}}},
			want: map[string]uint64{"pool0": 2 * gib, "pool1": 3 * gib}},
		{name: "another VG's config", cfg: []v1alpha1.VGToBeInited{{Name: "other", ThinPool: &v1alpha1.ThinPoolToBeInited{Name: "pool0", OverprovisionRatio: ratio("5")}}},
			want: map[string]uint64{"pool0": 2 * gib, "pool1": 2 * gib}},
		{name: "below 1 is refused", cfg: []v1alpha1.VGToBeInited{{Name: "vg", ThinPool: &v1alpha1.ThinPoolToBeInited{Name: "pool0", OverprovisionRatio: ratio("0.5")}}},
			want: map[string]uint64{"pool0": 2 * gib, "pool1": 2 * gib}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := VolumeGroups(vgs, lvs, nil, Ownership{}, nil, Reserve{}, ThinConfigOf(tt.cfg))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			pools := map[string]uint64{}
			for _, p := range got[0].ThinPools {
				pools[p.Name] = p.Allocatable
			}
			if !reflect.DeepEqual(pools, tt.want) {
				t.Errorf("allocatable = %v, want %v", pools, tt.want)
			}
			// Pools are never allocatable to thick volumes.
			if got[0].Allocatable != 6*gib {
				t.Errorf("VG allocatable %d GiB, want 6", got[0].Allocatable/gib)
			}
		})
	}
}

// TestBlockDevicesSysfsLayout reads a sysfs-shaped tree: disks matching the
// expression, their partitions, rotational and read-only flags.
func TestBlockDevicesSysfsLayout(t *testing.T) {
	sys := t.TempDir()
	write := func(path, content string) {
		t.Helper()
		p := filepath.Join(sys, "block", path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("sda/size", "2097152")
	write("sda/ro", "0")
	write("sda/queue/rotational", "1")
	write("sda/sda1/size", "1048576")
	write("sda/sda1/partition", "1")
	write("sda/sda1/ro", "0")
	write("vdb/size", "4194304")
	write("vdb/ro", "1")
	write("vdb/queue/rotational", "0")
	write("vdb/holders/.keep", "")
	write("nvme0n1/size", "4194304")
	write("sdz/size", "0") // no medium
	devs, err := BlockDevices(sys, regexp.MustCompile(DefaultDeviceRegexp), Usage{})
	if err != nil {
		t.Fatal(err)
	}
	want := []v1alpha1.DeviceInfo{
		{Name: "/dev/sda", MediaType: MediaHDD, Total: gib, Condition: v1alpha1.StorageReady, InUse: "has partitions /dev/sda1"},
		{Name: "/dev/sda1", MediaType: MediaHDD, Total: gib / 2, Condition: v1alpha1.StorageReady, Parent: "/dev/sda"},
		{Name: "/dev/vdb", MediaType: MediaSSD, Total: 2 * gib, ReadOnly: true, Condition: v1alpha1.StorageReady},
	}
	if !reflect.DeepEqual(devs, want) {
		t.Errorf("devices:\n got %+v\nwant %+v", devs, want)
	}
	if _, err := BlockDevices(filepath.Join(sys, "missing"), regexp.MustCompile(".*"), Usage{}); err == nil {
		t.Error("missing sysfs accepted")
	}
}

// TestBlockDevicesRealSysfs finds this test's loop devices in the real /sys.
func TestBlockDevicesRealSysfs(t *testing.T) {
	capability.Require(t, capability.Root, capability.LoopDevices)
	devs := loopvg.NewDevices(t, 256<<20, 512<<20)
	re := regexp.MustCompile("^(" + filepath.Base(devs[0].Path) + "|" + filepath.Base(devs[1].Path) + ")$")
	got, err := BlockDevices("/sys", re, Usage{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("devices = %+v, want the 2 loop devices", got)
	}
	size := map[string]uint64{devs[0].Path: uint64(devs[0].Size), devs[1].Path: uint64(devs[1].Size)}
	for _, d := range got {
		if want, ok := size[d.Name]; !ok || d.Total != want || d.ReadOnly || d.MediaType == "" {
			t.Errorf("device %+v, want one of %v with its size", d, size)
		}
	}
}

// A pool's fill is lvm's data_percent and metadata_percent rounded up (a
// threshold is never passed unseen), and absent where lvm reports none
// (-1: an inactive pool, or lvm without device-mapper): unknown, not 0.
func TestThinPoolFill(t *testing.T) {
	pct := func(v int32) *int32 { return &v }
	for _, tt := range []struct {
		name           string
		data, metadata float64
		wantData       *int32
		wantMetadata   *int32
		wantUsed       uint64
	}{
		{name: "unknown", data: -1, metadata: -1},
		{name: "empty", data: 0, metadata: 0, wantData: pct(0), wantMetadata: pct(0)},
		{name: "rounded up", data: 89.01, metadata: 10.25, wantData: pct(90), wantMetadata: pct(11), wantUsed: 1911475196},
		{name: "data known, metadata not", data: 50, metadata: -1, wantData: pct(50), wantUsed: gib},
		{name: "overfull clamps", data: 100.5, metadata: 100, wantData: pct(100), wantMetadata: pct(100), wantUsed: 2 * gib},
	} {
		t.Run(tt.name, func(t *testing.T) {
			vgs := []lvm.VG{{Name: "vg", Size: 10 * gib, Free: 6 * gib}}
			lvs := []lvm.LV{{Name: "pool0", VG: "vg", Size: 2 * gib, Layout: "thin,pool", DataPercent: tt.data, MetadataPercent: tt.metadata}}
			got, err := VolumeGroups(vgs, lvs, nil, Ownership{}, nil, Reserve{}, ThinConfigOf(nil))
			if err != nil {
				t.Fatal(err)
			}
			p := got[0].ThinPools[0]
			if !reflect.DeepEqual(p.DataPercent, tt.wantData) || !reflect.DeepEqual(p.MetadataPercent, tt.wantMetadata) || p.Used != tt.wantUsed {
				t.Errorf("data %v metadata %v used %d, want %v %v %d", deref(p.DataPercent), deref(p.MetadataPercent), p.Used,
					deref(tt.wantData), deref(tt.wantMetadata), tt.wantUsed)
			}
		})
	}
}

func deref(p *int32) any {
	if p == nil {
		return "unknown"
	}
	return *p
}
