/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package plugin

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// A scheduler killed inside PreBind leaves some of a pod's LocalVolumes
// written: they pin the pod to a node that cannot hold the rest. PostFilter
// releases them only when nothing can be using them.
func TestPostFilterReleasesInterruptedAllocation(t *testing.T) {
	for _, tc := range []struct {
		name        string
		edit        func(a *v1.PersistentVolumeClaim) []runtime.Object
		wantRelease bool
	}{
		{name: "uncommitted claim: released", wantRelease: true},
		{name: "claim given a node by VolumeBinding: kept", edit: func(a *v1.PersistentVolumeClaim) []runtime.Object {
			a.Annotations = map[string]string{selectedNodeAnnotation: "n1"}
			return nil
		}},
		{name: "claim another pod uses: kept", edit: func(*v1.PersistentVolumeClaim) []runtime.Object {
			return []runtime.Object{podWith("other", "a")}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k8s, ol := standard()
			a, b := claim("a", "lvm", 10), claim("b", "lvm", 50)
			if tc.edit != nil {
				k8s = append(k8s, tc.edit(a)...)
			}
			pod := podWith("p", "a", "b")
			// n1: pool0 holds 88Gi + a's 10Gi of 100Gi, pool1 40Gi: b (50Gi) cannot join a there.
			held := localVolume(v1alpha1.PVCVolumeName(a.UID), "n1", "pool0", 10)
			held.Spec.ClaimRef = &v1alpha1.ObjectReference{Namespace: ns, Name: "a", UID: a.UID}
			held.Spec.Kind = v1alpha1.KindVolume
			k8s = append(k8s, a, b, pod)
			h := newHarness(t, defaultArgs(), k8s, append(ol, held))
			cs, got := h.filterAll(pod)
			if !strings.Contains(got, "n1 UnschedulableAndUnresolvable") {
				t.Fatalf("filter:\n%s\nwant n1 too full for b", got)
			}
			_, s := h.pl.PostFilter(h.ctx, cs, pod, framework.NewDefaultNodeToStatus())
			if s.Code() != fwk.Unschedulable {
				t.Fatalf("PostFilter = %v", s)
			}
			_, err := h.ol.CsiV1alpha1().LocalVolumes().Get(h.ctx, held.Name, metav1.GetOptions{})
			released := apierrors.IsNotFound(err)
			if released != tc.wantRelease {
				t.Fatalf("released = %v (get: %v), want %v; status %q", released, err, tc.wantRelease, s.Message())
			}
			if released && !strings.Contains(s.Message(), "released the partial allocation LocalVolume "+held.Name+" of pvc default/a") {
				t.Errorf("status %q does not say what was released", s.Message())
			}
		})
	}
}
