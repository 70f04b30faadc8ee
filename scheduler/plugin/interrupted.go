/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package plugin

import (
	"context"
	"fmt"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// selectedNodeAnnotation is set on a PVC by VolumeBinding's PreBind, which
// runs after ours: a claim without it was never committed to a node.
const selectedNodeAnnotation = "volume.kubernetes.io/selected-node"

// heldClaim is a claim of the pod whose LocalVolume already exists.
type heldClaim struct {
	volume string
	claim  v1alpha1.ObjectReference
}

// releaseInterrupted deletes the LocalVolumes of the pod's claims that a
// scheduling cycle wrote but never committed: PreBind writes one
// LocalVolume per volume, and a scheduler killed half-way leaves some of a
// pod's volumes allocated on a node that cannot hold the rest. They pin the
// pod there for ever, and hold space no one uses (found by the restart
// test). A LocalVolume is released only if nothing can be using it: its
// claim is unbound, was never given a node (no selected-node annotation),
// is used by no other pod, and this scheduler has no reservation for it.
// It returns the released LocalVolumes' descriptions.
func (pl *OpenLocal) releaseInterrupted(ctx context.Context, pod *v1.Pod, st *podState) []string {
	if st.node == "" || len(st.heldClaims) == 0 {
		return nil
	}
	logger := klog.FromContext(ctx)
	var released []string
	for _, h := range st.heldClaims {
		lv, err := pl.lvLister.Get(h.volume)
		if err != nil || lv.DeletionTimestamp != nil || lv.Spec.ClaimRef == nil || lv.Spec.ClaimRef.UID != h.claim.UID {
			continue
		}
		if held, ok := pl.ledger.Volume(h.volume); !ok || held.Owner != "" {
			continue // in flight in this scheduler
		}
		pvc, err := pl.pvcLister.PersistentVolumeClaims(h.claim.Namespace).Get(h.claim.Name)
		if err != nil || pvc.UID != h.claim.UID || pvc.Spec.VolumeName != "" || pvc.Annotations[selectedNodeAnnotation] != "" {
			continue
		}
		if pl.claimUsedByOthers(pod, pvc.Name) {
			continue
		}
		uid := lv.UID
		err = pl.client.CsiV1alpha1().LocalVolumes().Delete(ctx, lv.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) {
			logger.Error(err, "Could not release an uncommitted LocalVolume", "localVolume", lv.Name, "pod", klog.KObj(pod))
			continue
		}
		localVolumesReleased.Inc()
		logger.Info("Released an uncommitted LocalVolume of an interrupted scheduling cycle", "localVolume", lv.Name, "pvc", klog.KObj(pvc), "node", lv.Spec.NodeName, "pod", klog.KObj(pod))
		released = append(released, fmt.Sprintf("LocalVolume %s of pvc %s/%s", lv.Name, pvc.Namespace, pvc.Name))
	}
	return released
}

// claimUsedByOthers reports whether a pod other than this one, not finished,
// uses the claim (its scheduling may be under way).
func (pl *OpenLocal) claimUsedByOthers(pod *v1.Pod, claim string) bool {
	pods, err := pl.podLister.Pods(pod.Namespace).List(labels.Everything())
	if err != nil {
		return true
	}
	for _, p := range pods {
		if p.UID == pod.UID || p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed {
			continue
		}
		for _, v := range p.Spec.Volumes {
			if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == claim {
				return true
			}
		}
	}
	return false
}
