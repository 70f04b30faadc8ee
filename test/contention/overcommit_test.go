/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package contention_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/csitest"
)

// TestAgentRefusesWhenAlreadyOverSubscribed: three writers that did not see
// each other write 400 MiB each, in order, for a VG with 764 MiB allocatable
// (and LVM room for 1020 MiB). The agent must grant the first and refuse the
// other two: the third does not fit beside the first either, whatever the
// refused second still counts.
func TestAgentRefusesWhenAlreadyOverSubscribed(t *testing.T) {
	capability.Require(t, capability.Root, capability.LoopDevices, capability.LVM)
	c := cluster.ForTest(t)
	e := &env{c: c, kube: c.Client()}
	e.node = csitest.NewAgentNode(t, c, "overcommit-node", "olovercommit", vgSize)
	e.setReserve(t)
	o := e.startObserver(t)
	api := c.OpenLocalClient().CsiV1alpha1().LocalVolumes()
	var names []string
	for i := range 3 {
		lv := &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("overcommit-%d", i), Finalizers: []string{v1alpha1.LocalVolumeFinalizer}},
			Spec: v1alpha1.LocalVolumeSpec{NodeName: e.node.Name, VolumeType: v1alpha1.VolumeTypeLVM, Kind: v1alpha1.KindVolume,
				VGName: e.node.VG.Name, LVMType: v1alpha1.LVMTypeLinear, Size: *resource.NewQuantity(400*mib, resource.BinarySI)}}
		if _, err := api.Create(t.Context(), lv, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		names = append(names, lv.Name)
		time.Sleep(1100 * time.Millisecond) // distinct creation seconds: the grant order is the write order
	}
	phases := map[string]v1alpha1.LocalVolumePhase{}
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, n := range names {
			lv, err := api.Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			phases[n] = lv.Status.Phase
			if lv.Status.Phase != v1alpha1.PhaseReady && lv.Status.Phase != v1alpha1.PhaseFailed {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("volumes not carried out: %v (%v)", err, phases)
	}
	want := map[string]v1alpha1.LocalVolumePhase{names[0]: v1alpha1.PhaseReady, names[1]: v1alpha1.PhaseFailed, names[2]: v1alpha1.PhaseFailed}
	for n, p := range want {
		if phases[n] != p {
			t.Errorf("%s: %s, want %s", n, phases[n], p)
		}
	}
	for _, v := range o.result().violations {
		t.Errorf("over-commit seen in the API: %s", v)
	}
}
