package ledger

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

const gi = int64(1) << 30

type vgSpec struct {
	name     string
	gib      int64
	filtered bool
	fault    bool
}

type devSpec struct {
	name, media string
	gib         int64
	filtered    bool
	readOnly    bool
}

func nls(node string, vgs []vgSpec, devs []devSpec) *v1alpha1.NodeLocalStorage {
	o := &v1alpha1.NodeLocalStorage{ObjectMeta: metav1.ObjectMeta{Name: node}, Spec: v1alpha1.NodeLocalStorageSpec{NodeName: node}}
	for _, g := range vgs {
		cond := v1alpha1.StorageReady
		if g.fault {
			cond = v1alpha1.StorageFault
		}
		o.Status.NodeStorageInfo.VolumeGroups = append(o.Status.NodeStorageInfo.VolumeGroups, v1alpha1.VolumeGroup{
			Name: g.name, Total: uint64(g.gib * gi), Available: uint64(g.gib * gi), Allocatable: uint64(g.gib * gi), Condition: cond})
		if g.filtered {
			o.Status.FilteredStorageInfo.VolumeGroups = append(o.Status.FilteredStorageInfo.VolumeGroups, g.name)
		}
	}
	for _, d := range devs {
		o.Status.NodeStorageInfo.DeviceInfos = append(o.Status.NodeStorageInfo.DeviceInfos, v1alpha1.DeviceInfo{
			Name: d.name, MediaType: d.media, Total: uint64(d.gib * gi), ReadOnly: d.readOnly})
		if d.filtered {
			o.Status.FilteredStorageInfo.Devices = append(o.Status.FilteredStorageInfo.Devices, d.name)
		}
	}
	return o
}

func lvmLV(name, node, vg string, gib int64) *v1alpha1.LocalVolume {
	return &v1alpha1.LocalVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)},
		Spec: v1alpha1.LocalVolumeSpec{NodeName: node, VolumeType: v1alpha1.VolumeTypeLVM, VGName: vg,
			Size: *resource.NewQuantity(gib*gi, resource.BinarySI)},
	}
}

func deviceLV(name, node, dev string, gib int64) *v1alpha1.LocalVolume {
	return &v1alpha1.LocalVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)},
		Spec: v1alpha1.LocalVolumeSpec{NodeName: node, VolumeType: v1alpha1.VolumeTypeDevice, Device: dev,
			Size: *resource.NewQuantity(gib*gi, resource.BinarySI)},
	}
}

func lvm(name, vg string, gib int64) Volume {
	return Volume{Name: name, Desc: "pvc default/" + name, Type: v1alpha1.VolumeTypeLVM, VG: vg, Size: gib * gi}
}

func dev(name, media string, gib int64) Volume {
	return Volume{Name: name, Desc: "pvc default/" + name, Type: v1alpha1.VolumeTypeDevice, MediaType: media, Size: gib * gi}
}

// usage renders the ledger's VG and device accounts, sorted, for comparison.
func usage(l *Ledger) []string {
	var out []string
	l.Visit(func(u VGUsage) {
		out = append(out, fmt.Sprintf("%s/%s sched=%t cap=%d used=%d reserved=%d", u.Node, u.VG, u.Schedulable, u.Capacity/gi, u.Used/gi, u.Reserved/gi))
	}, func(u DeviceUsage) {
		out = append(out, fmt.Sprintf("%s/%s %s sched=%t size=%d holder=%s", u.Node, u.Device, u.MediaType, u.Schedulable, u.Size/gi, u.Holder))
	})
	sort.Strings(out)
	return out
}

func TestNodeStorageCapacity(t *testing.T) {
	l := New()
	l.SetNodeStorage(nls("n1", []vgSpec{
		{name: "pool0", gib: 100, filtered: true},
		{name: "system", gib: 50},
		{name: "broken", gib: 10, filtered: true, fault: true},
	}, []devSpec{
		{name: "/dev/sdb", media: "ssd", gib: 200, filtered: true},
		{name: "/dev/sdc", media: "hdd", gib: 500},
		{name: "/dev/sdd", media: "ssd", gib: 100, filtered: true, readOnly: true},
	}))
	want := []string{
		"n1//dev/sdb ssd sched=true size=200 holder=", // sdc not filtered, sdd read-only
		"n1/pool0 sched=true cap=100 used=0 reserved=0",
	}
	if got := usage(l); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("usage =\n%v\nwant\n%v", got, want)
	}
	if !l.HasStorage("n1") || l.HasStorage("n2") {
		t.Error("HasStorage wrong")
	}
	// A LocalVolume on a VG the NLS does not list is still accounted; when
	// the VG becomes listed, the usage is already there.
	l.SetVolume(lvmLV("pvc-a", "n1", "system", 20))
	l.SetNodeStorage(nls("n1", []vgSpec{{name: "pool0", gib: 100, filtered: true}, {name: "system", gib: 50, filtered: true}}, nil))
	if sf := l.Fit("n1", NewRequest([]Volume{lvm("x", "system", 31)}), Binpack); sf == nil || sf.Detail() != "VG system on n1: need 31Gi, free 30Gi" {
		t.Errorf("Fit = %v", sf)
	}
	// NLS gone: nothing schedulable, usage kept.
	l.RemoveNodeStorage("n1")
	if sf := l.Fit("n1", NewRequest([]Volume{lvm("x", "", 1)}), Binpack); sf == nil || sf.Kind != NoStorage {
		t.Errorf("Fit after NLS removal = %v", sf)
	}
	if got := usage(l); fmt.Sprint(got) != "[n1/system sched=false cap=0 used=20 reserved=0]" {
		t.Errorf("usage after NLS removal = %v", got)
	}
}

