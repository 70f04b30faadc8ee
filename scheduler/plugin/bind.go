package plugin

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// apiTimeout bounds each API call of the binding cycle.
const apiTimeout = 30 * time.Second

// Reserve re-checks the placement on the chosen node under the ledger lock
// and holds the space until the LocalVolumes are seen, for inline volumes
// until the bound pod is (podChanged), or Unreserve.
func (pl *OpenLocal) Reserve(ctx context.Context, cs fwk.CycleState, pod *v1.Pod, nodeName string) *fwk.Status {
	st, err := getState(cs)
	if err != nil {
		return fwk.AsStatus(err)
	}
	if st.req.Empty() {
		return nil
	}
	r, sf := pl.ledger.Reserve(pod.UID, nodeName, st.req, pl.strategy)
	if sf != nil {
		reserveConflict.Inc()
		pl.waiting.add(pod)
		klog.FromContext(ctx).V(2).Info("Reservation failed on re-check", "pod", klog.KObj(pod), "node", nodeName, "reason", sf.Detail())
		return fwk.NewStatus(fwk.Unschedulable, sf.Detail())
	}
	reserveOK.Inc()
	pl.waiting.remove(pod)
	st.reservedNode, st.assignments, st.created = nodeName, r.Assignments, nil
	return nil
}

// Unreserve gives the held space back and deletes the LocalVolumes this
// cycle's PreBind created, unless their PVC got bound meanwhile (then the
// volume is real and stays).
func (pl *OpenLocal) Unreserve(ctx context.Context, cs fwk.CycleState, pod *v1.Pod, _ string) {
	pl.ledger.Release(pod.UID)
	unreserved.Inc()
	st, err := getState(cs)
	if err != nil || len(st.created) == 0 {
		return
	}
	logger := klog.FromContext(ctx)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), apiTimeout)
	defer cancel()
	for _, c := range st.created {
		spec := st.specs[c.name]
		if spec != nil && spec.ClaimRef != nil {
			if pvc, err := pl.pvcLister.PersistentVolumeClaims(spec.ClaimRef.Namespace).Get(spec.ClaimRef.Name); err == nil && pvc.Spec.VolumeName != "" {
				continue
			}
		}
		// Only the object this cycle created, not a successor of the same name.
		opts := metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &c.uid}}
		if err := pl.client.CsiV1alpha1().LocalVolumes().Delete(ctx, c.name, opts); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			logger.Error(err, "Could not delete the LocalVolume of a failed binding", "localVolume", c.name, "pod", klog.KObj(pod))
			continue
		}
		localVolumesDeleted.Inc()
	}
	st.created = nil
}

// PreBindPreFlight: PreBind runs for pods with local volumes, never in
// parallel with VolumeBinding's (it must finish first).
func (pl *OpenLocal) PreBindPreFlight(_ context.Context, cs fwk.CycleState, _ *v1.Pod, _ string) (*fwk.PreBindPreFlightResult, *fwk.Status) {
	st, err := getState(cs)
	if err != nil {
		return nil, fwk.AsStatus(err)
	}
	if !st.persists() {
		return nil, fwk.NewStatus(fwk.Skip)
	}
	return &fwk.PreBindPreFlightResult{AllowParallel: false}, nil
}

// PreBind persists the reservation: one LocalVolume per volume, named
// deterministically, so a retry or a restarted scheduler finds it. It does
// not touch the PVCs (VolumeBinding's PreBind, next, updates them).
func (pl *OpenLocal) PreBind(ctx context.Context, cs fwk.CycleState, pod *v1.Pod, nodeName string) *fwk.Status {
	st, err := getState(cs)
	if err != nil {
		return fwk.AsStatus(err)
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	start := time.Now()
	defer func() { preBindDuration.Observe(time.Since(start).Seconds()) }()
	api := pl.client.CsiV1alpha1().LocalVolumes()
	for _, a := range st.assignments {
		spec := st.specs[a.Volume.Name]
		if spec == nil {
			return fwk.AsStatus(fmt.Errorf("%s: no spec for reserved volume %s", Name, a.Volume.Name))
		}
		if isInline(spec) {
			continue
		}
		lv := localVolumeFor(spec, nodeName, a.VG, a.Device)
		created, err := api.Create(ctx, lv, metav1.CreateOptions{})
		switch {
		case err == nil:
			st.created = append(st.created, createdVolume{name: created.Name, uid: created.UID})
			localVolumesCreated.Inc()
		case apierrors.IsAlreadyExists(err):
			existing, gerr := api.Get(ctx, lv.Name, metav1.GetOptions{})
			if gerr != nil {
				return fwk.AsStatus(fmt.Errorf("LocalVolume %s exists but cannot be read: %w", lv.Name, gerr))
			}
			if existing.DeletionTimestamp != nil {
				return fwk.AsStatus(fmt.Errorf("LocalVolume %s of %s is being deleted; retrying once it is gone", lv.Name, spec.Desc))
			}
			if existing.Spec.NodeName != nodeName {
				return fwk.AsStatus(fmt.Errorf("LocalVolume %s of %s already exists on node %s, not %s", lv.Name, spec.Desc, existing.Spec.NodeName, nodeName))
			}
			// A retry of our own, or the CSI controller was first: same node is fine.
			localVolumesExisting.Inc()
		default:
			return fwk.AsStatus(fmt.Errorf("create LocalVolume %s for %s: %w", lv.Name, spec.Desc, err))
		}
		pl.ledger.MarkPersisted(pod.UID, lv.Name, time.Now())
	}
	return nil
}

// isInline: a CSI inline volume. Its bound pod is its durable record (the
// ledger counts it from the pod informer until the node's LocalVolume of
// the same handle exists), so the binding cycle writes nothing for it.
func isInline(spec *volumeSpec) bool { return spec.PodRef != nil && spec.ClaimRef == nil }

// persists: PreBind has a LocalVolume to write (a volume of a PVC).
func (s *podState) persists() bool {
	for _, a := range s.assignments {
		if spec := s.specs[a.Volume.Name]; spec == nil || !isInline(spec) {
			return true
		}
	}
	return false
}

// localVolumeFor is the allocation record of one volume.
func localVolumeFor(spec *volumeSpec, nodeName, vg, device string) *v1alpha1.LocalVolume {
	size := spec.Requested
	if size == 0 {
		size = spec.Size
	}
	lv := &v1alpha1.LocalVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:       spec.Name,
			Finalizers: []string{v1alpha1.LocalVolumeFinalizer},
		},
		Spec: v1alpha1.LocalVolumeSpec{
			NodeName: nodeName,
			Kind:     v1alpha1.KindVolume,
			Size:     *resource.NewQuantity(size, resource.BinarySI),
			Source:   spec.Source,
			ReadOnly: spec.ReadOnly,
			ClaimRef: spec.ClaimRef,
			PodRef:   spec.PodRef,
		},
	}
	if device != "" {
		lv.Spec.VolumeType, lv.Spec.Device = v1alpha1.VolumeTypeDevice, device
	} else {
		lv.Spec.VolumeType, lv.Spec.VGName, lv.Spec.LVMType, lv.Spec.ThinPool = v1alpha1.VolumeTypeLVM, vg, spec.LVMType, spec.ThinPool
	}
	return lv
}
