/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package deploy_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/csitest"
	"github.com/open-local/open-local/test/launcher"
	"github.com/open-local/open-local/test/loopvg"
)

// TestComponentsAsTheirServiceAccounts runs the real binaries the chart
// deploys, each with the chart's RBAC (its ServiceAccount impersonated), on
// the local cluster and a loop-device VG: the agent (agent mode), the CSI
// controller and node plugins, and the NLS controller. It proves the RBAC is
// enough for the work (no request is refused), and scrapes their /metrics:
// the VG gauges equal the NodeLocalStorage's allocatable and the
// LocalVolumes' sizes, the lvm latency histogram has observations, volume IO
// is reported, the CSI calls are counted; and every metric the dashboard
// queries is exported. Then Prometheus scrapes them (testPrometheus).
func TestComponentsAsTheirServiceAccounts(t *testing.T) {
	capability.Require(t, capability.Root, capability.LoopDevices, capability.LVM)
	c := cluster.ForTest(t)
	ctx := t.Context()
	applyChart(t, c)
	run := rand.String(5)
	node, vgName := "deploy-"+run, "oldeploy"+run
	agentKC := impersonatingKubeconfig(t, c, "system:serviceaccount:"+namespace+":open-local-agent", node)
	controllerKC := impersonatingKubeconfig(t, c, "system:serviceaccount:"+namespace+":open-local-controller", "")
	ol := c.OpenLocalClient().CsiV1alpha1()
	kube := c.Client()
	reader, stranger := metricsTokens(t, c)

	// The node's storage: a VG on loop devices, and its NodeLocalStorage
	// (as the NLS controller would write it) including only that VG.
	vg := loopvg.New(t, vgName, 512<<20)
	mode := "loop"
	if vg.Config.FullMode {
		mode = "device-mapper"
	}
	nls := &v1alpha1.NodeLocalStorage{ObjectMeta: metav1.ObjectMeta{Name: node}, Spec: v1alpha1.NodeLocalStorageSpec{
		NodeName: node, ListConfig: v1alpha1.ListConfig{VGs: v1alpha1.VGList{Include: []string{"^" + vgName + "$"}}}}}
	if _, err := ol.NodeLocalStorages().Create(ctx, nls, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.OpenLocalClient().CsiV1alpha1().NodeLocalStorages().Delete(context.Background(), node, metav1.DeleteOptions{})
	})
	var devs []string
	for _, d := range vg.Devices {
		devs = append(devs, regexp.QuoteMeta(filepath.Base(d.Path)))
	}
	lockFile := filepath.Join(t.TempDir(), "loop.lock")

	ports, err := cluster.FreePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	agentPort, csiNodePort, csiCtrlPort, nlsPort := ports[0], ports[1], ports[2], ports[3]
	// Each binary with the chart's command line and environment, changed
	// where a process on this machine must differ (test/launcher).
	chart := launcher.ForTest(t)
	pod := launcher.Pod{NodeName: node}
	agent := chart.Start(t, c, "agent-"+run, cluster.Binary(t, "./agent"), launcher.Agent, pod,
		"--kubeconfig", agentKC, "--lvm-system-dir", vg.Config.Dir,
		"--regexp", "^("+strings.Join(devs, "|")+")$", "--interval", "1s",
		"--activation", mode, "--loop-lock-file", lockFile, "--healthz-bind-address", "127.0.0.1:"+strconv.Itoa(agentPort))
	// Runs before the agent stops (cleanups run last-in first-out): the
	// agent removes the LVs of the deleted LocalVolumes.
	t.Cleanup(func() { deleteLocalVolumes(t, c, node) })
	waitFor(t, "the agent to report its VG", time.Minute, func() (bool, error) {
		if !agent.Alive() {
			return false, fmt.Errorf("agent exited:\n%s", agent.LogTail(20))
		}
		got, err := ol.NodeLocalStorages().Get(ctx, node, metav1.GetOptions{})
		return err == nil && slices.Contains(got.Status.FilteredStorageInfo.VolumeGroups, vgName), err
	})

	dir := t.TempDir()
	csiBin := cluster.Binary(t, "./csi")
	ctrlSock, nodeSock := filepath.Join(dir, "controller.sock"), filepath.Join(dir, "node.sock")
	ctrl := chart.Start(t, c, "csi-controller-"+run, csiBin, launcher.CSIController, launcher.Pod{},
		"--endpoint", "unix://"+ctrlSock, "--kubeconfig", controllerKC, "--metrics-bind-address", "127.0.0.1:"+strconv.Itoa(csiCtrlPort))
	nodeProc := chart.Start(t, c, "csi-node-"+run, csiBin, launcher.CSINode, pod, "--endpoint", "unix://"+nodeSock, "--kubeconfig", agentKC,
		"--lvm-system-dir", vg.Config.Dir, "--activation", mode, "--loop-lock-file", lockFile,
		"--io-limit-state-dir", filepath.Join(dir, "io-limits"),
		"--metrics-bind-address", "127.0.0.1:"+strconv.Itoa(csiNodePort))

	// The NLS controller, limited to this test's nodes and init config.
	nlsc := &v1alpha1.NodeLocalStorageInitConfig{ObjectMeta: metav1.ObjectMeta{Name: "deploy-" + run},
		Spec: v1alpha1.NodeLocalStorageInitConfigSpec{GlobalConfig: v1alpha1.GlobalConfig{
			ListConfig: v1alpha1.ListConfig{VGs: v1alpha1.VGList{Include: []string{"open-local-pool-[0-9]+"}}}}}}
	if _, err := ol.NodeLocalStorageInitConfigs().Create(ctx, nlsc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.OpenLocalClient().CsiV1alpha1().NodeLocalStorageInitConfigs().Delete(context.Background(), nlsc.Name, metav1.DeleteOptions{})
	})
	nlsCtrl := chart.Start(t, c, "nls-controller-"+run, cluster.Binary(t, "./agent"), launcher.NLSController, launcher.Pod{},
		"--kubeconfig", controllerKC, "--initconfig", nlsc.Name, "--node-selector", "test.open-local/deploy="+run,
		"--leader-elect", "false", "--healthz-bind-address", "127.0.0.1:"+strconv.Itoa(nlsPort))
	otherNode := "deploy-other-" + run
	if _, err := kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: otherNode,
		Labels: map[string]string{"test.open-local/deploy": run}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.CoreV1().Nodes().Delete(context.Background(), otherNode, metav1.DeleteOptions{})
		_ = c.OpenLocalClient().CsiV1alpha1().NodeLocalStorages().Delete(context.Background(), otherNode, metav1.DeleteOptions{})
	})
	waitFor(t, "the NLS controller to create the new node's NodeLocalStorage", time.Minute, func() (bool, error) {
		if !nlsCtrl.Alive() {
			return false, fmt.Errorf("nls controller exited:\n%s", nlsCtrl.LogTail(20))
		}
		_, err := ol.NodeLocalStorages().Get(ctx, otherNode, metav1.GetOptions{})
		return err == nil, err
	})

	// A PVC's volume, created through the CSI controller as csi-provisioner
	// would (its extra metadata names the PVC; the controller reads it).
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data-" + run, Namespace: "default"},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: new("open-local-lvm"),
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceStorage: resource.MustParse("64Mi")}}}}
	pvc, err = kube.CoreV1().PersistentVolumeClaims("default").Create(ctx, pvc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.CoreV1().PersistentVolumeClaims("default").Delete(context.Background(), pvc.Name, metav1.DeleteOptions{})
	})
	waitSocket(t, ctrl, ctrlSock)
	waitSocket(t, nodeProc, nodeSock)
	ctrlClient := csi.NewControllerClient(csitest.Dial(t, "unix://"+ctrlSock))
	volName := "pvc-" + string(pvc.UID)
	topo := &csi.Topology{Segments: map[string]string{parameters.TopologyKey: node}}
	cctx, cancel := contextWithTimeout(t, time.Minute)
	defer cancel()
	created, err := ctrlClient.CreateVolume(cctx, &csi.CreateVolumeRequest{
		Name:          volName,
		CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20},
		VolumeCapabilities: []*csi.VolumeCapability{{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}},
		Parameters: map[string]string{"volumeType": "LVM", "csi.storage.k8s.io/fstype": "ext4",
			"csi.storage.k8s.io/pvc/name": pvc.Name, "csi.storage.k8s.io/pvc/namespace": pvc.Namespace,
			"csi.storage.k8s.io/pv/name": volName},
		AccessibilityRequirements: &csi.TopologyRequirement{Requisite: []*csi.Topology{topo}, Preferred: []*csi.Topology{topo}},
	})
	if err != nil {
		t.Fatalf("CreateVolume as the controller's ServiceAccount: %v\n%s", err, ctrl.LogTail(20))
	}
	nodeClient := csi.NewNodeClient(csitest.Dial(t, "unix://"+nodeSock))
	if _, err := nodeClient.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{}); err != nil {
		t.Fatal(err)
	}

	// The agent's metrics.
	var scraped []map[string]*dto.MetricFamily
	lv, err := ol.LocalVolumes().Get(ctx, created.Volume.VolumeId, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent's metrics to show the volume", time.Minute, func() (bool, error) {
		fams, err := scrape(reader, fmt.Sprintf("https://127.0.0.1:%d/metrics", agentPort))
		if err != nil {
			return false, err
		}
		nlsNow, err := ol.NodeLocalStorages().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		var allocatable uint64
		for _, v := range nlsNow.Status.NodeStorageInfo.VolumeGroups {
			if v.Name == vgName {
				allocatable = v.Allocatable
			}
		}
		lvs, err := ol.LocalVolumes().List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
		if err != nil {
			return false, err
		}
		var used int64
		for _, l := range lvs.Items {
			if l.Spec.VGName == vgName {
				used += l.Spec.Size.Value()
			}
		}
		labels := map[string]string{"nodename": node, "vgname": vgName}
		total, okT := value(fams, "local_volume_group_total", labels)
		gotUsed, okU := value(fams, "local_volume_group_used", labels)
		_, okIO := value(fams, "open_local_volume_reads_completed_total", map[string]string{"volume": volName, "pvc_name": pvc.Name})
		pv, okPV := value(fams, "local_local_pv", map[string]string{"pv_name": volName, "pvc_name": pvc.Name, "pvc_ns": "default",
			"status": "Ready", "storage_name": vgName, "pv_type": "LVM"})
		if !okT || !okU || !okPV || !okIO || total != float64(allocatable) || gotUsed != float64(used) || pv != float64(lv.Spec.Size.Value()) {
			return false, fmt.Errorf("total %v (%v) want %d, used %v (%v) want %d, pv %v (%v), io %v", total, okT, allocatable,
				gotUsed, okU, used, pv, okPV, okIO)
		}
		if n := histogramCount(fams, "open_local_lvm_command_duration_seconds"); n == 0 {
			return false, fmt.Errorf("lvm command histogram empty")
		}
		if _, ok := value(fams, "open_local_agent_reconcile_errors_total", map[string]string{"controller": "localvolumes"}); !ok {
			return false, fmt.Errorf("no reconcile error counter for the localvolumes queue")
		}
		scraped = append(scraped, fams)
		return true, nil
	})

	// The CSI binaries' and the NLS controller's metrics.
	for _, tc := range []struct {
		url, method string
	}{
		{fmt.Sprintf("https://127.0.0.1:%d/metrics", csiCtrlPort), "CreateVolume"},
		{fmt.Sprintf("https://127.0.0.1:%d/metrics", csiNodePort), "NodeGetInfo"},
	} {
		fams, err := scrape(reader, tc.url)
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := value(fams, "grpc_server_handled_total", map[string]string{"grpc_method": tc.method, "grpc_code": "OK"}); v != 1 {
			t.Errorf("%s: grpc_server_handled_total{%s,OK} = %v, want 1", tc.url, tc.method, v)
		}
		if histogramCount(fams, "grpc_server_handling_seconds") == 0 {
			t.Errorf("%s: no gRPC latency observed", tc.url)
		}
		scraped = append(scraped, fams)
	}
	fams, err := scrape(reader, fmt.Sprintf("https://127.0.0.1:%d/metrics", nlsPort))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := fams["open_local_agent_workqueue_depth"]; !ok {
		t.Error("the NLS controller exports no work queue metrics")
	}
	scraped = append(scraped, fams)

	// Every dashboard metric of these components is exported: scraped here,
	// or (for series that exist only with data this machine cannot make:
	// thin pools, exclusive devices, inline volumes, warnings) declared
	// by the same registries (TestDashboardMetricsExist).
	onlyWithData := []string{"open_local_thin_pool_", "local_device_", "local_inline_volume", "open_local_agent_warning_events_total"}
	for _, name := range dashboardMetrics(t) {
		if strings.HasPrefix(name, "open_local_scheduler_") {
			continue
		}
		found := slices.ContainsFunc(scraped, func(f map[string]*dto.MetricFamily) bool {
			_, ok := resolve(name, familyNames(f))
			return ok
		})
		if !found && !slices.ContainsFunc(onlyWithData, func(p string) bool { return strings.HasPrefix(name, p) }) {
			t.Errorf("the dashboard queries %s, which no running component exported", name)
		}
	}

	// No port answers an anonymous request with data; the kubelet's
	// probes get "ok".
	port := func(p int, path string) string { return fmt.Sprintf("https://127.0.0.1:%d%s", p, path) }
	checkEndpoints(t, reader, stranger,
		[]string{port(agentPort, "/metrics"), port(csiNodePort, "/metrics"), port(csiCtrlPort, "/metrics"), port(nlsPort, "/metrics")},
		[]string{port(agentPort, "/healthz"), port(nlsPort, "/healthz")})

	// A real Prometheus scrapes them as the chart says, an alert fires on
	// purpose and every dashboard query is evaluated.
	t.Run("prometheus", func(t *testing.T) {
		testPrometheus(t, c, promTargets{run: run, node: node, vg: vgName, agent: agentPort, csiNode: csiNodePort,
			csiController: csiCtrlPort, nlsCtrl: nlsPort, ctrl: ctrlClient, topo: topo})
	})

	for _, p := range []*cluster.Process{agent, ctrl, nodeProc, nlsCtrl} {
		noForbidden(t, p)
	}
}

