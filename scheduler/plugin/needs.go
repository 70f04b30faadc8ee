package plugin

import (
	"fmt"
	"sort"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/component-helpers/storage/ephemeral"
	storagehelpers "k8s.io/component-helpers/storage/volume"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/parameters"
	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// volumeSpec is one local volume of the pod and what its LocalVolume will say.
type volumeSpec struct {
	ledger.Volume
	// Requested is the size the LocalVolume records (the PVC's request);
	// Volume.Size is what the ledger counts (0 for a read-only restore).
	Requested int64
	// ReadOnly: a read-only view of its source snapshot (the snapshot was
	// taken with csi.aliyun.com/readonly).
	ReadOnly bool
	LVMType  v1alpha1.LVMType
	Source   *v1alpha1.LocalVolumeSource
	ClaimRef *v1alpha1.ObjectReference
	PodRef   *v1alpha1.ObjectReference
	// snapshot names the VolumeSnapshot a PVC is restored from, until
	// pinToSource resolves it into Source.
	snapshot string
}

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
		var spec *volumeSpec
		var err *needError
		switch {
		case vol.PersistentVolumeClaim != nil:
			spec, err = pl.claimNeed(pod, vol.PersistentVolumeClaim.ClaimName, false, vol)
		case vol.Ephemeral != nil:
			spec, err = pl.claimNeed(pod, ephemeral.VolumeClaimName(pod, vol), true, vol)
		case vol.CSI != nil && pl.ours[vol.CSI.Driver]:
			spec, err = pl.inlineNeed(pod, vol)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		if spec == nil {
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
		if spec.Source != nil || spec.snapshot != "" {
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

// claimNeed returns the volume a PVC still needs, or nil if it is not an
// unbound WaitForFirstConsumer PVC of ours. Problems VolumeBinding already
// reports (missing or lost PVCs) are left to it.
func (pl *OpenLocal) claimNeed(pod *v1.Pod, claimName string, isEphemeral bool, vol *v1.Volume) (*volumeSpec, *needError) {
	pvc, err := pl.pvcLister.PersistentVolumeClaims(pod.Namespace).Get(claimName)
	if err != nil {
		return nil, nil //nolint:nilerr // VolumeBinding reports missing PVCs
	}
	if isEphemeral && ephemeral.VolumeIsForPod(pod, pvc) != nil {
		return nil, nil
	}
	if pvc.Spec.VolumeName != "" || pvc.DeletionTimestamp != nil {
		// Bound: its LocalVolume is counted and its PV's node affinity pins the pod.
		return nil, nil
	}
	desc := fmt.Sprintf("pvc %s/%s", pvc.Namespace, pvc.Name)
	className := storagehelpers.GetPersistentVolumeClaimClass(pvc)
	if className == "" {
		return nil, nil
	}
	sc, err := pl.scLister.Get(className)
	if apierrors.IsNotFound(err) {
		return nil, unresolvable("%s: storageclass %q not found", desc, className)
	} else if err != nil {
		return nil, &needError{code: fwk.Error, msg: err.Error()}
	}
	if !pl.ours[sc.Provisioner] {
		return nil, nil
	}
	if sc.VolumeBindingMode == nil || *sc.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer {
		// Immediate binding: provisioned before scheduling, without us.
		return nil, nil
	}
	request := pvc.Spec.Resources.Requests[v1.ResourceStorage]
	size, err := parameters.ParseSize(request)
	if err != nil {
		return nil, unresolvable("%s: storage request: %v", desc, err)
	}
	spec := &volumeSpec{
		Volume:    ledger.Volume{Name: v1alpha1.PVCVolumeName(pvc.UID), Desc: desc, Size: size},
		Requested: size,
		ClaimRef:  &v1alpha1.ObjectReference{Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID},
	}
	// The parser CreateVolume runs: a class it would refuse must not get
	// space reserved and a LocalVolume written first.
	params, err := parameters.Parse(sc.Parameters)
	if err != nil {
		return nil, unresolvable("%s: storageclass %s: %v", desc, sc.Name, err)
	}
	spec.Type = params.VolumeType
	switch params.VolumeType {
	case v1alpha1.VolumeTypeLVM:
		spec.VG, spec.ThinPool, spec.LVMType, spec.Striped = params.VGName, params.ThinPool, params.LVMType, params.Striped()
	case v1alpha1.VolumeTypeDevice:
		spec.MediaType = params.MediaType
	}
	if src := dataSourceOf(pvc); src != nil {
		if spec.Type != v1alpha1.VolumeTypeLVM {
			return nil, unresolvable("%s: a %s volume cannot be restored or cloned", desc, spec.Type)
		}
		switch {
		case src.Kind == "VolumeSnapshot" && src.APIGroup != nil && *src.APIGroup == "snapshot.storage.k8s.io":
			spec.snapshot = src.Name
		case src.Kind == "PersistentVolumeClaim" && (src.APIGroup == nil || *src.APIGroup == ""):
			srcPVC, err := pl.pvcLister.PersistentVolumeClaims(pvc.Namespace).Get(src.Name)
			if err != nil {
				return nil, unresolvable("%s: source pvc %q: %v", desc, src.Name, err)
			}
			spec.Source = &v1alpha1.LocalVolumeSource{Volume: v1alpha1.PVCVolumeName(srcPVC.UID)}
		}
	}
	return spec, nil
}

func dataSourceOf(pvc *v1.PersistentVolumeClaim) *v1.TypedObjectReference {
	if r := pvc.Spec.DataSourceRef; r != nil && (r.Namespace == nil || *r.Namespace == pvc.Namespace) {
		return r
	}
	if d := pvc.Spec.DataSource; d != nil {
		return &v1.TypedObjectReference{APIGroup: d.APIGroup, Kind: d.Kind, Name: d.Name}
	}
	return nil
}

// inlineNeed is a CSI ephemeral inline volume of our driver (always LVM).
func (pl *OpenLocal) inlineNeed(pod *v1.Pod, vol *v1.Volume) (*volumeSpec, *needError) {
	desc := fmt.Sprintf("inline volume %s of pod %s/%s", vol.Name, pod.Namespace, pod.Name)
	// The parser the CSI node runs at NodePublishVolume: what it would
	// refuse must not get space first.
	attrs, err := parameters.ParseInline(vol.CSI.VolumeAttributes, pl.defaultInlineSize)
	if err != nil {
		return nil, unresolvable("%s: %v", desc, err)
	}
	if vol.CSI.FSType != nil {
		if _, err := parameters.ParseFSType(*vol.CSI.FSType); err != nil {
			return nil, unresolvable("%s: %v", desc, err)
		}
	}
	return &volumeSpec{
		Volume: ledger.Volume{Name: v1alpha1.InlineVolumeName(pod.UID, vol.Name), Desc: desc,
			Type: v1alpha1.VolumeTypeLVM, VG: attrs.VGName, Size: attrs.Size},
		Requested: attrs.Size,
		LVMType:   v1alpha1.LVMTypeLinear,
		PodRef:    &v1alpha1.ObjectReference{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
	}, nil
}

// pinToSource pins a restored or cloned volume to the node and VG of its
// source: an LVM copy is made from the origin LV.
func (pl *OpenLocal) pinToSource(spec *volumeSpec, pin func(node, why string) *needError) *needError {
	if spec.snapshot != "" {
		name, err := pl.snapshots.localVolumeOf(spec.ClaimRef.Namespace, spec.snapshot)
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
