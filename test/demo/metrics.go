/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package demo

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/open-local/open-local/deploy"
	"github.com/open-local/open-local/test/prometheus"
)

// ---- 8. monitoring

// whyAbsent explains dashboard queries that return no series on this demo
// node, by a metric the query reads: they describe objects or failures the
// demo does not make. Any other query without series fails the step.
var whyAbsent = map[string]string{
	"open_local_thin_pool_":                 "no thin pools in the demo",
	"local_device_":                         "no whole-disk (Device) volumes in the demo",
	"local_inline_volume":                   "the inline volume of step 7 is gone with its pod",
	"open_local_scheduler_devices":          "no whole-disk (Device) volumes in the demo",
	"open_local_agent_warning_events_total": "the agent emitted no Warning Event (a reason's series appears with its first one)",
}

// coreMetrics must have data: the dashboard's VG, volume, IO, scheduler and
// CSI panels (a query reading one of them may not be explained away).
var coreMetrics = []string{
	"local_volume_group_total", "local_volume_group_used", "local_local_pv", "local_allocated_num",
	"open_local_volume_written_bytes_total", "open_local_lvm_command_duration_seconds",
	"open_local_scheduler_vg_capacity_bytes", "open_local_scheduler_vg_allocated_bytes", "grpc_server_handled_total",
}

func (d *demo) stepMonitoring(ctx context.Context, res *StepResult) error {
	p := d.p
	prom, err := prometheus.NewClient(loopback(d.ports.prometheus))
	if err != nil {
		return err
	}
	// The kubelet computes volume statistics in the background (every
	// volumeStatsAggPeriod): wait for them.
	client := insecureLoopbackClient()
	kubeletURL := fmt.Sprintf("https://127.0.0.1:%d/metrics", d.ports.kubelet)
	var kubeletStats []string
	err = d.poll(ctx, time.Minute, "kubelet", func(ctx context.Context) (bool, string, error) {
		lines, err := scrape(ctx, client, kubeletURL)
		if err != nil {
			return false, err.Error(), nil
		}
		kubeletStats = kubeletStats[:0]
		for _, l := range lines {
			if strings.HasPrefix(l, "kubelet_volume_stats_used_bytes") {
				kubeletStats = append(kubeletStats, l)
			}
		}
		return len(kubeletStats) > 0, "no kubelet_volume_stats_used_bytes yet", nil
	})
	if err != nil {
		return fmt.Errorf("the kubelet reports no volume statistics for our volumes: %w", err)
	}
	if ok, why := prom.Ready(ctx, d.promJobs("")); !ok {
		return fmt.Errorf("prometheus: %s", why)
	}
	// $nodename as Grafana's variable has it: label_values of its query,
	// every value selected.
	nodes, err := prom.LabelValues(ctx, "local_volume_group_total", "nodename")
	if err != nil || len(nodes) == 0 {
		return fmt.Errorf("label_values(local_volume_group_total, nodename): %v %v", nodes, err)
	}
	p.say("Prometheus (http://%s) scrapes every open-local endpoint; the dashboard's $nodename offers %v", loopback(d.ports.prometheus), nodes)
	qs, err := prometheus.Queries(deploy.Dashboard, map[string]string{"nodename": "(" + strings.Join(nodes, "|") + ")"}, promRateInterval)
	if err != nil {
		return fmt.Errorf("the chart's dashboard: %w", err)
	}
	p.say("every panel query of the chart's Grafana dashboard (deploy/helm/open-local/dashboards/open-local.json), $__rate_interval=%s:", promRateInterval)
	var failed []string
	withData, explained, row := 0, 0, ""
	for _, r := range prom.Evaluate(ctx, qs) {
		if r.Row != row {
			row = r.Row
			p.printf("   [%s]\n", row)
		}
		name := fmt.Sprintf("%d %q %s", r.PanelID, r.Panel, r.RefID)
		switch {
		case r.Err != nil:
			p.printf("     FAIL %s: %s: %v\n", name, r.Expr, r.Err)
			failed = append(failed, name+": invalid: "+r.Err.Error())
		case r.Series > 0:
			withData++
			p.printf("     ok   %s: valid, %d series, e.g. %s\n", name, r.Series, r.Sample)
		default:
			why := ""
			for m, w := range whyAbsent {
				if strings.Contains(r.Expr, m) {
					why = w
				}
			}
			for _, m := range coreMetrics {
				if strings.Contains(r.Expr, m) {
					why = ""
				}
			}
			if why == "" {
				p.printf("     FAIL %s: valid, no series and no known reason: %s\n", name, r.Expr)
				failed = append(failed, name+": no series")
				continue
			}
			explained++
			p.printf("     --   %s: valid, no series: %s\n", name, why)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d dashboard queries failed: %s", len(failed), strings.Join(failed, "; "))
	}
	p.check(res, "all %d panel queries of the dashboard are valid PromQL: %d return series (every core metric among them), %d have none for a stated reason",
		len(qs), withData, explained)
	alerts, err := prom.Alerts(ctx)
	if err != nil {
		return err
	}
	p.say("the chart's alert rules are loaded; alerts pending or firing now: %d", len(alerts))
	for _, a := range alerts {
		p.printf("     %s %s %v\n", a.State, a.Name, a.Labels)
	}
	if err := d.fireAlertOnPurpose(ctx, res, prom); err != nil {
		return err
	}
	p.say("and the kubelet's own volume statistics (from NodeGetVolumeStats of our CSI node plugin):")
	for _, l := range kubeletStats {
		p.printf("     %s\n", l)
	}
	p.check(res, "the kubelet reports volume statistics of %d volumes through our NodeGetVolumeStats", len(kubeletStats))
	return nil
}

// scrape returns the sample lines (no comments) of a Prometheus endpoint.
func scrape(ctx context.Context, client *http.Client, url string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("%s: %s", resp.Status, body)
	}
	var lines []string
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		if l := s.Text(); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	return lines, s.Err()
}

