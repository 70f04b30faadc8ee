package ledger

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// Ledger accounts VG space and exclusive devices per node. The zero value
// is not usable; call New.
type Ledger struct {
	mu sync.RWMutex
	// nodes holds every node that has a NodeLocalStorage or LocalVolumes.
	nodes map[string]*node
	// volumes are the LocalVolumes seen, by name.
	volumes map[string]volume
	// reservations are in-flight allocations, by owner (pod UID).
	reservations map[types.UID]*Reservation
	// items index reservation items by LocalVolume name: one holder per name.
	items map[string]*item
	// inline are the CSI inline volumes of assigned pods, by handle.
	inline map[string]inlineVolume

	// freed, when set, is called (outside the lock) after a change that may
	// let a waiting pod fit: space released, capacity grown.
	freed func()

	// now and staleAfter judge heartbeats: a node whose agent has not
	// written its NodeLocalStorage for staleAfter is unschedulable.
	now        func() time.Time
	staleAfter time.Duration

	// fill: thin pools fuller than this take no new volumes.
	fill Fill
}

// Fill are the thin pool fill thresholds, in percent (1–100; 100 turns
// one off): a pool whose data or metadata space is fuller than its
// threshold takes no new volume, whatever its virtual room, since the
// volumes already in it keep writing. A pool's fill is what the agent
// reports from lvm (v1alpha1.ThinPool.DataPercent, MetadataPercent);
// unknown fill (lvm reports none: an inactive pool, lvm without
// device-mapper) does not count as full, as the virtual size still bounds
// the pool and refusing would make every such pool unschedulable.
type Fill struct {
	DataPercent, MetadataPercent int32
}

// DefaultFill: data 90 %, metadata 80 %. A full data space fails or
// queues every write of the pool's volumes, so new volumes stop while a
// tenth is left for the existing ones; a full metadata space is worse
// (the pool needs thin_repair) and grows with snapshots and
// fragmentation, so the limit is lower: where dmeventd starts warning.
var DefaultFill = Fill{DataPercent: 90, MetadataPercent: 80}

// MaxFillPercent bounds a fill threshold (and turns it off); a threshold
// below MinFillPercent would refuse even an empty pool.
const MinFillPercent, MaxFillPercent = 1, 100

// Validate says which threshold is out of [MinFillPercent, MaxFillPercent].
func (f Fill) Validate() error {
	for _, t := range []struct {
		name string
		p    int32
	}{{"data", f.DataPercent}, {"metadata", f.MetadataPercent}} {
		if t.p < MinFillPercent || t.p > MaxFillPercent {
			return fmt.Errorf("thin pool %s fill threshold %d%% is not in [%d, %d]", t.name, t.p, MinFillPercent, MaxFillPercent)
		}
	}
	return nil
}

// DefaultStaleAfter is three of the agent's default heartbeat intervals
// (agent/nodestorage.DefaultHeartbeatInterval, 2m): one missed write is
// noise, three mean the agent or its lvm is stuck, and volumes placed
// there would only time out in CreateVolume.
const DefaultStaleAfter = 3 * 2 * time.Minute

type node struct {
	name string
	// hasNLS: the node's NodeLocalStorage exists.
	hasNLS bool
	// fault is why the NLS says the node's storage is broken (state
	// DiskFault), "" if it does not; heartbeat is its lastHeartbeatTime
	// (zero: never written, e.g. an NLS an operator made by hand).
	fault     string
	heartbeat time.Time
	// vgs and devices are sorted by name, pools by VG and name. Entries
	// the NLS does not list are kept (unschedulable) while LocalVolumes or
	// reservations use them.
	vgs     []vg
	devices []device
	pools   []pool
}

type vg struct {
	name        string
	schedulable bool
	capacity    int64
	// extent is the VG's extent size: a volume takes its size rounded up
	// to it (v1alpha1.DefaultExtentSize until the NLS says).
	extent int64
	// pvs is the VG's PV count: the most stripes a striping LV can have.
	pvs      int
	used     int64 // LocalVolumes, each rounded up to extent
	reserved int64 // reservation items not covered by their LocalVolume, rounded the same way
}