func TestFit(t *testing.T) {
	node := func(l *Ledger) {
		l.SetNodeStorage(nls("n1",
			[]vgSpec{{name: "pool0", gib: 100, filtered: true}, {name: "pool1", gib: 40, filtered: true}},
			[]devSpec{{name: "/dev/sdb", media: "ssd", gib: 100, filtered: true}, {name: "/dev/sdc", media: "ssd", gib: 50, filtered: true},
				{name: "/dev/sdd", media: "hdd", gib: 1000, filtered: true}}))
		l.SetVolume(lvmLV("pvc-used", "n1", "pool0", 88)) // pool0: 12Gi free
	}
	for _, tc := range []struct {
		name     string
		vols     []Volume
		strategy Strategy
		// wantTargets: volume name -> VG or device, when it fits.
		wantTargets map[string]string
		wantReason  string
		wantDetail  string
	}{
		{name: "fits pinned", vols: []Volume{lvm("a", "pool0", 12)}, wantTargets: map[string]string{"a": "pool0"}},
		{
			name: "pinned volumes must fit together (alibaba/open-local#158)", vols: []Volume{lvm("a", "pool0", 10), lvm("b", "pool0", 20)},
			wantReason: "node(s) had less than 30Gi free in VG pool0", wantDetail: "VG pool0 on n1: need 30Gi, free 12Gi",
		},
		{name: "missing VG", vols: []Volume{lvm("a", "pool9", 1)},
			wantReason: "node(s) had no VG pool9 (vgName of pvc default/a)", wantDetail: "node n1 has no VG pool9 (vgName of pvc default/a)"},
		{name: "binpack picks the fullest VG that fits", vols: []Volume{lvm("a", "", 10)}, wantTargets: map[string]string{"a": "pool0"}},
		{name: "spread picks the emptiest VG", vols: []Volume{lvm("a", "", 10)}, strategy: Spread, wantTargets: map[string]string{"a": "pool1"}},
		{name: "binpack skips a VG too small", vols: []Volume{lvm("a", "", 13)}, wantTargets: map[string]string{"a": "pool1"}},
		{
			name: "pinned first, then the rest largest first", vols: []Volume{lvm("small", "", 5), lvm("big", "", 30), lvm("pin", "pool1", 8)},
			// pool1 40-8=32 left; big (30) binpacks into pool1 (32 < pool0's 12? no: 12 < 30, only pool1 fits);
			// small (5) binpacks into pool1's remaining 2? no, pool0's 12.
			wantTargets: map[string]string{"pin": "pool1", "big": "pool1", "small": "pool0"},
		},
		{
			name: "unpinned volumes must fit together", vols: []Volume{lvm("a", "", 30), lvm("b", "", 30)},
			wantReason: "node(s) had no VG with 30Gi free for pvc default/b", wantDetail: "pvc default/b on n1: need 30Gi, largest VG free 12Gi",
		},
		{name: "smallest device that fits", vols: []Volume{dev("d", "ssd", 40)}, wantTargets: map[string]string{"d": "/dev/sdc"}},
		{name: "devices are exclusive", vols: []Volume{dev("d1", "ssd", 40), dev("d2", "ssd", 40)},
			wantTargets: map[string]string{"d1": "/dev/sdc", "d2": "/dev/sdb"}},
		{
			name: "no third ssd", vols: []Volume{dev("d1", "ssd", 1), dev("d2", "ssd", 1), dev("d3", "ssd", 1)},
			wantReason: "node(s) had no free ssd device of at least 1Gi for pvc default/d3", wantDetail: "ssd devices on n1: need 1Gi, largest free 0",
		},
		{name: "media type matters", vols: []Volume{dev("d", "hdd", 600)}, wantTargets: map[string]string{"d": "/dev/sdd"}},
		{name: "device too small", vols: []Volume{dev("d", "ssd", 101)}, wantDetail: "ssd devices on n1: need 101Gi, largest free 100Gi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := New()
			node(l)
			req := NewRequest(tc.vols)
			sf := l.Fit("n1", req, tc.strategy)
			if tc.wantTargets == nil {
				if sf == nil {
					t.Fatal("fits, want a shortfall")
				}
				if tc.wantReason != "" && sf.Reason() != tc.wantReason {
					t.Errorf("Reason() = %q, want %q", sf.Reason(), tc.wantReason)
				}
				if sf.Detail() != tc.wantDetail {
					t.Errorf("Detail() = %q, want %q", sf.Detail(), tc.wantDetail)
				}
				return
			}
			if sf != nil {
				t.Fatalf("shortfall %q, want fit", sf.Detail())
			}
			r, sf := l.Reserve("pod", "n1", req, tc.strategy)
			if sf != nil {
				t.Fatalf("Reserve: %s", sf.Detail())
			}
			got := map[string]string{}
			for _, a := range r.Assignments {
				got[a.Volume.Name] = a.VG + a.Device
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.wantTargets) {
				t.Errorf("assignments = %v, want %v", got, tc.wantTargets)
			}
		})
	}
}

// The life of a reservation: held, covered by its LocalVolume without
// double counting, dropped once persisted and seen, freed on deletion.
func TestReservationLifecycle(t *testing.T) {
	for _, tc := range []struct {
		name string
		// order of PreBind's MarkPersisted relative to the informer's SetVolume.
		persistFirst bool
	}{{name: "informer after PreBind", persistFirst: true}, {name: "informer before PreBind returns"}} {
		t.Run(tc.name, func(t *testing.T) {
			l := New()
			var freed atomic.Int32
			l.OnFreed(func() { freed.Add(1) })
			l.SetNodeStorage(nls("n1", []vgSpec{{name: "pool0", gib: 10, filtered: true}}, []devSpec{{name: "/dev/sdb", media: "ssd", gib: 5, filtered: true}}))
			req := NewRequest([]Volume{lvm("pvc-a", "", 6), dev("pvc-d", "ssd", 5)})
			if _, sf := l.Reserve("pod-a", "n1", req, Binpack); sf != nil {
				t.Fatal(sf.Detail())
			}
			// A second pod of the same shape no longer fits: the first holds the space.
			if sf := l.Fit("n1", NewRequest([]Volume{lvm("pvc-b", "", 6)}), Binpack); sf == nil {
				t.Fatal("second pod fits while the first holds the space")
			}
			want := []string{"n1//dev/sdb ssd sched=true size=5 holder=pvc-d", "n1/pool0 sched=true cap=10 used=0 reserved=6"}
			if got := usage(l); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("after Reserve: %v", got)
			}
			persist := func() {
				l.MarkPersisted("pod-a", "pvc-a", time.Now())
				l.MarkPersisted("pod-a", "pvc-d", time.Now())
			}
			observe := func() {
				l.SetVolume(lvmLV("pvc-a", "n1", "pool0", 6))
				l.SetVolume(deviceLV("pvc-d", "n1", "/dev/sdb", 5))
			}
			if tc.persistFirst {
				persist()
				observe()
			} else {
				observe()
				// Seen but not yet persisted: counted once, through the LocalVolume.
				want := []string{"n1//dev/sdb ssd sched=true size=5 holder=pvc-d", "n1/pool0 sched=true cap=10 used=6 reserved=0"}
				if got := usage(l); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("covered: %v", got)
				}
				persist()
			}
			if s := l.Stats(); s.Reservations != 0 || s.Volumes != 2 {
				t.Errorf("stats = %+v, want the reservation gone and 2 volumes", s)
			}
			want = []string{"n1//dev/sdb ssd sched=true size=5 holder=pvc-d", "n1/pool0 sched=true cap=10 used=6 reserved=0"}
			if got := usage(l); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("after persist+observe: %v", got)
			}
			// Unreserve after success changes nothing.
			l.Release("pod-a")
			if got := usage(l); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("after late Release: %v", got)
			}
			before := freed.Load()
			l.RemoveVolume("pvc-a")
			l.RemoveVolume("pvc-d")
			if freed.Load() == before {
				t.Error("no freed notification on LocalVolume removal")
			}
			if sf := l.Fit("n1", req, Binpack); sf != nil {
				t.Errorf("space not back: %s", sf.Detail())
			}
		})
	}
}

