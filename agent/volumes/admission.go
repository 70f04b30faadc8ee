/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package volumes

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// errNoRoom is a refusal by admit: the volume does not fit the VG's (or
// thin pool's) allocatable beside the volumes granted before it.
type errNoRoom struct{ sf *ledger.Shortfall }

func (e *errNoRoom) Error() string {
	return e.sf.Detail() + ", counting the volumes written before it and those that have their LV (NodeLocalStorage allocatable, not LVM's free space)"
}

// admit is the node's capacity authority of last resort. The scheduler's
// ledger is the fast, optimistic path, but LocalVolumes are also written by
// the CSI controller (volumes another scheduler placed), the node's inline
// fallback, and snapshot growth, none of which sees the scheduler's
// reservations. Before any lvcreate or lvextend, the agent checks with the
// same ledger that lv at size fits its VG's allocatable beside every volume
// granted before it: written earlier (creation time, then name), or already
// holding its LV. So the order of grants is the order of writes, whoever
// wrote them, and the newest that does not fit is refused
// (ResourceExhausted: the CSI controller deletes the record and the pod is
// rescheduled). Checked against the API's NodeLocalStorage; without one
// (the agent has not reported yet) or for a VG it does not list, LVM's own
// free space is the only bound, as before.
func (r *Reconciler) admit(ctx context.Context, lv *v1alpha1.LocalVolume, size int64) error {
	nls, err := r.opts.Client.CsiV1alpha1().NodeLocalStorages().Get(ctx, r.opts.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get NodeLocalStorage %s to check room: %w", r.opts.NodeName, err)
	}
	all, err := r.lister.List(labels.Everything())
	if err != nil {
		return err
	}
	granted := all[:0:0]
	for _, o := range all {
		if o.Name != lv.Name && (grantedBefore(o, lv) || o.Status.CurrentSize != nil) {
			granted = append(granted, o)
		}
	}
	l := ledger.ForNode(r.opts.NodeName, nls, granted)
	want := ledger.Volume{Name: lv.Name, Desc: "LocalVolume " + lv.Name, Type: v1alpha1.VolumeTypeLVM,
		VG: lv.Spec.VGName, ThinPool: lv.Spec.ThinPool, Size: size, Striped: lv.Spec.Striped()}
	if sf := l.Admit(r.opts.NodeName, want); sf != nil {
		return &errNoRoom{sf: sf}
	}
	return nil
}

// grantedBefore orders LocalVolumes by when they were written.
func grantedBefore(a, b *v1alpha1.LocalVolume) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}
