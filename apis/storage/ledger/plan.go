package ledger

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// Strategy chooses among VGs (and ranks nodes).
type Strategy int

const (
	// Binpack: the fullest VG that fits; nodes scored by utilisation.
	Binpack Strategy = iota
	// Spread: the emptiest VG; nodes scored by free share.
	Spread
)

// ParseStrategy reads a strategy by the name the scheduler's args use
// (binpack, spread): the CSI node plugin takes the scheduler's, so both
// choose the same VG for an inline volume that names none.
func ParseStrategy(name string) (Strategy, error) {
	switch name {
	case BinpackName:
		return Binpack, nil
	case SpreadName:
		return Spread, nil
	}
	return 0, fmt.Errorf("unknown strategy %q: want %s or %s", name, BinpackName, SpreadName)
}

// The strategies' names: the scheduler's args (config.Strategy) and the
// CSI node plugin's --inline-strategy spell them so.
const (
	BinpackName = "binpack"
	SpreadName  = "spread"
)

func (s Strategy) String() string {
	if s == Spread {
		return SpreadName
	}
	return BinpackName
}

// Volume is one volume a pod needs that is not allocated yet.
type Volume struct {
	// Name is the LocalVolume name (pvc-<uid> or the inline volume handle).
	Name string
	// Desc names the volume for people, e.g. "pvc default/data".
	Desc string
	// Type is LVM or Device.
	Type v1alpha1.VolumeType
	// VG pins an LVM volume to a VG; empty lets the strategy choose.
	VG string
	// ThinPool makes the volume thin: it is placed in a thin pool of that
	// name (in VG, if set) and counted by its virtual Size against the
	// pool's allocatable.
	ThinPool string
	// MediaType of a Device volume: ssd or hdd.
	MediaType string
	// Striped: lvmType striping, counted as v1alpha1.LVTake says (thick
	// LVM volumes only).
	Striped bool
	// Size in bytes, as counted (0 for a read-only restore: it is its
	// snapshot's LV).
	Size int64
}

// Request is a pod's unallocated volumes in planning order: VG-pinned LVM
// volumes first, then the other LVM volumes largest first (first fit
// decreasing packs best), then devices smallest first (smallest device
// that fits).
type Request struct {
	Volumes []Volume
	// pinnedNeed[vg] is the total size of thick volumes pinned to vg, and
	// pinnedNeed[vg/pool] of thin volumes pinned to that pool, for messages.
	pinnedNeed map[string]int64
	hasLVM     bool
	hasDevice  bool
}

// NewRequest orders vols for planning. It keeps vols' backing array.
func NewRequest(vols []Volume) *Request {
	rank := func(v *Volume) int {
		switch {
		case v.Type == v1alpha1.VolumeTypeDevice:
			return 2
		case v.VG != "":
			return 0
		}
		return 1
	}
	slices.SortStableFunc(vols, func(a, b Volume) int {
		if c := cmp.Compare(rank(&a), rank(&b)); c != 0 {
			return c
		}
		if rank(&a) == 2 {
			return cmp.Compare(a.Size, b.Size)
		}
		return cmp.Compare(b.Size, a.Size)
	})
	r := &Request{Volumes: vols}
	for i := range vols {
		v := &vols[i]
		if v.Type == v1alpha1.VolumeTypeDevice {
			r.hasDevice = true
			continue
		}
		r.hasLVM = true
		if v.VG != "" {
			if r.pinnedNeed == nil {
				r.pinnedNeed = map[string]int64{}
			}
			r.pinnedNeed[pinKey(v)] += v.Size
		}
	}
	return r
}

func pinKey(v *Volume) string {
	if v.ThinPool != "" {
		return v.VG + "/" + v.ThinPool
	}
	return v.VG
}

// Empty reports a request with nothing to allocate.
func (r *Request) Empty() bool { return r == nil || len(r.Volumes) == 0 }

// ShortfallKind says why a node cannot take a request.
type ShortfallKind int