func (g *vg) free() int64 { return g.capacity - g.used - g.reserved }

// take is the space a volume of size takes in the VG (see v1alpha1.LVTake).
func (g *vg) take(size int64, striped bool) int64 {
	return v1alpha1.LVTake(size, g.extent, striped, g.pvs)
}

// pool is a thin pool: thin volumes are counted by virtual size against its
// allocatable (overprovision ratio × size), not against the VG.
type pool struct {
	vg, name    string
	schedulable bool
	capacity    int64
	used        int64
	reserved    int64
	// dataPercent and metadataPercent are the pool's fill as the NLS says,
	// -1 when unknown.
	dataPercent, metadataPercent int32
}

// overFilled reports the first of the pool's fills above its threshold
// in f: "data" or "metadata", the fill and the threshold.
func (p *pool) overFilled(f Fill) (what string, fill, threshold int32, over bool) {
	return f.exceeded(p.dataPercent, p.metadataPercent)
}

// Exceeded applies the rule to a pool's status (for reporting a pool that
// crosses a threshold): the first fill above its threshold.
func (f Fill) Exceeded(p v1alpha1.ThinPool) (what string, fill, threshold int32, over bool) {
	return f.exceeded(knownPercent(p.DataPercent), knownPercent(p.MetadataPercent))
}

// exceeded: data, then metadata; -1 (unknown) never exceeds.
func (f Fill) exceeded(data, metadata int32) (what string, fill, threshold int32, over bool) {
	switch {
	case data > f.DataPercent:
		return "data", data, f.DataPercent, true
	case metadata > f.MetadataPercent:
		return "metadata", metadata, f.MetadataPercent, true
	}
	return "", 0, 0, false
}

func (p *pool) free() int64 { return p.capacity - p.used - p.reserved }

func cmpPool(p pool, key [2]string) int {
	if c := cmpString(p.vg, key[0]); c != 0 {
		return c
	}
	return cmpString(p.name, key[1])
}

func (n *node) poolIndex(vg, name string) int {
	i, ok := slices.BinarySearchFunc(n.pools, [2]string{vg, name}, cmpPool)
	if !ok {
		return -1
	}
	return i
}

// poolFor returns the pool entry, creating an unschedulable one if needed.
func (n *node) poolFor(vg, name string) *pool {
	i, ok := slices.BinarySearchFunc(n.pools, [2]string{vg, name}, cmpPool)
	if !ok {
		n.pools = slices.Insert(n.pools, i, pool{vg: vg, name: name})
	}
	return &n.pools[i]
}

type device struct {
	name        string
	mediaType   string
	size        int64
	schedulable bool
	// usedBy are the LocalVolumes naming the device, sorted. A set, not
	// one name: with one name a second claim overwrote the first and
	// deleting either made the disk look free while the other still had
	// it. More than one is a fault (DeviceUsage.Conflict).
	usedBy     []string
	reservedBy string // reservation item's LocalVolume name
}

func (d *device) available() bool {
	return d.schedulable && len(d.usedBy) == 0 && d.reservedBy == ""
}

func (d *device) hold(name string) {
	if i, ok := slices.BinarySearch(d.usedBy, name); !ok {
		d.usedBy = slices.Insert(d.usedBy, i, name)
	}
}

func (d *device) release(name string) {
	if i, ok := slices.BinarySearch(d.usedBy, name); ok {
		d.usedBy = slices.Delete(d.usedBy, i, i+1)
	}
}

// volume is the accounting view of one LocalVolume.
type volume struct {
	uid      types.UID
	node     string
	kind     v1alpha1.VolumeType
	target   string // VG or device
	pool     string // thin pool in target, if thin
	size     int64  // as counted (v1alpha1.LocalVolumeSpec.CountedSize)
	striped  bool   // lvmType striping: counted as v1alpha1.LVTake says
	deleting bool
	// taken is what account added to its VG's used (size rounded up to
	// the VG's extent then), so unaccount takes away the same.
	taken int64
}

