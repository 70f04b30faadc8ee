package plugin

import (
	"fmt"
	"sort"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/types"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/podvolumes"
	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// volumeSpec is one local volume of the pod and what its LocalVolume will
// say (podvolumes computes it; kubectl open-local why shows the same).
type volumeSpec = podvolumes.Need

// podState is the pod's local-volume needs, computed once in PreFilter.
// It is shared by the cycle's clones (Clone returns the same pointer):
// only Reserve, PreBind and Unreserve write it, and they run one at a time.
type podState struct {
	// specs of every local volume still to allocate, by LocalVolume name.
	specs map[string]*volumeSpec
	// req is what needs capacity, in planning order.
	req *ledger.Request
	// node, when set, is the only node the pod can use: a volume is
	// already allocated there or its source lives there; why says which
	// ("pvc default/data is allocated there").
	node, why string
	// hasLocal: the pod uses local volumes at all (allocated or not).
	hasLocal bool
	// heldClaims are the pod's claims whose LocalVolume exists already
	// (they pin it to node); PostFilter checks them for a partial
	// allocation an interrupted cycle left.
	heldClaims []heldClaim

	// Written by Reserve: the node and the placement.
	reservedNode string
	assignments  []ledger.Assignment
	// Written by PreBind: LocalVolumes it created (Unreserve deletes them).
	created []createdVolume
}

type createdVolume struct {
	name string
	uid  types.UID
}

// Clone shares the state: it is read-only where cycles may run in parallel.
func (s *podState) Clone() fwk.StateData { return s }

const stateKey fwk.StateKey = Name

func getState(cs fwk.CycleState) (*podState, error) {
	d, err := cs.Read(stateKey)
	if err != nil {
		return nil, fmt.Errorf("%s: no PreFilter state: %w", Name, err)
	}
	s, ok := d.(*podState)
	if !ok {
		return nil, fmt.Errorf("%s: state is %T", Name, d)
	}
	return s, nil
}

// needError is a problem with one of the pod's volumes: the pod (only
// this pod, alibaba/open-local#211) is unschedulable until the object is fixed.
type needError struct {
	code fwk.Code
	msg  string
}

func (e *needError) Error() string { return e.msg }

func unresolvable(format string, a ...any) *needError {
	return &needError{code: fwk.UnschedulableAndUnresolvable, msg: fmt.Sprintf(format, a...)}
}

func unschedulable(format string, a ...any) *needError {
	return &needError{code: fwk.Unschedulable, msg: fmt.Sprintf(format, a...)}
}

// podNeeds computes the pod's local-volume needs. It returns nil when the
// pod has no local volumes of ours.
func (pl *OpenLocal) podNeeds(pod *v1.Pod) (*podState, *needError) {
	st := &podState{specs: map[string]*volumeSpec{}}
	var vols []ledger.Volume
	pin := func(node, why string) *needError {
		if st.node == "" {
			st.node, st.why = node, why
			return nil
		}
		if st.node != node {
			return unresolvable("volumes pin the pod to two nodes: %s (%s) and %s (%s)", st.node, st.why, node, why)
		}
		return nil
	}
	for i := range pod.Spec.Volumes {
		vol := &pod.Spec.Volumes[i]
		if vol.PersistentVolumeClaim == nil && vol.Ephemeral == nil && (vol.CSI == nil || !pl.ours[vol.CSI.Driver]) {
			continue
		}
		spec, _, err := podvolumes.Of(pod, vol, listerLookup{pl}, pl.isOurs, pl.defaultInlineSize)
		switch {
		case podvolumes.IsRefusal(err):
			return nil, unresolvable("%v", err)
		case err != nil:
			return nil, &needError{code: fwk.Error, msg: err.Error()}
		case spec == nil:
			continue
		}
		st.hasLocal = true
		// Someone already holds this volume: it pins the pod, needs nothing.
		if held, ok := pl.ledger.Volume(spec.Name); ok && held.Owner != pod.UID {
			if held.Deleting {
				return nil, unschedulable("LocalVolume %s of %s is being deleted; waiting until it is gone", spec.Name, spec.Desc)
			}
			if err := pin(held.Node, spec.Desc+" is allocated there"); err != nil {
				return nil, err
			}
			if held.Exists && spec.ClaimRef != nil {
				st.heldClaims = append(st.heldClaims, heldClaim{volume: spec.Name, claim: *spec.ClaimRef})
			}
			continue
		}
		if spec.Source != nil || spec.Snapshot != "" {
			if err := pl.pinToSource(spec, pin); err != nil {
				return nil, err
			}
		}
		st.specs[spec.Name] = spec
		vols = append(vols, spec.Volume)
	}
	if !st.hasLocal {
		return nil, nil
	}
	st.req = ledger.NewRequest(vols)
	return st, nil
}

// listerLookup gives podvolumes the scheduler's informer caches.
type listerLookup struct{ pl *OpenLocal }

func (l listerLookup) Claim(namespace, name string) (*v1.PersistentVolumeClaim, error) {
	return l.pl.pvcLister.PersistentVolumeClaims(namespace).Get(name)
}

func (l listerLookup) Class(name string) (*storagev1.StorageClass, error) {
	return l.pl.scLister.Get(name)
}

func (pl *OpenLocal) isOurs(driver string) bool { return pl.ours[driver] }

// pinToSource pins a restored or cloned volume to the node and VG of its
// source: an LVM copy is made from the origin LV.
func (pl *OpenLocal) pinToSource(spec *volumeSpec, pin func(node, why string) *needError) *needError {
	if spec.Snapshot != "" {
		name, err := pl.snapshots.localVolumeOf(spec.ClaimRef.Namespace, spec.Snapshot)
		if err != nil {
			return err
		}
		spec.Source = &v1alpha1.LocalVolumeSource{Snapshot: name}
	}
	src := spec.Source
	origin := src.Snapshot
	if origin == "" {
		origin = src.Volume
	}
	lv, err := pl.lvLister.Get(origin)
	if err != nil {
		return unschedulable("%s: source LocalVolume %s not found yet", spec.Desc, origin)
	}
	if spec.VG != "" && spec.VG != lv.Spec.VGName {
		return unresolvable("%s: storageclass vgName %s differs from the source's VG %s", spec.Desc, spec.VG, lv.Spec.VGName)
	}
	spec.VG = lv.Spec.VGName
	if src.Snapshot != "" && lv.Spec.ReadOnly {
		// open-local's read-only snapshot: the volume is the snapshot's LV,
		// published read-only; it takes no space (docs/localvolume.md).
		spec.ReadOnly, spec.ThinPool, spec.Size = true, "", 0
	}
	return pin(lv.Spec.NodeName, fmt.Sprintf("%s is copied from %s there", spec.Desc, origin))
}

// sortedNames lists the keys of specs in order, for deterministic output.
func sortedNames(specs map[string]*volumeSpec) []string {
	names := make([]string, 0, len(specs))
	for n := range specs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