// scrape reads url as Prometheus does: HTTPS with a ServiceAccount token.
func scrape(token, url string) (map[string]*dto.MetricFamily, error) {
	code, body, err := get(url, token)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("%s: %d: %s", url, code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(strings.NewReader(body))
}

func familyNames(f map[string]*dto.MetricFamily) map[string]string {
	out := map[string]string{}
	for n := range f {
		out[n] = "scraped"
	}
	return out
}

// value returns the value of the first series of name whose labels include
// want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

func histogramCount(fams map[string]*dto.MetricFamily, name string) uint64 {
	var n uint64
	if f, ok := fams[name]; ok {
		for _, m := range f.Metric {
			n += m.GetHistogram().GetSampleCount()
		}
	}
	return n
}

func waitSocket(t *testing.T, p *cluster.Process, path string) {
	t.Helper()
	waitFor(t, p.Name+"'s socket", 30*time.Second, func() (bool, error) {
		if !p.Alive() {
			return false, fmt.Errorf("%s exited:\n%s", p.Name, p.LogTail(20))
		}
		conn, err := net.Dial("unix", path)
		if err == nil {
			conn.Close()
		}
		return err == nil, err
	})
}

// deleteLocalVolumes deletes the node's LocalVolumes and waits until the
// agent removed them (their finalizer), so no LV outlives the test's VG.
func deleteLocalVolumes(t *testing.T, c *cluster.Cluster, node string) {
	ctx, cancel := contextWithTimeout(t, time.Minute)
	defer cancel()
	api := c.OpenLocalClient().CsiV1alpha1().LocalVolumes()
	list, err := api.List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		t.Error(err)
		return
	}
	for _, lv := range list.Items {
		_ = api.Delete(ctx, lv.Name, metav1.DeleteOptions{})
	}
	for ctx.Err() == nil {
		list, err = api.List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
		if err == nil && len(list.Items) == 0 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("LocalVolumes of %s left: %d", node, len(list.Items))
}