func TestReleaseAndHeldVolumes(t *testing.T) {
	l := New()
	l.SetNodeStorage(nls("n1", []vgSpec{{name: "pool0", gib: 10, filtered: true}}, nil))
	l.SetNodeStorage(nls("n2", []vgSpec{{name: "pool0", gib: 10, filtered: true}}, nil))
	if _, sf := l.Reserve("pod-a", "n1", NewRequest([]Volume{lvm("pvc-a", "", 8)}), Binpack); sf != nil {
		t.Fatal(sf.Detail())
	}
	if st, ok := l.Volume("pvc-a"); !ok || st.Node != "n1" || st.Exists || st.Owner != "pod-a" {
		t.Errorf("Volume(pvc-a) = %+v, %t", st, ok)
	}
	// Another pod sharing the PVC: on n1 nothing more is held, on n2 it fails.
	if r, sf := l.Reserve("pod-b", "n1", NewRequest([]Volume{lvm("pvc-a", "", 8)}), Binpack); sf != nil || len(r.Assignments) != 0 {
		t.Errorf("shared volume on the same node: %v %v", r, sf)
	}
	if _, sf := l.Reserve("pod-c", "n2", NewRequest([]Volume{lvm("pvc-a", "", 8)}), Binpack); sf == nil || sf.Kind != HeldElsewhere ||
		sf.Reason() != "pvc default/pvc-a was just allocated on node n1" {
		t.Errorf("shared volume on another node: %v", sf)
	}
	// Unreserve before PreBind gives the space back.
	l.Release("pod-a")
	if got := usage(l); fmt.Sprint(got) != "[n1/pool0 sched=true cap=10 used=0 reserved=0 n2/pool0 sched=true cap=10 used=0 reserved=0]" {
		t.Errorf("after Release: %v", got)
	}
	// A persisted item whose LocalVolume never shows up expires.
	if _, sf := l.Reserve("pod-d", "n1", NewRequest([]Volume{lvm("pvc-d", "", 8)}), Binpack); sf != nil {
		t.Fatal(sf.Detail())
	}
	l.MarkPersisted("pod-d", "pvc-d", time.Now().Add(-time.Hour))
	if n := l.ExpirePersisted(time.Now().Add(-time.Minute), func(string) bool { return true }); n != 1 {
		t.Errorf("ExpirePersisted = %d, want 1", n)
	}
	if s := l.Stats(); s.Reservations != 0 {
		t.Errorf("stats after expiry = %+v", s)
	}
}

// A ledger rebuilt from the same objects (a restarted scheduler) equals
// one that followed every event, however the events were ordered.
func TestRebuildFromObjects(t *testing.T) {
	live := New()
	live.SetVolume(lvmLV("pvc-early", "n1", "pool0", 3)) // LocalVolume seen before its node's NLS
	live.SetNodeStorage(nls("n1", []vgSpec{{name: "pool0", gib: 10, filtered: true}}, nil))
	live.SetNodeStorage(nls("n2", []vgSpec{{name: "pool0", gib: 20, filtered: true}}, []devSpec{{name: "/dev/sdb", media: "hdd", gib: 50, filtered: true}}))
	r, sf := live.Reserve("pod", "n2", NewRequest([]Volume{lvm("pvc-x", "", 5), dev("pvc-y", "hdd", 50)}), Binpack)
	if sf != nil {
		t.Fatal(sf.Detail())
	}
	for _, a := range r.Assignments {
		live.MarkPersisted("pod", a.Volume.Name, time.Now())
	}
	live.SetVolume(lvmLV("pvc-x", "n2", "pool0", 5))
	live.SetVolume(deviceLV("pvc-y", "n2", "/dev/sdb", 50))
	live.SetVolume(lvmLV("pvc-gone", "n1", "pool0", 4))
	grown := lvmLV("pvc-early", "n1", "pool0", 6) // expansion
	live.SetVolume(grown)
	live.RemoveVolume("pvc-gone")

	rebuilt := New()
	rebuilt.SetVolume(lvmLV("pvc-x", "n2", "pool0", 5))
	rebuilt.SetVolume(deviceLV("pvc-y", "n2", "/dev/sdb", 50))
	rebuilt.SetVolume(grown)
	rebuilt.SetNodeStorage(nls("n2", []vgSpec{{name: "pool0", gib: 20, filtered: true}}, []devSpec{{name: "/dev/sdb", media: "hdd", gib: 50, filtered: true}}))
	rebuilt.SetNodeStorage(nls("n1", []vgSpec{{name: "pool0", gib: 10, filtered: true}}, nil))

	if a, b := usage(live), usage(rebuilt); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("live ledger\n%v\n!= rebuilt\n%v", a, b)
	}
	if a, b := live.Stats(), rebuilt.Stats(); a != b {
		t.Errorf("stats %+v != %+v", a, b)
	}
}

// Concurrent reservations and events never over-commit a VG.
func TestConcurrentReserveNeverOvercommits(t *testing.T) {
	l := New()
	l.SetNodeStorage(nls("n1", []vgSpec{{name: "pool0", gib: 100, filtered: true}, {name: "pool1", gib: 50, filtered: true}}, nil))
	var wg sync.WaitGroup
	var reserved atomic.Int64
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := types.UID(fmt.Sprintf("pod-%d", i))
			req := NewRequest([]Volume{lvm(fmt.Sprintf("pvc-%d-a", i), "", 3), lvm(fmt.Sprintf("pvc-%d-b", i), "", 4)})
			if _, sf := l.Reserve(owner, "n1", req, Binpack); sf == nil {
				reserved.Add(7)
				if i%2 == 0 {
					// Half of them get persisted and seen; the others stay reserved.
					l.SetVolume(lvmLV(fmt.Sprintf("pvc-%d-a", i), "n1", mustTarget(l, owner, fmt.Sprintf("pvc-%d-a", i)), 3))
					l.MarkPersisted(owner, fmt.Sprintf("pvc-%d-a", i), time.Now())
				}
			}
			_ = l.Fit("n1", req, Spread)
		}()
	}
	wg.Wait()
	l.Visit(func(u VGUsage) {
		if u.Used+u.Reserved > u.Capacity {
			t.Errorf("%s/%s over-committed: used %d + reserved %d > %d", u.Node, u.VG, u.Used, u.Reserved, u.Capacity)
		}
	}, nil)
	var total int64
	l.Visit(func(u VGUsage) { total += u.Used + u.Reserved }, nil)
	if total != reserved.Load()*gi {
		t.Errorf("accounted %d GiB, reserved %d GiB", total/gi, reserved.Load())
	}
	if reserved.Load() < 140 {
		t.Errorf("only %d GiB reserved of 150: packing lost space", reserved.Load())
	}
}

func mustTarget(l *Ledger, owner types.UID, name string) string {
	_, as, _ := l.Reservation(owner)
	for _, a := range as {
		if a.Volume.Name == name {
			return a.VG
		}
	}
	return ""
}

func TestScoreAndClosest(t *testing.T) {
	l := New()
	l.SetNodeStorage(nls("empty", []vgSpec{{name: "pool0", gib: 100, filtered: true}}, nil))
	l.SetNodeStorage(nls("half", []vgSpec{{name: "pool0", gib: 100, filtered: true}}, nil))
	l.SetNodeStorage(nls("full", []vgSpec{{name: "pool0", gib: 100, filtered: true}}, nil))
	l.SetVolume(lvmLV("pvc-h", "half", "pool0", 50))
	l.SetVolume(lvmLV("pvc-f", "full", "pool0", 95))
	req := NewRequest([]Volume{lvm("new", "", 10)})
	w := Weights{LVM: 1, Device: 1}
	score := func(node string, s Strategy) int64 {
		v, ok := l.Score(node, req, s, w)
		if !ok && node != "full" {
			t.Fatalf("%s does not fit", node)
		}
		return v
	}
	if e, h := score("empty", Binpack), score("half", Binpack); !(h > e) || e != 10 || h != 60 {
		t.Errorf("binpack: empty %d, half %d; want 10 < 60", e, h)
	}
	if e, h := score("empty", Spread), score("half", Spread); !(e > h) || e != 90 || h != 40 {
		t.Errorf("spread: empty %d, half %d; want 90 > 40", e, h)
	}
	if _, ok := l.Score("full", req, Binpack, w); ok {
		t.Error("full node scored as fitting")
	}
	big := NewRequest([]Volume{lvm("big", "pool0", 60)})
	if sf := l.Closest([]string{"full", "half", "empty", "unknown"}, big, Binpack); sf == nil || sf.Detail() != "VG pool0 on half: need 60Gi, free 50Gi" {
		t.Errorf("Closest = %v", sf)
	}
	if sf := l.Closest([]string{"empty"}, big, Binpack); sf != nil {
		t.Errorf("Closest = %s, want nil (fits)", sf.Detail())
	}
}

