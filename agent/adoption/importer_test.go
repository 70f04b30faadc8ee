/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package adoption

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	olfake "github.com/open-local/open-local/apis/client/clientset/versioned/fake"
	"github.com/open-local/open-local/apis/client/informers/externalversions"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// TestSync: which PVs one sync adopts, and what it writes (the
// LocalVolume, the PV's mark) or leaves alone.
func TestSync(t *testing.T) {
	deleting := metav1.Now()
	for _, tc := range []struct {
		name     string
		pv       *corev1.PersistentVolume
		existing *v1alpha1.LocalVolume
		// adopted: a LocalVolume exists after the sync; marked: the PV carries adopted-as.
		adopted, marked bool
	}{
		{name: "Bound open-local PV", pv: openLocalPV(nil), adopted: true, marked: true},
		{name: "Available (no claim yet)", pv: openLocalPV(func(pv *corev1.PersistentVolume) {
			pv.Status.Phase, pv.Spec.ClaimRef = corev1.VolumeAvailable, nil
		}), adopted: true, marked: true},
		{name: "already marked, LocalVolume since deleted: not again", pv: openLocalPV(func(pv *corev1.PersistentVolume) {
			pv.Annotations = map[string]string{v1alpha1.AdoptedPVAnnotation: handle}
		}), marked: true},
		{name: "LocalVolume written before a restart: only the mark", pv: openLocalPV(nil), existing: lvmVolume(nil), adopted: true, marked: true},
		{name: "Released: left to its deletion", pv: openLocalPV(func(pv *corev1.PersistentVolume) { pv.Status.Phase = corev1.VolumeReleased })},
		{name: "being deleted", pv: openLocalPV(func(pv *corev1.PersistentVolume) {
			pv.DeletionTimestamp, pv.Finalizers = &deleting, []string{"kubernetes.io/pv-protection"}
		})},
		{name: "ours, LocalVolume gone", pv: openLocalPV(func(pv *corev1.PersistentVolume) { pv.Name, pv.Spec.CSI.VolumeHandle = "pvc-1", "pvc-1" })},
		{name: "refused (no node affinity): an Event only", pv: openLocalPV(func(pv *corev1.PersistentVolume) { pv.Spec.NodeAffinity = nil })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kube := kubefake.NewClientset(tc.pv)
			var objs []runtime.Object
			if tc.existing != nil {
				objs = append(objs, tc.existing)
			}
			ol := olfake.NewSimpleClientset(objs...)
			kf, of := informers.NewSharedInformerFactory(kube, 0), externalversions.NewSharedInformerFactory(ol, 0)
			rec := record.NewFakeRecorder(10)
			im, err := New(ol, kube, of.Csi().V1alpha1().LocalVolumes(), kf.Core().V1().PersistentVolumes(), rec)
			if err != nil {
				t.Fatal(err)
			}
			kf.Start(t.Context().Done())
			of.Start(t.Context().Done())
			kf.WaitForCacheSync(t.Context().Done())
			of.WaitForCacheSync(t.Context().Done())
			if err := im.sync(t.Context(), tc.pv.Name); err != nil {
				t.Fatal(err)
			}
			_, err = ol.CsiV1alpha1().LocalVolumes().Get(t.Context(), tc.pv.Spec.CSI.VolumeHandle, metav1.GetOptions{})
			if adopted := err == nil; adopted != tc.adopted {
				t.Errorf("LocalVolume exists: %v, want %v", adopted, tc.adopted)
			}
			pv, err := kube.CoreV1().PersistentVolumes().Get(t.Context(), tc.pv.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if marked := pv.Annotations[v1alpha1.AdoptedPVAnnotation] != ""; marked != tc.marked {
				t.Errorf("PV marked: %v, want %v", marked, tc.marked)
			}
			if tc.name == "refused (no node affinity): an Event only" && len(rec.Events) != 1 {
				t.Errorf("%d Events, want the refusal", len(rec.Events))
			}
		})
	}
}
