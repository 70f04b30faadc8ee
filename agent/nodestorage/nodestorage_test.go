/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package nodestorage

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-local/open-local/agent/discovery"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
)

const gib = uint64(1) << 30

func TestPlanInit(t *testing.T) {
	devs := map[string][2]uint32{"/dev/sdb": {8, 16}, "/dev/sdc": {8, 32}, "/dev/disk/by-id/x": {8, 16}}
	rdev := func(p string) (uint32, uint32, error) {
		d, ok := devs[p]
		if !ok {
			return 0, 0, os.ErrNotExist
		}
		return d[0], d[1], nil
	}
	inv := inventory{
		vgs: []lvm.VG{{Name: "pool", Size: 100 * gib}, {Name: "thin", Size: 10 * gib}},
		pvs: []lvm.PV{{Name: "/dev/sdb", VG: "pool", Major: 8, Minor: 16}},
		lvs: []lvm.LV{{Name: "pool0", VG: "thin", Layout: "thin,pool"}, {Name: "data", VG: "thin", Layout: "linear"}},
	}
	tp := func(name, size string) *v1alpha1.ThinPoolToBeInited {
		return &v1alpha1.ThinPoolToBeInited{Name: name, Size: size}
	}
	tests := []struct {
		name string
		spec []v1alpha1.VGToBeInited
		want []vgAction
	}{
		{"nothing asked", nil, nil},
		{"new VG", []v1alpha1.VGToBeInited{{Name: "new", Devices: []string{"/dev/sdc"}}},
			[]vgAction{{vg: "new", devices: []string{"/dev/sdc"}, create: true}}},
		{"existing VG with its device", []v1alpha1.VGToBeInited{{Name: "pool", Devices: []string{"/dev/sdb"}}}, nil},
		{"same device under another name", []v1alpha1.VGToBeInited{{Name: "pool", Devices: []string{"/dev/disk/by-id/x"}}}, nil},
		{"existing VG, new device: extend", []v1alpha1.VGToBeInited{{Name: "pool", Devices: []string{"/dev/sdb", "/dev/sdc"}}},
			[]vgAction{{vg: "pool", devices: []string{"/dev/sdb", "/dev/sdc"}}}},
		{"missing device stays in the plan", []v1alpha1.VGToBeInited{{Name: "pool", Devices: []string{"/dev/sdb", "/dev/nope"}}},
			[]vgAction{{vg: "pool", devices: []string{"/dev/sdb", "/dev/nope"}}}},
		{"no devices: nothing to do", []v1alpha1.VGToBeInited{{Name: "empty"}}, nil},
		{"thin pool by percentage", []v1alpha1.VGToBeInited{{Name: "pool", Devices: []string{"/dev/sdb"}, ThinPool: tp("tp", "25%")}},
			[]vgAction{{vg: "pool", pool: "tp", poolSize: 25 * gib}}},
		{"thin pool by quantity, in a VG listed without devices", []v1alpha1.VGToBeInited{{Name: "pool", ThinPool: tp("tp", "3Gi")}},
			[]vgAction{{vg: "pool", pool: "tp", poolSize: 3 * gib}}},
		{"existing thin pool", []v1alpha1.VGToBeInited{{Name: "thin", ThinPool: tp("pool0", "5Gi")}}, nil},
		{"ratio only: never created", []v1alpha1.VGToBeInited{{Name: "pool", ThinPool: tp("tp", "")}}, nil},
		{"thin pool waits for its VG", []v1alpha1.VGToBeInited{{Name: "new", Devices: []string{"/dev/sdc"}, ThinPool: tp("tp", "1Gi")}},
			[]vgAction{{vg: "new", devices: []string{"/dev/sdc"}, create: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := planInit(tt.spec, inv, rdev); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("plan = %+v, want %+v", got, tt.want)
			}
		})
	}
	// An LV of the pool's name that is not a pool is never touched: the
	// step fails, saying why.
	got := planInit([]v1alpha1.VGToBeInited{{Name: "thin", ThinPool: tp("data", "1Gi")}}, inv, rdev)
	if len(got) != 1 || !errors.Is(got[0].poolErr, lvm.ErrAlreadyExists) {
		t.Errorf("plan over a non-pool LV = %+v, want one failing step", got)
	}
}