// New returns an empty ledger.
func New() *Ledger {
	return &Ledger{
		nodes:        map[string]*node{},
		volumes:      map[string]volume{},
		reservations: map[types.UID]*Reservation{},
		items:        map[string]*item{},
		inline:       map[string]inlineVolume{},
		now:          time.Now,
		staleAfter:   DefaultStaleAfter,
		fill:         DefaultFill,
	}
}

// SetFill sets the thin pool fill thresholds (see Fill; validated by the
// caller: the scheduler's args).
func (l *Ledger) SetFill(f Fill) {
	l.mu.Lock()
	l.fill = f
	l.mu.Unlock()
}

// SetClock sets the time source and the heartbeat age after which a node
// is unschedulable (<= 0: heartbeats are not judged). For tests and for
// agents run with a non-default heartbeat interval.
func (l *Ledger) SetClock(now func() time.Time, staleAfter time.Duration) {
	l.mu.Lock()
	l.now, l.staleAfter = now, staleAfter
	l.mu.Unlock()
}

// unavailable says why a node with an NLS cannot take new volumes whatever
// its free space (nil: it can).
func (l *Ledger) unavailable(n *node) *Shortfall {
	if n.fault != "" {
		return &Shortfall{Kind: NodeUnavailable, Node: n.name, Fault: n.fault}
	}
	if l.staleAfter > 0 && !n.heartbeat.IsZero() {
		if age := l.now().Sub(n.heartbeat); age > l.staleAfter {
			return &Shortfall{Kind: NodeUnavailable, Node: n.name, Stale: age.Truncate(time.Second)}
		}
	}
	return nil
}

// OnFreed registers f to be called after any change that may let a waiting
// pod fit. f runs outside the ledger lock and must not block.
func (l *Ledger) OnFreed(f func()) {
	l.mu.Lock()
	l.freed = f
	l.mu.Unlock()
}

// unlockAndNotify releases the write lock, then calls the freed hook if
// the change may have made room.
func (l *Ledger) unlockAndNotify(freed bool) {
	f := l.freed
	l.mu.Unlock()
	if freed && f != nil {
		f()
	}
}

func (l *Ledger) nodeFor(name string) *node {
	n := l.nodes[name]
	if n == nil {
		n = &node{name: name}
		l.nodes[name] = n
	}
	return n
}

// dropIfEmpty forgets a node that has neither an NLS nor usage.
func (l *Ledger) dropIfEmpty(n *node) {
	if !n.hasNLS && len(n.vgs) == 0 && len(n.devices) == 0 && len(n.pools) == 0 {
		delete(l.nodes, n.name)
	}
}

func (n *node) vgIndex(name string) int {
	i, ok := slices.BinarySearchFunc(n.vgs, name, func(g vg, name string) int { return cmpString(g.name, name) })
	if !ok {
		return -1
	}
	return i
}

func (n *node) deviceIndex(name string) int {
	i, ok := slices.BinarySearchFunc(n.devices, name, func(d device, name string) int { return cmpString(d.name, name) })
	if !ok {
		return -1
	}
	return i
}

// vgFor returns the VG entry, creating an unschedulable one if needed.
func (n *node) vgFor(name string) *vg {
	i, ok := slices.BinarySearchFunc(n.vgs, name, func(g vg, name string) int { return cmpString(g.name, name) })
	if !ok {
		n.vgs = slices.Insert(n.vgs, i, vg{name: name})
	}
	return &n.vgs[i]
}

func (n *node) deviceFor(name string) *device {
	i, ok := slices.BinarySearchFunc(n.devices, name, func(d device, name string) int { return cmpString(d.name, name) })
	if !ok {
		n.devices = slices.Insert(n.devices, i, device{name: name})
	}
	return &n.devices[i]
}