// Shortfall kinds.
const (
	// NoStorage: the node has no NodeLocalStorage.
	NoStorage ShortfallKind = iota
	// NoSuchVG: a volume's vgName is not a schedulable VG of the node.
	NoSuchVG
	// VGFull: the volumes pinned to a VG do not fit in it together.
	VGFull
	// NoVGFits: no VG has room for a volume (after the pod's others).
	NoVGFits
	// NoDevice: no free device of the media type is large enough.
	NoDevice
	// HeldElsewhere: the volume was allocated on another node meanwhile.
	HeldElsewhere
	// NoSuchPool: no schedulable VG of the node has the thin pool (in the
	// volume's VG, if it names one).
	NoSuchPool
	// PoolFull: no such thin pool has room for the volume's virtual size.
	PoolFull
	// NodeUnavailable: the node's NodeLocalStorage says DiskFault, or its
	// agent's heartbeat is stale.
	NodeUnavailable
	// PoolFilled: every such thin pool is filled past a threshold (Fill).
	PoolFilled
)

// Shortfall explains why a request does not fit a node.
type Shortfall struct {
	Kind ShortfallKind
	Node string
	// Volume is the volume that did not fit (VGFull: the first one pinned to VG).
	Volume Volume
	// VG, thin Pool or MediaType concerned.
	VG, Pool, MediaType string
	// Need is what had to fit (VGFull: everything pinned to VG), Free the
	// most there was (NoDevice: the largest free device, 0 if none).
	Need, Free int64
	// OtherNode holds the volume (HeldElsewhere).
	OtherNode string
	// Fault is the NLS state (NodeUnavailable by DiskFault), Stale the
	// heartbeat's age (NodeUnavailable by a silent agent).
	Fault string
	Stale time.Duration
	// FillOf ("data" or "metadata"), FillPercent and FillThreshold say
	// how the thin pool is filled past its threshold (PoolFilled).
	FillOf                     string
	FillPercent, FillThreshold int32
}

// Deficit is how much is missing, for ranking near misses.
func (s *Shortfall) Deficit() int64 {
	switch s.Kind {
	case VGFull, NoVGFits, NoDevice, PoolFull:
		return s.Need - s.Free
	}
	return 1 << 62
}

// Reason is the node-independent reason, so identical failures aggregate
// in the pod's FailedScheduling event ("997 node(s) ...").
func (s *Shortfall) Reason() string {
	switch s.Kind {
	case NoStorage:
		return "node(s) had no NodeLocalStorage"
	case NoSuchVG:
		return fmt.Sprintf("node(s) had no VG %s (vgName of %s)", s.VG, s.Volume.Desc)
	case VGFull:
		return fmt.Sprintf("node(s) had less than %s free in VG %s", Bytes(s.Need), s.VG)
	case NoVGFits:
		return fmt.Sprintf("node(s) had no VG with %s free for %s", Bytes(s.Need), s.Volume.Desc)
	case NoDevice:
		return fmt.Sprintf("node(s) had no free %s device of at least %s for %s", s.MediaType, Bytes(s.Need), s.Volume.Desc)
	case HeldElsewhere:
		return fmt.Sprintf("%s was just allocated on node %s", s.Volume.Desc, s.OtherNode)
	case NoSuchPool:
		return fmt.Sprintf("node(s) had no thin pool %s%s (thinPool of %s)", s.Pool, inVG(s.VG), s.Volume.Desc)
	case PoolFull:
		return fmt.Sprintf("node(s) had no thin pool %s%s with %s of virtual size free for %s", s.Pool, inVG(s.VG), Bytes(s.Need), s.Volume.Desc)
	case PoolFilled:
		return fmt.Sprintf("node(s) had thin pool %s filled past a threshold (%s %d%% > %d%%) for %s", s.Pool, s.FillOf, s.FillPercent, s.FillThreshold, s.Volume.Desc)
	case NodeUnavailable:
		if s.Fault != "" {
			return "node(s) had NodeLocalStorage state " + s.Fault
		}
		return "node(s) had a stale NodeLocalStorage heartbeat (open-local agent not reporting)"
	}
	return "unknown storage shortfall"
}

