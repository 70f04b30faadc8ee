/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package deploy_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-local/open-local/deploy"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/prometheus"
)

// promTargets are the running components' metrics ports.
type promTargets struct {
	run, node, vg                          string
	agent, csiNode, csiController, nlsCtrl int
	ctrl                                   csi.ControllerClient
	topo                                   *csi.Topology
}

// scrapeInterval is short so a test sees rates and alerts in seconds.
const scrapeInterval = 2 * time.Second

// testPrometheus runs Debian's Prometheus against the components as the
// chart's ServiceMonitors scrape them: HTTPS, the token of a ServiceAccount
// bound to nothing but the chart's metrics-reader ClusterRole. It loads the
// chart's alert rules, fills the test VG past 90% on purpose and waits for
// OpenLocalVGNearlyFull to fire (not OpenLocalVGFull: 97%), then evaluates
// every panel query of the chart's dashboard: each must be valid PromQL and
// return series, or have a stated reason not to.
func testPrometheus(t *testing.T, c *cluster.Cluster, tg promTargets) {
	capability.Require(t, capability.Prometheus)
	ctx, admin := t.Context(), c.Client()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()

	// Prometheus' identity: a ServiceAccount bound to the chart's role.
	sa := "prometheus-" + tg.run
	if _, err := admin.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "open-local-metrics-reader"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: namespace}}}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.RbacV1().ClusterRoleBindings().Delete(context.Background(), sa, metav1.DeleteOptions{})
		_ = admin.CoreV1().ServiceAccounts(namespace).Delete(context.Background(), sa, metav1.DeleteOptions{})
	})
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(requestToken(t, admin, sa, nil)), 0o600); err != nil {
		t.Fatal(err)
	}

	// The chart's rules, their `for` shortened to two evaluations: the
	// expressions are the shipped ones, the wait is not a test's to sit out.
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	rules := filepath.Join(dir, "open-local.rules.yaml")
	short, err := prometheus.ShortenFor(raw, 2*scrapeInterval)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rules, short, 0o644); err != nil {
		t.Fatal(err)
	}
	loop := func(p int) string { return fmt.Sprintf("127.0.0.1:%d", p) }
	node := map[string]string{"node": tg.node} // the ServiceMonitor's relabeling
	jobs := []prometheus.Job{
		{Name: "open-local-agent-metrics", Targets: []string{loop(tg.agent), loop(tg.csiNode)}, TokenFile: tokenFile, Labels: node},
		{Name: "open-local-controller-metrics", Targets: []string{loop(tg.csiController), loop(tg.nlsCtrl)}, TokenFile: tokenFile},
	}
	cfg, err := prometheus.Config(jobs, []string{rules}, scrapeInterval)
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	ports, err := cluster.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	addr := loop(ports[0])
	proc := c.StartProcess(t, "prometheus-"+tg.run, bin, prometheus.Args(cfgFile, filepath.Join(dir, "data"), addr)...)
	prom, err := prometheus.NewClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "Prometheus to scrape every component", time.Minute, func() (bool, error) {
		if !proc.Alive() {
			return false, fmt.Errorf("prometheus exited:\n%s", proc.LogTail(20))
		}
		ok, why := prom.Ready(ctx, jobs)
		if !ok {
			return false, fmt.Errorf("%s", why)
		}
		return true, nil
	})

	// Fill the VG past 90% of its allocatable with one more volume.
	nls, err := c.OpenLocalClient().CsiV1alpha1().NodeLocalStorages().Get(ctx, tg.node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var allocatable int64
	for _, v := range nls.Status.NodeStorageInfo.VolumeGroups {
		if v.Name == tg.vg {
			allocatable = int64(v.Allocatable)
		}
	}
	used, err := prom.Query(ctx, fmt.Sprintf(`local_volume_group_used{vgname=%q}`, tg.vg))
	if err != nil || len(used) != 1 {
		t.Fatalf("local_volume_group_used of %s: %v %v", tg.vg, used, err)
	}
	fill := (allocatable*95/100 - int64(used[0].Value)) &^ (4<<20 - 1) // whole 4 MiB extents
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "fill-" + tg.run, Namespace: "default"},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			StorageClassName: new("open-local-lvm"),
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(fill, resource.BinarySI)}}}}
	pvc, err = admin.CoreV1().PersistentVolumeClaims("default").Create(ctx, pvc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.CoreV1().PersistentVolumeClaims("default").Delete(context.Background(), pvc.Name, metav1.DeleteOptions{})
	})
	volName := "pvc-" + string(pvc.UID)
	if _, err := tg.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name:          volName,
		CapacityRange: &csi.CapacityRange{RequiredBytes: fill},
		VolumeCapabilities: []*csi.VolumeCapability{{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}},
		Parameters: map[string]string{"volumeType": "LVM", "csi.storage.k8s.io/pvc/name": pvc.Name,
			"csi.storage.k8s.io/pvc/namespace": pvc.Namespace, "csi.storage.k8s.io/pv/name": volName},
		AccessibilityRequirements: &csi.TopologyRequirement{Requisite: []*csi.Topology{tg.topo}, Preferred: []*csi.Topology{tg.topo}},
	}); err != nil {
		t.Fatalf("CreateVolume of %d bytes to fill VG %s (allocatable %d): %v", fill, tg.vg, allocatable, err)
	}
	start := time.Now()
	waitFor(t, "OpenLocalVGNearlyFull to fire", 2*time.Minute, func() (bool, error) {
		alerts, err := prom.Alerts(ctx)
		if err != nil {
			return false, err
		}
		for _, a := range alerts {
			if a.Name == "OpenLocalVGNearlyFull" && a.State == "firing" && a.Labels["vgname"] == tg.vg && a.Labels["nodename"] == tg.node {
				return true, nil
			}
		}
		return false, fmt.Errorf("alerts %v", alerts)
	})
	alerts, err := prom.Alerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range alerts {
		t.Logf("alert %s %s %v", a.Name, a.State, a.Labels)
		if a.Name == "OpenLocalVGFull" {
			t.Errorf("OpenLocalVGFull %s at 95%% allocated (threshold 97%%)", a.State)
		}
	}
	t.Logf("OpenLocalVGNearlyFull fired %s after the VG was filled to 95%% (for: shortened to %s)", time.Since(start).Round(time.Second), 2*scrapeInterval)
	// A few more scrapes, so every rate has two samples in its window.
	time.Sleep(3 * scrapeInterval)

	// Every dashboard query, with $nodename as Grafana's variable would
	// have it (label_values of its query, all selected).
	nodes, err := prom.LabelValues(ctx, "local_volume_group_total", "nodename")
	if err != nil || len(nodes) != 1 || nodes[0] != tg.node {
		t.Errorf("label_values(local_volume_group_total, nodename) = %v, %v: want [%s]", nodes, err, tg.node)
	}
	qs, err := prometheus.Queries(deploy.Dashboard, map[string]string{"nodename": "(" + strings.Join(nodes, "|") + ")"}, 5*scrapeInterval)
	if err != nil {
		t.Fatal(err)
	}
	// Series this test cannot make, by the metric the query reads.
	why := map[string]string{
		"open_local_scheduler_":                 "no scheduler runs in this test (the demo's step 8 runs one)",
		"open_local_thin_pool_":                 "no thin pool: this kernel has no device-mapper",
		"local_device_":                         "no whole-disk (Device) volumes in this test",
		"local_inline_volume":                   "no inline volume in this test",
		"open_local_agent_warning_events_total": "no Warning Event was emitted (a reason's series appears with its first one)",
	}
	withData := 0
	for _, r := range prom.Evaluate(ctx, qs) {
		switch {
		case r.Err != nil:
			t.Errorf("panel %d %q %s: %s: %v", r.PanelID, r.Panel, r.RefID, r.Expr, r.Err)
		case r.Series > 0:
			withData++
			t.Logf("panel %d %q %s: %d series, e.g. %s", r.PanelID, r.Panel, r.RefID, r.Series, r.Sample)
		default:
			reason := ""
			for m, w := range why {
				if strings.Contains(r.Expr, m) {
					reason = w
				}
			}
			if reason == "" {
				t.Errorf("panel %d %q %s has no series and no stated reason: %s", r.PanelID, r.Panel, r.RefID, r.Expr)
				continue
			}
			t.Logf("panel %d %q %s: no series: %s", r.PanelID, r.Panel, r.RefID, reason)
		}
	}
	t.Logf("%d of %d dashboard queries returned series", withData, len(qs))
}
