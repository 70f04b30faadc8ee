/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package volumes_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	mount "k8s.io/mount-utils"
	utilexec "k8s.io/utils/exec"

	"github.com/open-local/open-local/agent/volumes"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/blockdev"
	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/loopvg"
	"github.com/open-local/open-local/test/sysfstest"
)

func deviceSpec(dev string, size int64) v1alpha1.LocalVolumeSpec {
	return v1alpha1.LocalVolumeSpec{VolumeType: v1alpha1.VolumeTypeDevice, Kind: v1alpha1.KindVolume, Device: dev,
		Size: *resource.NewQuantity(size, resource.BinarySI)}
}

// stage formats (if blank) and mounts dev the way the CSI node plugin's
// NodeStage does (mount-utils' FormatAndMount), and returns the mount point.
func stage(t *testing.T, dev string) string {
	t.Helper()
	mnt := t.TempDir()
	m := &mount.SafeFormatAndMount{Interface: mount.New(""), Exec: utilexec.New()}
	if err := m.FormatAndMount(dev, mnt, "ext4", nil); err != nil {
		t.Fatalf("format and mount %s: %v", dev, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, 0) })
	return mnt
}

func unstage(t *testing.T, mnt string) {
	t.Helper()
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
}

// Two LocalVolumes naming one disk: the first gets it (and its identity is
// recorded), the second is refused while the first holds it — also while
// the first is being deleted — and gets the disk once it is released.
func TestDeviceExclusive(t *testing.T) {
	dev := loopvg.NewDevices(t, 64*mib)[0] // first: detached after the node's cleanup wiped it
	n := newNode(t, "dev-excl", "olvdevexcl", 64*mib)
	n.create(t, "dev-first", deviceSpec(dev.Path, 32*mib))
	first := n.waitFor(t, "dev-first", "Ready", ready(64*mib))
	if want := "loop:" + dev.File + "@0"; first.Status.DeviceIdentity != want || first.Status.DevicePath != dev.Path {
		t.Fatalf("status %+v: want identity %s and path %s", first.Status, want, dev.Path)
	}
	time.Sleep(1100 * time.Millisecond) // creation timestamps have 1 s resolution: the order must be clear
	n.create(t, "dev-second", deviceSpec(dev.Path, 32*mib))
	second := n.waitFor(t, "dev-second", "refused", failed("FailedPrecondition"))
	if !strings.Contains(second.Status.Message, "dev-first") || second.Status.DeviceIdentity != "" {
		t.Fatalf("second: %+v; want a refusal naming dev-first and no identity", second.Status)
	}
	// First still Ready: the second claim changed nothing of it.
	n.waitFor(t, "dev-first", "still Ready", ready(64*mib))
	if err := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Delete(t.Context(), "dev-first", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	n.waitFor(t, "dev-first", "gone (wiped)", gone)
	n.waitFor(t, "dev-second", "Ready once the disk is released", ready(64*mib))
}

// Release: a tenant's file is on the disk; the volume is deleted; under
// the default policy (signatures) the disk is wiped before the record goes,
// and the next tenant, given the same disk, does not see the file.
func TestDeviceReleaseWipes(t *testing.T) {
	dev := loopvg.NewDevices(t, 64*mib)[0] // first: detached after the node's cleanup wiped it
	n := newNode(t, "dev-wipe", "olvdevwipe", 64*mib)
	n.create(t, "dev-tenant-1", deviceSpec(dev.Path, 32*mib))
	n.waitFor(t, "dev-tenant-1", "Ready", ready(64*mib))
	mnt := stage(t, dev.Path)
	if err := os.WriteFile(filepath.Join(mnt, "secret"), []byte("tenant 1"), 0o600); err != nil {
		t.Fatal(err)
	}
	unstage(t, mnt)
	if err := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes().Delete(t.Context(), "dev-tenant-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	n.waitFor(t, "dev-tenant-1", "gone", gone)
	if out, err := exec.Command("blkid", "--probe", dev.Path).CombinedOutput(); err == nil {
		t.Fatalf("signature left on the released disk: %s", out)
	}
	n.create(t, "dev-tenant-2", deviceSpec(dev.Path, 32*mib))
	n.waitFor(t, "dev-tenant-2", "Ready", ready(64*mib))
	mnt = stage(t, dev.Path)
	if _, err := os.Stat(filepath.Join(mnt, "secret")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the next tenant sees the last one's file: %v", err)
	}
	unstage(t, mnt)
}

// Policy manual: the released disk stays quarantined (the record stays,
// phase Quarantined) until an operator annotates it with the disk's
// identity; an annotation with another value releases nothing.
func TestDeviceReleaseManual(t *testing.T) {
	dev := loopvg.NewDevices(t, 64*mib)[0]
	n := newNodeWith(t, "dev-manual", "olvdevmanual", func(o *volumes.Options) { o.DeviceWipe = blockdev.WipeManual }, 64*mib)
	n.create(t, "dev-man", deviceSpec(dev.Path, 32*mib))
	lv := n.waitFor(t, "dev-man", "Ready", ready(64*mib))
	id := lv.Status.DeviceIdentity
	lvs := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes()
	if err := lvs.Delete(t.Context(), "dev-man", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	quarantined := func(lv *v1alpha1.LocalVolume) bool {
		return lv != nil && lv.Status.Phase == v1alpha1.PhaseQuarantined
	}
	n.waitFor(t, "dev-man", "Quarantined", quarantined)
	annotate := func(v string) {
		t.Helper()
		if _, err := cluster.Update(t.Context(), lvs.Get, lvs.Update, "dev-man", func(lv *v1alpha1.LocalVolume) {
			if lv.Annotations == nil {
				lv.Annotations = map[string]string{}
			}
			lv.Annotations[blockdev.ReleasedAnnotation] = v
		}); err != nil {
			t.Fatal(err)
		}
	}
	annotate("yes")
	time.Sleep(time.Second)
	n.waitFor(t, "dev-man", "still Quarantined", quarantined)
	annotate(id)
	n.waitFor(t, "dev-man", "gone", gone)
}

// Identity: the record's kernel name now belongs to another disk (the
// loop device re-attached to another file, as a reboot renames disks).
// The agent reports the volume's disk missing and, on deletion, wipes
// nothing: the other disk's filesystem is intact.
func TestDeviceIdentityMismatch(t *testing.T) {
	dev := loopvg.NewDevices(t, 64*mib)[0] // first: detached after the node's cleanup wiped it
	n := newNode(t, "dev-ident", "olvdevident", 64*mib)
	n.create(t, "dev-id", deviceSpec(dev.Path, 32*mib))
	n.waitFor(t, "dev-id", "Ready", ready(64*mib))

	other := filepath.Join(t.TempDir(), "other-tenant.img")
	if err := loopvg.CreateSparseFile(other, 64*mib); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", other).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if out, err := exec.Command("losetup", "--detach", dev.Path).CombinedOutput(); err != nil {
		t.Fatalf("detach: %v: %s", err, out)
	}
	if out, err := exec.Command("losetup", dev.Path, other).CombinedOutput(); err != nil {
		t.Fatalf("attach %s to %s: %v: %s", other, dev.Path, err, out)
	}
	t.Cleanup(func() {
		if b, err := os.ReadFile("/sys/block/" + filepath.Base(dev.Path) + "/loop/backing_file"); err == nil && strings.TrimSpace(string(b)) == other {
			_ = exec.Command("losetup", "--detach", dev.Path).Run()
		}
	})
	lvs := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes()
	// A resync (or any change) re-checks the disk: touch the object.
	if _, err := cluster.Update(t.Context(), lvs.Get, lvs.Update, "dev-id", func(lv *v1alpha1.LocalVolume) {
		lv.Labels = map[string]string{"touched": "1"}
	}); err != nil {
		t.Fatal(err)
	}
	lv := n.waitFor(t, "dev-id", "NotFound", failed("NotFound"))
	if !strings.Contains(lv.Status.Message, dev.File) {
		t.Errorf("message %q does not name the recorded identity", lv.Status.Message)
	}
	if err := lvs.Delete(t.Context(), "dev-id", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	n.waitFor(t, "dev-id", "Quarantined, not wiped", func(lv *v1alpha1.LocalVolume) bool {
		return lv != nil && lv.Status.Phase == v1alpha1.PhaseQuarantined && lv.Status.Code == "NotFound"
	})
	if out, err := exec.Command("blkid", "--probe", dev.Path).CombinedOutput(); err != nil || !strings.Contains(string(out), "ext4") {
		t.Fatalf("the other disk lost its filesystem: %s, %v", out, err)
	}
	// The operator, who knows the disk is gone, releases the record.
	if _, err := cluster.Update(t.Context(), lvs.Get, lvs.Update, "dev-id", func(l *v1alpha1.LocalVolume) {
		l.Annotations = map[string]string{blockdev.ReleasedAnnotation: "loop:" + dev.File + "@0"}
	}); err != nil {
		t.Fatal(err)
	}
	n.waitFor(t, "dev-id", "gone", gone)
}

// A disk and its partition are one exclusive unit: with a LocalVolume on
// the disk, one on its partition is refused, naming the holder. (This
// kernel makes no loop partitions: a sysfs-shaped tree over two real loop
// devices says the first is partition 1 of the second.)
func TestDevicePartitionOfHeldDisk(t *testing.T) {
	devs := loopvg.NewDevices(t, 64*mib, 64*mib)
	part, disk := devs[0], devs[1]
	sys := sysfstest.Partition(t, part.Path, disk.Path, "naa.600a0b8000abcdef")
	n := newNodeWith(t, "dev-part", "olvdevpart", func(o *volumes.Options) { o.Sysfs = sys }, 64*mib)
	n.create(t, "dev-disk", deviceSpec(disk.Path, 32*mib))
	lv := n.waitFor(t, "dev-disk", "Ready", ready(64*mib))
	if lv.Status.DeviceIdentity != "wwid:naa.600a0b8000abcdef" {
		t.Fatalf("identity %q, want the disk's WWN", lv.Status.DeviceIdentity)
	}
	time.Sleep(1100 * time.Millisecond)
	n.create(t, "dev-part1", deviceSpec(part.Path, 32*mib))
	lv = n.waitFor(t, "dev-part1", "refused", failed("FailedPrecondition"))
	if !strings.Contains(lv.Status.Message, "dev-disk") {
		t.Fatalf("refusal %q does not name the disk's holder", lv.Status.Message)
	}
}

// Upgrade: a Device volume handed out before identities were recorded
// (Ready, no deviceIdentity) and in use by its pod (mounted) is adopted —
// its identity recorded — not refused as a busy disk.
func TestDeviceAdoptsVolumeWithoutIdentity(t *testing.T) {
	dev := loopvg.NewDevices(t, 64*mib)[0]
	// The old agent's record, written before the new agent runs.
	old := &node{name: "dev-adopt", c: cluster.ForTest(t)}
	old.create(t, "dev-old", deviceSpec(dev.Path, 32*mib))
	lvs := old.c.OpenLocalClient().CsiV1alpha1().LocalVolumes()
	if _, err := cluster.Update(t.Context(), lvs.Get, lvs.UpdateStatus, "dev-old", func(lv *v1alpha1.LocalVolume) {
		lv.Status = v1alpha1.LocalVolumeStatus{Phase: v1alpha1.PhaseReady, DevicePath: dev.Path,
			CurrentSize: resource.NewQuantity(64*mib, resource.BinarySI), ObservedGeneration: lv.Generation}
	}); err != nil {
		t.Fatal(err)
	}
	mnt := stage(t, dev.Path) // its pod has it mounted
	defer unstage(t, mnt)
	n := newNode(t, "dev-adopt", "olvdevadopt", 64*mib)
	lv := n.waitFor(t, "dev-old", "identity recorded", func(lv *v1alpha1.LocalVolume) bool {
		return lv != nil && lv.Status.DeviceIdentity != ""
	})
	if lv.Status.Phase != v1alpha1.PhaseReady || lv.Status.DeviceIdentity != "loop:"+dev.File+"@0" {
		t.Fatalf("status %+v: want Ready with the disk's identity", lv.Status)
	}
}