func TestThinPoolSize(t *testing.T) {
	tests := []struct {
		in      string
		want    uint64
		wantErr bool
	}{
		{in: "50%", want: 5 * gib},
		{in: "12.5%", want: 10 * gib / 8},
		{in: "2Gi", want: 2 * gib},
		{in: "1G", want: 1e9},
		{in: "0%", wantErr: true},
		{in: "101%", wantErr: true},
		{in: "0", wantErr: true},
		{in: "lots", wantErr: true},
		// Hostile sizes (issue 13): Value() wraps past 2^63.
		{in: "18446743858961186816", wantErr: true}, // 2^64 − 200Gi
		{in: "9223372036854775808", wantErr: true},  // 2^63
		{in: "1e30", wantErr: true},
		{in: "-1Gi", wantErr: true},
		{in: "1m", wantErr: true}, // milli-bytes
		{in: "NaN%", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ThinPoolSize(tt.in, 10*gib)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ThinPoolSize(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestDesiredStatus(t *testing.T) {
	inv := inventory{
		vgs: []lvm.VG{{Name: "pool-0", Size: 10 * gib, Free: 8 * gib}, {Name: "system", Size: 5 * gib, Free: 0}},
		lvs: []lvm.LV{{Name: "root", VG: "system", Size: 5 * gib}, {Name: "other", VG: "pool-0", Size: 2 * gib}},
		pvs: []lvm.PV{{Name: "/dev/sdb", VG: "pool-0"}, {Name: "/dev/sda2", VG: "system"}},
	}
	devices := []v1alpha1.DeviceInfo{{Name: "/dev/sdb", Total: 10 * gib}, {Name: "/dev/sdc", Total: 20 * gib}}
	lastAccepted := v1alpha1.NodeLocalStorageStatus{FilteredStorageInfo: v1alpha1.FilteredStorageInfo{
		VolumeGroups: []string{"pool-0"}, Devices: []string{"/dev/sdc"}}}
	nls := func(include []string, annotations map[string]string) *v1alpha1.NodeLocalStorage {
		return &v1alpha1.NodeLocalStorage{
			ObjectMeta: metav1.ObjectMeta{Name: "n1", Annotations: annotations},
			Spec: v1alpha1.NodeLocalStorageSpec{ListConfig: v1alpha1.ListConfig{
				VGs:     v1alpha1.VGList{Include: include},
				Devices: v1alpha1.DeviceList{Include: []string{"/dev/sd[c-z]"}},
			}},
			Status: lastAccepted,
		}
	}
	tests := []struct {
		name         string
		nls          *v1alpha1.NodeLocalStorage
		invErr       error
		wantVGs      []string
		wantDevs     []string
		wantUpdate   v1alpha1.UpdateStatus
		wantAlloc    uint64 // of pool-0
		wantState    v1alpha1.StorageConditionType
		wantWarnings []string
	}{
		{name: "accepted", nls: nls([]string{"pool-[0-9]+"}, nil), wantVGs: []string{"pool-0"}, wantDevs: []string{"/dev/sdc"},
			wantUpdate: v1alpha1.UpdateStatusAccepted, wantAlloc: 8 * gib, wantState: v1alpha1.StorageReady},
		{name: "reserve", nls: nls([]string{".*"}, map[string]string{discovery.ReserveAnnotation: `{"pool-0":"1Gi"}`}),
			wantVGs: []string{"pool-0", "system"}, wantDevs: []string{"/dev/sdc"}, wantUpdate: v1alpha1.UpdateStatusAccepted, wantAlloc: 7 * gib, wantState: v1alpha1.StorageReady},
		{name: "invalid regexp keeps the last accepted list", nls: nls([]string{"pool-[0-9"}, nil), wantVGs: []string{"pool-0"}, wantDevs: []string{"/dev/sdc"},
			wantUpdate: v1alpha1.UpdateStatusFailed, wantAlloc: 8 * gib, wantState: v1alpha1.StorageReady, wantWarnings: []string{ReasonInvalidListConfig}},
		{name: "invalid reserve blocks allocation", nls: nls([]string{"pool-0"}, map[string]string{discovery.ReserveAnnotation: `oops`}),
			wantVGs: []string{"pool-0"}, wantDevs: []string{"/dev/sdc"}, wantUpdate: v1alpha1.UpdateStatusAccepted, wantAlloc: 0, wantState: v1alpha1.StorageReady,
			wantWarnings: []string{ReasonInvalidReserveAnnotation}},
		{name: "lvm failing", nls: nls([]string{"pool-0"}, nil), invErr: errors.New("lvm: boom"), wantVGs: nil, wantDevs: []string{"/dev/sdc"},
			wantUpdate: v1alpha1.UpdateStatusAccepted, wantState: v1alpha1.StorageFault, wantWarnings: []string{ReasonDiscoveryFailed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := observation{inv: inv, invErr: tt.invErr, devices: devices, ownership: discovery.Ownership{LegacyPrefix: "local"}}
			st, warns := desiredStatus(tt.nls, obs)
			f := st.FilteredStorageInfo
			if !reflect.DeepEqual(f.VolumeGroups, tt.wantVGs) || !reflect.DeepEqual(f.Devices, tt.wantDevs) || f.UpdateStatus.Status != tt.wantUpdate {
				t.Errorf("filtered = %+v", f)
			}
			if tt.wantUpdate == v1alpha1.UpdateStatusFailed && !strings.Contains(f.UpdateStatus.Reason, "pool-[0-9") {
				t.Errorf("failed update reason %q does not name the expression", f.UpdateStatus.Reason)
			}
			if st.NodeStorageInfo.State.Type != tt.wantState || st.NodeStorageInfo.Phase != v1alpha1.NodeStorageRunning {
				t.Errorf("state = %+v", st.NodeStorageInfo.State)
			}
			if tt.invErr == nil {
				if vg := st.NodeStorageInfo.VolumeGroups[0]; vg.Name != "pool-0" || vg.Allocatable != tt.wantAlloc {
					t.Errorf("pool-0 = %+v, want allocatable %d", vg, tt.wantAlloc)
				}
			}
			var reasons []string
			for _, w := range warns {
				reasons = append(reasons, w.reason)
			}
			if !reflect.DeepEqual(reasons, tt.wantWarnings) {
				t.Errorf("warnings = %v, want %v", warns, tt.wantWarnings)
			}
		})
	}
}

func TestStampAndChanged(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	nls := &v1alpha1.NodeLocalStorage{Spec: v1alpha1.NodeLocalStorageSpec{ListConfig: v1alpha1.ListConfig{VGs: v1alpha1.VGList{Include: []string{".*"}}}}}
	obs := observation{inv: inventory{vgs: []lvm.VG{{Name: "vg", Size: gib, Free: gib}}}}
	first, _ := desiredStatus(nls, obs)
	if !changed(&first, &nls.Status) {
		t.Fatal("a first status is a change")
	}
	stamp(&first, &nls.Status, t0)
	st := first.NodeStorageInfo.State
	if !st.LastHeartbeatTime.Time.Equal(t0) || !st.LastTransitionTime.Time.Equal(t0) || !first.FilteredStorageInfo.UpdateStatus.LastUpdateTime.Time.Equal(t0) {
		t.Errorf("first stamp: %+v %+v", st, first.FilteredStorageInfo.UpdateStatus)
	}
	nls.Status = first

	same, _ := desiredStatus(nls, obs)
	if changed(&same, &nls.Status) {
		t.Error("an identical inventory is reported as a change")
	}
	// A heartbeat keeps transition and update times.
	stamp(&same, &nls.Status, t0.Add(time.Minute))
	if !same.NodeStorageInfo.State.LastHeartbeatTime.Time.Equal(t0.Add(time.Minute)) ||
		!same.NodeStorageInfo.State.LastTransitionTime.Time.Equal(t0) || !same.FilteredStorageInfo.UpdateStatus.LastUpdateTime.Time.Equal(t0) {
		t.Errorf("heartbeat stamp moved other times: %+v %+v", same.NodeStorageInfo.State, same.FilteredStorageInfo.UpdateStatus)
	}

	obs.inv.vgs[0].Free = gib / 2
	grown, _ := desiredStatus(nls, obs)
	if !changed(&grown, &nls.Status) {
		t.Error("a change of free space is not a change")
	}
	obs.invErr = errors.New("boom")
	fault, _ := desiredStatus(nls, obs)
	stamp(&fault, &nls.Status, t0.Add(2*time.Minute))
	if !fault.NodeStorageInfo.State.LastTransitionTime.Time.Equal(t0.Add(2 * time.Minute)) {
		t.Error("a state change did not move the transition time")
	}
}

// TestDeviceOffer: with an include like /dev/vd[c-z].*, only devices free
// as a whole are offered: not one in use (PV, holders, mounts, partitions),
// not a partition of a disk a LocalVolume holds, not a disk one of whose
// partitions is held, not a released disk waiting for its wipe.
func TestDeviceOffer(t *testing.T) {
	devLV := func(name, dev string, phase v1alpha1.LocalVolumePhase) *v1alpha1.LocalVolume {
		return &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:   v1alpha1.LocalVolumeSpec{NodeName: "n1", VolumeType: v1alpha1.VolumeTypeDevice, Device: dev},
			Status: v1alpha1.LocalVolumeStatus{Phase: phase, Message: "waiting for wipe"}}
	}
	tests := []struct {
		name     string
		devices  []v1alpha1.DeviceInfo
		vols     []*v1alpha1.LocalVolume
		wantDevs []string
		wantUse  map[string]string
	}{{
		name:     "free disks",
		devices:  []v1alpha1.DeviceInfo{{Name: "/dev/vdc"}, {Name: "/dev/vdd"}},
		wantDevs: []string{"/dev/vdc", "/dev/vdd"},
	}, {
		name:     "in use is not offered",
		devices:  []v1alpha1.DeviceInfo{{Name: "/dev/vdc", InUse: "physical volume of VG x"}, {Name: "/dev/vdd", InUse: "mounted at /data"}, {Name: "/dev/vde"}},
		wantDevs: []string{"/dev/vde"},
	}, {
		name:     "partition of a held disk",
		devices:  []v1alpha1.DeviceInfo{{Name: "/dev/vdc", InUse: "has partitions /dev/vdc1"}, {Name: "/dev/vdc1", Parent: "/dev/vdc"}, {Name: "/dev/vdd"}},
		vols:     []*v1alpha1.LocalVolume{devLV("pvc-a", "/dev/vdc", v1alpha1.PhaseReady)},
		wantDevs: []string{"/dev/vdd"},
		wantUse:  map[string]string{"/dev/vdc1": "disk /dev/vdc is held by LocalVolume pvc-a"},
	}, {
		name:     "disk of a held partition",
		devices:  []v1alpha1.DeviceInfo{{Name: "/dev/vdc"}, {Name: "/dev/vdc1", Parent: "/dev/vdc"}, {Name: "/dev/vdc2", Parent: "/dev/vdc"}},
		vols:     []*v1alpha1.LocalVolume{devLV("pvc-a", "/dev/vdc1", v1alpha1.PhaseReady)},
		wantDevs: []string{"/dev/vdc1", "/dev/vdc2"}, // vdc1 stays listed: the ledger counts it held
		wantUse:  map[string]string{"/dev/vdc": "partition /dev/vdc1 is held by LocalVolume pvc-a"},
	}, {
		name:     "released disk is quarantined",
		devices:  []v1alpha1.DeviceInfo{{Name: "/dev/vdc"}, {Name: "/dev/vdd"}},
		vols:     []*v1alpha1.LocalVolume{devLV("pvc-a", "/dev/vdc", v1alpha1.PhaseQuarantined)},
		wantDevs: []string{"/dev/vdd"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nls := &v1alpha1.NodeLocalStorage{ObjectMeta: metav1.ObjectMeta{Name: "n1"},
				Spec: v1alpha1.NodeLocalStorageSpec{ListConfig: v1alpha1.ListConfig{Devices: v1alpha1.DeviceList{Include: []string{"/dev/vd[c-z].*"}}}}}
			obs := observation{devices: tt.devices}
			obs.held, obs.released = heldDevices(tt.vols)
			st, _ := desiredStatus(nls, obs)
			if got := st.FilteredStorageInfo.Devices; !reflect.DeepEqual(got, tt.wantDevs) {
				t.Errorf("offered %v, want %v", got, tt.wantDevs)
			}
			for _, d := range st.NodeStorageInfo.DeviceInfos {
				if want, ok := tt.wantUse[d.Name]; ok && d.InUse != want {
					t.Errorf("%s inUse %q, want %q", d.Name, d.InUse, want)
				}
				if quarantined := obs.released[d.Name] != ""; quarantined != (d.Released != "") {
					t.Errorf("%s released %q", d.Name, d.Released)
				}
			}
		})
	}
}
