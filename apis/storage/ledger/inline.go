package ledger

import (
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// inlineVolume is a CSI inline volume of an assigned pod. The pod object
// records it durably (node, attributes, UID), so the scheduler writes no
// LocalVolume for it: the ledger counts it from the pod until the node's
// LocalVolume of the same name (the handle) supersedes it.
type inlineVolume struct {
	owner types.UID
	v     volume
	// counted: no LocalVolume of the same name exists, so the pod's count
	// is the one in its VG's used.
	counted bool
}

// SetInline counts v, a CSI inline volume of owner, a pod assigned to
// node (add or update; repeats are no-ops). A VG the pod does not name is
// the one its reservation chose; with none (a restarted scheduler, a pod
// another scheduler placed), the one strategy picks, as the node does.
// A reservation of owner for the volume is dropped: the pod holds it now.
func (l *Ledger) SetInline(owner types.UID, node string, v Volume, strategy Strategy) {
	l.mu.Lock()
	freed := false
	defer func() { l.unlockAndNotify(freed) }()
	if old, ok := l.inline[v.Name]; ok {
		if old.owner == owner && old.v.node == node {
			return
		}
		freed = l.removeInline(v.Name)
	}
	it := l.items[v.Name]
	if it != nil && it.res.Owner != owner {
		it = nil
	}
	vgName := v.VG
	if vgName == "" {
		vgName = l.chooseInlineVG(node, v, it, strategy)
	}
	e := inlineVolume{owner: owner, v: volume{node: node, kind: v1alpha1.VolumeTypeLVM, target: vgName, size: v.Size, striped: v.Striped}}
	if _, exists := l.volumes[v.Name]; !exists {
		l.account(v.Name, &e.v)
		e.counted = true
	}
	l.inline[v.Name] = e
	if it != nil {
		freed = freed || (it.counted && (!e.counted || it.target != vgName || it.res.Node != node))
		l.dropItem(it)
	}
}

// chooseInlineVG is the VG an inline volume without vgName is counted on.
func (l *Ledger) chooseInlineVG(node string, v Volume, it *item, strategy Strategy) string {
	if it != nil && it.res.Node == node {
		return it.target
	}
	n := l.nodes[node]
	if n == nil {
		return ""
	}
	s := getScratch()
	defer putScratch(s)
	if sf := l.plan(n, NewRequest([]Volume{v}), strategy, s); sf == nil {
		return n.vgs[s.targets[0]].name
	}
	// No room (the pod is there anyway): count it on a VG the node offers,
	// so the space is not handed out twice.
	for _, g := range n.vgs {
		if g.schedulable {
			return g.name
		}
	}
	return ""
}

// RemoveInline forgets the inline volume name of a pod that is gone
// (deleted or finished). Its LocalVolume, if any, still counts until the
// node removes it.
func (l *Ledger) RemoveInline(name string) {
	l.mu.Lock()
	freed := l.removeInline(name)
	l.unlockAndNotify(freed)
}

func (l *Ledger) removeInline(name string) bool {
	e, ok := l.inline[name]
	if !ok {
		return false
	}
	delete(l.inline, name)
	if e.counted {
		l.unaccount(name, e.v)
	}
	return e.counted
}

// coverInline hands the count of an inline volume to its LocalVolume
// (appeared: true) or back to the pod (the LocalVolume went while the pod
// is still there). The caller holds the lock; it reports whether space
// was freed.
func (l *Ledger) coverInline(name string, appeared bool) bool {
	e, ok := l.inline[name]
	if !ok || e.counted != appeared {
		return false
	}
	if appeared {
		l.unaccount(name, e.v)
	} else {
		l.account(name, &e.v)
	}
	e.counted = !appeared
	l.inline[name] = e
	return appeared
}