// prune removes unschedulable entries nothing uses any more.
func (n *node) prune() {
	n.vgs = slices.DeleteFunc(n.vgs, func(g vg) bool { return !g.schedulable && g.used == 0 && g.reserved == 0 })
	n.devices = slices.DeleteFunc(n.devices, func(d device) bool { return !d.schedulable && len(d.usedBy) == 0 && d.reservedBy == "" })
	n.pools = slices.DeleteFunc(n.pools, func(p pool) bool { return !p.schedulable && p.used == 0 && p.reserved == 0 })
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// SetNodeStorage applies a NodeLocalStorage (add or update): capacity of
// the VGs and devices its status lists in filteredStorageInfo. Usage is
// kept.
func (l *Ledger) SetNodeStorage(nls *v1alpha1.NodeLocalStorage) {
	name := nls.Spec.NodeName
	if name == "" {
		name = nls.Name
	}
	l.setNodeStorage(name, nls)
}

// setNodeStorage is SetNodeStorage for the node called name, whatever nls
// names (ForNode's callers read an object of that name).
func (l *Ledger) setNodeStorage(name string, nls *v1alpha1.NodeLocalStorage) {
	l.mu.Lock()
	n := l.nodeFor(name)
	grew := !n.hasNLS
	n.hasNLS = true

	st := &nls.Status
	state := &st.NodeStorageInfo.State
	fault := ""
	if state.Type == v1alpha1.StorageFault {
		fault = string(v1alpha1.StorageFault)
		if state.Reason != "" {
			fault += " (" + state.Reason + ")"
		}
	}
	var heartbeat time.Time
	if state.LastHeartbeatTime != nil {
		heartbeat = state.LastHeartbeatTime.Time
	}
	if (n.fault != "" && fault == "") || heartbeat.After(n.heartbeat) {
		grew = true // a node coming back may let waiting pods fit
	}
	n.fault, n.heartbeat = fault, heartbeat
	wantVG := map[string]*v1alpha1.VolumeGroup{}
	for i := range st.NodeStorageInfo.VolumeGroups {
		g := &st.NodeStorageInfo.VolumeGroups[i]
		wantVG[g.Name] = g
	}
	filteredVG := map[string]bool{}
	for _, name := range st.FilteredStorageInfo.VolumeGroups {
		if g := wantVG[name]; g != nil && g.Condition != v1alpha1.StorageFault {
			filteredVG[name] = true
		}
	}
	for i := range n.vgs {
		g := &n.vgs[i]
		if !filteredVG[g.name] {
			g.schedulable, g.capacity = false, 0
		}
	}
	for name := range filteredVG {
		g := n.vgFor(name)
		capacity := clampInt64(wantVG[name].Allocatable)
		if !g.schedulable || capacity > g.capacity {
			grew = true
		}
		g.schedulable, g.capacity = true, capacity
		extent, pvs := clampInt64(wantVG[name].ExtentSize), len(wantVG[name].PhysicalVolumes)
		if extent != g.extent || pvs != g.pvs {
			g.extent, g.pvs = extent, pvs
			if l.retake(n, name) {
				grew = true
			}
		}
	}
	// Thin pools of the schedulable VGs.
	wantPool := map[[2]string]v1alpha1.ThinPool{}
	for name := range filteredVG {
		for _, p := range wantVG[name].ThinPools {
			wantPool[[2]string{name, p.Name}] = p
		}
	}
	for i := range n.pools {
		p := &n.pools[i]
		if _, ok := wantPool[[2]string{p.vg, p.name}]; !ok {
			p.schedulable, p.capacity = false, 0
		}
	}
	for key, st := range wantPool {
		p := n.poolFor(key[0], key[1])
		capacity, data, metadata := clampInt64(st.Allocatable), knownPercent(st.DataPercent), knownPercent(st.MetadataPercent)
		if !p.schedulable || capacity > p.capacity || data < p.dataPercent || metadata < p.metadataPercent {
			grew = true
		}
		p.schedulable, p.capacity, p.dataPercent, p.metadataPercent = true, capacity, data, metadata
	}

	filteredDev := map[string]bool{}
	for _, name := range st.FilteredStorageInfo.Devices {
		filteredDev[name] = true
	}
	for i := range n.devices {
		if d := &n.devices[i]; !filteredDev[d.name] {
			d.schedulable = false
		}
	}
	for i := range st.NodeStorageInfo.DeviceInfos {
		di := &st.NodeStorageInfo.DeviceInfos[i]
		if !filteredDev[di.Name] {
			continue
		}
		d := n.deviceFor(di.Name)
		schedulable := !di.ReadOnly && di.Condition != v1alpha1.StorageFault
		if schedulable && (!d.schedulable || clampInt64(di.Total) > d.size) {
			grew = true
		}
		d.schedulable, d.mediaType, d.size = schedulable, di.MediaType, clampInt64(di.Total)
	}
	n.prune()
	l.unlockAndNotify(grew)
}

// RemoveNodeStorage forgets a node's capacity (its NodeLocalStorage is
// gone); usage by LocalVolumes is kept until they are gone too.
func (l *Ledger) RemoveNodeStorage(nodeName string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.nodes[nodeName]
	if n == nil {
		return
	}
	n.hasNLS, n.fault, n.heartbeat = false, "", time.Time{}
	for i := range n.vgs {
		n.vgs[i].schedulable, n.vgs[i].capacity = false, 0
	}
	for i := range n.devices {
		n.devices[i].schedulable = false
	}
	for i := range n.pools {
		n.pools[i].schedulable, n.pools[i].capacity = false, 0
	}
	n.prune()
	l.dropIfEmpty(n)
}

func clampInt64(v uint64) int64 {
	if v > 1<<62 {
		return 1 << 62
	}
	return int64(v)
}

// SetVolume applies a LocalVolume (add or update).
func (l *Ledger) SetVolume(lv *v1alpha1.LocalVolume) {
	v := volume{
		uid:      lv.UID,
		node:     lv.Spec.NodeName,
		kind:     lv.Spec.VolumeType,
		size:     lv.Spec.Size.Value(),
		deleting: lv.DeletionTimestamp != nil,
	}
	if v.kind == v1alpha1.VolumeTypeDevice {
		v.target = lv.Spec.Device
	} else {
		v.kind, v.target, v.pool, v.size = v1alpha1.VolumeTypeLVM, lv.Spec.VGName, lv.Spec.ThinPool, lv.CountedSize()
		v.striped = lv.Spec.Striped()
	}
	l.mu.Lock()
	old, existed := l.volumes[lv.Name]
	if existed {
		l.unaccount(lv.Name, old)
	}
	inlineFreed := l.coverInline(lv.Name, true)
	l.account(lv.Name, &v)
	l.volumes[lv.Name] = v
	freed := inlineFreed && (v.node != l.inline[lv.Name].v.node || v.target != l.inline[lv.Name].v.target)
	if it := l.items[lv.Name]; it != nil {
		l.recount(it)
		if it.persisted {
			l.dropItem(it)
		}
	}
	// A shrink of an existing allocation frees space (never expected, but
	// the ledger follows what the objects say).
	if existed && (old.node != v.node || old.target != v.target || old.pool != v.pool || v.size < old.size || v.taken < old.taken) {
		freed = true
	}
	l.unlockAndNotify(freed)
}

// RemoveVolume forgets a LocalVolume that is gone.
func (l *Ledger) RemoveVolume(name string) {
	l.mu.Lock()
	old, existed := l.volumes[name]
	if existed {
		delete(l.volumes, name)
		l.unaccount(name, old)
		l.coverInline(name, false)
	}
	if it := l.items[name]; it != nil {
		if it.persisted {
			// Persisted and gone before we saw it: nothing left to hold.
			l.dropItem(it)
		} else {
			l.recount(it)
		}
	}
	l.unlockAndNotify(existed)
}

// account adds a volume to its node's usage; the caller stores v after.
func (l *Ledger) account(name string, v *volume) {
	n := l.nodeFor(v.node)
	if v.kind == v1alpha1.VolumeTypeDevice {
		n.deviceFor(v.target).hold(name)
		return
	}
	if v.pool != "" {
		n.poolFor(v.target, v.pool).used += v.size
		return
	}
	g := n.vgFor(v.target)
	v.taken = g.take(v.size, v.striped)
	g.used += v.taken
}

// retake recounts the volumes and reservation items of one VG after its
// extent size or PV count changed; it reports whether that freed space.
func (l *Ledger) retake(n *node, vgName string) bool {
	g := n.vgFor(vgName)
	before := g.used + g.reserved
	for name, v := range l.volumes {
		if v.node == n.name && v.kind == v1alpha1.VolumeTypeLVM && v.pool == "" && v.target == vgName {
			g.used += g.take(v.size, v.striped) - v.taken
			v.taken = g.take(v.size, v.striped)
			l.volumes[name] = v
		}
	}
	for name, e := range l.inline {
		if e.counted && e.v.node == n.name && e.v.target == vgName {
			g.used += g.take(e.v.size, e.v.striped) - e.v.taken
			e.v.taken = g.take(e.v.size, e.v.striped)
			l.inline[name] = e
		}
	}
	for _, it := range l.items {
		if it.counted && it.res.Node == n.name && it.volume.Type != v1alpha1.VolumeTypeDevice && it.pool == "" && it.target == vgName {
			g.reserved += g.take(it.volume.Size, it.volume.Striped) - it.taken
			it.taken = g.take(it.volume.Size, it.volume.Striped)
		}
	}
	return g.used+g.reserved < before
}

func (l *Ledger) unaccount(name string, v volume) {
	n := l.nodes[v.node]
	if n == nil {
		return
	}
	if v.kind == v1alpha1.VolumeTypeDevice {
		if i := n.deviceIndex(v.target); i >= 0 {
			n.devices[i].release(name)
		}
	} else if v.pool != "" {
		if i := n.poolIndex(v.target, v.pool); i >= 0 {
			n.pools[i].used -= v.size
		}
	} else if i := n.vgIndex(v.target); i >= 0 {
		n.vgs[i].used -= v.taken
	}
	n.prune()
	l.dropIfEmpty(n)
}

// VolumeState is what the ledger knows about one LocalVolume name.
type VolumeState struct {
	// Node holds the volume (a LocalVolume or an in-flight reservation).
	Node string
	// Target is the VG or device.
	Target string
	// Exists: a LocalVolume object was seen (else it is only reserved).
	Exists bool
	// Deleting: the LocalVolume is being deleted.
	Deleting bool
	// Owner is the reserving pod, for reservations.
	Owner types.UID
}

// Volume reports who holds the LocalVolume name, if anyone.
func (l *Ledger) Volume(name string) (VolumeState, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if v, ok := l.volumes[name]; ok {
		return VolumeState{Node: v.node, Target: v.target, Exists: true, Deleting: v.deleting}, true
	}
	if e, ok := l.inline[name]; ok {
		return VolumeState{Node: e.v.node, Target: e.v.target, Owner: e.owner}, true
	}
	if it := l.items[name]; it != nil {
		return VolumeState{Node: it.res.Node, Target: it.target, Owner: it.res.Owner}, true
	}
	return VolumeState{}, false
}

// HasStorage reports whether the node offers any local storage to schedule.
func (l *Ledger) HasStorage(nodeName string) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	n := l.nodes[nodeName]
	if n == nil || !n.hasNLS {
		return false
	}
	for i := range n.vgs {
		if n.vgs[i].schedulable {
			return true
		}
	}
	for i := range n.devices {
		if n.devices[i].schedulable {
			return true
		}
	}
	return false
}

