package ledger

import (
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"

	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// ForNode counts what the API says about one node, however the callers'
// objects are spelled: the CSI controller, the inline fallback and the
// agent's admission all build their ledger with it.
func TestForNode(t *testing.T) {
	withName := func(o *v1alpha1.NodeLocalStorage, specNode string) *v1alpha1.NodeLocalStorage {
		o.Spec.NodeName = specNode
		return o
	}
	vgs := []vgSpec{{name: "vg0", gib: 10, filtered: true}}
	tests := []struct {
		name    string
		nls     *v1alpha1.NodeLocalStorage
		volumes []*v1alpha1.LocalVolume
		want    []string
	}{
		{name: "volumes of other nodes are skipped",
			nls:     nls("n1", vgs, nil),
			volumes: []*v1alpha1.LocalVolume{lvmLV("a", "n1", "vg0", 3), lvmLV("b", "n2", "vg0", 4)},
			want:    []string{"n1/vg0 sched=true cap=10 used=3 reserved=0"}},
		{name: "an NLS without spec.nodeName counts for the node asked",
			nls:     withName(nls("n1", vgs, nil), ""),
			volumes: []*v1alpha1.LocalVolume{lvmLV("a", "n1", "vg0", 3)},
			want:    []string{"n1/vg0 sched=true cap=10 used=3 reserved=0"}},
		{name: "a stale spec.nodeName does not move the capacity",
			nls:     withName(nls("n1", vgs, nil), "old"),
			volumes: []*v1alpha1.LocalVolume{lvmLV("a", "n1", "vg0", 3)},
			want:    []string{"n1/vg0 sched=true cap=10 used=3 reserved=0"}},
		{name: "no NLS: usage only, nothing schedulable",
			volumes: []*v1alpha1.LocalVolume{lvmLV("a", "n1", "vg0", 3)},
			want:    []string{"n1/vg0 sched=false cap=0 used=3 reserved=0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before v1alpha1.NodeLocalStorage
			if tt.nls != nil {
				before = *tt.nls.DeepCopy()
			}
			l := ForNode("n1", tt.nls, tt.volumes)
			if got := usage(l); !slices.Equal(got, tt.want) {
				t.Errorf("usage = %q, want %q", got, tt.want)
			}
			if tt.nls != nil && tt.nls.Spec.NodeName != before.Spec.NodeName {
				t.Errorf("ForNode changed the caller's NLS: spec.nodeName %q, was %q", tt.nls.Spec.NodeName, before.Spec.NodeName)
			}
		})
	}
}

// A thin volume grows by virtual size in its pool; a pool filled past a
// threshold takes no new volume, and no growth either (the volumes in it
// would only write more), while a growth that does not grow still fits.
func TestFitGrowthRespectsFill(t *testing.T) {
	pct := func(v int32) *int32 { return &v }
	tests := []struct {
		name           string
		fill           *Fill
		data, metadata *int32
		size           int64 // GiB, the volume holds 4
		want           ShortfallKind
	}{
		{name: "below the thresholds", data: pct(50), metadata: pct(50), size: 8, want: -1},
		{name: "unknown fill", size: 8, want: -1},
		{name: "data past 90", data: pct(91), size: 8, want: PoolFilled},
		{name: "metadata past 80", metadata: pct(81), size: 8, want: PoolFilled},
		{name: "the same size still fits", data: pct(91), size: 4, want: -1},
		{name: "100 turns the rule off", fill: &Fill{DataPercent: 100, MetadataPercent: 100}, data: pct(100), size: 8, want: -1},
		{name: "room still counts", data: pct(10), size: 21, want: PoolFull},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := nls("n1", []vgSpec{{name: "vg0", gib: 100, filtered: true}}, nil)
			st.Status.NodeStorageInfo.VolumeGroups[0].ThinPools = []v1alpha1.ThinPool{{Name: "tp", Total: uint64(20 * gi),
				OverprovisionRatio: resource.MustParse("1"), Allocatable: uint64(20 * gi), DataPercent: tt.data, MetadataPercent: tt.metadata}}
			l := ForNode("n1", st, []*v1alpha1.LocalVolume{thinLV("a", "n1", "vg0", "tp", 4)})
			if tt.fill != nil {
				l.SetFill(*tt.fill)
			}
			sf := l.FitGrowth("a", tt.size*gi)
			switch {
			case tt.want < 0 && sf != nil:
				t.Errorf("FitGrowth = %s, want room", sf.Detail())
			case tt.want >= 0 && (sf == nil || sf.Kind != tt.want):
				t.Errorf("FitGrowth = %+v, want kind %d", sf, tt.want)
			}
		})
	}
}

func TestParseStrategy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		want    Strategy
		wantErr bool
	}{
		{name: "binpack", want: Binpack},
		{name: "spread", want: Spread},
		{name: "Spread", wantErr: true},
		{name: "", wantErr: true},
		{name: "roundrobin", wantErr: true},
	} {
		got, err := ParseStrategy(tc.name)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseStrategy(%q) = %v, %v; want %v (error %v)", tc.name, got, err, tc.want, tc.wantErr)
		}
		if err == nil && got.String() != tc.name {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), tc.name)
		}
	}
}
