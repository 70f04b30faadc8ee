/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/test/capability"
)

// ---- 4. snapshot and restore

// The article's names.
const (
	snapshotName = "new-snapshot-test"
	snapSource   = "nginx-lvm"
	snapRestored = "nginx-lvm-snap"
)

// vmDiskSize is the guest's virtio disk (sparse on the host): the 5Gi
// volume, the VolumeSnapshotClass's 4Gi copy-on-write area and the 5Gi
// restored volume fit with room to spare.
const vmDiskSize = "24G"

// vmSlowdown stretches timeouts in the guest: its CPU is emulated (TCG),
// Go runs ~7x and fork/exec 50-100x slower there.
const vmSlowdown = 8

func (d *demo) stepSnapshot(ctx context.Context, res *StepResult) error {
	if d.activation == "device-mapper" {
		// This kernel snapshots: the article's step, on step 2's volume.
		return d.snapshotAndRestore(ctx, res)
	}
	return d.snapshotInVM(ctx, res)
}

// snapshotAndRestore snapshots nginx-lvm's volume, changes the data, and
// restores the snapshot into a new StatefulSet that must see the data as it
// was at the snapshot.
func (d *demo) snapshotAndRestore(ctx context.Context, res *StepResult) error {
	p := d.p
	p.say("the chart's VolumeSnapshotClass (open-local's read-only LVM snapshots with a 4Gi copy-on-write area):")
	if _, err := d.show(ctx, "get", "volumesnapshotclass"); err != nil {
		return err
	}
	manifest := fmt.Sprintf(`apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata:
  name: %s
spec:
  volumeSnapshotClassName: open-local-lvm
  source:
    persistentVolumeClaimName: %s
`, snapshotName, pvcOf(snapSource))
	out, err := d.applyManifest(ctx, "snapshot.yaml", manifest)
	p.command("kubectl apply -f manifests/snapshot.yaml", out)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(d.cluster.RESTConfig())
	if err != nil {
		return err
	}
	var snap *unstructured.Unstructured
	err = d.poll(ctx, 3*time.Minute, "csi-snapshotter", func(ctx context.Context) (bool, string, error) {
		got, err := dyn.Resource(volumeSnapshots).Namespace(ns).Get(ctx, snapshotName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		snap = got
		ready, _, _ := unstructured.NestedBool(got.Object, "status", "readyToUse")
		msg, _, _ := unstructured.NestedString(got.Object, "status", "error", "message")
		return ready, fmt.Sprintf("readyToUse=%v %s; events: %s", ready, msg, d.events(ctx, snapshotName)), nil
	})
	if err != nil {
		return err
	}
	for _, args := range [][]string{{"get", "volumesnapshot"}, {"get", "volumesnapshotcontent"}} {
		if _, err := d.show(ctx, args...); err != nil {
			return err
		}
	}
	content, _, _ := unstructured.NestedString(snap.Object, "status", "boundVolumeSnapshotContentName")
	p.check(res, "VolumeSnapshot %s ReadyToUse, bound to %s", snapshotName, content)
	if err := d.checkSnapshotLV(ctx, res, "snap-"+string(snap.GetUID())); err != nil {
		return err
	}
	// Change the source after the snapshot: the restore must not see it.
	if _, err := d.execIn(ctx, podOf(snapSource), "echo 'written after the snapshot' >> /data/index.html"); err != nil {
		return err
	}
	restore := strings.Replace(statefulSet(snapRestored, "open-local-lvm", false, `cat /data/index.html; exec sleep infinity`),
		"      storageClassName: open-local-lvm\n",
		"      storageClassName: open-local-lvm\n      dataSource:\n        apiGroup: snapshot.storage.k8s.io\n        kind: VolumeSnapshot\n        name: "+snapshotName+"\n", 1)
	p.say("a second StatefulSet whose volumeClaimTemplate has dataSource: VolumeSnapshot %s:", snapshotName)
	out, err = d.applyManifest(ctx, "sts-nginx-snap.yaml", restore)
	p.command("kubectl apply -f manifests/sts-nginx-snap.yaml", out)
	if err != nil {
		return err
	}
	if _, err := d.waitPodRunning(ctx, podOf(snapRestored), 5*time.Minute); err != nil {
		return err
	}
	for _, args := range [][]string{{"get", "pod", "-l", "app=" + snapRestored}, {"get", "pvc", "-l", "app=" + snapRestored}} {
		if _, err := d.show(ctx, args...); err != nil {
			return err
		}
	}
	_, pv, err := d.boundVolume(ctx, pvcOf(snapRestored))
	if err != nil {
		return err
	}
	if err := d.checkLV(ctx, res, pv.Spec.CSI.VolumeHandle, 5*gib); err != nil {
		return err
	}
	out, err = d.execIn(ctx, podOf(snapRestored), "cat /data/index.html")
	if err != nil {
		return err
	}
	if !strings.Contains(out, "written by "+podOf(snapSource)) || strings.Contains(out, "after the snapshot") {
		return fmt.Errorf("the restored volume holds %q: want the page %s wrote before the snapshot, without the later line", out, podOf(snapSource))
	}
	p.check(res, "inside %s: the page %s wrote before the snapshot, without the line written after it", podOf(snapRestored), podOf(snapSource))
	return nil
}

// checkSnapshotLV checks the snapshot's LocalVolume and its LVM snapshot LV.
func (d *demo) checkSnapshotLV(ctx context.Context, res *StepResult, name string) error {
	lv, err := d.ol.CsiV1alpha1().LocalVolumes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("LocalVolume of the snapshot: %w", err)
	}
	if lv.Status.Phase != v1alpha1.PhaseReady {
		return fmt.Errorf("LocalVolume %s is %s: %s", name, lv.Status.Phase, lv.Status.Message)
	}
	rows, err := d.lvm.Report(ctx, "lvs", "-o", "lv_name,origin,lv_size,lv_attr", lv.Spec.VGName+"/"+lvName(lv))
	if err != nil {
		return err
	}
	row := rows[0]
	if row["origin"] == "" {
		return fmt.Errorf("LV %s/%s is no snapshot: %v", lv.Spec.VGName, lvName(lv), row)
	}
	d.p.check(res, "LocalVolume %s Ready; lvm: %s/%s is a snapshot of %s (attributes %s, copy-on-write area %s)",
		name, lv.Spec.VGName, lvName(lv), row["origin"], row["lv_attr"], humanBytes(atoi64(row["lv_size"])))
	return nil
}

