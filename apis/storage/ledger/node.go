package ledger

import (
	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// ForNode is the ledger of one node as read from the API (see AddNode):
// what the CSI controller, the CSI node's inline fallback and the agent's
// admission check a new LV against, so that they count exactly what the
// scheduler counts. Fill thresholds are DefaultFill until SetFill.
func ForNode(node string, nls *v1alpha1.NodeLocalStorage, volumes []*v1alpha1.LocalVolume) *Ledger {
	l := New()
	l.AddNode(node, nls, volumes)
	return l
}

// AddNode accounts node's NodeLocalStorage (nil: the node has none, so it
// takes no volume) and the LocalVolumes of volumes that are on node (the
// others are skipped: a caller's list may be of every node). The NLS is
// read, not changed: it counts for node even when its spec.nodeName is
// empty or stale.
func (l *Ledger) AddNode(node string, nls *v1alpha1.NodeLocalStorage, volumes []*v1alpha1.LocalVolume) {
	if nls != nil {
		l.setNodeStorage(node, nls)
	}
	for _, lv := range volumes {
		if lv.Spec.NodeName == node {
			l.SetVolume(lv)
		}
	}
}

// Admit is the node agent's check before it spends VG space (an lvcreate,
// an lvextend, a thin pool): the Shortfall (VGFull, NoVGFits or PoolFull)
// when v does not fit its VG's or pool's allocatable beside everything the
// ledger counts, nil when it fits or when the answer is not about room (a
// VG or pool the status does not list yet, a fault or a stale heartbeat of
// the asking agent itself): then LVM decides, as it always did.
func (l *Ledger) Admit(node string, v Volume) *Shortfall {
	_, sf := l.Place(node, v, Spread)
	if sf == nil {
		return nil
	}
	switch sf.Kind {
	case VGFull, NoVGFits, PoolFull:
		return sf
	}
	return nil
}
