package ledger

import (
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

// The inline volumes of assigned pods are counted from the pods (no
// LocalVolume is written when they are scheduled), once: a LocalVolume of
// the same name (the node's record) supersedes the pod's count, and the
// space is free only when both the pod and the LocalVolume are gone.
func TestInlineVolumesOfAssignedPods(t *testing.T) {
	const pod = types.UID("pod-a")
	two := func() *Ledger {
		l := New()
		l.SetNodeStorage(nls("n1", []vgSpec{{name: "pool0", gib: 10, filtered: true}, {name: "pool1", gib: 4, filtered: true}}, nil))
		return l
	}
	steps := map[string]func(l *Ledger){
		"reserve":       func(l *Ledger) { mustReserve(t, l, pod, lvm("csi-a", "", 3)) },
		"reserve pool1": func(l *Ledger) { mustReserve(t, l, pod, lvm("csi-a", "pool1", 3)) },
		"bound":         func(l *Ledger) { l.SetInline(pod, "n1", lvm("csi-a", "", 3), Binpack) },
		"bound pool0":   func(l *Ledger) { l.SetInline(pod, "n1", lvm("csi-a", "pool0", 3), Binpack) },
		"lv pool0":      func(l *Ledger) { l.SetVolume(lvmLV("csi-a", "n1", "pool0", 3)) },
		"lv pool1":      func(l *Ledger) { l.SetVolume(lvmLV("csi-a", "n1", "pool1", 3)) },
		"lv gone":       func(l *Ledger) { l.RemoveVolume("csi-a") },
		"pod gone":      func(l *Ledger) { l.RemoveInline("csi-a") },
		"release":       func(l *Ledger) { l.Release(pod) },
	}
	for _, tc := range []struct {
		name  string
		steps []string
		// want is pool0 and pool1 as used/reserved GiB.
		want string
		// inline and reservations as Stats counts them.
		inline, reservations int
	}{
		{name: "reserved only", steps: []string{"reserve"}, want: "pool0 0/0 pool1 0/3", reservations: 1},
		// Binpack put it on pool1 (fullest that fits); the bound pod keeps that VG.
		{name: "bound: the reservation becomes the pod's count on the reserved VG", steps: []string{"reserve", "bound"}, want: "pool0 0/0 pool1 3/0", inline: 1},
		{name: "late Release after binding changes nothing", steps: []string{"reserve", "bound", "release"}, want: "pool0 0/0 pool1 3/0", inline: 1},
		{name: "bound pinned VG", steps: []string{"reserve pool1", "bound"}, want: "pool0 0/0 pool1 3/0", inline: 1},
		{name: "the node's LocalVolume after the pod: counted once", steps: []string{"reserve", "bound", "lv pool1"}, want: "pool0 0/0 pool1 3/0", inline: 1},
		{name: "the node chose another VG: its LocalVolume wins", steps: []string{"reserve", "bound", "lv pool0"}, want: "pool0 3/0 pool1 0/0", inline: 1},
		{name: "restart: LocalVolume seen before the pod", steps: []string{"lv pool0", "bound"}, want: "pool0 3/0 pool1 0/0", inline: 1},
		{name: "restart: pod without its LocalVolume yet, VG chosen by the strategy", steps: []string{"bound"}, want: "pool0 0/0 pool1 3/0", inline: 1},
		{name: "restart: pod names its VG", steps: []string{"bound pool0"}, want: "pool0 3/0 pool1 0/0", inline: 1},
		{name: "pod gone, LocalVolume still there: still counted", steps: []string{"reserve", "bound", "lv pool1", "pod gone"}, want: "pool0 0/0 pool1 3/0"},
		{name: "pod and LocalVolume gone: free", steps: []string{"reserve", "bound", "lv pool1", "pod gone", "lv gone"}, want: "pool0 0/0 pool1 0/0"},
		{name: "LocalVolume gone first, pod still there: the pod counts it again", steps: []string{"bound", "lv pool1", "lv gone"}, want: "pool0 0/0 pool1 3/0", inline: 1},
		{name: "pod gone before the node wrote anything: free", steps: []string{"reserve", "bound", "pod gone"}, want: "pool0 0/0 pool1 0/0"},
		{name: "pod updates repeat: counted once", steps: []string{"bound", "bound", "bound"}, want: "pool0 0/0 pool1 3/0", inline: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := two()
			for _, s := range tc.steps {
				steps[s](l)
			}
			got := map[string]string{}
			l.Visit(func(u VGUsage) { got[u.VG] = fmt.Sprintf("%d/%d", u.Used/gi, u.Reserved/gi) }, nil)
			if s := fmt.Sprintf("pool0 %s pool1 %s", got["pool0"], got["pool1"]); s != tc.want {
				t.Errorf("after %v: %s, want %s", tc.steps, s, tc.want)
			}
			if s := l.Stats(); s.InlineVolumes != tc.inline || s.Reservations != tc.reservations {
				t.Errorf("stats %+v, want %d inline volumes and %d reservations", s, tc.inline, tc.reservations)
			}
		})
	}
}

// A pod counted from the informer holds its space against others: the
// over-commit guarantee does not depend on a LocalVolume being written.
func TestInlineCountBlocksOthers(t *testing.T) {
	l := New()
	l.SetNodeStorage(nls("n1", []vgSpec{{name: "pool0", gib: 3, filtered: true}}, nil))
	for i := range 3 {
		l.SetInline(types.UID(fmt.Sprint("p", i)), "n1", lvm(fmt.Sprint("csi-", i), "", 1), Binpack)
	}
	if sf := l.Fit("n1", NewRequest([]Volume{lvm("csi-x", "", 1)}), Binpack); sf == nil {
		t.Fatal("a fourth 1Gi inline volume fits a 3Gi VG holding three")
	}
	l.RemoveInline("csi-1")
	if sf := l.Fit("n1", NewRequest([]Volume{lvm("csi-x", "", 1)}), Binpack); sf != nil {
		t.Fatalf("space not back after the pod went: %s", sf.Detail())
	}
}

func mustReserve(t *testing.T, l *Ledger, owner types.UID, v Volume) {
	t.Helper()
	if _, sf := l.Reserve(owner, "n1", NewRequest([]Volume{v}), Binpack); sf != nil {
		t.Fatal(sf.Detail())
	}
}