// snapshotInVM runs this step in a throw-away QEMU VM whose kernel has
// device-mapper (hack/vmrun.sh): the guest's root is this machine's root
// filesystem, so it runs the same demo binary, with the same control plane,
// kubelet, procruntime and open-local, on its virtio disk.
func (d *demo) snapshotInVM(ctx context.Context, res *StepResult) error {
	p := d.p
	if d.cfg.SkipVM {
		return skipped("LVM snapshots need device-mapper, which this kernel lacks, and this run skips the VM")
	}
	if ok, why := capability.Has(capability.VM); !ok {
		return fmt.Errorf("LVM snapshots need device-mapper, which this kernel lacks, and the VM cannot run here: %s", why)
	}
	p.say("LVM snapshots need device-mapper, which this kernel lacks: this step runs in a throw-away QEMU VM")
	p.say("(hack/vmrun.sh) whose kernel has it. The guest's root is this machine's root filesystem (read-only, with a")
	p.say("tmpfs overlay), so it runs the same demo: control plane, kubelet + procruntime, open-local, the chart's NLSC")
	p.say("on its empty virtio disk /dev/vda; then the article's step. The CPU is emulated (TCG): expect minutes.")
	vmDir := d.path("vm")
	if err := os.MkdirAll(vmDir, 0o755); err != nil {
		return err
	}
	resultPath := filepath.Join(vmDir, "snapshot-step.json")
	shares := []string{vmDir, d.cfg.RepoRoot, d.cfg.ToolsDir}
	for _, prog := range Programs {
		shares = append(shares, filepath.Dir(d.cfg.Binaries[prog]))
	}
	var args []string
	for _, s := range uniqueDirs(shares) {
		args = append(args, "-s", s)
	}
	args = append(args, "-d", vmDiskSize, "-w", d.cfg.RepoRoot, "--", d.cfg.Binaries["demo"], "vm-snapshot",
		"--dir=/tmp/open-local/demo-vm", "--disk=/dev/vda", "--result="+resultPath)
	env := []string{"VM_MEM=4096", "VM_TIMEOUT=1800", "VM_CONSOLE=" + filepath.Join(vmDir, "console.log"),
		"VM_ENV=OPEN_LOCAL_TOOLS_DIR=" + d.cfg.ToolsDir + " " + capability.EnvInVM + "=1"}
	stream := &prefixWriter{w: p.w, prefix: "   vm│ "}
	_, runErr := d.run(ctx, nil, env, stream, filepath.Join(d.cfg.RepoRoot, "hack", "vmrun.sh"), args...)
	stream.flush()
	data, err := os.ReadFile(resultPath)
	if err != nil {
		return fmt.Errorf("the VM left no result (%v); console: %s", errors.Join(runErr, err), filepath.Join(vmDir, "console.log"))
	}
	var guest StepResult
	if err := json.Unmarshal(data, &guest); err != nil {
		return fmt.Errorf("%s: %w", resultPath, err)
	}
	for _, c := range guest.Checks {
		res.Checks = append(res.Checks, "in the VM: "+c)
	}
	p.say("the VM's verdict: %s", guest.Status)
	switch guest.Status {
	case Pass:
		return runErr
	case NotImplemented:
		return notImplemented("in the VM: %s", guest.Reason)
	default:
		return fmt.Errorf("in the VM: %s", guest.Reason)
	}
}

