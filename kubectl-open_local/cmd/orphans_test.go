/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package cmd

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// TestOrphanRules: which LocalVolumes count as leaked and what the fix
// says, without a cluster (TestGolden runs them against one).
func TestOrphanRules(t *testing.T) {
	claim := corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c", UID: "u1"}}
	pod := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "p1"}}
	lv := func(mutate func(*v1alpha1.LocalVolume)) v1alpha1.LocalVolume {
		l := v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: "lv"},
			Spec: v1alpha1.LocalVolumeSpec{NodeName: "n", VolumeType: v1alpha1.VolumeTypeLVM, VGName: "vg",
				ClaimRef: &v1alpha1.ObjectReference{Namespace: "ns", Name: "c", UID: "u1"}}}
		mutate(&l)
		return l
	}
	pv := func(policy corev1.PersistentVolumeReclaimPolicy) corev1.PersistentVolume {
		return corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv"}, Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: policy,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{VolumeHandle: "lv"}}}}
	}
	tests := []struct {
		name      string
		lv        v1alpha1.LocalVolume
		pvs       []corev1.PersistentVolume
		namespace string
		want      string // "" = not an orphan; else a substring of Why + " | " + Fix
	}{
		{name: "claim present", lv: lv(func(*v1alpha1.LocalVolume) {})},
		{name: "claim gone", lv: lv(func(l *v1alpha1.LocalVolume) { l.Spec.ClaimRef.Name = "gone" }),
			want: "claim ns/gone is gone | kubectl delete localvolume lv"},
		{name: "claim re-created", lv: lv(func(l *v1alpha1.LocalVolume) { l.Spec.ClaimRef.UID = "old" }),
			want: "was re-created (uid u1, the volume's is old)"},
		{name: "claim gone, PV deleting it", lv: lv(func(l *v1alpha1.LocalVolume) { l.Spec.ClaimRef.Name = "gone" }),
			pvs: []corev1.PersistentVolume{pv(corev1.PersistentVolumeReclaimDelete)}},
		{name: "claim gone, PV retained", lv: lv(func(l *v1alpha1.LocalVolume) { l.Spec.ClaimRef.Name = "gone" }),
			pvs:  []corev1.PersistentVolume{pv(corev1.PersistentVolumeReclaimRetain)},
			want: "PV pv keeps it (reclaim policy Retain) | kubectl delete pv pv && kubectl delete localvolume lv"},
		{name: "being deleted", lv: lv(func(l *v1alpha1.LocalVolume) {
			l.Spec.ClaimRef.Name = "gone"
			l.DeletionTimestamp = &metav1.Time{}
		})},
		{name: "other namespace", lv: lv(func(l *v1alpha1.LocalVolume) { l.Spec.ClaimRef.Namespace = "other" }), namespace: "ns"},
		{name: "inline pod present", lv: lv(func(l *v1alpha1.LocalVolume) {
			l.Spec.ClaimRef, l.Spec.PodRef = nil, &v1alpha1.ObjectReference{Namespace: "ns", Name: "p", UID: "p1"}
		})},
		{name: "inline pod gone", lv: lv(func(l *v1alpha1.LocalVolume) {
			l.Spec.ClaimRef, l.Spec.PodRef = nil, &v1alpha1.ObjectReference{Namespace: "ns", Name: "q"}
		}), want: "pod ns/q is gone"},
		{name: "snapshot without refs", lv: lv(func(l *v1alpha1.LocalVolume) { l.Spec.ClaimRef, l.Spec.Kind = nil, v1alpha1.KindSnapshot })},
		{name: "quarantined disk", lv: lv(func(l *v1alpha1.LocalVolume) {
			l.Spec.VolumeType, l.Spec.Device = v1alpha1.VolumeTypeDevice, "/dev/sdx"
			l.Status.Phase, l.Status.DeviceIdentity = v1alpha1.PhaseQuarantined, "wwn-1"
		}), want: "wipefs --all /dev/sdx && kubectl annotate localvolume lv csi.aliyun.com/device-wiped=wwn-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := orphans(nil, []v1alpha1.LocalVolume{tt.lv}, []corev1.PersistentVolumeClaim{claim}, []corev1.Pod{pod}, tt.pvs, tt.namespace)
			switch {
			case tt.want == "" && len(got) != 0:
				t.Fatalf("orphan %+v, want none", got)
			case tt.want != "" && len(got) != 1:
				t.Fatalf("%d orphans, want one matching %q", len(got), tt.want)
			case tt.want != "" && !strings.Contains(got[0].Why+" | "+got[0].Fix, tt.want):
				t.Fatalf("%q | %q, want %q in it", got[0].Why, got[0].Fix, tt.want)
			}
		})
	}
}