// Stats are the ledger's sizes, for metrics.
type Stats struct {
	Nodes, Volumes, Reservations int
	// InlineVolumes are counted from assigned pods (SetInline).
	InlineVolumes int
}

// Stats returns the ledger's sizes.
func (l *Ledger) Stats() Stats {
	l.mu.RLock()
	defer l.mu.RUnlock()
	s := Stats{Volumes: len(l.volumes), Reservations: len(l.reservations), InlineVolumes: len(l.inline)}
	for _, n := range l.nodes {
		if n.hasNLS {
			s.Nodes++
		}
	}
	return s
}

// VGUsage is one VG's account.
type VGUsage struct {
	Node, VG                 string
	Schedulable              bool
	Capacity, Used, Reserved int64
}

// DeviceUsage is one device's account.
type DeviceUsage struct {
	Node, Device, MediaType string
	Schedulable             bool
	Size                    int64
	// Holder is who has the device: its LocalVolumes (comma-separated,
	// more than one is a conflict) or else the reserved volume.
	Holder string
	// Holders are the LocalVolumes naming the device, sorted.
	Holders []string
}

// Conflict: more than one LocalVolume names the device. Nobody new gets
// it; the agent serves only the first (agent/volumes) and an operator
// must delete the others.
func (u DeviceUsage) Conflict() bool { return len(u.Holders) > 1 }