// SnapshotInGuest is step 4's side in the VM (demo vm-snapshot): it sets the
// demo up on cfg.Disk, makes the volume of step 2 the snapshot is taken of,
// runs the step and writes its StepResult to resultPath.
func SnapshotInGuest(ctx context.Context, cfg Config, resultPath string) error {
	if cfg.Slowdown == 0 {
		cfg.Slowdown = vmSlowdown
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	d := &demo{cfg: cfg, p: &printer{w: cfg.Out, start: time.Now()}}
	res := StepResult{Number: 4, Title: "snapshot and restore (in the VM)"}
	start := time.Now()
	err := d.setUp(ctx)
	if err == nil {
		err = d.snapshotPrerequisites(ctx)
	}
	if err == nil {
		d.p.section("4. snapshot and restore (in the VM)")
		err = d.snapshotAndRestore(ctx, &res)
	}
	res.Took, res.Status = time.Since(start), stepStatus(err)
	if err != nil {
		res.Reason = err.Error()
	}
	d.p.result(&res)
	// The guest's disks vanish with it: keep the logs beside the result.
	logs := filepath.Join(filepath.Dir(resultPath), "guest-logs")
	if cerr := copyLogs(d.path("cluster", "logs"), logs); cerr == nil {
		d.p.say("the guest's component logs: %s (on the host)", logs)
	}
	data, jerr := json.MarshalIndent(res, "", "  ")
	if jerr != nil {
		return jerr
	}
	if werr := os.WriteFile(resultPath, data, 0o644); werr != nil {
		return werr
	}
	return err
}

// snapshotPrerequisites does in the guest what steps 1 and 2 did on the
// host for the snapshot: the VG from the NLSC, and nginx-lvm writing its page.
func (d *demo) snapshotPrerequisites(ctx context.Context) error {
	start := time.Now()
	loud := d.p
	d.p = &printer{w: io.Discard}
	defer func() { d.p = loud }()
	var scratch StepResult
	if err := d.stepInitialConfiguration(ctx, &scratch); err != nil {
		return fmt.Errorf("step 1 in the VM: %w", err)
	}
	if _, err := d.applyManifest(ctx, "sts-"+snapSource+".yaml", statefulSet(snapSource, "open-local-lvm", false, writeOnce)); err != nil {
		return err
	}
	if _, err := d.waitPodRunning(ctx, podOf(snapSource), 5*time.Minute); err != nil {
		return err
	}
	if _, err := d.execIn(ctx, podOf(snapSource), "cat /data/index.html"); err != nil {
		return err
	}
	loud.printf("   ok   %-14s the NLSC made %s on %s; StatefulSet %s (open-local-lvm, 5Gi) runs and wrote its page (%s)\n",
		"as on the host", VG, d.disk.Path, snapSource, time.Since(start).Round(100*time.Millisecond))
	return nil
}

func uniqueDirs(dirs []string) []string {
	var out []string
	for _, d := range dirs {
		if d != "" && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// prefixWriter indents streamed output line by line.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    bytes.Buffer
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf.Write(b)
	for {
		line, err := p.buf.ReadString('\n')
		if err != nil {
			p.buf.WriteString(line) // incomplete: keep for later
			return len(b), nil
		}
		fmt.Fprint(p.w, p.prefix+line)
	}
}

func (p *prefixWriter) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.buf.Len() > 0 {
		fmt.Fprintln(p.w, p.prefix+p.buf.String())
		p.buf.Reset()
	}
}

// copyLogs copies the *.log files of src into dst.
func copyLogs(src, dst string) error {
	files, err := filepath.Glob(filepath.Join(src, "*.log"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no logs in %s: %v", src, err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(f)), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
