package ledger

import (
	"fmt"
	"testing"
)

// benchLedger has 1000 nodes with two VGs and two ssd devices each, half
// used, like the scheduler benchmark's cluster.
func benchLedger(b *testing.B) (*Ledger, []string) {
	b.Helper()
	l := New()
	var names []string
	for i := range 1000 {
		name := fmt.Sprintf("node-%04d", i)
		names = append(names, name)
		l.SetNodeStorage(nls(name, []vgSpec{{name: "pool0", gib: 1000, filtered: true}, {name: "pool1", gib: 500, filtered: true}},
			[]devSpec{{name: "/dev/sdb", media: "ssd", gib: 100, filtered: true}, {name: "/dev/sdc", media: "ssd", gib: 200, filtered: true}}))
		l.SetVolume(lvmLV("pvc-"+name, name, "pool0", int64(i%500)))
	}
	return l, names
}

func benchRequests() map[string]*Request {
	return map[string]*Request{
		"2pvc":          NewRequest([]Volume{lvm("a", "", 10), lvm("b", "", 20)}),
		"pinned+device": NewRequest([]Volume{lvm("a", "pool1", 10), dev("d", "ssd", 50)}),
	}
}

// Filter and Score run once per node per pod: they must not allocate on
// the success path.
func BenchmarkFit(b *testing.B) {
	l, names := benchLedger(b)
	for name, req := range benchRequests() {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if sf := l.Fit(names[i%len(names)], req, Binpack); sf != nil {
					b.Fatal(sf.Detail())
				}
				i++
			}
		})
	}
}

func BenchmarkScore(b *testing.B) {
	l, names := benchLedger(b)
	for name, req := range benchRequests() {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, ok := l.Score(names[i%len(names)], req, Spread, Weights{LVM: 1, Device: 1}); !ok {
					b.Fatal("does not fit")
				}
				i++
			}
		})
	}
}

// BenchmarkFitParallel is Filter as the scheduler runs it: 16 goroutines
// over the nodes while Reserve writes.
func BenchmarkFitParallel(b *testing.B) {
	l, names := benchLedger(b)
	req := benchRequests()["2pvc"]
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			_ = l.Fit(names[i%len(names)], req, Binpack)
			i++
		}
	})
}