// PoolUsage is one thin pool's account (virtual sizes).
type PoolUsage struct {
	Node, VG, Pool           string
	Schedulable              bool
	Capacity, Used, Reserved int64
}

// VisitPools calls fn for every thin pool, under the read lock.
func (l *Ledger) VisitPools(fn func(PoolUsage)) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, n := range l.nodes {
		for i := range n.pools {
			p := &n.pools[i]
			fn(PoolUsage{Node: n.name, VG: p.vg, Pool: p.name, Schedulable: p.schedulable, Capacity: p.capacity, Used: p.used, Reserved: p.reserved})
		}
	}
}

// Visit calls vgFn and devFn for every VG and device, under the read lock
// (the functions must not call back into the ledger).
func (l *Ledger) Visit(vgFn func(VGUsage), devFn func(DeviceUsage)) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, n := range l.nodes {
		for i := range n.vgs {
			g := &n.vgs[i]
			if vgFn != nil {
				vgFn(VGUsage{Node: n.name, VG: g.name, Schedulable: g.schedulable, Capacity: g.capacity, Used: g.used, Reserved: g.reserved})
			}
		}
		for i := range n.devices {
			d := &n.devices[i]
			if devFn != nil {
				holder := strings.Join(d.usedBy, ",")
				if holder == "" {
					holder = d.reservedBy
				}
				devFn(DeviceUsage{Node: n.name, Device: d.name, MediaType: d.mediaType, Schedulable: d.schedulable, Size: d.size,
					Holder: holder, Holders: slices.Clone(d.usedBy)})
			}
		}
	}
}