// poolUsage renders the ledger's thin-pool accounts, sorted.
func poolUsage(l *Ledger) []string {
	var out []string
	l.VisitPools(func(u PoolUsage) {
		out = append(out, fmt.Sprintf("%s/%s/%s sched=%t cap=%d used=%d reserved=%d", u.Node, u.VG, u.Pool, u.Schedulable, u.Capacity/gi, u.Used/gi, u.Reserved/gi))
	})
	sort.Strings(out)
	return out
}

func thinLV(name, node, vg, pool string, gib int64) *v1alpha1.LocalVolume {
	lv := lvmLV(name, node, vg, gib)
	lv.Spec.ThinPool = pool
	return lv
}

func thin(name, vg, pool string, gib int64) Volume {
	v := lvm(name, vg, gib)
	v.ThinPool = pool
	return v
}

// Thin volumes are counted by virtual size against ratio × pool size (the
// agent's allocatable), never against the VG; read-only restores count 0;
// snapshots count their copy-on-write space in the VG.
func TestThinPoolsAndSnapshots(t *testing.T) {
	l := New()
	st := nls("n1", []vgSpec{{name: "vg0", gib: 100, filtered: true}, {name: "vg1", gib: 100, filtered: true}, {name: "hidden", gib: 10}}, nil)
	// vg0/tp: 10Gi with ratio 5; vg1/tp: 30Gi with ratio 1; hidden/tp: not filtered.
	for i, p := range []struct{ gib, ratio int64 }{{10, 5}, {30, 1}, {5, 1}} {
		st.Status.NodeStorageInfo.VolumeGroups[i].ThinPools = []v1alpha1.ThinPool{{Name: "tp", Total: uint64(p.gib * gi),
			OverprovisionRatio: *resource.NewQuantity(p.ratio, resource.DecimalSI), Allocatable: uint64(p.gib * gi * p.ratio)}}
	}
	l.SetNodeStorage(st)
	l.SetVolume(thinLV("pvc-t1", "n1", "vg0", "tp", 30))
	snap := lvmLV("snap-1", "n1", "vg0", 4)
	snap.Spec.Kind, snap.Spec.Source = v1alpha1.KindSnapshot, &v1alpha1.LocalVolumeSource{Volume: "pvc-x"}
	l.SetVolume(snap)
	ro := lvmLV("pvc-ro", "n1", "vg0", 8)
	ro.Spec.ReadOnly, ro.Spec.Source = true, &v1alpha1.LocalVolumeSource{Snapshot: "snap-1"}
	l.SetVolume(ro)

	if got, want := poolUsage(l), []string{"n1/vg0/tp sched=true cap=50 used=30 reserved=0", "n1/vg1/tp sched=true cap=30 used=0 reserved=0"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("pools = %v, want %v", got, want)
	}
	// The snapshot's 4Gi is in vg0; the read-only restore takes nothing.
	if got, want := usage(l), []string{"n1/vg0 sched=true cap=100 used=4 reserved=0", "n1/vg1 sched=true cap=100 used=0 reserved=0"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("VGs = %v, want %v", got, want)
	}

	for _, tc := range []struct {
		name       string
		vols       []Volume
		strategy   Strategy
		want       map[string]string // volume -> vg/pool
		wantDetail string
	}{
		{name: "binpack: the fuller pool", vols: []Volume{thin("a", "", "tp", 15)}, want: map[string]string{"a": "vg0/tp"}},
		{name: "spread: the emptier pool", vols: []Volume{thin("a", "", "tp", 15)}, strategy: Spread, want: map[string]string{"a": "vg1/tp"}},
		{name: "overprovisioned beyond the pool's size", vols: []Volume{thin("a", "vg0", "tp", 20)}, want: map[string]string{"a": "vg0/tp"}},
		{name: "thin and thick together", vols: []Volume{thin("a", "vg0", "tp", 20), lvm("b", "vg0", 96)}, want: map[string]string{"a": "vg0/tp", "b": "vg0"}},
		{name: "pool full", vols: []Volume{thin("a", "vg0", "tp", 21)},
			wantDetail: "thin pool tp in VG vg0 on n1: need 21Gi, free 20Gi (virtual sizes, overprovision ratio included)"},
		{name: "pinned thin volumes fit together", vols: []Volume{thin("a", "vg1", "tp", 20), thin("b", "vg1", "tp", 15)},
			wantDetail: "thin pool tp in VG vg1 on n1: need 35Gi, free 30Gi (virtual sizes, overprovision ratio included)"},
		{name: "no such pool", vols: []Volume{thin("a", "", "nope", 1)}, wantDetail: "node n1 has no thin pool nope (thinPool of pvc default/a)"},
		{name: "pool of an unfiltered VG", vols: []Volume{thin("a", "hidden", "tp", 1)}, wantDetail: "node n1 has no thin pool tp in VG hidden (thinPool of pvc default/a)"},
		{name: "thick volumes do not see pool space", vols: []Volume{lvm("b", "vg0", 97)}, wantDetail: "VG vg0 on n1: need 97Gi, free 96Gi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := NewRequest(tc.vols)
			sf := l.Fit("n1", req, tc.strategy)
			if tc.want == nil {
				if sf == nil || sf.Detail() != tc.wantDetail {
					t.Fatalf("Fit = %v, want %q", sf, tc.wantDetail)
				}
				return
			}
			if sf != nil {
				t.Fatalf("shortfall %q", sf.Detail())
			}
			r, sf := l.Reserve("pod-"+types.UID(tc.name), "n1", req, tc.strategy)
			if sf != nil {
				t.Fatal(sf.Detail())
			}
			defer l.Release("pod-" + types.UID(tc.name))
			got := map[string]string{}
			for _, a := range r.Assignments {
				got[a.Volume.Name] = a.VG
				if a.ThinPool != "" {
					got[a.Volume.Name] += "/" + a.ThinPool
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("assignments = %v, want %v", got, tc.want)
			}
		})
	}

	// A reservation is held in the pool, covered by its LocalVolume, and
	// released when the volume goes.
	if _, sf := l.Reserve("pod-t", "n1", NewRequest([]Volume{thin("pvc-t2", "vg0", "tp", 10)}), Binpack); sf != nil {
		t.Fatal(sf.Detail())
	}
	if got := poolUsage(l)[0]; got != "n1/vg0/tp sched=true cap=50 used=30 reserved=10" {
		t.Errorf("reserved: %s", got)
	}
	l.MarkPersisted("pod-t", "pvc-t2", time.Now())
	l.SetVolume(thinLV("pvc-t2", "n1", "vg0", "tp", 10))
	if got := poolUsage(l)[0]; got != "n1/vg0/tp sched=true cap=50 used=40 reserved=0" {
		t.Errorf("persisted: %s", got)
	}
	// The snapshot grows (the agent raised its spec.size): the VG follows.
	snap.Spec.Size = *resource.NewQuantity(6*gi, resource.BinarySI)
	l.SetVolume(snap)
	l.RemoveVolume("pvc-t1")
	if got, want := append(usage(l), poolUsage(l)...), []string{"n1/vg0 sched=true cap=100 used=6 reserved=0", "n1/vg1 sched=true cap=100 used=0 reserved=0",
		"n1/vg0/tp sched=true cap=50 used=10 reserved=0", "n1/vg1/tp sched=true cap=30 used=0 reserved=0"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after growth and removal = %v\nwant %v", got, want)
	}
	// The pool leaves the NLS: unschedulable, its usage kept until the volume goes.
	st.Status.NodeStorageInfo.VolumeGroups[0].ThinPools = nil
	l.SetNodeStorage(st)
	if sf := l.Fit("n1", NewRequest([]Volume{thin("z", "vg0", "tp", 1)}), Binpack); sf == nil || sf.Kind != NoSuchPool {
		t.Errorf("Fit on a vanished pool = %v", sf)
	}
	l.RemoveVolume("pvc-t2")
	if got := poolUsage(l); fmt.Sprint(got) != "[n1/vg1/tp sched=true cap=30 used=0 reserved=0]" {
		t.Errorf("pools after the last volume of a vanished pool = %v", got)
	}
}

