/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package node_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/loopvg"
)

// deviceVolume records a Ready Device volume on dev as the agent does,
// with the identity given (the agent's blockdev.Identity at first use).
func (e *env) deviceVolume(t *testing.T, name, dev, identity string) {
	t.Helper()
	ctx := t.Context()
	lvs := e.ol.CsiV1alpha1().LocalVolumes()
	obj := &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.LocalVolumeSpec{NodeName: e.name, VolumeType: v1alpha1.VolumeTypeDevice, Device: dev,
			Size: *resource.NewQuantity(16*mib, resource.BinarySI)}}
	if _, err := lvs.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lvs.Delete(context.Background(), name, metav1.DeleteOptions{}) })
	if _, err := cluster.Update(ctx, lvs.Get, lvs.UpdateStatus, name, func(cur *v1alpha1.LocalVolume) {
		cur.Status = v1alpha1.LocalVolumeStatus{Phase: v1alpha1.PhaseReady, DevicePath: dev, DeviceIdentity: identity,
			CurrentSize: resource.NewQuantity(32*mib, resource.BinarySI), ObservedGeneration: cur.Generation}
	}); err != nil {
		t.Fatal(err)
	}
}

// TestStageDeviceByIdentity: NodeStage and NodePublish of a Device volume
// use the disk the record's identity names. A record without an identity,
// or whose path now holds another disk, is refused (FailedPrecondition),
// and that other disk is not formatted.
func TestStageDeviceByIdentity(t *testing.T) {
	e := newEnv(t, "olnodedev", 64*mib)
	devs := loopvg.NewDevices(t, 32*mib, 32*mib)
	mine, other := devs[0], devs[1]
	tests := []struct {
		name     string
		path     string // the record's device
		identity string
		wantCode codes.Code
	}{
		{name: "identity matches", path: mine.Path, identity: "loop:" + mine.File + "@0", wantCode: codes.OK},
		{name: "no identity recorded", path: other.Path, wantCode: codes.FailedPrecondition},
		{name: "the path is another disk now", path: other.Path, identity: "loop:" + mine.File + ".gone@0", wantCode: codes.FailedPrecondition},
	}
	s := e.server(t, nil)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "dev-stage-" + string(rune('a'+i))
			e.deviceVolume(t, id, tt.path, tt.identity)
			staging := filepath.Join(e.dir, id, "staging")
			_, err := s.NodeStageVolume(t.Context(), &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging,
				VolumeCapability: mountCap("ext4", csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)})
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("NodeStage: %v, want code %s", err, tt.wantCode)
			}
			if tt.wantCode != codes.OK {
				if out, _ := exec.Command("blkid", "--probe", tt.path).CombinedOutput(); strings.Contains(string(out), "TYPE=") {
					t.Errorf("refused stage left a filesystem on %s: %s", tt.path, out)
				}
				target := filepath.Join(e.dir, id, "block")
				_, err := s.NodePublishVolume(t.Context(), &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging,
					TargetPath: target, VolumeCapability: blockCap()})
				if status.Code(err) != codes.FailedPrecondition {
					t.Errorf("NodePublish (block): %v, want FailedPrecondition", err)
				}
				return
			}
			t.Cleanup(func() { _ = unix.Unmount(staging, 0) })
			if _, err := os.Stat(filepath.Join(staging, "lost+found")); err != nil {
				t.Errorf("staged filesystem: %v", err)
			}
		})
	}
}
