package plugin

import (
	"context"
	"fmt"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
	"k8s.io/component-helpers/storage/ephemeral"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// Our CRDs as the scheduler's dynamic informers name them:
// <plural>.<version>.<group>.
const (
	NodeLocalStorageResource fwk.EventResource = "nodelocalstorages.v1alpha1.csi.aliyun.com"
	LocalVolumeResource      fwk.EventResource = "localvolumes.v1alpha1.csi.aliyun.com"
)

// EventsToRegister lists what can make a pod we rejected fit, each with a
// hint that skips events that cannot. (The VolumeSnapshot API is optional,
// so its events are not registered: an informer on a missing CRD would keep
// the scheduler from starting; a restore waits on its snapshot's
// LocalVolume instead.)
func (pl *OpenLocal) EventsToRegister(context.Context) ([]fwk.ClusterEventWithHint, error) {
	return []fwk.ClusterEventWithHint{
		// Capacity grew: an agent reported a bigger or new VG or device.
		{Event: fwk.ClusterEvent{Resource: NodeLocalStorageResource, ActionType: fwk.Add | fwk.Update}, QueueingHintFn: pl.afterNodeStorageChange},
		// Space freed; a snapshot to restore from appeared.
		{Event: fwk.ClusterEvent{Resource: LocalVolumeResource, ActionType: fwk.Add | fwk.Delete}, QueueingHintFn: pl.afterLocalVolumeChange},
		// The pod's PVC was created, bound, or changed.
		{Event: fwk.ClusterEvent{Resource: fwk.PersistentVolumeClaim, ActionType: fwk.Add | fwk.Update}, QueueingHintFn: pl.afterClaimChange},
		// A missing StorageClass was created.
		{Event: fwk.ClusterEvent{Resource: fwk.StorageClass, ActionType: fwk.Add}, QueueingHintFn: pl.afterClassAdded},
		// A volume of ours is going away: its LocalVolume follows.
		{Event: fwk.ClusterEvent{Resource: fwk.PersistentVolume, ActionType: fwk.Delete}, QueueingHintFn: pl.afterVolumeDeleted},
	}, nil
}

// asTyped converts what an informer delivers (typed in tests, unstructured
// from the scheduler's dynamic informers) into T.
func asTyped[T any, PT interface {
	*T
	runtime.Object
}](obj any) (PT, error) {
	switch o := obj.(type) {
	case nil:
		return nil, nil
	case cache.DeletedFinalStateUnknown:
		return asTyped[T, PT](o.Obj)
	case PT:
		return o, nil
	case *unstructured.Unstructured:
		out := PT(new(T))
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, out); err != nil {
			return nil, err
		}
		return out, nil
	}
	return nil, fmt.Errorf("unexpected object %T", obj)
}

func (pl *OpenLocal) afterNodeStorageChange(logger klog.Logger, pod *v1.Pod, oldObj, newObj any) (fwk.QueueingHint, error) {
	oldNLS, err := asTyped[v1alpha1.NodeLocalStorage](oldObj)
	if err != nil {
		return fwk.Queue, err
	}
	newNLS, err := asTyped[v1alpha1.NodeLocalStorage](newObj)
	if err != nil || newNLS == nil {
		return fwk.Queue, err
	}
	if capacityGrew(oldNLS, newNLS) {
		logger.V(5).Info("Node storage grew, which may make the pod schedulable", "pod", klog.KObj(pod), "nodeLocalStorage", newNLS.Name)
		return fwk.Queue, nil
	}
	return fwk.QueueSkip, nil
}

// capacityGrew: a filtered VG is new or has more allocatable, or a
// filtered, writable device is new or bigger.
func capacityGrew(oldNLS, newNLS *v1alpha1.NodeLocalStorage) bool {
	before := map[string]uint64{}
	if oldNLS != nil {
		filtered := toSet(oldNLS.Status.FilteredStorageInfo.VolumeGroups)
		for _, g := range oldNLS.Status.NodeStorageInfo.VolumeGroups {
			if filtered[g.Name] && g.Condition != v1alpha1.StorageFault {
				before["vg/"+g.Name] = g.Allocatable
			}
		}
		filtered = toSet(oldNLS.Status.FilteredStorageInfo.Devices)
		for _, d := range oldNLS.Status.NodeStorageInfo.DeviceInfos {
			if filtered[d.Name] && !d.ReadOnly && d.Condition != v1alpha1.StorageFault {
				before["dev/"+d.Name] = d.Total
			}
		}
	}
	filtered := toSet(newNLS.Status.FilteredStorageInfo.VolumeGroups)
	for _, g := range newNLS.Status.NodeStorageInfo.VolumeGroups {
		if b, ok := before["vg/"+g.Name]; filtered[g.Name] && g.Condition != v1alpha1.StorageFault && (!ok || g.Allocatable > b) {
			return true
		}
	}
	filtered = toSet(newNLS.Status.FilteredStorageInfo.Devices)
	for _, d := range newNLS.Status.NodeStorageInfo.DeviceInfos {
		if b, ok := before["dev/"+d.Name]; filtered[d.Name] && !d.ReadOnly && d.Condition != v1alpha1.StorageFault && (!ok || d.Total > b) {
			return true
		}
	}
	return false
}

func toSet(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

func (pl *OpenLocal) afterLocalVolumeChange(logger klog.Logger, pod *v1.Pod, oldObj, newObj any) (fwk.QueueingHint, error) {
	if newObj == nil {
		logger.V(5).Info("A LocalVolume is gone, which frees space", "pod", klog.KObj(pod))
		return fwk.Queue, nil
	}
	lv, err := asTyped[v1alpha1.LocalVolume](newObj)
	if err != nil {
		return fwk.Queue, err
	}
	if lv.Spec.Kind == v1alpha1.KindSnapshot {
		return fwk.Queue, nil
	}
	return fwk.QueueSkip, nil
}

func (pl *OpenLocal) afterClaimChange(_ klog.Logger, pod *v1.Pod, _, newObj any) (fwk.QueueingHint, error) {
	pvc, err := asTyped[v1.PersistentVolumeClaim](newObj)
	if err != nil || pvc == nil {
		return fwk.Queue, err
	}
	if pvc.Namespace != pod.Namespace {
		return fwk.QueueSkip, nil
	}
	for i := range pod.Spec.Volumes {
		vol := &pod.Spec.Volumes[i]
		switch {
		case vol.PersistentVolumeClaim != nil && vol.PersistentVolumeClaim.ClaimName == pvc.Name:
			return fwk.Queue, nil
		case vol.Ephemeral != nil && ephemeral.VolumeClaimName(pod, vol) == pvc.Name:
			return fwk.Queue, nil
		}
	}
	return fwk.QueueSkip, nil
}

func (pl *OpenLocal) afterClassAdded(_ klog.Logger, _ *v1.Pod, _, newObj any) (fwk.QueueingHint, error) {
	// Any new class may be the one a pod of ours was waiting for.
	if _, err := asTyped[storagev1.StorageClass](newObj); err != nil {
		return fwk.Queue, err
	}
	return fwk.Queue, nil
}

func (pl *OpenLocal) afterVolumeDeleted(_ klog.Logger, _ *v1.Pod, oldObj, _ any) (fwk.QueueingHint, error) {
	pv, err := asTyped[v1.PersistentVolume](oldObj)
	if err != nil || pv == nil {
		return fwk.Queue, err
	}
	if pv.Spec.CSI != nil && pl.ours[pv.Spec.CSI.Driver] {
		return fwk.Queue, nil
	}
	return fwk.QueueSkip, nil
}