// TestExtentRounding: LVM allocates whole extents, so the ledger counts
// each volume, reservation and request rounded up to its VG's extent size
// (LVM's default 4 MiB when the NLS gives none), and recounts when the
// extent size becomes known.
func TestExtentRounding(t *testing.T) {
	const mi = int64(1) << 20
	vgNLS := func(totalMi, extentMi int64) *v1alpha1.NodeLocalStorage {
		o := nls("n1", []vgSpec{{name: "pool0", filtered: true}}, nil)
		g := &o.Status.NodeStorageInfo.VolumeGroups[0]
		g.Total, g.Available, g.Allocatable, g.ExtentSize = uint64(totalMi*mi), uint64(totalMi*mi), uint64(totalMi*mi), uint64(extentMi*mi)
		return o
	}
	odd := func(name string, sizeMi int64) *v1alpha1.LocalVolume {
		lv := lvmLV(name, "n1", "pool0", 0)
		lv.Spec.Size = *resource.NewQuantity(sizeMi*mi+1, resource.BinarySI) // one byte past a MiB boundary
		return lv
	}
	used := func(l *Ledger) (u, r int64) {
		l.Visit(func(g VGUsage) { u, r = g.Used, g.Reserved }, func(DeviceUsage) {})
		return u, r
	}
	for _, tc := range []struct {
		name        string
		extentMi    int64 // 0: the NLS gives none
		sizesMi     []int64
		wantUsedMi  int64
		request     int64 // bytes: fits only if rounding leaves room
		wantRequest bool
	}{
		{"default 4 MiB extents", 0, []int64{4, 4}, 16, 4*mi + 1, true},        // 8+8 used of 32; 8 more fits
		{"explicit 4 MiB", 4, []int64{4, 4, 4}, 24, 4*mi + 1, true},            // 24 used; 8 more fits exactly
		{"full at 32 MiB", 4, []int64{4, 4, 4}, 24, 8*mi + 1, false},           // would take 12: 36 > 32
		{"32 MiB extents", 32, []int64{0}, 32, 1, false},                       // 1 byte takes a whole extent: VG full
		{"bare sizes would over-commit", 4, []int64{7, 7, 7, 7}, 32, 1, false}, // 28Mi+4 bytes bare, 4 bytes short of the 32Mi the LVs take
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := New()
			l.SetNodeStorage(vgNLS(32, tc.extentMi))
			for i, s := range tc.sizesMi {
				l.SetVolume(odd(fmt.Sprintf("pvc-%d", i), s))
			}
			if u, _ := used(l); u != tc.wantUsedMi*mi {
				t.Fatalf("used = %d MiB, want %d", u/mi, tc.wantUsedMi)
			}
			req := NewRequest([]Volume{{Name: "x", Type: v1alpha1.VolumeTypeLVM, Size: tc.request}})
			if sf := l.Fit("n1", req, Binpack); (sf == nil) != tc.wantRequest {
				t.Fatalf("Fit(%d bytes) = %v, want fit=%t", tc.request, sf, tc.wantRequest)
			}
			if !tc.wantRequest {
				return
			}
			if _, sf := l.Reserve("pod-x", "n1", req, Binpack); sf != nil {
				t.Fatalf("Reserve: %v", sf)
			}
			if _, r := used(l); r != l.nodes["n1"].vgs[0].take(tc.request, false) {
				t.Errorf("reserved = %d, want the request rounded up to the extent", r)
			}
			// Every volume removed, the reservation released: nothing left.
			for i := range tc.sizesMi {
				l.RemoveVolume(fmt.Sprintf("pvc-%d", i))
			}
			l.Release("pod-x")
			if u, r := used(l); u != 0 || r != 0 {
				t.Errorf("after removal: used %d, reserved %d; want 0, 0", u, r)
			}
		})
	}

	// Volumes seen before the NLS are counted with the default extent and
	// recounted when the NLS gives the VG's own (8 MiB here).
	l := New()
	l.SetVolume(odd("early", 4))
	if u, _ := used(l); u != 8*mi {
		t.Fatalf("before the NLS: used = %d MiB, want 8 (default extents)", u/mi)
	}
	if _, sf := l.Reserve("pod-y", "n1", NewRequest([]Volume{{Name: "y", Type: v1alpha1.VolumeTypeLVM, VG: "pool0", Size: 1}}), Binpack); sf == nil {
		t.Fatal("reserved on a node without NLS")
	}
	l.SetNodeStorage(vgNLS(64, 8))
	if _, sf := l.Reserve("pod-y", "n1", NewRequest([]Volume{{Name: "y", Type: v1alpha1.VolumeTypeLVM, VG: "pool0", Size: 1}}), Binpack); sf != nil {
		t.Fatalf("Reserve: %v", sf)
	}
	if u, r := used(l); u != 8*mi || r != 8*mi {
		t.Fatalf("8 MiB extents: used %d MiB, reserved %d MiB; want 8, 8", u/mi, r/mi)
	}
	l.SetNodeStorage(vgNLS(64, 16))
	if u, r := used(l); u != 16*mi || r != 16*mi {
		t.Fatalf("16 MiB extents: used %d MiB, reserved %d MiB; want 16, 16", u/mi, r/mi)
	}
	l.RemoveVolume("early")
	l.Release("pod-y")
	if u, r := used(l); u != 0 || r != 0 {
		t.Errorf("after removal: used %d, reserved %d; want 0, 0", u, r)
	}
}

