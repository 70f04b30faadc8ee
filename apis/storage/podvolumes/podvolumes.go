/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package podvolumes says what one volume of a pod needs from the capacity
// ledger: the scheduler's PreFilter and `kubectl open-local why` both call
// it, so the plugin tells an operator exactly what the scheduler counts.
package podvolumes

import (
	"errors"
	"fmt"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/component-helpers/storage/ephemeral"
	storagehelpers "k8s.io/component-helpers/storage/volume"

	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/parameters"
	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// Need is one local volume of the pod and what its LocalVolume will say.
type Need struct {
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
	// Snapshot names the VolumeSnapshot a PVC is restored from, until the
	// caller resolves it into Source (and pins the pod to its node).
	Snapshot string
}

// Lookup is where claims and classes come from: listers in the
// scheduler, the API server in kubectl. Both return NotFound errors of
// k8s.io/apimachinery for missing objects.
type Lookup interface {
	Claim(namespace, name string) (*v1.PersistentVolumeClaim, error)
	Class(name string) (*storagev1.StorageClass, error)
}

// Refusal is a volume the driver would refuse: the pod cannot be placed
// until its objects change (the scheduler's UnschedulableAndUnresolvable).
type Refusal struct{ Msg string }

func (r *Refusal) Error() string { return r.Msg }

func refuse(format string, a ...any) *Refusal { return &Refusal{Msg: fmt.Sprintf(format, a...)} }

// IsRefusal reports whether err is a Refusal.
func IsRefusal(err error) bool {
	var r *Refusal
	return errors.As(err, &r)
}

// Skip says why a volume needs nothing from the ledger.
type Skip struct {
	// Reason, for an operator ("… binds Immediately", "… not found");
	// empty when the volume is simply not of our driver.
	Reason string
	// BoundTo is the PV of a bound claim (counted through its
	// LocalVolume, whose node pins the pod).
	BoundTo string
	// Claim is the PVC's volume name (pvc-<uid>) when a claim was found.
	Claim string
}

// Of returns what vol of pod needs. A nil Need with a Skip: nothing to
// count. A Refusal: the driver would refuse the volume. Other errors:
// the lookup failed. ours says which CSI driver names are ours;
// defaultInlineSize is the inline size when the pod does not say.
func Of(pod *v1.Pod, vol *v1.Volume, l Lookup, ours func(driver string) bool, defaultInlineSize int64) (*Need, Skip, error) {
	switch {
	case vol.PersistentVolumeClaim != nil:
		return claim(pod, vol.PersistentVolumeClaim.ClaimName, false, l, ours)
	case vol.Ephemeral != nil:
		return claim(pod, ephemeral.VolumeClaimName(pod, vol), true, l, ours)
	case vol.CSI != nil && ours(vol.CSI.Driver):
		n, err := inline(pod, vol, defaultInlineSize)
		return n, Skip{}, err
	}
	return nil, Skip{}, nil
}

// claim returns what a PVC still needs: nothing unless it is an unbound
// WaitForFirstConsumer PVC of ours. Problems VolumeBinding already reports
// (missing or lost PVCs) are skips.
func claim(pod *v1.Pod, claimName string, isEphemeral bool, l Lookup, ours func(string) bool) (*Need, Skip, error) {
	desc := fmt.Sprintf("pvc %s/%s", pod.Namespace, claimName)
	pvc, err := l.Claim(pod.Namespace, claimName)
	if apierrors.IsNotFound(err) {
		return nil, Skip{Reason: desc + " not found (VolumeBinding waits for it)"}, nil
	} else if err != nil {
		return nil, Skip{}, err
	}
	if isEphemeral {
		if err := ephemeral.VolumeIsForPod(pod, pvc); err != nil {
			return nil, Skip{Reason: err.Error()}, nil
		}
	}
	name := v1alpha1.PVCVolumeName(pvc.UID)
	switch {
	case pvc.Spec.VolumeName != "":
		return nil, Skip{Reason: desc + " is bound to PV " + pvc.Spec.VolumeName, BoundTo: pvc.Spec.VolumeName, Claim: name}, nil
	case pvc.DeletionTimestamp != nil:
		return nil, Skip{Reason: desc + " is being deleted", Claim: name}, nil
	}
	className := storagehelpers.GetPersistentVolumeClaimClass(pvc)
	if className == "" {
		return nil, Skip{Claim: name}, nil
	}
	sc, err := l.Class(className)
	if apierrors.IsNotFound(err) {
		return nil, Skip{}, refuse("%s: storageclass %q not found", desc, className)
	} else if err != nil {
		return nil, Skip{}, err
	}
	if !ours(sc.Provisioner) {
		return nil, Skip{Claim: name}, nil
	}
	if sc.VolumeBindingMode == nil || *sc.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer {
		return nil, Skip{Reason: fmt.Sprintf("%s: storageclass %s binds Immediately: provisioned before scheduling, without the scheduler's ledger", desc, sc.Name), Claim: name}, nil
	}
	size, err := parameters.ParseSize(pvc.Spec.Resources.Requests[v1.ResourceStorage])
	if err != nil {
		return nil, Skip{}, refuse("%s: storage request: %v", desc, err)
	}
	n := &Need{
		Volume:    ledger.Volume{Name: name, Desc: desc, Size: size},
		Requested: size,
		ClaimRef:  &v1alpha1.ObjectReference{Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID},
	}
	// The parser CreateVolume runs: a class it would refuse must not get
	// space reserved and a LocalVolume written first.
	params, err := parameters.Parse(sc.Parameters)
	if err != nil {
		return nil, Skip{}, refuse("%s: storageclass %s: %v", desc, sc.Name, err)
	}
	n.Type = params.VolumeType
	switch params.VolumeType {
	case v1alpha1.VolumeTypeLVM:
		n.VG, n.ThinPool, n.LVMType, n.Striped = params.VGName, params.ThinPool, params.LVMType, params.Striped()
	case v1alpha1.VolumeTypeDevice:
		n.MediaType = params.MediaType
	}
	if src := DataSourceOf(pvc); src != nil {
		if n.Type != v1alpha1.VolumeTypeLVM {
			return nil, Skip{}, refuse("%s: a %s volume cannot be restored or cloned", desc, n.Type)
		}
		switch {
		case src.Kind == "VolumeSnapshot" && src.APIGroup != nil && *src.APIGroup == "snapshot.storage.k8s.io":
			n.Snapshot = src.Name
		case src.Kind == "PersistentVolumeClaim" && (src.APIGroup == nil || *src.APIGroup == ""):
			srcPVC, err := l.Claim(pvc.Namespace, src.Name)
			if err != nil {
				return nil, Skip{}, refuse("%s: source pvc %q: %v", desc, src.Name, err)
			}
			n.Source = &v1alpha1.LocalVolumeSource{Volume: v1alpha1.PVCVolumeName(srcPVC.UID)}
		}
	}
	return n, Skip{}, nil
}

// DataSourceOf is the claim's data source: DataSourceRef (same namespace)
// wins over DataSource, as the API server's defaulting makes them agree.
func DataSourceOf(pvc *v1.PersistentVolumeClaim) *v1.TypedObjectReference {
	if r := pvc.Spec.DataSourceRef; r != nil && (r.Namespace == nil || *r.Namespace == pvc.Namespace) {
		return r
	}
	if d := pvc.Spec.DataSource; d != nil {
		return &v1.TypedObjectReference{APIGroup: d.APIGroup, Kind: d.Kind, Name: d.Name}
	}
	return nil
}

// inline is a CSI ephemeral inline volume of our driver (always LVM).
func inline(pod *v1.Pod, vol *v1.Volume, defaultSize int64) (*Need, error) {
	desc := fmt.Sprintf("inline volume %s of pod %s/%s", vol.Name, pod.Namespace, pod.Name)
	// The parser the CSI node runs at NodePublishVolume: what it would
	// refuse must not get space first.
	attrs, err := parameters.ParseInline(vol.CSI.VolumeAttributes, defaultSize)
	if err != nil {
		return nil, refuse("%s: %v", desc, err)
	}
	if vol.CSI.FSType != nil {
		if _, err := parameters.ParseFSType(*vol.CSI.FSType); err != nil {
			return nil, refuse("%s: %v", desc, err)
		}
	}
	return &Need{
		Volume: ledger.Volume{Name: v1alpha1.InlineVolumeName(pod.UID, vol.Name), Desc: desc,
			Type: v1alpha1.VolumeTypeLVM, VG: attrs.VGName, Size: attrs.Size},
		Requested: attrs.Size,
		LVMType:   v1alpha1.LVMTypeLinear,
		PodRef:    &v1alpha1.ObjectReference{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
	}, nil
}
