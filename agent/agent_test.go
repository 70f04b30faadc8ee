/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/open-local/open-local/agent/discovery"
	"github.com/open-local/open-local/agent/nlscontroller"
	"github.com/open-local/open-local/agent/nodestorage"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/launcher"
	"github.com/open-local/open-local/test/loopvg"
)

func TestMain(m *testing.M) { cluster.Main(m) }

const mib = uint64(1) << 20

// vgBytes is the size lvm gives a VG on one 1 GiB loop device: 1 MiB of
// metadata, then 255 extents of 4 MiB.
const vgBytes = 255 * 4 * mib

// node is one test's world: a Node object, loop devices in a private LVM
// config, an NLSC of its own, the real controller and agent binaries.
type node struct {
	t      *testing.T
	c      *cluster.Cluster
	run    string
	name   string
	config string
	devs   []loopvg.Device
	lvmCfg *loopvg.Config
	agent  *cluster.Process
	port   int // of the agent's /healthz and /metrics
}

func newNode(t *testing.T, devices int) *node {
	t.Helper()
	capability.Require(t, capability.Root, capability.LoopDevices, capability.LVM)
	c := cluster.ForTest(t)
	n := &node{t: t, c: c, run: rand.String(6)}
	n.name = "agent-" + n.run
	n.config = "nlsc-" + n.run
	sizes := make([]int64, devices)
	for i := range sizes {
		sizes[i] = 1 << 30
	}
	n.devs = loopvg.NewDevices(t, sizes...)
	var paths []string
	for _, d := range n.devs {
		paths = append(paths, d.Path)
	}
	n.lvmCfg = loopvg.NewConfig(t, paths...)
	t.Cleanup(n.removeVGs) // before the devices are detached
	_, err := c.Client().CoreV1().Nodes().Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: n.name, Labels: map[string]string{"test.open-local/run": n.run}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Client().CoreV1().Nodes().Delete(context.Background(), n.name, metav1.DeleteOptions{})
		_ = c.OpenLocalClient().CsiV1alpha1().NodeLocalStorageInitConfigs().Delete(context.Background(), n.config, metav1.DeleteOptions{})
		_ = c.OpenLocalClient().CsiV1alpha1().NodeLocalStorages().Delete(context.Background(), n.name, metav1.DeleteOptions{})
	})
	return n
}

func (n *node) removeVGs() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := n.lvmCfg.Report(ctx, "vgs", "-o", "vg_name")
	if err != nil {
		n.t.Errorf("cleanup: %v", err)
		return
	}
	for _, r := range rows {
		if _, err := n.lvmCfg.Run(ctx, "vgremove", "--force", "--force", "--yes", r["vg_name"]); err != nil {
			n.t.Errorf("cleanup: %v", err)
		}
	}
}

func (n *node) dev(i int) string { return n.devs[i].Path }

// deviceRegexp matches exactly this test's loop devices.
func (n *node) deviceRegexp() string {
	var names []string
	for _, d := range n.devs {
		names = append(names, regexpQuote(filepath.Base(d.Path)))
	}
	return "^(" + strings.Join(names, "|") + ")$"
}

func regexpQuote(s string) string { return strings.NewReplacer(".", `\.`).Replace(s) }