// A node whose NLS says DiskFault, or whose agent stopped writing it, takes
// no new volumes whatever its free space, and says why.
func TestNodeUnavailable(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(-d)); return &t }
	tests := []struct {
		name  string
		state v1alpha1.StorageState
		want  string // "" = fits
	}{
		{name: "ready, fresh heartbeat", state: v1alpha1.StorageState{Type: v1alpha1.StorageReady, LastHeartbeatTime: at(time.Minute)}},
		{name: "no heartbeat written yet", state: v1alpha1.StorageState{}},
		{name: "heartbeat just within 3 intervals", state: v1alpha1.StorageState{Type: v1alpha1.StorageReady, LastHeartbeatTime: at(DefaultStaleAfter)}},
		{name: "stale heartbeat", state: v1alpha1.StorageState{Type: v1alpha1.StorageReady, LastHeartbeatTime: at(DefaultStaleAfter + time.Second)},
			want: "node(s) had a stale NodeLocalStorage heartbeat (open-local agent not reporting)"},
		{name: "DiskFault", state: v1alpha1.StorageState{Type: v1alpha1.StorageFault, Status: v1alpha1.ConditionFalse, Reason: "DiscoveryFailed", LastHeartbeatTime: at(0)},
			want: "node(s) had NodeLocalStorage state DiskFault (DiscoveryFailed)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New()
			l.SetClock(func() time.Time { return now }, DefaultStaleAfter)
			o := nls("n1", []vgSpec{{name: "vg", gib: 100, filtered: true}}, []devSpec{{name: "/dev/sdb", media: "ssd", gib: 10, filtered: true}})
			o.Status.NodeStorageInfo.State = tt.state
			l.SetNodeStorage(o)
			req := NewRequest([]Volume{lvm("a", "", 1), dev("b", "ssd", 1)})
			sf := l.Fit("n1", req, Binpack)
			_, rsf := l.Reserve("pod", "n1", NewRequest([]Volume{lvm("a", "", 1)}), Binpack)
			total, _ := l.Capacity("n1", lvm("", "", 0))
			if tt.want == "" {
				if sf != nil || rsf != nil || total != 99*gi {
					t.Fatalf("Fit = %v, Reserve = %v, Capacity = %d; want a fit and 99Gi (1Gi reserved)", sf, rsf, total)
				}
				return
			}
			if sf == nil || sf.Kind != NodeUnavailable || sf.Reason() != tt.want {
				t.Fatalf("Fit = %+v; want NodeUnavailable %q", sf, tt.want)
			}
			if rsf == nil || rsf.Kind != NodeUnavailable || total != 0 {
				t.Fatalf("Reserve = %+v, Capacity = %d; want refused, 0", rsf, total)
			}
			// The node recovers: the agent writes a good state again.
			o.Status.NodeStorageInfo.State = v1alpha1.StorageState{Type: v1alpha1.StorageReady, LastHeartbeatTime: at(0)}
			l.SetNodeStorage(o)
			if sf := l.Fit("n1", req, Binpack); sf != nil {
				t.Fatalf("after recovery Fit = %v", sf.Detail())
			}
		})
	}
}

// Growth is checked against the VG's free space besides the volume's own
// current extents (thin: virtual size in its pool).
func TestFitGrowth(t *testing.T) {
	l := New()
	l.SetNodeStorage(nls("n1", []vgSpec{{name: "vg", gib: 10, filtered: true}}, nil))
	l.SetVolume(lvmLV("a", "n1", "vg", 4))
	l.SetVolume(lvmLV("b", "n1", "vg", 4))
	tests := []struct {
		name string
		vol  string
		size int64
		want ShortfallKind // -1 = fits
	}{
		{name: "into all free and its own", vol: "a", size: 6 * gi, want: -1},
		{name: "one byte past", vol: "a", size: 6*gi + 1, want: VGFull},
		{name: "unknown volume", vol: "nope", size: gi, want: NoSuchVG},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sf := l.FitGrowth(tt.vol, tt.size)
			if tt.want < 0 {
				if sf != nil {
					t.Fatalf("FitGrowth = %s", sf.Detail())
				}
				return
			}
			if sf == nil || sf.Kind != tt.want {
				t.Fatalf("FitGrowth = %+v; want kind %d", sf, tt.want)
			}
		})
	}
}

// A persisted reservation past its grace is dropped only when the API says
// its LocalVolume is gone: an informer that lags (or lost its watch) must
// not free space a LocalVolume holds.
func TestExpirePersistedAsksTheAPI(t *testing.T) {
	tests := []struct {
		name     string
		gone     bool
		wantDrop int
		wantRes  string
	}{
		{name: "LocalVolume exists, informer lags: kept", gone: false, wantDrop: 0, wantRes: "reserved=8"},
		{name: "LocalVolume deleted before the informer saw it: dropped", gone: true, wantDrop: 1, wantRes: "reserved=0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New()
			l.SetNodeStorage(nls("n1", []vgSpec{{name: "pool0", gib: 10, filtered: true}}, nil))
			if _, sf := l.Reserve("pod", "n1", NewRequest([]Volume{lvm("pvc-d", "", 8)}), Binpack); sf != nil {
				t.Fatal(sf.Detail())
			}
			l.MarkPersisted("pod", "pvc-d", time.Now().Add(-time.Hour))
			var asked []string
			n := l.ExpirePersisted(time.Now().Add(-time.Minute), func(name string) bool {
				// Asked outside the ledger lock: reading it here must not block.
				l.Stats()
				asked = append(asked, name)
				return tt.gone
			})
			if n != tt.wantDrop || fmt.Sprint(asked) != "[pvc-d]" {
				t.Fatalf("ExpirePersisted = %d (asked %v), want %d (asked [pvc-d])", n, asked, tt.wantDrop)
			}
			if got := fmt.Sprint(usage(l)); !strings.Contains(got, tt.wantRes) {
				t.Fatalf("usage = %s, want %s", got, tt.wantRes)
			}
			// A fresh reservation is never asked about.
			if n := l.ExpirePersisted(time.Now().Add(-2*time.Hour), func(string) bool { t.Fatal("asked about a fresh item"); return true }); n != 0 {
				t.Fatalf("ExpirePersisted(fresh) = %d", n)
			}
		})
	}
}

// A striping LV is counted as the most LVM may allocate for it: 4 PVs,
// 1Gi+1B is 260 extents, not 257, in the ledger's used and reserved alike.
func TestStripedVolumesCountWhatLVMAllocates(t *testing.T) {
	const ext = int64(4) << 20
	l := New()
	o := nls("n1", []vgSpec{{name: "vg", gib: 10, filtered: true}}, nil)
	o.Status.NodeStorageInfo.VolumeGroups[0].PhysicalVolumes = []string{"/dev/a", "/dev/b", "/dev/c", "/dev/d"}
	l.SetNodeStorage(o)
	lv := lvmLV("s", "n1", "vg", 1)
	lv.Spec.Size = *resource.NewQuantity(gi+1, resource.BinarySI)
	lv.Spec.LVMType = v1alpha1.LVMTypeStriping
	l.SetVolume(lv)
	v := lvm("r", "vg", 1)
	v.Size, v.Striped = gi+1, true
	if _, sf := l.Reserve("pod", "n1", NewRequest([]Volume{v}), Binpack); sf != nil {
		t.Fatal(sf.Detail())
	}
	var used, reserved int64
	l.Visit(func(u VGUsage) { used, reserved = u.Used, u.Reserved }, nil)
	if used != 260*ext || reserved != 260*ext {
		t.Fatalf("used %d, reserved %d extents; want 260 and 260", used/ext, reserved/ext)
	}
}

