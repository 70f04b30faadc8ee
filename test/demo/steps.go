/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package demo

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/csi/identity"
)

const (
	gib = int64(1) << 30
	mib = int64(1) << 20
	ns  = "default"
)

func (d *demo) steps() []step {
	return []step{
		{1, "initial configuration (NLSC → VG)", d.stepInitialConfiguration},
		{2, "dynamic provisioning (ext4, xfs)", d.stepProvisioning},
		{3, "expansion 5Gi → 20Gi", d.stepExpansion},
		{4, "snapshot and restore", d.stepSnapshot},
		{5, "raw block volume", d.stepRawBlock},
		{6, "IO throttling (bps 1Mi)", d.stepIOThrottling},
		{7, "ephemeral inline volume", d.stepEphemeral},
		{8, "monitoring (dashboard metrics)", d.stepMonitoring},
	}
}

// ---- 1. initial configuration

func (d *demo) stepInitialConfiguration(ctx context.Context, res *StepResult) error {
	p := d.p
	p.say("The chart's NodeLocalStorageInitConfig says which VGs open-local manages and which block device becomes %s", VG)
	p.say("on every node; the demo points it at its disk %s instead of the chart's default /dev/vdb:", d.disk.Path)
	manifest, err := d.helmTemplate(ctx, []string{"--set", "initConfig.device=" + d.disk.Path}, "templates/nlsc.yaml")
	if err != nil {
		return err
	}
	p.command(fmt.Sprintf("helm template deploy/helm/open-local --show-only templates/nlsc.yaml --set initConfig.device=%s > manifests/nlsc.yaml", d.disk.Path),
		specOnly(manifest))
	out, err := d.applyManifest(ctx, "nlsc.yaml", manifest)
	p.command("kubectl apply -f manifests/nlsc.yaml", out)
	if err != nil {
		return err
	}
	p.say("the NLS controller writes the node's NodeLocalStorage spec; the agent creates the VG and reports it:")
	var nls *v1alpha1.NodeLocalStorage
	err = d.poll(ctx, 2*time.Minute, "agent", func(ctx context.Context) (bool, string, error) {
		got, err := d.ol.CsiV1alpha1().NodeLocalStorages().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false, "no NodeLocalStorage " + NodeName + " yet", nil
		}
		nls = got
		return slices.Contains(got.Status.FilteredStorageInfo.VolumeGroups, VG),
			fmt.Sprintf("status VGs %v, filtered %v", vgNames(got), got.Status.FilteredStorageInfo.VolumeGroups), nil
	})
	if err != nil {
		return err
	}
	if _, err := d.show(ctx, "get", "nlsc,nls"); err != nil {
		return err
	}
	inited := nls.Spec.ResourceToBeInited.VGs
	if len(inited) != 1 || inited[0].Name != VG || !slices.Equal(inited[0].Devices, []string{d.disk.Path}) {
		return fmt.Errorf("NodeLocalStorage %s spec.resourceToBeInited.vgs = %+v, want %s on %s", NodeName, inited, VG, d.disk.Path)
	}
	p.check(res, "NodeLocalStorage %s: spec (from the NLSC) inits %s on %s", NodeName, VG, d.disk.Path)
	vg := findVG(nls, VG)
	if vg == nil || !slices.Equal(vg.PhysicalVolumes, []string{d.disk.Path}) || vg.Total < uint64(d.cfg.DiskSize)-uint64(gib) || vg.Allocatable == 0 {
		return fmt.Errorf("NodeLocalStorage %s status VG = %+v, want %s on %s of about %s", NodeName, vg, VG, d.disk.Path, humanBytes(d.cfg.DiskSize))
	}
	p.check(res, "status: VG %s on %s, %s total, %s allocatable; listed in filteredStorageInfo", VG, d.disk.Path,
		humanBytes(int64(vg.Total)), humanBytes(int64(vg.Allocatable)))
	rows, err := d.lvm.Report(ctx, "vgs", "-o", "vg_name,pv_count,vg_size,vg_free", VG)
	if err != nil {
		return fmt.Errorf("lvm does not see %s: %w", VG, err)
	}
	p.check(res, "lvm on the host agrees: vgs %s → %d PV, size %s", VG, atoi(rows[0]["pv_count"]), humanBytes(atoi64(rows[0]["vg_size"])))
	return nil
}