// Detail is the specific explanation for one node, e.g.
// "VG pool0 on node-3: need 30Gi, free 12Gi".
func (s *Shortfall) Detail() string {
	switch s.Kind {
	case NoStorage:
		return fmt.Sprintf("node %s has no NodeLocalStorage", s.Node)
	case NoSuchVG:
		return fmt.Sprintf("node %s has no VG %s (vgName of %s)", s.Node, s.VG, s.Volume.Desc)
	case VGFull:
		return fmt.Sprintf("VG %s on %s: need %s, free %s", s.VG, s.Node, Bytes(s.Need), Bytes(s.Free))
	case NoVGFits:
		return fmt.Sprintf("%s on %s: need %s, largest VG free %s", s.Volume.Desc, s.Node, Bytes(s.Need), Bytes(s.Free))
	case NoDevice:
		return fmt.Sprintf("%s devices on %s: need %s, largest free %s", s.MediaType, s.Node, Bytes(s.Need), Bytes(s.Free))
	case HeldElsewhere:
		return s.Reason()
	case NoSuchPool:
		return fmt.Sprintf("node %s has no thin pool %s%s (thinPool of %s)", s.Node, s.Pool, inVG(s.VG), s.Volume.Desc)
	case PoolFull:
		return fmt.Sprintf("thin pool %s%s on %s: need %s, free %s (virtual sizes, overprovision ratio included)", s.Pool, inVG(s.VG), s.Node, Bytes(s.Need), Bytes(s.Free))
	case PoolFilled:
		return fmt.Sprintf("thin pool %s%s on %s: %s %d%% full, above the %d%% threshold (thinPoolFillThresholds.%sPercent)", s.Pool, inVG(s.VG), s.Node, s.FillOf, s.FillPercent, s.FillThreshold, s.FillOf)
	case NodeUnavailable:
		if s.Fault != "" {
			return fmt.Sprintf("node %s: NodeLocalStorage state %s", s.Node, s.Fault)
		}
		return fmt.Sprintf("node %s: the open-local agent has not reported for %s", s.Node, s.Stale)
	}
	return s.Reason()
}

func inVG(vg string) string {
	if vg == "" {
		return ""
	}
	return " in VG " + vg
}

// Bytes prints a byte count the way Kubernetes quantities read (30Gi).
func Bytes(b int64) string {
	return resource.NewQuantity(b, resource.BinarySI).String()
}

