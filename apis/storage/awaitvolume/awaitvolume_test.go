/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package awaitvolume

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// The one rule of "made", for every waiter (CSI controller and node).
func TestMade(t *testing.T) {
	gi := resource.MustParse("1Gi")
	two := resource.MustParse("2Gi")
	lv := func(gen, observed int64, phase v1alpha1.LocalVolumePhase, current *resource.Quantity, code string) *v1alpha1.LocalVolume {
		return &v1alpha1.LocalVolume{
			ObjectMeta: metav1.ObjectMeta{Name: "v", Generation: gen},
			Spec:       v1alpha1.LocalVolumeSpec{NodeName: "n1", Size: two},
			Status: v1alpha1.LocalVolumeStatus{ObservedGeneration: observed, Phase: phase, CurrentSize: current,
				Code: code, Message: "no room"},
		}
	}
	deleting := lv(1, 1, v1alpha1.PhaseReady, &two, "")
	deleting.DeletionTimestamp = &metav1.Time{}
	tests := []struct {
		name     string
		lv       *v1alpha1.LocalVolume
		wantDone bool
		wantCode codes.Code // OK: no error
	}{
		{name: "ready at its size", lv: lv(1, 1, v1alpha1.PhaseReady, &two, ""), wantDone: true},
		{name: "ready, larger than asked", lv: lv(1, 1, v1alpha1.PhaseReady, resource.NewQuantity(3<<30, resource.BinarySI), ""), wantDone: true},
		{name: "ready below its size (expansion under way)", lv: lv(2, 2, v1alpha1.PhaseReady, &gi, "")},
		{name: "ready without a size", lv: lv(1, 1, v1alpha1.PhaseReady, nil, "")},
		{name: "ready of an older generation", lv: lv(2, 1, v1alpha1.PhaseReady, &two, "")},
		{name: "no status yet", lv: lv(1, 0, "", nil, "")},
		{name: "pending", lv: lv(1, 1, v1alpha1.PhasePending, nil, "")},
		{name: "failed", lv: lv(1, 1, v1alpha1.PhaseFailed, nil, "ResourceExhausted"), wantCode: codes.ResourceExhausted},
		{name: "failed, code unknown", lv: lv(1, 1, v1alpha1.PhaseFailed, nil, "Bogus"), wantCode: codes.Internal},
		{name: "failed for an older generation", lv: lv(2, 1, v1alpha1.PhaseFailed, nil, "ResourceExhausted")},
		{name: "being deleted", lv: deleting, wantCode: codes.Aborted},
		{name: "deleted", wantCode: codes.Aborted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done, err := Made("v")(tt.lv)
			if done != tt.wantDone || status.Code(err) != tt.wantCode {
				t.Errorf("Made = %t, %v; want %t, code %s", done, err, tt.wantDone, tt.wantCode)
			}
		})
	}
}