func vgNames(n *v1alpha1.NodeLocalStorage) []string {
	var names []string
	for _, vg := range n.Status.NodeStorageInfo.VolumeGroups {
		names = append(names, vg.Name)
	}
	return names
}

func findVG(n *v1alpha1.NodeLocalStorage, name string) *v1alpha1.VolumeGroup {
	for i, vg := range n.Status.NodeStorageInfo.VolumeGroups {
		if vg.Name == name {
			return &n.Status.NodeStorageInfo.VolumeGroups[i]
		}
	}
	return nil
}

// specOnly cuts a rendered manifest to its spec (labels and the source
// comment are noise in a report).
func specOnly(manifest string) string {
	if i := strings.Index(manifest, "spec:"); i >= 0 {
		return "kind: NodeLocalStorageInitConfig\n" + manifest[i:]
	}
	return manifest
}

// ---- 2. dynamic provisioning

// A filesystem StatefulSet of step 2.
type fsWorkload struct{ sts, class, fsType string }

// The xfs one is made last: see growable.
var fsWorkloads = []fsWorkload{{"nginx-lvm", "open-local-lvm", "ext4"}, {"nginx-lvm-xfs", "open-local-lvm-xfs", "xfs"}}

// growable is the volume step 3 expands. The article expands its ext4
// volume, which the kubelet grows online only where the CSI node plugin
// has CAP_SYS_RESOURCE; this kind of machine withholds it, so the demo
// grows the xfs one, online, as a user's node would either. Without
// device-mapper an LV is one contiguous extent range used through a loop
// device and can grow only into free extents right after it: step 2
// makes it last, so that it can.
const growable = "nginx-lvm-xfs"

func pvcOf(sts string) string { return "html-" + sts + "-0" }
func podOf(sts string) string { return sts + "-0" }

func (d *demo) stepProvisioning(ctx context.Context, res *StepResult) error {
	p := d.p
	p.say("the chart's StorageClasses (WaitForFirstConsumer: the volume is made once the scheduler placed the pod):")
	if _, err := d.show(ctx, "get", "sc"); err != nil {
		return err
	}
	p.say("a StatefulSet per class with a 5Gi volumeClaimTemplate, schedulerName: open-local-scheduler:")
	for _, w := range fsWorkloads {
		file := "sts-" + w.sts + ".yaml"
		out, err := d.applyManifest(ctx, file, statefulSet(w.sts, w.class, false, writeOnce))
		p.command("kubectl apply -f manifests/"+file, out)
		if err != nil {
			return err
		}
		// One after the other, so the LVs are laid out as growable says.
		if _, _, err := d.boundVolume(ctx, pvcOf(w.sts)); err != nil {
			return fmt.Errorf("%w; events: %s", err, d.events(context.WithoutCancel(ctx), podOf(w.sts)))
		}
	}
	for _, w := range fsWorkloads {
		if _, err := d.waitPodRunning(ctx, podOf(w.sts), 3*time.Minute); err != nil {
			return err
		}
	}
	for _, args := range [][]string{{"get", "pod", "-o", "wide"}, {"get", "pvc"}, {"get", "pv"}} {
		if _, err := d.show(ctx, args...); err != nil {
			return err
		}
	}
	for _, w := range fsWorkloads {
		pvc, pv, err := d.boundVolume(ctx, pvcOf(w.sts))
		if err != nil {
			return err
		}
		p.check(res, "pod %s on node %s, PVC %s Bound to %s (%s)", podOf(w.sts), NodeName, pvc.Name, pv.Name, pv.Spec.StorageClassName)
		if err := checkNodeAffinity(pv); err != nil {
			return err
		}
		p.check(res, "PV %s: node affinity %s=%s, CSI driver %s", pv.Name, parameters.TopologyKey, NodeName, pv.Spec.CSI.Driver)
		if err := d.checkLV(ctx, res, pv.Spec.CSI.VolumeHandle, 5*gib); err != nil {
			return err
		}
		out, err := d.execIn(ctx, podOf(w.sts), "df -T /data | tail -1; cat /data/index.html")
		if err != nil {
			return err
		}
		if f := strings.Fields(out); len(f) < 2 || f[1] != w.fsType {
			return fmt.Errorf("pod %s sees %q at /data, want a %s filesystem", podOf(w.sts), strings.TrimSpace(out), w.fsType)
		}
		if !strings.Contains(out, "written by "+podOf(w.sts)) {
			return fmt.Errorf("pod %s did not write /data/index.html: %q", podOf(w.sts), out)
		}
		p.check(res, "inside %s: /data is %s, holding the page its command wrote", podOf(w.sts), w.fsType)
	}
	return nil
}

