package ledger

import (
	"slices"
	"testing"

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