// A device has a set of holders: a second LocalVolume naming it does not
// overwrite the first, both are a fault (the disk is given to nobody
// else), and deleting one leaves the disk held by the other.
func TestDeviceHolders(t *testing.T) {
	one := []devSpec{{name: "/dev/sdb", media: "ssd", gib: 100, filtered: true}, {name: "/dev/sdc", media: "ssd", gib: 100, filtered: true}}
	tests := []struct {
		name       string
		set        []*v1alpha1.LocalVolume
		remove     []string
		wantUsage  []string
		wantFaults []string
		fits       int // how many 1Gi ssd device volumes still fit together
	}{{
		name:      "one holder",
		set:       []*v1alpha1.LocalVolume{deviceLV("a", "n1", "/dev/sdb", 1)},
		wantUsage: []string{"n1//dev/sdb ssd sched=true size=100 holder=a", "n1//dev/sdc ssd sched=true size=100 holder="},
		fits:      1,
	}, {
		name:       "two holders are a fault",
		set:        []*v1alpha1.LocalVolume{deviceLV("a", "n1", "/dev/sdb", 1), deviceLV("b", "n1", "/dev/sdb", 1)},
		wantUsage:  []string{"n1//dev/sdb ssd sched=true size=100 holder=a,b", "n1//dev/sdc ssd sched=true size=100 holder="},
		wantFaults: []string{"n1 /dev/sdb [a b]"},
		fits:       1,
	}, {
		name:      "deleting one of two does not free the disk",
		set:       []*v1alpha1.LocalVolume{deviceLV("a", "n1", "/dev/sdb", 1), deviceLV("b", "n1", "/dev/sdb", 1)},
		remove:    []string{"b"}, // the later claim: the one a single usedBy remembered
		wantUsage: []string{"n1//dev/sdb ssd sched=true size=100 holder=a", "n1//dev/sdc ssd sched=true size=100 holder="},
		fits:      1,
	}, {
		name:      "deleting both frees it",
		set:       []*v1alpha1.LocalVolume{deviceLV("a", "n1", "/dev/sdb", 1), deviceLV("b", "n1", "/dev/sdb", 1)},
		remove:    []string{"b", "a"},
		wantUsage: []string{"n1//dev/sdb ssd sched=true size=100 holder=", "n1//dev/sdc ssd sched=true size=100 holder="},
		fits:      2,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := New()
			l.SetNodeStorage(nls("n1", nil, one))
			for _, lv := range tt.set {
				l.SetVolume(lv)
			}
			for _, name := range tt.remove {
				l.RemoveVolume(name)
			}
			if got := usage(l); fmt.Sprint(got) != fmt.Sprint(tt.wantUsage) {
				t.Errorf("usage =\n%v\nwant\n%v", got, tt.wantUsage)
			}
			var faults []string
			l.Visit(nil, func(u DeviceUsage) {
				if u.Conflict() {
					faults = append(faults, fmt.Sprintf("%s %s %v", u.Node, u.Device, u.Holders))
				}
			})
			if fmt.Sprint(faults) != fmt.Sprint(tt.wantFaults) {
				t.Errorf("faults = %v, want %v", faults, tt.wantFaults)
			}
			for n := 1; n <= 3; n++ {
				var vols []Volume
				for i := range n {
					vols = append(vols, dev(fmt.Sprintf("new%d", i), "ssd", 1))
				}
				fit := l.Fit("n1", NewRequest(vols), Binpack) == nil
				if fit != (n <= tt.fits) {
					t.Errorf("%d device volumes fit = %t, want %t", n, fit, n <= tt.fits)
				}
			}
		})
	}
}

// A thin pool filled past a threshold (data or metadata, as the agent
// reports lvm's percentages) takes no new volume, whatever its virtual
// room: writes to the volumes already there would fill it. Unknown fill
// (lvm reported none) does not count as full. The reason names the pool,
// its fill and the threshold; Capacity counts no room there.
func TestThinPoolFillThresholds(t *testing.T) {
	pct := func(v int32) *int32 { return &v }
	for _, tc := range []struct {
		name           string
		fill           Fill
		data, metadata [2]*int32 // of vg0/tp and vg1/tp
		vols           []Volume
		want           string // vg/pool of volume a, or the shortfall's detail
		wantReason     string
		wantCapacity   int64 // GiB for thin volumes in tp (any VG)
	}{
		{name: "defaults, below both", data: [2]*int32{pct(90), pct(10)}, metadata: [2]*int32{pct(80), pct(10)},
			vols: []Volume{thin("a", "vg0", "tp", 1)}, want: "vg0/tp", wantCapacity: 40},
		{name: "unknown fill is not full", vols: []Volume{thin("a", "vg0", "tp", 1)}, want: "vg0/tp", wantCapacity: 40},
		{name: "data above the default 90", data: [2]*int32{pct(91), nil}, vols: []Volume{thin("a", "vg0", "tp", 1)},
			want:         "thin pool tp in VG vg0 on n1: data 91% full, above the 90% threshold (thinPoolFillThresholds.dataPercent)",
			wantReason:   "node(s) had thin pool tp filled past a threshold (data 91% > 90%) for pvc default/a",
			wantCapacity: 20},
		{name: "metadata above the default 80", metadata: [2]*int32{pct(81), nil}, vols: []Volume{thin("a", "vg0", "tp", 1)},
			want:         "thin pool tp in VG vg0 on n1: metadata 81% full, above the 80% threshold (thinPoolFillThresholds.metadataPercent)",
			wantCapacity: 20},
		{name: "another pool of the name takes it", data: [2]*int32{pct(95), pct(5)}, vols: []Volume{thin("a", "", "tp", 1)}, want: "vg1/tp", wantCapacity: 20},
		{name: "both filled", data: [2]*int32{pct(95), nil}, metadata: [2]*int32{nil, pct(99)}, vols: []Volume{thin("a", "", "tp", 1)},
			want:         "thin pool tp in VG vg0 on n1: data 95% full, above the 90% threshold (thinPoolFillThresholds.dataPercent)",
			wantCapacity: 0},
		{name: "lower thresholds from the args", fill: Fill{DataPercent: 50, MetadataPercent: 50}, data: [2]*int32{pct(51), pct(50)},
			vols: []Volume{thin("a", "", "tp", 1)}, want: "vg1/tp", wantCapacity: 20},
		{name: "100 turns the rule off", fill: Fill{DataPercent: 100, MetadataPercent: 100}, data: [2]*int32{pct(100), pct(100)}, metadata: [2]*int32{pct(100), pct(100)},
			vols: []Volume{thin("a", "vg0", "tp", 1)}, want: "vg0/tp", wantCapacity: 40},
		{name: "room still counts in a pool below", data: [2]*int32{pct(95), pct(5)}, vols: []Volume{thin("a", "", "tp", 21)},
			want: "thin pool tp on n1: need 21Gi, free 20Gi (virtual sizes, overprovision ratio included)", wantCapacity: 20},
		{name: "thick volumes ignore pool fill", data: [2]*int32{pct(100), pct(100)}, vols: []Volume{lvm("a", "vg0", 1)}, want: "vg0", wantCapacity: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := New()
			if tc.fill != (Fill{}) {
				l.SetFill(tc.fill)
			}
			st := nls("n1", []vgSpec{{name: "vg0", gib: 100, filtered: true}, {name: "vg1", gib: 100, filtered: true}}, nil)
			for i := range 2 {
				st.Status.NodeStorageInfo.VolumeGroups[i].ThinPools = []v1alpha1.ThinPool{{Name: "tp", Total: uint64(20 * gi),
					OverprovisionRatio: resource.MustParse("1"), Allocatable: uint64(20 * gi), DataPercent: tc.data[i], MetadataPercent: tc.metadata[i]}}
			}
			l.SetNodeStorage(st)
			got := ""
			a, sf := l.Place("n1", tc.vols[0], Binpack)
			if sf != nil {
				got = sf.Detail()
				if tc.wantReason != "" && sf.Reason() != tc.wantReason {
					t.Errorf("reason %q\nwant   %q", sf.Reason(), tc.wantReason)
				}
			} else {
				got = a.VG
				if a.ThinPool != "" {
					got += "/" + a.ThinPool
				}
			}
			if got != tc.want {
				t.Errorf("placed %q\nwant   %q", got, tc.want)
			}
			if total, _ := l.Capacity("n1", thin("", "", "tp", 0)); total != tc.wantCapacity*gi {
				t.Errorf("capacity %d GiB, want %d", total/gi, tc.wantCapacity)
			}
		})
	}
}