func (n *node) createConfig(spec v1alpha1.NodeLocalStorageInitConfigSpec) {
	n.t.Helper()
	_, err := n.c.OpenLocalClient().CsiV1alpha1().NodeLocalStorageInitConfigs().Create(n.t.Context(),
		&v1alpha1.NodeLocalStorageInitConfig{ObjectMeta: metav1.ObjectMeta{Name: n.config}, Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) updateConfig(edit func(*v1alpha1.GlobalConfig)) {
	n.t.Helper()
	api := n.c.OpenLocalClient().CsiV1alpha1().NodeLocalStorageInitConfigs()
	_, err := cluster.Update(n.t.Context(), api.Get, api.Update, n.config, func(cfg *v1alpha1.NodeLocalStorageInitConfig) { edit(&cfg.Spec.GlobalConfig) })
	if err != nil {
		n.t.Fatal(err)
	}
}

// startController runs the real binary in controller mode as the chart
// does (test/launcher), scoped to this test's node and config, alone (no
// leader election) and without a health port.
func (n *node) startController() *cluster.Process {
	n.t.Helper()
	return launcher.ForTest(n.t).Start(n.t, n.c, "nls-controller-"+n.run, cluster.Binary(n.t, "./agent"), launcher.NLSController, launcher.Pod{},
		"--kubeconfig", n.c.Kubeconfig, "--initconfig", n.config, "--node-selector", "test.open-local/run="+n.run,
		"--leader-elect", "false", "--healthz-bind-address", "")
}

// startAgent runs the real agent binary for the node as the chart does
// (test/launcher) with the private LVM config, loop activation, a plain
// HTTP health endpoint on loopback, discovery every second and changes
// (flag, value pairs), and waits until it is healthy.
func (n *node) startAgent(changes ...string) *cluster.Process {
	n.t.Helper()
	ports, err := cluster.FreePorts(1)
	if err != nil {
		n.t.Fatal(err)
	}
	port := ports[0]
	p := launcher.ForTest(n.t).Start(n.t, n.c, "agent-"+n.run, cluster.Binary(n.t, "./agent"), launcher.Agent, launcher.Pod{NodeName: n.name},
		append([]string{"--kubeconfig", n.c.Kubeconfig, "--lvm-system-dir", n.lvmCfg.Dir, "--regexp", n.deviceRegexp(), "--interval", "1s",
			"--activation", "loop", "--loop-lock-file", filepath.Join(n.t.TempDir(), "loop.lock"),
			"--healthz-bind-address", "127.0.0.1:" + strconv.Itoa(port), "--metrics-auth", "none"}, changes...)...)
	if err := p.WaitHealthy(n.t.Context(), "http://127.0.0.1:"+strconv.Itoa(port)+"/healthz", 30*time.Second); err != nil {
		n.t.Fatal(err)
	}
	n.agent, n.port = p, port
	return p
}

// createLocalVolume writes a thick LocalVolume of the node in vg naming LV
// lvName (the object's name when empty); the test's cleanup removes it,
// finalizer included.
func (n *node) createLocalVolume(name, vg, lvName, size string) *v1alpha1.LocalVolume {
	n.t.Helper()
	api := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes()
	lv, err := api.Create(n.t.Context(), &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.LocalVolumeSpec{NodeName: n.name, VolumeType: v1alpha1.VolumeTypeLVM, Kind: v1alpha1.KindVolume,
			VGName: vg, LVName: lvName, Size: resource.MustParse(size)}}, metav1.CreateOptions{})
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { n.forceDelete(context.Background(), name) })
	return lv
}

