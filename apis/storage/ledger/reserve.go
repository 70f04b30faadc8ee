package ledger

import (
	"time"

	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// Reservation is a pod's in-flight allocation on one node, held from
// Reserve until each volume's LocalVolume has been written (PreBind) and
// seen by the ledger, or until Release (Unreserve).
type Reservation struct {
	Owner types.UID
	Node  string
	// Assignments are the placed volumes, in request order.
	Assignments []Assignment

	items []*item
}

// Assignment is one volume placed on a VG (and thin pool) or a device.
type Assignment struct {
	Volume Volume
	// VG (and ThinPool of a thin volume) of an LVM volume, or Device.
	VG, ThinPool, Device string
}

// item is one reserved volume.
type item struct {
	res    *Reservation
	volume Volume
	target string
	pool   string // thin pool in target, for thin volumes
	// counted: the item's space is in its VG's reserved (or it holds its
	// device), because no LocalVolume of the same name covers it.
	counted bool
	// persisted: PreBind wrote the LocalVolume; the item goes once the
	// ledger sees it.
	persisted   bool
	persistedAt time.Time
	// taken is what the item adds to its VG's reserved while counted (its
	// size rounded up to the VG's extent; see vg.take).
	taken int64
}

// Reserve re-plans req on the node under the write lock and, if it fits,
// holds the space for owner. Volumes another holder already has on this
// node are left out of the reservation (shared PVCs); on another node
// they fail the reservation. A second Reserve for the same owner replaces
// the first.
func (l *Ledger) Reserve(owner types.UID, nodeName string, req *Request, strategy Strategy) (*Reservation, *Shortfall) {
	l.mu.Lock()
	freed := l.release(owner)
	defer func() { l.unlockAndNotify(freed) }()

	vols := make([]Volume, 0, len(req.Volumes))
	for _, v := range req.Volumes {
		holder := ""
		if lv, ok := l.volumes[v.Name]; ok {
			holder = lv.node
		} else if it := l.items[v.Name]; it != nil {
			holder = it.res.Node
		} else if e, ok := l.inline[v.Name]; ok && e.owner != owner {
			holder = e.v.node
		}
		switch holder {
		case "":
			vols = append(vols, v)
		case nodeName:
			// Already allocated here (by another pod of a shared PVC, or
			// by the CSI controller): nothing more to hold.
		default:
			return nil, &Shortfall{Kind: HeldElsewhere, Node: nodeName, Volume: v, OtherNode: holder}
		}
	}
	sub := req
	if len(vols) != len(req.Volumes) {
		sub = NewRequest(vols)
	}
	s := getScratch()
	defer putScratch(s)
	n := l.nodes[nodeName]
	if sf := l.plan(n, sub, strategy, s); sf != nil {
		return nil, sf
	}
	r := &Reservation{Owner: owner, Node: nodeName}
	for vi, v := range sub.Volumes {
		a := Assignment{Volume: v}
		switch {
		case v.Type == v1alpha1.VolumeTypeDevice:
			a.Device = n.devices[s.targets[vi]].name
		case v.ThinPool != "":
			p := &n.pools[s.targets[vi]]
			a.VG, a.ThinPool = p.vg, p.name
		default:
			a.VG = n.vgs[s.targets[vi]].name
		}
		r.Assignments = append(r.Assignments, a)
		it := &item{res: r, volume: v, target: a.VG + a.Device, pool: a.ThinPool}
		r.items = append(r.items, it)
		l.items[v.Name] = it
		l.recount(it)
	}
	if len(r.items) > 0 {
		l.reservations[owner] = r
	}
	return r, nil
}

// covered reports whether the LocalVolume named like the item exists where
// the item put it, so its space is counted once, through the LocalVolume.
func (l *Ledger) covered(it *item) bool {
	v, ok := l.volumes[it.volume.Name]
	return ok && v.node == it.res.Node && v.target == it.target && v.pool == it.pool
}

// recount brings the item's accounting in line with coverage.
func (l *Ledger) recount(it *item) {
	want := !l.covered(it)
	if want == it.counted {
		return
	}
	n := l.nodeFor(it.res.Node)
	if it.volume.Type == v1alpha1.VolumeTypeDevice {
		d := n.deviceFor(it.target)
		if want {
			d.reservedBy = it.volume.Name
		} else if d.reservedBy == it.volume.Name {
			d.reservedBy = ""
		}
	} else if it.pool != "" {
		if want {
			n.poolFor(it.target, it.pool).reserved += it.volume.Size
		} else {
			n.poolFor(it.target, it.pool).reserved -= it.volume.Size
		}
	} else {
		g := n.vgFor(it.target)
		if want {
			it.taken = g.take(it.volume.Size, it.volume.Striped)
			g.reserved += it.taken
		} else {
			g.reserved -= it.taken
		}
	}
	it.counted = want
	if !want {
		n.prune()
		l.dropIfEmpty(n)
	}
}

// dropItem removes one item from the ledger and its reservation.
func (l *Ledger) dropItem(it *item) {
	if it.counted {
		n := l.nodeFor(it.res.Node)
		if it.volume.Type == v1alpha1.VolumeTypeDevice {
			if d := n.deviceFor(it.target); d.reservedBy == it.volume.Name {
				d.reservedBy = ""
			}
		} else if it.pool != "" {
			n.poolFor(it.target, it.pool).reserved -= it.volume.Size
		} else {
			n.vgFor(it.target).reserved -= it.taken
		}
		it.counted = false
		n.prune()
		l.dropIfEmpty(n)
	}
	if l.items[it.volume.Name] == it {
		delete(l.items, it.volume.Name)
	}
	r := it.res
	for i, x := range r.items {
		if x == it {
			r.items = append(r.items[:i], r.items[i+1:]...)
			break
		}
	}
	if len(r.items) == 0 && l.reservations[r.Owner] == r {
		delete(l.reservations, r.Owner)
	}
}

// release drops owner's reservation; it reports whether space was freed.
func (l *Ledger) release(owner types.UID) bool {
	r := l.reservations[owner]
	if r == nil {
		return false
	}
	freed := false
	for _, it := range append([]*item(nil), r.items...) {
		freed = freed || it.counted
		l.dropItem(it)
	}
	delete(l.reservations, owner)
	return freed
}

// Release drops owner's reservation (Unreserve, pod deleted).
func (l *Ledger) Release(owner types.UID) {
	l.mu.Lock()
	freed := l.release(owner)
	l.unlockAndNotify(freed)
}

// MarkPersisted records that owner's LocalVolume name was written to the
// API; the item is dropped as soon as the ledger sees that LocalVolume
// (right away if it already has).
func (l *Ledger) MarkPersisted(owner types.UID, name string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	it := l.items[name]
	if it == nil || it.res.Owner != owner {
		return
	}
	it.persisted, it.persistedAt = true, now
	if _, seen := l.volumes[name]; seen {
		l.dropItem(it)
	}
}

// Reservation returns owner's reservation, if any (a copy of its
// assignments).
func (l *Ledger) Reservation(owner types.UID) (node string, assignments []Assignment, ok bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	r := l.reservations[owner]
	if r == nil {
		return "", nil, false
	}
	return r.Node, append([]Assignment(nil), r.Assignments...), true
}

// ExpirePersisted drops items persisted before cutoff whose LocalVolume
// never showed up, once gone confirms it is not in the API (it was deleted
// before the informer delivered it, so there is nothing left to hold). An
// item whose LocalVolume exists but has not been delivered yet (a lagging
// or broken watch) keeps its space: dropping it would free space the
// LocalVolume holds. gone is called without the ledger lock (it may do an
// API request) and must say true only on a definite NotFound. It returns
// how many were dropped.
func (l *Ledger) ExpirePersisted(cutoff time.Time, gone func(name string) bool) int {
	l.mu.RLock()
	var due []*item
	for _, it := range l.items {
		if it.persisted && it.persistedAt.Before(cutoff) {
			due = append(due, it)
		}
	}
	l.mu.RUnlock()
	var confirmed []*item
	for _, it := range due {
		if gone(it.volume.Name) {
			confirmed = append(confirmed, it)
		}
	}
	l.mu.Lock()
	dropped, freed := 0, false
	for _, it := range confirmed {
		// Still the same item, and the informer did not deliver its
		// LocalVolume meanwhile (that drops it the ordinary way).
		if l.items[it.volume.Name] != it {
			continue
		}
		freed = freed || it.counted
		l.dropItem(it)
		dropped++
	}
	l.unlockAndNotify(freed)
	return dropped
}
