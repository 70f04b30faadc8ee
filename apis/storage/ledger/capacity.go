package ledger

import (
	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// Capacity is the room on a node for volumes like v (its Type, VG pin,
// ThinPool, MediaType; Size is ignored): total is the sum over every VG,
// thin pool or free device v could go to, largest the biggest single
// volume that fits (an LV cannot span VGs; a thick LV takes whole
// extents). A node that cannot take volumes at all (no NLS, DiskFault,
// stale heartbeat) has none.
func (l *Ledger) Capacity(nodeName string, v Volume) (total, largest int64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	n := l.nodes[nodeName]
	if n == nil || !n.hasNLS || l.unavailable(n) != nil {
		return 0, 0
	}
	switch {
	case v.Type == v1alpha1.VolumeTypeDevice:
		for i := range n.devices {
			if d := &n.devices[i]; d.available() && d.mediaType == v.MediaType {
				total += d.size
				largest = max(largest, d.size)
			}
		}
	case v.ThinPool != "":
		for i := range n.pools {
			p := &n.pools[i]
			if p.name != v.ThinPool || (v.VG != "" && p.vg != v.VG) || !p.schedulable || isOverFilled(p, l.fill) {
				continue
			}
			if g := n.vgIndex(p.vg); g < 0 || !n.vgs[g].schedulable {
				continue
			}
			f := max(p.free(), 0)
			total += f
			largest = max(largest, f)
		}
	default:
		for i := range n.vgs {
			g := &n.vgs[i]
			if !g.schedulable || (v.VG != "" && g.name != v.VG) {
				continue
			}
			f := max(g.free(), 0)
			total += f
			largest = max(largest, v1alpha1.ExtentFloor(f, g.extent))
		}
	}
	return total, largest
}

// Place chooses where v goes on the node by strategy, as Reserve would,
// without holding anything: for a caller that persists the choice itself
// under its own lock (the CSI controller's one-node ledger).
func (l *Ledger) Place(nodeName string, v Volume, strategy Strategy) (Assignment, *Shortfall) {
	req := NewRequest([]Volume{v})
	s := getScratch()
	defer putScratch(s)
	l.mu.RLock()
	defer l.mu.RUnlock()
	n := l.nodes[nodeName]
	if sf := l.plan(n, req, strategy, s); sf != nil {
		return Assignment{}, sf
	}
	a := Assignment{Volume: v}
	switch i := s.targets[0]; {
	case v.Type == v1alpha1.VolumeTypeDevice:
		a.Device = n.devices[i].name
	case v.ThinPool != "":
		a.VG, a.ThinPool = n.pools[i].vg, n.pools[i].name
	default:
		a.VG = n.vgs[i].name
	}
	return a, nil
}

// FitGrowth checks that the LVM LocalVolume name, already accounted, can
// grow to size (as counted: thick LVs in whole extents of its VG, thin
// ones by virtual size in its pool): the growth must fit in what is free
// besides the volume's own current share, and a thin volume grows only in
// a pool below the fill thresholds (PoolFilled). A growth never moves a volume,
// so a DiskFault or silent node is not refused here: the agent reports
// what it can do.
func (l *Ledger) FitGrowth(name string, size int64) *Shortfall {
	l.mu.RLock()
	defer l.mu.RUnlock()
	v, ok := l.volumes[name]
	if !ok || v.kind != v1alpha1.VolumeTypeLVM {
		return &Shortfall{Kind: NoSuchVG, Node: v.node, Volume: Volume{Name: name, Desc: "volume " + name}, VG: v.target}
	}
	want := Volume{Name: name, Desc: "volume " + name, Type: v1alpha1.VolumeTypeLVM, VG: v.target, ThinPool: v.pool, Size: size, Striped: v.striped}
	n := l.nodes[v.node]
	if n == nil || !n.hasNLS {
		return &Shortfall{Kind: NoStorage, Node: v.node, Volume: want}
	}
	if v.pool != "" {
		i := n.poolIndex(v.target, v.pool)
		g := n.vgIndex(v.target)
		if i < 0 || !n.pools[i].schedulable || g < 0 || !n.vgs[g].schedulable {
			return &Shortfall{Kind: NoSuchPool, Node: v.node, Volume: want, VG: v.target, Pool: v.pool}
		}
		if free := n.pools[i].free() + v.size; free < size {
			return &Shortfall{Kind: PoolFull, Node: v.node, Volume: want, VG: v.target, Pool: v.pool, Need: size, Free: free}
		}
		// A pool filled past a threshold takes no more virtual size, as it
		// takes no new volume (Fill): its volumes would only write more.
		if what, fill, threshold, over := n.pools[i].overFilled(l.fill); over && size > v.size {
			return &Shortfall{Kind: PoolFilled, Node: v.node, Volume: want, VG: v.target, Pool: v.pool,
				FillOf: what, FillPercent: fill, FillThreshold: threshold}
		}
		return nil
	}
	i := n.vgIndex(v.target)
	if i < 0 || !n.vgs[i].schedulable {
		return &Shortfall{Kind: NoSuchVG, Node: v.node, Volume: want, VG: v.target}
	}
	g := &n.vgs[i]
	if free, need := g.free()+v.taken, g.take(size, v.striped); free < need {
		return &Shortfall{Kind: VGFull, Node: v.node, Volume: want, VG: v.target, Need: need, Free: free}
	}
	return nil
}
