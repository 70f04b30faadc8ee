/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package orphanvolumes

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

func TestDecide(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	const grace = 5 * time.Minute
	lvol := func(created time.Time, edit func(*v1alpha1.LocalVolume)) *v1alpha1.LocalVolume {
		lv := &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: "pvc-u1", CreationTimestamp: metav1.NewTime(created)},
			Spec: v1alpha1.LocalVolumeSpec{NodeName: "n1", VolumeType: v1alpha1.VolumeTypeLVM, VGName: "vg",
				ClaimRef: &v1alpha1.ObjectReference{Namespace: "ns", Name: "data", UID: "u1"}}}
		if edit != nil {
			edit(lv)
		}
		return lv
	}
	old := t0.Add(-time.Hour)
	claim := func(uid types.UID) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "data", UID: uid}}
	}
	deleting := metav1.NewTime(t0)
	tests := []struct {
		name   string
		lv     *v1alpha1.LocalVolume
		facts  Facts
		want   Verdict
		reason string
		after  time.Duration
	}{
		{name: "claim exists", lv: lvol(old, nil), facts: Facts{Claim: claim("u1"), OrphanSince: old}, want: Keep},
		{name: "claim gone, past grace", lv: lvol(old, nil), facts: Facts{OrphanSince: old}, want: Collect, reason: ReasonClaimDeleted},
		{name: "claim replaced by another UID", lv: lvol(old, nil), facts: Facts{Claim: claim("u2"), OrphanSince: old}, want: Collect, reason: ReasonClaimReplaced},
		{name: "a PV names it (Retain policy, claim gone)", lv: lvol(old, nil), facts: Facts{PVNamed: true, OrphanSince: old}, want: Keep},
		{name: "claim gone, volume just created", lv: lvol(t0.Add(-time.Minute), nil), facts: Facts{OrphanSince: t0.Add(-time.Minute)},
			want: Wait, reason: ReasonClaimDeleted, after: 4 * time.Minute},
		{name: "old volume, first seen orphaned now: a full grace period", lv: lvol(old, nil), facts: Facts{OrphanSince: t0},
			want: Wait, reason: ReasonClaimDeleted, after: grace},
		{name: "grace ends exactly now", lv: lvol(old, nil), facts: Facts{OrphanSince: t0.Add(-grace)}, want: Collect, reason: ReasonClaimDeleted},
		{name: "no claimRef (a snapshot, a volume without PVC)", lv: lvol(old, func(lv *v1alpha1.LocalVolume) { lv.Spec.ClaimRef = nil }),
			facts: Facts{OrphanSince: old}, want: Keep},
		{name: "inline volume", lv: lvol(old, func(lv *v1alpha1.LocalVolume) {
			lv.Spec.PodRef = &v1alpha1.ObjectReference{Namespace: "ns", Name: "p", UID: "p1"}
		}),
			facts: Facts{OrphanSince: old}, want: Keep},
		{name: "claimRef without UID", lv: lvol(old, func(lv *v1alpha1.LocalVolume) { lv.Spec.ClaimRef.UID = "" }),
			facts: Facts{OrphanSince: old}, want: Keep},
		{name: "already being deleted", lv: lvol(old, func(lv *v1alpha1.LocalVolume) { lv.DeletionTimestamp = &deleting }),
			facts: Facts{OrphanSince: old}, want: Keep},
		{name: "adopted from open-local (its PV may be of the legacy driver name, Retain policy)", lv: lvol(old, func(lv *v1alpha1.LocalVolume) {
			lv.Labels = map[string]string{v1alpha1.AdoptedLabel: "true"}
		}), facts: Facts{OrphanSince: old}, want: Keep},
		{name: "clock skew: created in the future", lv: lvol(t0.Add(time.Hour), nil), facts: Facts{OrphanSince: t0},
			want: Wait, reason: ReasonClaimDeleted, after: time.Hour + grace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.lv, tt.facts, t0, grace)
			if d.Verdict != tt.want || (tt.want != Keep && d.Reason != tt.reason) || d.After != tt.after {
				t.Errorf("Decide = %v %q after %s, want %v %q after %s", d.Verdict, d.Reason, d.After, tt.want, tt.reason, tt.after)
			}
			if tt.want == Keep && d.Reason == "" {
				t.Error("kept without a reason")
			}
		})
	}
}