// knownPercent is a reported fill percentage, -1 when unknown.
func knownPercent(p *int32) int32 {
	if p == nil {
		return -1
	}
	return *p
}

// NodeState is a node's agent as the ledger judges it.
type NodeState struct {
	Node string
	// HasNLS: the node's NodeLocalStorage exists.
	HasNLS bool
	// HeartbeatAge is the age of the NodeLocalStorage's lastHeartbeatTime;
	// negative when none was written.
	HeartbeatAge time.Duration
	// Unavailable is why the node takes no new volumes: "stale" (the
	// heartbeat is older than the stale limit) or the NLS fault ("DiskFault
	// (reason)"); empty when it takes them.
	Unavailable string
}

// VisitNodes calls fn for every node, under the read lock.
func (l *Ledger) VisitNodes(fn func(NodeState)) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, n := range l.nodes {
		s := NodeState{Node: n.name, HasNLS: n.hasNLS, HeartbeatAge: -1}
		if !n.heartbeat.IsZero() {
			s.HeartbeatAge = l.now().Sub(n.heartbeat)
		}
		if sf := l.unavailable(n); n.hasNLS && sf != nil {
			s.Unavailable = sf.Fault
			if sf.Fault == "" {
				s.Unavailable = "stale"
			}
		}
		fn(s)
	}
}