// forceDelete removes a LocalVolume without the agent: finalizers dropped,
// the LV left behind (what an operator's force-delete does).
func (n *node) forceDelete(ctx context.Context, name string) {
	api := n.c.OpenLocalClient().CsiV1alpha1().LocalVolumes()
	_, _ = api.Patch(ctx, name, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
	_ = api.Delete(ctx, name, metav1.DeleteOptions{})
}

// metric returns the agent's /metrics lines that start with prefix.
func (n *node) metric(prefix string) []string {
	n.t.Helper()
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(n.port) + "/metrics")
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		n.t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

func (n *node) nls() *v1alpha1.NodeLocalStorage {
	n.t.Helper()
	nls, err := n.c.OpenLocalClient().CsiV1alpha1().NodeLocalStorages().Get(n.t.Context(), n.name, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return nls
}

// eventually polls cond until it returns "" or the timeout passes; the agent
// must stay alive all along.
func (n *node) eventually(timeout time.Duration, cond func(*v1alpha1.NodeLocalStorage) string) *v1alpha1.NodeLocalStorage {
	n.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if n.agent != nil && !n.agent.Alive() {
			n.t.Fatalf("the agent died:\n%s", n.agent.LogTail(30))
		}
		nls := n.nls()
		msg := "no NodeLocalStorage yet"
		if nls != nil {
			msg = cond(nls)
		}
		if msg == "" {
			return nls
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("after %s: %s", timeout, msg)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func vgOf(nls *v1alpha1.NodeLocalStorage, name string) *v1alpha1.VolumeGroup {
	for i := range nls.Status.NodeStorageInfo.VolumeGroups {
		if nls.Status.NodeStorageInfo.VolumeGroups[i].Name == name {
			return &nls.Status.NodeStorageInfo.VolumeGroups[i]
		}
	}
	return nil
}

// waitVG waits until the status shows vg with these sizes and PVs.
func (n *node) waitVG(vg string, total, available, allocatable uint64, pvs ...string) *v1alpha1.NodeLocalStorage {
	n.t.Helper()
	return n.eventually(30*time.Second, func(nls *v1alpha1.NodeLocalStorage) string {
		v := vgOf(nls, vg)
		if v == nil {
			return fmt.Sprintf("VG %s not in status %+v", vg, nls.Status.NodeStorageInfo.VolumeGroups)
		}
		if v.Total != total || v.Available != available || v.Allocatable != allocatable || !slices.Equal(v.PhysicalVolumes, pvs) {
			return fmt.Sprintf("VG %s = total %d available %d allocatable %d PVs %v; want %d %d %d %v",
				vg, v.Total, v.Available, v.Allocatable, v.PhysicalVolumes, total, available, allocatable, pvs)
		}
		// The VGs of these tests have LVM's default extent size.
		if v.ExtentSize != 4*mib {
			return fmt.Sprintf("VG %s extent size %d, want 4 MiB", vg, v.ExtentSize)
		}
		return ""
	})
}

// events lists the Events of the node's NLS, with reason unless it is empty.
func (n *node) events(reason string) []corev1.Event {
	n.t.Helper()
	sel := "involvedObject.kind=NodeLocalStorage,involvedObject.name=" + n.name
	if reason != "" {
		sel += ",reason=" + reason
	}
	l, err := n.c.Client().CoreV1().Events("").List(n.t.Context(), metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		n.t.Fatal(err)
	}
	return l.Items
}

// waitEvent waits for an Event with reason whose message contains every part.
func (n *node) waitEvent(reason string, parts ...string) corev1.Event {
	n.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var seen []string
		for _, e := range n.events(reason) {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(e.Message, p)
			}
			if ok {
				return e
			}
			seen = append(seen, e.Message)
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("no %s event containing %q; seen: %q", reason, parts, seen)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (n *node) annotate(value string) {
	n.t.Helper()
	api := n.c.OpenLocalClient().CsiV1alpha1().NodeLocalStorages()
	// The agent writes the status meanwhile.
	_, err := cluster.Update(n.t.Context(), api.Get, api.Update, n.name, func(nls *v1alpha1.NodeLocalStorage) {
		if nls.Annotations == nil {
			nls.Annotations = map[string]string{}
		}
		if value == "" {
			delete(nls.Annotations, discovery.ReserveAnnotation)
		} else {
			nls.Annotations[discovery.ReserveAnnotation] = value
		}
	})
	if err != nil {
		n.t.Fatal(err)
	}
}

func signatures(t *testing.T, dev string) []string {
	t.Helper()
	sig, err := lvm.Signatures(t.Context(), &lvm.ExecRunner{}, dev)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// TestAgentInitAndInventory runs the whole chain for real: NLSC → (controller
// binary) → NLS spec → (agent binary) → VG created on loop devices with lvm →
// NLS status with the sizes lvm reports, foreign/owned LVs, reserves, an
// extension with a newly listed device.
func TestAgentInitAndInventory(t *testing.T) {
	n := newNode(t, 3)
	vg := "olvg-" + n.run
	// dev 0 and 1 are ours; dev 2 is in the LVM filter but never named.
	n.createConfig(v1alpha1.NodeLocalStorageInitConfigSpec{GlobalConfig: v1alpha1.GlobalConfig{
		ListConfig: v1alpha1.ListConfig{
			VGs:     v1alpha1.VGList{Include: []string{"olvg-.*"}},
			Devices: v1alpha1.DeviceList{Include: []string{n.dev(0), n.dev(1)}},
		},
		ResourceToBeInited: v1alpha1.ResourceToBeInited{VGs: []v1alpha1.VGToBeInited{{Name: vg, Devices: []string{n.dev(0)}}}},
	}})
	n.startController()
	n.startAgent()

	nls := n.waitVG(vg, vgBytes, vgBytes, vgBytes, n.dev(0))
	info := nls.Status.NodeStorageInfo
	if info.Phase != v1alpha1.NodeStorageRunning || info.State.Type != v1alpha1.StorageReady || info.State.Status != v1alpha1.ConditionTrue || info.State.LastHeartbeatTime == nil {
		t.Errorf("node storage state = %s %+v", info.Phase, info.State)
	}
	if len(info.DeviceInfos) != 3 {
		t.Errorf("devices = %+v, want the 3 loop devices", info.DeviceInfos)
	}
	for _, d := range info.DeviceInfos {
		if d.Total != 1<<30 || d.MediaType == "" || d.Condition != v1alpha1.StorageReady {
			t.Errorf("device %+v", d)
		}
	}
	// dev(0) is listed but is now the VG's PV: in use, never offered whole.
	for _, d := range info.DeviceInfos {
		if want := "physical volume of VG " + vg; d.Name == n.dev(0) && d.InUse != want {
			t.Errorf("device %s inUse %q, want %q", d.Name, d.InUse, want)
		}
	}
	f := nls.Status.FilteredStorageInfo
	wantDevs := []string{n.dev(1)}
	if !slices.Equal(f.VolumeGroups, []string{vg}) || !slices.Equal(f.Devices, wantDevs) || f.UpdateStatus.Status != v1alpha1.UpdateStatusAccepted {
		t.Errorf("filtered = %+v", f)
	}
	n.waitEvent(nodestorage.ReasonVGCreated, vg, n.dev(0))

	// A foreign LV (no tag, no open-local name) reduces allocatable, and so
	// does a legacy-named one no LocalVolume names (an orphan); an owned one
	// a LocalVolume of the node names does not (the ledger counts it).
	if _, err := n.lvmCfg.Run(t.Context(), "lvcreate", "--name", "foreign", "--size", "100m", vg); err != nil {
		t.Fatal(err)
	}
	n.waitVG(vg, vgBytes, vgBytes-100*mib, vgBytes-100*mib, n.dev(0))
	if _, err := n.lvmCfg.Run(t.Context(), "lvcreate", "--name", "pvc-owned", "--size", "200m", "--addtag", lvm.OwnedTag, vg); err != nil {
		t.Fatal(err)
	}
	n.createLocalVolume("pvc-owned-"+n.run, vg, "pvc-owned", "200Mi")
	if _, err := n.lvmCfg.Run(t.Context(), "lvcreate", "--name", "local-legacy", "--size", "40m", vg); err != nil {
		t.Fatal(err)
	}
	nls = n.waitVG(vg, vgBytes, vgBytes-340*mib, vgBytes-140*mib, n.dev(0))
	var lvNames []string
	for _, lv := range vgOf(nls, vg).LogicalVolumes {
		lvNames = append(lvNames, lv.Name)
	}
	if !slices.Equal(lvNames, []string{"foreign", "local-legacy", "pvc-owned"}) {
		t.Errorf("LVs = %v", lvNames)
	}

	// Reserve annotation: absolute, then percent (open-local subtracted 0 for
	// percentages), then invalid (nothing allocatable, a Warning), then gone.
	n.annotate(fmt.Sprintf(`{%q:"200Mi"}`, vg))
	n.waitVG(vg, vgBytes, vgBytes-340*mib, vgBytes-340*mib, n.dev(0))
	n.annotate(fmt.Sprintf(`{%q:"10%%"}`, vg))
	tenPercent := (vgBytes + 9) / 10
	n.waitVG(vg, vgBytes, vgBytes-340*mib, vgBytes-140*mib-tenPercent, n.dev(0))
	n.annotate(fmt.Sprintf(`{%q:"lots"}`, vg))
	n.waitVG(vg, vgBytes, vgBytes-340*mib, 0, n.dev(0))
	n.waitEvent(nodestorage.ReasonInvalidReserveAnnotation, `"lots"`)
	n.annotate("")
	n.waitVG(vg, vgBytes, vgBytes-340*mib, vgBytes-140*mib, n.dev(0))

	// A second device listed for the VG extends it (open-local never did).
	n.updateConfig(func(g *v1alpha1.GlobalConfig) {
		g.ResourceToBeInited.VGs[0].Devices = []string{n.dev(0), n.dev(1)}
	})
	pvs := []string{n.dev(0), n.dev(1)}
	slices.Sort(pvs)
	n.waitVG(vg, 2*vgBytes, 2*vgBytes-340*mib, 2*vgBytes-140*mib, pvs...)
	n.waitEvent(nodestorage.ReasonVGExtended, vg, n.dev(1))

	// Filling the VG with a foreign LV: DiskFull; what stays allocatable is
	// the space of the LocalVolume's LV (the scheduler counts its use).
	if _, err := n.lvmCfg.Run(t.Context(), "lvcreate", "--name", "filler", "--extents", "100%FREE", vg); err != nil {
		t.Fatal(err)
	}
	n.eventually(30*time.Second, func(nls *v1alpha1.NodeLocalStorage) string {
		if v := vgOf(nls, vg); v == nil || v.Condition != v1alpha1.StorageFull || v.Available != 0 || v.Allocatable != 200*mib {
			return fmt.Sprintf("VG = %+v, want DiskFull, nothing available, 200 MiB (the LocalVolume's LV) allocatable", v)
		}
		return ""
	})

	if sig := signatures(t, n.dev(2)); len(sig) != 0 {
		t.Errorf("the unlisted device %s carries %v", n.dev(2), sig)
	}
	if !n.agent.Alive() {
		t.Fatal("agent died")
	}
}

// TestAgentOrphanLVs: LVs no LocalVolume of the node names are kept out of
// allocatable (the scheduler's ledger counts only LocalVolumes), and those
// that look like open-local's are reported: logicalVolumes[].orphan, one
// OrphanLV Event each, open_local_orphan_lvs. The LV of a live LocalVolume
// (made by the agent's own reconciler) counts as free; force-deleting the
// LocalVolume makes its LV an orphan.
func TestAgentOrphanLVs(t *testing.T) {
	n := newNode(t, 1)
	ctx := t.Context()
	vg := "olvg-" + n.run
	n.createConfig(v1alpha1.NodeLocalStorageInitConfigSpec{GlobalConfig: v1alpha1.GlobalConfig{
		ListConfig:         v1alpha1.ListConfig{VGs: v1alpha1.VGList{Include: []string{"olvg-.*"}}},
		ResourceToBeInited: v1alpha1.ResourceToBeInited{VGs: []v1alpha1.VGToBeInited{{Name: vg, Devices: []string{n.dev(0)}}}},
	}})
	n.startController()
	n.startAgent()
	n.waitVG(vg, vgBytes, vgBytes, vgBytes, n.dev(0))

	// A live volume: the agent creates its LV; allocatable is unchanged.
	live := "pvc-live-" + n.run
	n.createLocalVolume(live, vg, "", "200Mi")
	n.waitVG(vg, vgBytes, vgBytes-200*mib, vgBytes, n.dev(0))

	// By hand: an admin's "localbackup" and a legacy open-local LV.
	legacy := "local-" + string(uuid.NewUUID())
	for _, lv := range []struct{ name, size string }{{"localbackup", "100m"}, {legacy, "40m"}} {
		if _, err := n.lvmCfg.Run(ctx, "lvcreate", "--name", lv.name, "--size", lv.size, vg); err != nil {
			t.Fatal(err)
		}
	}
	nls := n.waitVG(vg, vgBytes, vgBytes-340*mib, vgBytes-140*mib, n.dev(0))
	orphans := func(nls *v1alpha1.NodeLocalStorage) map[string]bool {
		m := map[string]bool{}
		for _, lv := range vgOf(nls, vg).LogicalVolumes {
			m[lv.Name] = lv.Orphan
		}
		return m
	}
	if got, want := orphans(nls), map[string]bool{live: false, "localbackup": true, legacy: true}; !maps.Equal(got, want) {
		t.Errorf("orphan flags = %v, want %v", got, want)
	}
	n.waitEvent(nodestorage.ReasonOrphanLV, vg+"/localbackup", "100Mi")
	n.waitEvent(nodestorage.ReasonOrphanLV, vg+"/"+legacy)
	wantMetric := func(count int) {
		t.Helper()
		want := fmt.Sprintf(`open_local_orphan_lvs{nodename=%q,vgname=%q} %d`, n.name, vg, count)
		deadline := time.Now().Add(30 * time.Second)
		for !slices.Contains(n.metric("open_local_orphan_lvs{"), want) {
			if time.Now().After(deadline) {
				t.Fatalf("metrics %q, want %q", n.metric("open_local_orphan_lvs"), want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	wantMetric(2)

	// Force-deleted: the LV stays, counted nowhere by the ledger: foreign
	// and an orphan now. With the agent stopped, or its reconciler would
	// put the finalizer back and remove the LV itself.
	n.agent.Stop()
	n.forceDelete(ctx, live)
	n.startAgent()
	n.waitVG(vg, vgBytes, vgBytes-340*mib, vgBytes-340*mib, n.dev(0))
	n.waitEvent(nodestorage.ReasonOrphanLV, vg+"/"+live)
	wantMetric(3)

	// Adopted: a LocalVolume naming localbackup makes it the ledger's again.
	n.createLocalVolume("adopt-"+n.run, vg, "localbackup", "100Mi")
	nls = n.waitVG(vg, vgBytes, vgBytes-340*mib, vgBytes-240*mib, n.dev(0))
	if orphans(nls)["localbackup"] {
		t.Error("an adopted LV is still an orphan")
	}
	wantMetric(2)

	// Several passes later: still one Event per orphan and agent run (the
	// agent keeps what it reported in memory; the restart above re-reported
	// the first two).
	time.Sleep(3 * time.Second)
	for lv, want := range map[string]int{"localbackup": 2, legacy: 2, live: 1} {
		count := 0
		for _, e := range n.events(nodestorage.ReasonOrphanLV) {
			if strings.Contains(e.Message, vg+"/"+lv+" ") {
				count += int(max(e.Count, 1))
			}
		}
		if count != want {
			t.Errorf("%d OrphanLV Events for %s, want %d", count, lv, want)
		}
	}
}

// TestAgentBadInput: every kind of bad input becomes an Event and a status
// reason; the agent keeps running and no device outside the list, nor one
// that belongs to another VG or carries a filesystem, is touched.
func TestAgentBadInput(t *testing.T) {
	n := newNode(t, 5)
	ctx := t.Context()
	good := "olgood-" + n.run
	foreign := "foreign-" + n.run
	// dev 0: good VG; dev 1: in a foreign VG; dev 2: ext4; dev 3: listed for a
	// VG with an invalid name; dev 4: never named anywhere.
	if _, err := n.lvmCfg.Run(ctx, "vgcreate", foreign, n.dev(1)); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", n.dev(2)).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	missing := "/dev/loop-missing-" + n.run
	n.createConfig(v1alpha1.NodeLocalStorageInitConfigSpec{GlobalConfig: v1alpha1.GlobalConfig{
		ListConfig: v1alpha1.ListConfig{VGs: v1alpha1.VGList{Include: []string{"olgood-.*"}}},
		ResourceToBeInited: v1alpha1.ResourceToBeInited{VGs: []v1alpha1.VGToBeInited{
			{Name: good, Devices: []string{n.dev(0)}},
			{Name: "olmissing-" + n.run, Devices: []string{missing}},
			{Name: "olstolen-" + n.run, Devices: []string{n.dev(1)}},
			{Name: "olext4-" + n.run, Devices: []string{n.dev(2)}},
			{Name: "bad name " + n.run, Devices: []string{n.dev(3)}},
			{Name: "mapper", Devices: []string{n.dev(3)}},
		}},
	}})
	n.startController()
	n.startAgent()

	n.waitVG(good, vgBytes, vgBytes, vgBytes, n.dev(0))
	n.waitEvent(nodestorage.ReasonCreateVGFailed, "olmissing-"+n.run, missing, "no such file")
	n.waitEvent(nodestorage.ReasonCreateVGFailed, "olstolen-"+n.run, "PV of VG "+foreign)
	n.waitEvent(nodestorage.ReasonCreateVGFailed, "olext4-"+n.run, "ext4")
	n.waitEvent(nodestorage.ReasonCreateVGFailed, "bad name", "lvm allows only")
	n.waitEvent(nodestorage.ReasonCreateVGFailed, "VG mapper", "/dev/mapper already exists")
	// Failures are retried with a growing delay, which the message states.
	n.waitEvent(nodestorage.ReasonCreateVGFailed, "olmissing-"+n.run, "attempt 2, next in 2s")

	// An invalid include expression: failed with the reason, a Warning, the
	// last accepted list kept.
	n.updateConfig(func(g *v1alpha1.GlobalConfig) { g.ListConfig.VGs.Include = []string{"olgood-[0-9"} })
	n.eventually(30*time.Second, func(nls *v1alpha1.NodeLocalStorage) string {
		u := nls.Status.FilteredStorageInfo.UpdateStatus
		if u.Status != v1alpha1.UpdateStatusFailed || !strings.Contains(u.Reason, "olgood-[0-9") || u.LastUpdateTime == nil {
			return fmt.Sprintf("updateStatus = %+v", u)
		}
		if !slices.Equal(nls.Status.FilteredStorageInfo.VolumeGroups, []string{good}) {
			return fmt.Sprintf("filtered VGs = %v, want the last accepted [%s]", nls.Status.FilteredStorageInfo.VolumeGroups, good)
		}
		return ""
	})
	n.waitEvent(nodestorage.ReasonInvalidListConfig, "olgood-[0-9")
	n.updateConfig(func(g *v1alpha1.GlobalConfig) { g.ListConfig.VGs.Include = []string{"nothing"} })
	n.eventually(30*time.Second, func(nls *v1alpha1.NodeLocalStorage) string {
		f := nls.Status.FilteredStorageInfo
		if f.UpdateStatus.Status != v1alpha1.UpdateStatusAccepted || f.UpdateStatus.Reason != "" || len(f.VolumeGroups) != 0 {
			return fmt.Sprintf("filtered = %+v", f)
		}
		return ""
	})

	// Nothing was done to devices that were not ours to take.
	if sig := signatures(t, n.dev(2)); !slices.Equal(sig, []string{"ext4"}) {
		t.Errorf("%s: %v, want its ext4 untouched", n.dev(2), sig)
	}
	for _, i := range []int{3, 4} {
		if sig := signatures(t, n.dev(i)); len(sig) != 0 {
			t.Errorf("%s carries %v, want nothing", n.dev(i), sig)
		}
	}
	rows, err := n.lvmCfg.Report(ctx, "pvs", "-o", "pv_name,vg_name")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		want := map[string]string{n.dev(0): good, n.dev(1): foreign}[r["pv_name"]]
		if r["vg_name"] != want || want == "" {
			t.Errorf("PV %s in VG %q", r["pv_name"], r["vg_name"])
		}
	}
	if !n.agent.Alive() {
		t.Fatal("agent died")
	}
}

// TestIdleWriteRate measures the agent's API writes while nothing changes:
// status writes (resourceVersion changes of the NLS) and Events, with
// discovery every second and a 20 s heartbeat. Only heartbeats should write.
func TestIdleWriteRate(t *testing.T) {
	n := newNode(t, 1)
	vg := "olidle-" + n.run
	n.createConfig(v1alpha1.NodeLocalStorageInitConfigSpec{GlobalConfig: v1alpha1.GlobalConfig{
		ListConfig:         v1alpha1.ListConfig{VGs: v1alpha1.VGList{Include: []string{".*"}}},
		ResourceToBeInited: v1alpha1.ResourceToBeInited{VGs: []v1alpha1.VGToBeInited{{Name: vg, Devices: []string{n.dev(0)}}}},
	}})
	n.startController()
	n.startAgent("--heartbeat-interval", "20s")
	nls := n.waitVG(vg, vgBytes, vgBytes, vgBytes, n.dev(0))
	time.Sleep(2 * time.Second) // let the post-creation pass settle

	api := n.c.OpenLocalClient().CsiV1alpha1().NodeLocalStorages()
	nls, err := api.Get(t.Context(), n.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := api.Watch(t.Context(), metav1.ListOptions{FieldSelector: "metadata.name=" + n.name, ResourceVersion: nls.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	eventsBefore := 0
	for _, e := range n.events("") {
		eventsBefore += int(e.Count)
	}
	const window = 40 * time.Second
	writes := 0
	var heartbeats []string
	timeout := time.After(window)
loop:
	for {
		select {
		case ev := <-w.ResultChan():
			if ev.Type == watch.Modified {
				writes++
				if o, ok := ev.Object.(*v1alpha1.NodeLocalStorage); ok && o.Status.NodeStorageInfo.State.LastHeartbeatTime != nil {
					heartbeats = append(heartbeats, o.Status.NodeStorageInfo.State.LastHeartbeatTime.Format(time.TimeOnly))
				}
			}
		case <-timeout:
			break loop
		}
	}
	eventsAfter := 0
	for _, e := range n.events("") {
		eventsAfter += int(e.Count)
	}
	perMin := float64(writes) * float64(time.Minute) / float64(window)
	t.Logf("idle agent, --interval=1s --heartbeat-interval=20s: %d status writes and %d events in %s = %.1f API writes/min (%d discovery passes; heartbeats at %v)",
		writes, eventsAfter-eventsBefore, window, perMin+float64(eventsAfter-eventsBefore)*float64(time.Minute)/float64(window), int(window/time.Second), heartbeats)
	t.Logf("with the defaults (--heartbeat-interval=%s) that is %.2f status writes/min per idle node", nodestorage.DefaultHeartbeatInterval, float64(time.Minute)/float64(nodestorage.DefaultHeartbeatInterval))
	// Not a timing assertion: writes beyond heartbeats mean the status is
	// rewritten without a change, which is a bug whatever the timing.
	if writes > int(window/(20*time.Second))+1 {
		t.Errorf("%d status writes in %s with nothing changing; only heartbeats (every 20 s) should write", writes, window)
	}
	if eventsAfter != eventsBefore {
		t.Errorf("%d events while idle", eventsAfter-eventsBefore)
	}
}

// TestControllerLeaderElection runs two controller replicas: one holds the
// Lease and acts, the other waits; killing the leader hands over.
func TestControllerLeaderElection(t *testing.T) {
	c := cluster.ForTest(t)
	run := rand.String(6)
	config, lease := "nlsc-"+run, "nls-controller-"+run
	bin := cluster.Binary(t, "./agent")
	ol := c.OpenLocalClient()
	if _, err := ol.CsiV1alpha1().NodeLocalStorageInitConfigs().Create(t.Context(), &v1alpha1.NodeLocalStorageInitConfig{
		ObjectMeta: metav1.ObjectMeta{Name: config},
		Spec:       v1alpha1.NodeLocalStorageInitConfigSpec{GlobalConfig: v1alpha1.GlobalConfig{ListConfig: v1alpha1.ListConfig{VGs: v1alpha1.VGList{Include: []string{"x"}}}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ol.CsiV1alpha1().NodeLocalStorageInitConfigs().Delete(context.Background(), config, metav1.DeleteOptions{})
	})
	replica := func(i int) *cluster.Process {
		return launcher.ForTest(t).Start(t, c, fmt.Sprintf("nls-controller-%s-%d", run, i), bin, launcher.NLSController, launcher.Pod{},
			"--kubeconfig", c.Kubeconfig, "--initconfig", config, "--node-selector", "test.open-local/run="+run, "--leader-elect-name", lease,
			"--leader-elect-lease-duration", "4s", "--leader-elect-renew-deadline", "3s", "--leader-elect-retry-period", "500ms",
			"--healthz-bind-address", "")
	}
	replicas := []*cluster.Process{replica(0), replica(1)}
	newNode := func(name string) string {
		name += "-" + run
		if _, err := c.Client().CoreV1().Nodes().Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name: name, Labels: map[string]string{"test.open-local/run": run}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = c.Client().CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
			_ = ol.CsiV1alpha1().NodeLocalStorages().Delete(context.Background(), name, metav1.DeleteOptions{})
		})
		return name
	}
	waitNLS := func(name string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, err := ol.CsiV1alpha1().NodeLocalStorages().Get(t.Context(), name, metav1.GetOptions{}); err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no NLS for %s", name)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	leading := func() []int {
		var l []int
		for i, r := range replicas {
			if strings.Contains(readLog(t, r), "started leading") {
				l = append(l, i)
			}
		}
		return l
	}

	first := newNode("le-1")
	waitNLS(first)
	holder := leaseHolder(t, c, lease)
	lead := leading()
	if len(lead) != 1 {
		t.Fatalf("replicas leading: %v, want exactly one", lead)
	}
	leader, follower := replicas[lead[0]], replicas[1-lead[0]]
	if !strings.Contains(readLog(t, leader), holder) {
		t.Errorf("lease holder %q is not the replica that leads", holder)
	}
	// The follower learns who leads on its first retry after losing the race
	// to create the lease; on a loaded machine that can come after the first NLS.
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(readLog(t, follower), "following") && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	if log := readLog(t, follower); strings.Contains(log, "created NodeLocalStorage") || !strings.Contains(log, "following") {
		t.Errorf("the follower acted or does not follow:\n%s", log)
	}
	if n := strings.Count(readLog(t, leader), "created NodeLocalStorage"); n != 1 {
		t.Errorf("leader created %d NLS, want 1", n)
	}

	leader.Kill()
	second := newNode("le-2")
	waitNLS(second)
	if !strings.Contains(readLog(t, follower), "started leading") {
		t.Error("the follower did not take over")
	}
	if h := leaseHolder(t, c, lease); h == holder {
		t.Errorf("lease still held by the killed leader %q", h)
	}
	events, err := c.Client().CoreV1().Events("").List(t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + config + ",reason=" + nlscontroller.ReasonSynced})
	if err != nil || len(events.Items) != 2 {
		t.Errorf("Synced events: %d, %v; want 2 (one per node, by whichever replica led)", len(events.Items), err)
	}
}

func leaseHolder(t *testing.T, c *cluster.Cluster, name string) string {
	t.Helper()
	l, err := c.Client().CoordinationV1().Leases("kube-system").Get(t.Context(), name, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		t.Fatalf("lease %s: %v", name, err)
	}
	return *l.Spec.HolderIdentity
}

func readLog(t *testing.T, p *cluster.Process) string {
	t.Helper()
	return p.LogTail(100000)
}