// orphanLV is the LV step 8 creates by hand (and removes) so that an alert
// fires: named like open-local's (prefix local), owned by no LocalVolume.
const orphanLV = "local-demo-orphan"

// fireAlertOnPurpose makes the chart's OpenLocalOrphanLVs fire: an LV
// created by hand in the demo's VG, as an admin's backup LV or one left by
// a force-deleted LocalVolume would be, is counted by no LocalVolume; the
// agent reports it (open_local_orphan_lvs), Prometheus fires the alert.
// The LV is the demo's own and is removed again.
func (d *demo) fireAlertOnPurpose(ctx context.Context, res *StepResult, prom *prometheus.Client) error {
	p := d.p
	out, err := d.lvm.Run(ctx, "lvcreate", "--yes", "--name", orphanLV, "--size", "8m", VG)
	if err != nil {
		return fmt.Errorf("lvcreate %s/%s: %w", VG, orphanLV, err)
	}
	p.command(fmt.Sprintf("lvcreate --name %s --size 8m %s   # by hand, as an admin would: no LocalVolume names it", orphanLV, VG), strings.TrimSpace(string(out)))
	defer func() {
		// Only the LV this step made, by its name.
		if _, err := d.lvm.Run(context.WithoutCancel(ctx), "lvremove", "--yes", VG+"/"+orphanLV); err != nil {
			p.say("lvremove %s/%s: %v", VG, orphanLV, err)
		}
	}()
	start := time.Now()
	var fired prometheus.Alert
	err = d.poll(ctx, 2*time.Minute, "prometheus", func(ctx context.Context) (bool, string, error) {
		alerts, err := prom.Alerts(ctx)
		if err != nil {
			return false, err.Error(), nil
		}
		for _, a := range alerts {
			if a.Name == demoAlert && a.Labels["vgname"] == VG {
				fired = a
				if a.State == "firing" {
					return true, "", nil
				}
			}
		}
		return false, fmt.Sprintf("%s not firing yet (%s)", demoAlert, fired.State), nil
	})
	if err != nil {
		return fmt.Errorf("the orphan LV %s/%s did not make %s fire: %w", VG, orphanLV, demoAlert, err)
	}
	p.check(res, "%s fired %s after the LV was made: %v (runbook: docs/alerts.md)", demoAlert, time.Since(start).Round(time.Second), fired.Labels)
	return nil
}