// scratch is per-call planning space, pooled so Filter and Score do not
// allocate; the arrays cover typical nodes, bigger ones grow the slices.
type scratch struct {
	freeBuf     [8]int64
	poolFreeBuf [4]int64
	takenBuf    [16]bool
	tgtBuf      [8]int
	free        []int64
	poolFree    []int64
	taken       []bool
	targets     []int // per request volume: VG, thin pool or device index
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func getScratch() *scratch { return scratchPool.Get().(*scratch) }

func putScratch(s *scratch) { scratchPool.Put(s) }

func (s *scratch) init(n *node, nvol int) {
	s.free = s.freeBuf[:0]
	if len(n.vgs) > len(s.freeBuf) {
		s.free = make([]int64, 0, len(n.vgs))
	}
	for i := range n.vgs {
		g := &n.vgs[i]
		f := int64(-1) // not schedulable: "no such VG"
		if g.schedulable {
			// Over-subscribed (writers that did not see each other, a
			// reserve raised under them) is full, never "no such VG".
			f = max(g.free(), 0)
		}
		s.free = append(s.free, f)
	}
	s.poolFree = s.poolFreeBuf[:0]
	if len(n.pools) > len(s.poolFreeBuf) {
		s.poolFree = make([]int64, 0, len(n.pools))
	}
	for i := range n.pools {
		p := &n.pools[i]
		f := int64(-1)
		if p.schedulable {
			if g := n.vgIndex(p.vg); g >= 0 && n.vgs[g].schedulable {
				f = max(p.free(), 0) // over-subscribed is full, as for VGs
			}
		}
		s.poolFree = append(s.poolFree, f)
	}
	s.taken = s.takenBuf[:0]
	if len(n.devices) > len(s.takenBuf) {
		s.taken = make([]bool, 0, len(n.devices))
	}
	for i := range n.devices {
		s.taken = append(s.taken, !n.devices[i].available())
	}
	s.targets = s.tgtBuf[:0]
	if nvol > len(s.tgtBuf) {
		s.targets = make([]int, 0, nvol)
	}
}

// plan places every volume of req on n, or says why it cannot. On success
// s.targets holds each volume's VG or device index and s.free/s.taken the
// state after placement.
func (l *Ledger) plan(n *node, req *Request, strategy Strategy, s *scratch) *Shortfall {
	if n == nil || !n.hasNLS {
		name := ""
		if n != nil {
			name = n.name
		}
		return &Shortfall{Kind: NoStorage, Node: name}
	}
	if sf := l.unavailable(n); sf != nil {
		return sf
	}
	s.init(n, len(req.Volumes))
	for vi := range req.Volumes {
		v := &req.Volumes[vi]
		switch {
		case v.Type == v1alpha1.VolumeTypeDevice:
			best := -1
			for i := range n.devices {
				d := &n.devices[i]
				if s.taken[i] || d.mediaType != v.MediaType || d.size < v.Size {
					continue
				}
				if best < 0 || d.size < n.devices[best].size {
					best = i
				}
			}
			if best < 0 {
				sf := &Shortfall{Kind: NoDevice, Node: n.name, Volume: *v, MediaType: v.MediaType, Need: v.Size}
				for i := range n.devices {
					if d := &n.devices[i]; !s.taken[i] && d.mediaType == v.MediaType && d.size > sf.Free {
						sf.Free = d.size
					}
				}
				return sf
			}
			s.taken[best] = true
			s.targets = append(s.targets, best)
		case v.ThinPool != "":
			best, seen, roomy := -1, false, false
			var filled *Shortfall
			for i := range n.pools {
				p := &n.pools[i]
				f := s.poolFree[i]
				if p.name != v.ThinPool || (v.VG != "" && p.vg != v.VG) || f < 0 {
					continue
				}
				seen = true
				if what, fill, threshold, over := p.overFilled(l.fill); over {
					if filled == nil {
						filled = &Shortfall{Kind: PoolFilled, Node: n.name, Volume: *v, VG: p.vg, Pool: v.ThinPool,
							FillOf: what, FillPercent: fill, FillThreshold: threshold}
					}
					continue
				}
				roomy = true
				if f < v.Size {
					continue
				}
				if best < 0 || (strategy == Binpack && f < s.poolFree[best]) || (strategy == Spread && f > s.poolFree[best]) {
					best = i
				}
			}
			if best < 0 {
				if !seen {
					return &Shortfall{Kind: NoSuchPool, Node: n.name, Volume: *v, VG: v.VG, Pool: v.ThinPool}
				}
				if !roomy {
					return filled
				}
				sf := &Shortfall{Kind: PoolFull, Node: n.name, Volume: *v, VG: v.VG, Pool: v.ThinPool, Need: v.Size}
				if v.VG != "" {
					sf.Need = req.pinnedNeed[pinKey(v)]
				}
				for i := range n.pools {
					if p := &n.pools[i]; p.name == v.ThinPool && (v.VG == "" || p.vg == v.VG) && s.poolFree[i] >= 0 && !isOverFilled(p, l.fill) {
						// Free before this pod's other volumes, as for VGs.
						sf.Free = max(sf.Free, p.free())
					}
				}
				return sf
			}
			s.poolFree[best] -= v.Size
			s.targets = append(s.targets, best)
		case v.VG != "":
			i := n.vgIndex(v.VG)
			if i < 0 || s.free[i] < 0 {
				return &Shortfall{Kind: NoSuchVG, Node: n.name, Volume: *v, VG: v.VG}
			}
			take := n.vgs[i].take(v.Size, v.Striped)
			if s.free[i] < take {
				return &Shortfall{Kind: VGFull, Node: n.name, Volume: *v, VG: v.VG,
					Need: req.pinnedNeed[v.VG], Free: max(n.vgs[i].free(), 0)}
			}
			s.free[i] -= take
			s.targets = append(s.targets, i)
		default:
			best := -1
			for i, f := range s.free {
				if f < n.vgs[i].take(v.Size, v.Striped) {
					continue
				}
				if best < 0 || (strategy == Binpack && f < s.free[best]) || (strategy == Spread && f > s.free[best]) {
					best = i
				}
			}
			if best < 0 {
				sf := &Shortfall{Kind: NoVGFits, Node: n.name, Volume: *v, Need: v.Size}
				for _, f := range s.free {
					sf.Free = max(sf.Free, f)
				}
				return sf
			}
			s.free[best] -= n.vgs[best].take(v.Size, v.Striped)
			s.targets = append(s.targets, best)
		}
	}
	return nil
}

// Fit reports whether req fits the node together, with the ledger as it is
// now (reservations included). It allocates only on failure.
func (l *Ledger) Fit(nodeName string, req *Request, strategy Strategy) *Shortfall {
	s := getScratch()
	defer putScratch(s)
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.plan(l.nodes[nodeName], req, strategy, s)
}

// Weights weigh the LVM and device parts of a score.
type Weights struct{ LVM, Device int64 }

// MaxScore is the top of Score's range.
const MaxScore = 100

// Score rates the node for req in [0, MaxScore] after placing req as
// Filter would. Binpack favours high VG utilisation after placement and
// spread low; both favour devices that fit tightly, binpack using up
// nodes' devices, spread keeping nodes' devices free. ok is false when req
// does not fit (any more).
func (l *Ledger) Score(nodeName string, req *Request, strategy Strategy, w Weights) (score int64, ok bool) {
	s := getScratch()
	defer putScratch(s)
	l.mu.RLock()
	defer l.mu.RUnlock()
	n := l.nodes[nodeName]
	if l.plan(n, req, strategy, s) != nil {
		return 0, false
	}
	var total, weights int64
	if req.hasLVM && w.LVM > 0 {
		// Average utilisation of the VGs and thin pools this pod touches,
		// after placement.
		var sum float64
		var count int
		for i, f := range s.free {
			g := &n.vgs[i]
			if f < 0 || f == g.free() || g.capacity <= 0 {
				continue
			}
			sum += float64(g.capacity-f) / float64(g.capacity)
			count++
		}
		for i, f := range s.poolFree {
			p := &n.pools[i]
			if f < 0 || f == p.free() || p.capacity <= 0 {
				continue
			}
			sum += float64(p.capacity-f) / float64(p.capacity)
			count++
		}
		util := sum / float64(max(count, 1))
		part := util
		if strategy == Spread {
			part = 1 - util
		}
		total += w.LVM * int64(part*MaxScore)
		weights += w.LVM
	}
	if req.hasDevice && w.Device > 0 {
		// Tightness of each device fit, and how much of the node's free
		// devices of that media the pod takes.
		var fit float64
		var ndev int
		for vi := range req.Volumes {
			v := &req.Volumes[vi]
			if v.Type != v1alpha1.VolumeTypeDevice {
				continue
			}
			d := &n.devices[s.targets[vi]]
			fit += float64(v.Size) / float64(max(d.size, 1))
			ndev++
		}
		fit /= float64(max(ndev, 1))
		freeBefore := 0
		for i := range n.devices {
			if n.devices[i].available() {
				freeBefore++
			}
		}
		share := float64(ndev) / float64(max(freeBefore, 1))
		if strategy == Spread {
			share = 1 - share
		}
		total += w.Device * int64((fit+share)/2*MaxScore)
		weights += w.Device
	}
	if weights == 0 {
		return 0, true
	}
	return total / weights, true
}

// Closest returns, among the nodes where req does not fit, the capacity
// shortfall with the smallest deficit: the near miss worth telling a user
// about. nil when there is none.
func (l *Ledger) Closest(nodes []string, req *Request, strategy Strategy) *Shortfall {
	s := getScratch()
	defer putScratch(s)
	var best *Shortfall
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, name := range nodes {
		n := l.nodes[name]
		if n == nil || !n.hasNLS {
			continue
		}
		sf := l.plan(n, req, strategy, s)
		if sf == nil || sf.Deficit() >= 1<<62 {
			continue
		}
		if best == nil || sf.Deficit() < best.Deficit() || (sf.Deficit() == best.Deficit() && strings.Compare(sf.Node, best.Node) < 0) {
			best = sf
		}
	}
	return best
}

func isOverFilled(p *pool, f Fill) bool {
	_, _, _, over := p.overFilled(f)
	return over
}