// A VG whose counted volumes already exceed its allocatable (writers that
// did not see each other, a reserve raised under them) is full, not
// missing: the agent's admission lets through only "not this ledger's
// business" shortfalls, so a NoSuchVG here granted past allocatable.
func TestOverSubscribedVGIsFull(t *testing.T) {
	l := New()
	l.SetNodeStorage(nls("n1", []vgSpec{{name: "pool0", gib: 100, filtered: true}, {name: "pool1", gib: 10, filtered: true}}, nil))
	l.SetVolume(lvmLV("pvc-a", "n1", "pool0", 70))
	l.SetVolume(lvmLV("pvc-b", "n1", "pool0", 50)) // 120 of 100 counted
	st := nls("n1", []vgSpec{{name: "pool0", gib: 100, filtered: true}, {name: "pool1", gib: 10, filtered: true}}, nil)
	st.Status.NodeStorageInfo.VolumeGroups[1].ThinPools = []v1alpha1.ThinPool{{Name: "tp", Total: uint64(4 * gi),
		OverprovisionRatio: *resource.NewQuantity(1, resource.DecimalSI), Allocatable: uint64(4 * gi)}}
	l.SetNodeStorage(st)
	l.SetVolume(thinLV("pvc-t1", "n1", "pool1", "tp", 3))
	l.SetVolume(thinLV("pvc-t2", "n1", "pool1", "tp", 3)) // 6 of 4 counted
	for _, tc := range []struct {
		name       string
		vol        Volume
		wantKind   ShortfallKind
		wantDetail string
	}{
		{name: "pinned", vol: lvm("c", "pool0", 1), wantKind: VGFull, wantDetail: "VG pool0 on n1: need 1Gi, free 0"},
		{name: "unpinned, no other VG room", vol: lvm("c", "", 20), wantKind: NoVGFits, wantDetail: "pvc default/c on n1: need 20Gi, largest VG free 10Gi"},
		{name: "thin pool", vol: thin("c", "", "tp", 1), wantKind: PoolFull, wantDetail: "thin pool tp on n1: need 1Gi, free 0 (virtual sizes, overprovision ratio included)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sf := l.Fit("n1", NewRequest([]Volume{tc.vol}), Binpack)
			if sf == nil {
				t.Fatal("fits in an over-subscribed VG")
			}
			if sf.Kind != tc.wantKind || sf.Detail() != tc.wantDetail {
				t.Errorf("shortfall %v %q, want %v %q", sf.Kind, sf.Detail(), tc.wantKind, tc.wantDetail)
			}
		})
	}
}

// A volume the agent refused for room (Failed, ResourceExhausted, for the
// current generation) holds what its LV has, not what spec.size asks: the
// CSI controller raised spec.size before the agent refused a growth, and a
// refused create's record lives until its writer deletes it; counting
// them held space nobody got. The agent retries, and decides again then.
func TestRefusedGrowthCountsTheLV(t *testing.T) {
	grown := func(code string, phase v1alpha1.LocalVolumePhase, observed int64, current string) *v1alpha1.LocalVolume {
		lv := lvmLV("pvc-g", "n1", "pool0", 30)
		lv.Generation = 2
		lv.Status.Phase, lv.Status.Code, lv.Status.ObservedGeneration = phase, code, observed
		if current != "" {
			q := resource.MustParse(current)
			lv.Status.CurrentSize = &q
		}
		return lv
	}
	for _, tc := range []struct {
		name     string
		lv       *v1alpha1.LocalVolume
		wantUsed int64 // GiB of pool0 counted
	}{
		{name: "growing", lv: grown("", v1alpha1.PhasePending, 1, "10Gi"), wantUsed: 30},
		{name: "grown", lv: grown("", v1alpha1.PhaseReady, 2, "30Gi"), wantUsed: 30},
		{name: "growth refused for room", lv: grown("ResourceExhausted", v1alpha1.PhaseFailed, 2, "10Gi"), wantUsed: 10},
		{name: "refusal of an older generation", lv: grown("ResourceExhausted", v1alpha1.PhaseFailed, 1, "10Gi"), wantUsed: 30},
		{name: "growth failed otherwise", lv: grown("Internal", v1alpha1.PhaseFailed, 2, "10Gi"), wantUsed: 30},
		{name: "create refused (no LV)", lv: grown("ResourceExhausted", v1alpha1.PhaseFailed, 2, ""), wantUsed: 0},
		{name: "create failed otherwise", lv: grown("Internal", v1alpha1.PhaseFailed, 2, ""), wantUsed: 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := New()
			l.SetNodeStorage(nls("n1", []vgSpec{{name: "pool0", gib: 100, filtered: true}}, nil))
			l.SetVolume(tc.lv)
			want := []string{fmt.Sprintf("n1/pool0 sched=true cap=100 used=%d reserved=0", tc.wantUsed)}
			if got := usage(l); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("usage %v, want %v", got, want)
			}
		})
	}
}

// VisitNodes reports each node's agent as the scheduler judges it: the
// heartbeat's age and why the node takes no new volumes, for the metrics
// an operator alerts on.
func TestVisitNodes(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(-d)); return &t }
	l := New()
	l.SetClock(func() time.Time { return now }, DefaultStaleAfter)
	for name, st := range map[string]v1alpha1.StorageState{
		"fresh":   {Type: v1alpha1.StorageReady, LastHeartbeatTime: at(time.Minute)},
		"stale":   {Type: v1alpha1.StorageReady, LastHeartbeatTime: at(DefaultStaleAfter + 5*time.Second)},
		"fault":   {Type: v1alpha1.StorageFault, Reason: "DiscoveryFailed", LastHeartbeatTime: at(0)},
		"unknown": {},
	} {
		o := nls(name, []vgSpec{{name: "vg", gib: 1, filtered: true}}, nil)
		o.Status.NodeStorageInfo.State = st
		l.SetNodeStorage(o)
	}
	l.SetVolume(lvmLV("pvc-x", "no-nls", "vg", 1)) // a node known only from a volume
	got := map[string]string{}
	l.VisitNodes(func(s NodeState) {
		got[s.Node] = fmt.Sprintf("nls=%t age=%s unavailable=%q", s.HasNLS, s.HeartbeatAge, s.Unavailable)
	})
	want := map[string]string{
		"fresh":   `nls=true age=1m0s unavailable=""`,
		"stale":   `nls=true age=6m5s unavailable="stale"`,
		"fault":   `nls=true age=0s unavailable="DiskFault (DiscoveryFailed)"`,
		"unknown": `nls=true age=-1ns unavailable=""`,
		"no-nls":  `nls=false age=-1ns unavailable=""`,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("VisitNodes:\n got %v\nwant %v", got, want)
	}
}