// boundVolume waits for a Bound PVC and returns it with its PV.
func (d *demo) boundVolume(ctx context.Context, name string) (*corev1.PersistentVolumeClaim, *corev1.PersistentVolume, error) {
	var pvc *corev1.PersistentVolumeClaim
	err := d.poll(ctx, time.Minute, "csi-provisioner", func(ctx context.Context) (bool, string, error) {
		got, err := d.kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		pvc = got
		return got.Status.Phase == corev1.ClaimBound, "PVC " + name + " " + string(got.Status.Phase), nil
	})
	if err != nil {
		return nil, nil, err
	}
	pv, err := d.kube.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return nil, nil, err
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != identity.DefaultDriverName {
		return nil, nil, fmt.Errorf("PV %s is not a %s volume: %+v", pv.Name, identity.DefaultDriverName, pv.Spec.PersistentVolumeSource)
	}
	return pvc, pv, nil
}

func checkNodeAffinity(pv *corev1.PersistentVolume) error {
	if pv.Spec.NodeAffinity != nil && pv.Spec.NodeAffinity.Required != nil {
		for _, term := range pv.Spec.NodeAffinity.Required.NodeSelectorTerms {
			for _, e := range term.MatchExpressions {
				if e.Key == parameters.TopologyKey && slices.Equal(e.Values, []string{NodeName}) {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("PV %s node affinity %+v does not pin it to %s", pv.Name, pv.Spec.NodeAffinity, NodeName)
}

// checkLV checks the LocalVolume of a volume and its LV on the node.
func (d *demo) checkLV(ctx context.Context, res *StepResult, name string, size int64) error {
	var lv *v1alpha1.LocalVolume
	err := d.poll(ctx, time.Minute, "agent", func(ctx context.Context) (bool, string, error) {
		got, err := d.ol.CsiV1alpha1().LocalVolumes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		lv = got
		cur := int64(0)
		if got.Status.CurrentSize != nil {
			cur = got.Status.CurrentSize.Value()
		}
		return got.Status.Phase == v1alpha1.PhaseReady && cur >= size,
			fmt.Sprintf("LocalVolume %s %s, current size %d", name, got.Status.Phase, cur), nil
	})
	if err != nil {
		return err
	}
	rows, err := d.lvmOn(lv.Spec.NodeName).Report(ctx, "lvs", "-o", "lv_name,lv_size,lv_tags", lv.Spec.VGName+"/"+lv.LVName())
	if err != nil {
		return fmt.Errorf("LV of %s: %w", name, err)
	}
	got := atoi64(rows[0]["lv_size"])
	if got < size || got > size+8*mib {
		return fmt.Errorf("LV %s/%s is %d bytes, want %d", lv.Spec.VGName, lv.LVName(), got, size)
	}
	p := d.p
	p.check(res, "LocalVolume %s Ready on %s; lvm: LV %s/%s of %s", name, lv.Spec.NodeName, lv.Spec.VGName, lv.LVName(), humanBytes(got))
	return nil
}

// ---- 3. expansion

func (d *demo) stepExpansion(ctx context.Context, res *StepResult) error {
	p := d.p
	const size = 20 * gib
	pod, claim := podOf(growable), pvcOf(growable)
	p.say("ask for 20Gi, as the article does (for the xfs volume of step 2: see below why):")
	if _, err := d.show(ctx, "patch", "pvc", claim, "-p", `{"spec":{"resources":{"requests":{"storage":"20Gi"}}}}`); err != nil {
		return err
	}
	_, pv, err := d.boundVolume(ctx, claim)
	if err != nil {
		return err
	}
	err = d.poll(ctx, 2*time.Minute, "csi-resizer", func(ctx context.Context) (bool, string, error) {
		got, err := d.kube.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		q := got.Spec.Capacity[corev1.ResourceStorage]
		return q.Value() >= size, "PV capacity " + q.String() + "; PVC events: " + d.events(ctx, claim), nil
	})
	if err != nil {
		return err
	}
	p.check(res, "PV %s: 20Gi (csi-resizer → ControllerExpandVolume → LocalVolume size → agent lvextend)", pv.Name)
	if err := d.checkLV(ctx, res, pv.Spec.CSI.VolumeHandle, size); err != nil {
		return err
	}
	if d.activation == "loop" {
		p.say("(no device-mapper here: the LV is one contiguous extent range behind a loop device; it grew into the free")
		p.say(" extents after it, which is why step 2 made this volume last; the loop device was grown to match)")
	}
	// The kubelet notices the expansion at its next sync of the pod and
	// calls NodeExpandVolume: xfs_growfs on the mounted filesystem.
	before, err := d.kube.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if err := d.waitPVCCapacity(ctx, claim, size, 2*time.Minute); err != nil {
		return err
	}
	if err := d.checkGrown(ctx, res, pod, size, "online: the kubelet's NodeExpandVolume ran xfs_growfs on the mounted filesystem"); err != nil {
		return err
	}
	after, err := d.kube.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if after.UID != before.UID || restarts(after) != restarts(before) {
		return fmt.Errorf("pod %s was restarted during the online expansion", pod)
	}
	p.check(res, "pod %s kept running throughout (same pod, no container restart)", pod)
	p.say("(an ext4 volume grows online the same way where the CSI node plugin has CAP_SYS_RESOURCE; this machine")
	p.say(" withholds it, so there ext4 grows at the next staging of the volume, i.e. when its pod restarts)")
	return nil
}

func restarts(p *corev1.Pod) int32 {
	var n int32
	for _, s := range p.Status.ContainerStatuses {
		n += s.RestartCount
	}
	return n
}

func (d *demo) waitPVCCapacity(ctx context.Context, name string, size int64, timeout time.Duration) error {
	return d.poll(ctx, timeout, "kubelet", func(ctx context.Context) (bool, string, error) {
		pvc, err := d.kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		q := pvc.Status.Capacity[corev1.ResourceStorage]
		var conds []string
		for _, c := range pvc.Status.Conditions {
			conds = append(conds, string(c.Type)+": "+c.Message)
		}
		return q.Value() >= size, fmt.Sprintf("PVC %s capacity %s, conditions %v", name, q.String(), conds), nil
	})
}

// checkGrown checks, inside the pod, that the filesystem has about size
// bytes and still holds the page written in step 2.
func (d *demo) checkGrown(ctx context.Context, res *StepResult, pod string, size int64, how string) error {
	out, err := d.execIn(ctx, pod, "df -B1 --output=size /data | tail -1; cat /data/index.html")
	if err != nil {
		return err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	got := atoi64(strings.TrimSpace(lines[0]))
	if got < size*9/10 || !strings.Contains(out, "written by "+pod) {
		return fmt.Errorf("inside %s: /data has %d bytes (want about %d) and page %q", pod, got, size, out)
	}
	if _, err := d.show(ctx, "get", "pvc", pvcOf(strings.TrimSuffix(pod, "-0"))); err != nil {
		return err
	}
	d.p.check(res, "inside %s: /data grew to %s (%s); the page written in step 2 is still there", pod, humanBytes(got), how)
	return nil
}

// ---- 5. raw block

func (d *demo) stepRawBlock(ctx context.Context, res *StepResult) error {
	p := d.p
	p.say("a StatefulSet whose volumeClaimTemplate asks for volumeMode: Block, passed to the container at /dev/sdd:")
	out, err := d.applyManifest(ctx, "sts-block.yaml", statefulSet("nginx-lvm-block", "open-local-lvm", true, showDevice))
	p.command("kubectl apply -f manifests/sts-block.yaml", out)
	if err != nil {
		return err
	}
	if _, err := d.waitPodRunning(ctx, "nginx-lvm-block-0", 3*time.Minute); err != nil {
		return err
	}
	if _, err := d.show(ctx, "get", "pvc", "html-nginx-lvm-block-0", "-o",
		"custom-columns=NAME:.metadata.name,STATUS:.status.phase,VOLUME:.spec.volumeName,CAPACITY:.status.capacity.storage,VOLUMEMODE:.spec.volumeMode"); err != nil {
		return err
	}
	pvc, pv, err := d.boundVolume(ctx, "html-nginx-lvm-block-0")
	if err != nil {
		return err
	}
	if pvc.Spec.VolumeMode == nil || *pvc.Spec.VolumeMode != corev1.PersistentVolumeBlock {
		return fmt.Errorf("PVC %s is not a Block volume", pvc.Name)
	}
	if err := d.checkLV(ctx, res, pv.Spec.CSI.VolumeHandle, 5*gib); err != nil {
		return err
	}
	out, err = d.execIn(ctx, "nginx-lvm-block-0", "stat -c '%F %t:%T' /dev/sdd; blockdev --getsize64 /dev/sdd")
	if err != nil {
		return err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "block special file") || atoi64(lines[1]) != 5*gib {
		return fmt.Errorf("inside nginx-lvm-block-0, /dev/sdd is %q, want a 5Gi block device", out)
	}
	lv, err := d.ol.CsiV1alpha1().LocalVolumes().Get(ctx, pv.Spec.CSI.VolumeHandle, metav1.GetOptions{})
	if err != nil {
		return err
	}
	p.check(res, "inside nginx-lvm-block-0: /dev/sdd is a block device of 5Gi (device %s, the LV's %s on the host)",
		strings.Fields(lines[0])[len(strings.Fields(lines[0]))-1], lv.Status.DevicePath)
	out, err = d.execIn(ctx, "nginx-lvm-block-0",
		"printf open-local-raw | dd of=/dev/sdd bs=4096 seek=1 conv=sync,fsync status=none && dd if=/dev/sdd bs=4096 skip=1 count=1 status=none | head -c 14")
	if err != nil {
		return err
	}
	if strings.TrimSpace(out) != "open-local-raw" {
		return fmt.Errorf("raw write/read back through /dev/sdd gave %q", out)
	}
	p.check(res, "raw write and read back through /dev/sdd, no filesystem involved")
	return nil
}

// ---- 6. IO throttling

// ddRate matches dd's summary: "4194304 bytes (4.2 MB, 4.0 MiB) copied, 4.00 s, 1.0 MB/s".
var ddRate = regexp.MustCompile(`(\d+) bytes .* copied, ([0-9.]+) s`)

func (d *demo) ddMiBps(ctx context.Context, pod, cmd string) (float64, string, error) {
	out, err := d.execIn(ctx, pod, cmd)
	if err != nil {
		return 0, out, err
	}
	m := ddRate.FindStringSubmatch(out)
	if m == nil {
		return 0, out, fmt.Errorf("no dd summary in %q", out)
	}
	bytes, _ := strconv.ParseFloat(m[1], 64)
	secs, _ := strconv.ParseFloat(m[2], 64)
	if secs <= 0 {
		secs = 1e-6
	}
	return bytes / secs / float64(mib), out, nil
}

func (d *demo) stepIOThrottling(ctx context.Context, res *StepResult) error {
	p := d.p
	p.say("the chart's open-local-lvm-io-throttling class limits each volume to 1 MiB/s and 1024 IO/s, read and write:")
	if _, err := d.show(ctx, "get", "sc", "open-local-lvm-io-throttling", "-o", "jsonpath={.parameters}"); err != nil {
		return err
	}
	d.p.printf("\n")
	out, err := d.applyManifest(ctx, "sts-io-throttling.yaml", statefulSet("test-io-throttling", "open-local-lvm-io-throttling", true, showDevice))
	p.command("kubectl apply -f manifests/sts-io-throttling.yaml", out)
	if err != nil {
		return err
	}
	if _, err := d.waitPodRunning(ctx, "test-io-throttling-0", 3*time.Minute); err != nil {
		return err
	}
	// The limit, as the pod's own cgroup shows it (cgroup v1 blkio: set on
	// the container's cgroup, since v1 throttling is not hierarchical).
	const showLimit = `cg=$(sed -n 's/^[0-9]*:blkio://p' /proc/self/cgroup); echo "blkio cgroup: $cg"; ` +
		`cat /sys/fs/cgroup/blkio$cg/blkio.throttle.write_bps_device /sys/fs/cgroup/blkio$cg/blkio.throttle.read_bps_device`
	var limits string
	err = d.poll(ctx, 30*time.Second, "csi-node", func(ctx context.Context) (bool, string, error) {
		out, err := d.execIn(ctx, "test-io-throttling-0", showLimit)
		limits = out
		return err == nil && strings.Count(out, " 1048576") == 2, "the pod's cgroup: " + strings.TrimSpace(out), nil
	})
	if err != nil {
		event := d.eventMatching(ctx, "test-io-throttling-0", "IO limit")
		return fmt.Errorf("no 1 MiB/s limit in the pod's cgroup: %w %s", err, event)
	}
	p.check(res, "the pod's own cgroup carries the limit on its volume's device: %s", strings.Join(strings.Fields(limits), " "))
	const direct = "dd if=/dev/zero of=/dev/sdd bs=64k count=%d oflag=direct 2>&1 | tail -1"
	const directRead = "dd if=/dev/sdd of=/dev/null bs=64k count=%d iflag=direct 2>&1 | tail -1"
	throttledW, _, err := d.ddMiBps(ctx, "test-io-throttling-0", fmt.Sprintf(direct, 64))
	if err != nil {
		return err
	}
	throttledR, _, err := d.ddMiBps(ctx, "test-io-throttling-0", fmt.Sprintf(directRead, 64))
	if err != nil {
		return err
	}
	freeW, _, err := d.ddMiBps(ctx, "nginx-lvm-block-0", fmt.Sprintf(direct, 1600))
	if err != nil {
		return err
	}
	if throttledW < 0.7 || throttledW > 1.4 || throttledR < 0.7 || throttledR > 1.4 {
		return fmt.Errorf("direct IO in test-io-throttling-0 ran at %.2f MiB/s write, %.2f MiB/s read, want about 1", throttledW, throttledR)
	}
	p.check(res, "direct-IO write of 4 MiB inside test-io-throttling-0: %.2f MiB/s; read %.2f MiB/s", throttledW, throttledR)
	if freeW < 10*throttledW {
		return fmt.Errorf("unthrottled direct IO ran at only %.1f MiB/s (throttled %.2f)", freeW, throttledW)
	}
	p.check(res, "the same write without a limit (nginx-lvm-block-0, 100 MiB): %.0f MiB/s, %.0fx faster", freeW, freeW/throttledW)
	return nil
}

// ---- 7. ephemeral inline volume

func (d *demo) stepEphemeral(ctx context.Context, res *StepResult) error {
	p := d.p
	p.say("a pod with a CSI ephemeral inline volume (size 2Gi in %s): open-local's emptyDir", VG)
	out, err := d.applyManifest(ctx, "ephemeral.yaml", ephemeralPod())
	p.command("kubectl apply -f manifests/ephemeral.yaml", out)
	if err != nil {
		return err
	}
	pod, err := d.waitPodRunning(ctx, "file-server", 3*time.Minute)
	if err != nil {
		return err
	}
	out, err = d.kubectl(ctx, nil, "describe", "pod", "file-server")
	if err != nil {
		return err
	}
	p.command("kubectl describe pod file-server   # (Volumes)", section(out, "Volumes:", "QoS Class:"))
	lv, err := d.inlineVolume(ctx, pod)
	if err != nil {
		return err
	}
	if err := d.checkLV(ctx, res, lv.Name, 2*gib); err != nil {
		return err
	}
	out, err = d.execIn(ctx, "file-server", "df -B1 --output=fstype,size /srv | tail -1; cat /srv/index.html")
	if err != nil {
		return err
	}
	f := strings.Fields(out)
	if len(f) < 3 || atoi64(f[1]) < 2*gib*9/10 || f[2] != "served" {
		return fmt.Errorf("inside file-server, /srv is %q, want a 2Gi filesystem with the page", out)
	}
	p.check(res, "inside file-server: /srv is a %s filesystem of %s, created with the pod", f[0], humanBytes(atoi64(f[1])))
	p.say("deleting the pod deletes its volume:")
	if _, err := d.show(ctx, "delete", "pod", "file-server"); err != nil {
		return err
	}
	err = d.poll(ctx, 2*time.Minute, "agent", func(ctx context.Context) (bool, string, error) {
		_, err := d.ol.CsiV1alpha1().LocalVolumes().Get(ctx, lv.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), "LocalVolume " + lv.Name + " still there", nil
	})
	if err != nil {
		return err
	}
	if _, err := d.lvm.Report(ctx, "lvs", VG+"/"+lv.LVName()); err == nil {
		return fmt.Errorf("LV %s/%s outlived its pod", VG, lv.LVName())
	}
	p.check(res, "after the pod: LocalVolume %s and LV %s/%s are gone", lv.Name, VG, lv.LVName())
	return nil
}

// inlineVolume finds the LocalVolume of the pod's inline volume.
func (d *demo) inlineVolume(ctx context.Context, pod *corev1.Pod) (*v1alpha1.LocalVolume, error) {
	var found *v1alpha1.LocalVolume
	err := d.poll(ctx, 30*time.Second, "csi-node", func(ctx context.Context) (bool, string, error) {
		list, err := d.ol.CsiV1alpha1().LocalVolumes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		for i, lv := range list.Items {
			if lv.Spec.PodRef != nil && lv.Spec.PodRef.Name == pod.Name && lv.Spec.PodRef.Namespace == pod.Namespace {
				found = &list.Items[i]
				return true, "", nil
			}
		}
		return false, "no LocalVolume with podRef " + pod.Name, nil
	})
	return found, err
}

// section returns the lines of text from the one starting with from up to
// the one starting with to.
func section(text, from, to string) string {
	var out []string
	in := false
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, from) {
			in = true
		} else if strings.HasPrefix(l, to) {
			break
		}
		if in {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// ---- helpers

// hopeless are container waiting reasons that do not go away by waiting.
var hopeless = []string{"ImageInspectError", "CreateContainerConfigError", "CreateContainerError", "RunContainerError", "CrashLoopBackOff", "ErrImagePull"}

// waitPodRunning waits until the pod runs with all containers ready; on
// timeout the error carries the pod's and its claims' events.
func (d *demo) waitPodRunning(ctx context.Context, name string, timeout time.Duration) (*corev1.Pod, error) {
	var pod *corev1.Pod
	err := d.poll(ctx, timeout, "kubelet", func(ctx context.Context) (bool, string, error) {
		got, err := d.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, "pod " + name + ": " + err.Error(), nil
		}
		pod = got
		if got.Status.Phase == corev1.PodFailed || got.Status.Phase == corev1.PodSucceeded {
			return false, "", fmt.Errorf("pod %s %s: %s", name, got.Status.Phase, got.Status.Message)
		}
		ready := got.Status.Phase == corev1.PodRunning && len(got.Status.ContainerStatuses) > 0
		for _, s := range got.Status.ContainerStatuses {
			ready = ready && s.Ready
			if w := s.State.Waiting; w != nil && slices.Contains(hopeless, w.Reason) {
				return false, "", fmt.Errorf("pod %s: container %s %s: %s", name, s.Name, w.Reason, w.Message)
			}
		}
		return ready, fmt.Sprintf("pod %s %s on %q", name, got.Status.Phase, got.Spec.NodeName), nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w; events: %s", err, d.events(context.WithoutCancel(ctx), name))
	}
	return pod, nil
}

// events lists the Events of an object in the namespace, oldest first.
func (d *demo) events(ctx context.Context, name string) string {
	list, err := d.kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, e := range list.Items {
		out = append(out, fmt.Sprintf("%s %s: %s", e.Type, e.Reason, e.Message))
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, " | ")
}

// eventMatching returns the newest Event message of the object that
// contains substr, or "".
func (d *demo) eventMatching(ctx context.Context, name, substr string) string {
	list, err := d.kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		return ""
	}
	msg := ""
	for _, e := range list.Items {
		if strings.Contains(e.Message, substr) {
			msg = e.Reason + ": " + e.Message
		}
	}
	return msg
}

// execIn runs a shell command inside the pod's container (kubectl exec:
// apiserver → kubelet → procruntime), printing it and its output.
func (d *demo) execIn(ctx context.Context, pod, script string) (string, error) {
	out, err := d.kubectl(ctx, nil, "exec", pod, "--", "sh", "-c", script)
	d.p.command(fmt.Sprintf("kubectl exec %s -- sh -c %s", pod, shellQuote(script)), out)
	if err != nil {
		return out, err
	}
	return out, nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func atoi(s string) int       { n, _ := strconv.Atoi(strings.TrimSpace(s)); return n }
func atoi64(s string) int64   { n, _ := strconv.ParseInt(strings.TrimSpace(s), 10, 64); return n }
func quantity(n int64) string { return resource.NewQuantity(n, resource.BinarySI).String() }
