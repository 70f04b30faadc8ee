/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package demo

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/open-local/open-local/deploy"
)

// ---- 8. monitoring

// dashboardMetrics lists the metric names the chart's Grafana dashboard
// queries (histograms by their base name).
func dashboardMetrics() ([]string, error) {
	var dash struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(deploy.Dashboard, &dash); err != nil {
		return nil, fmt.Errorf("the chart's dashboard: %w", err)
	}
	name := regexp.MustCompile(`\b((?:open_)?local_[a-z_]+|grpc_server_[a-z_]+)\b`)
	seen := map[string]bool{}
	for _, p := range dash.Panels {
		for _, t := range p.Targets {
			for _, m := range name.FindAllString(t.Expr, -1) {
				for _, suffix := range []string{"_bucket", "_count", "_sum"} {
					m = strings.TrimSuffix(m, suffix)
				}
				seen[m] = true
			}
		}
	}
	var out []string
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out, nil
}

// whyAbsent explains dashboard metrics that have no series on this demo
// node: they describe objects or failures the demo does not make.
var whyAbsent = map[string]string{
	"open_local_thin_pool_data_percent":     "no thin pools in the demo",
	"open_local_thin_pool_metadata_percent": "no thin pools in the demo",
	"local_device_total":                    "no whole-disk (Device) volumes in the demo",
	"local_device_available":                "no whole-disk (Device) volumes in the demo",
	"local_device_bind":                     "no whole-disk (Device) volumes in the demo",
	"local_inline_volume":                   "the inline volume of step 7 is gone with its pod",
	"open_local_scheduler_devices":          "no whole-disk (Device) volumes in the demo",
	"open_local_agent_warning_events_total": "the agent emitted no Warning Event (a reason's series appears with its first one)",
}

// coreMetrics must have data: the dashboard's VG, volume, IO, scheduler and
// CSI panels.
var coreMetrics = []string{
	"local_volume_group_total", "local_volume_group_used", "local_local_pv", "local_allocated_num",
	"open_local_volume_written_bytes_total", "open_local_lvm_command_duration_seconds",
	"open_local_scheduler_vg_capacity_bytes", "open_local_scheduler_vg_allocated_bytes", "grpc_server_handled_total",
}

func (d *demo) stepMonitoring(ctx context.Context, res *StepResult) error {
	p := d.p
	want, err := dashboardMetrics()
	if err != nil {
		return err
	}
	endpoints := []struct{ name, url string }{
		{"agent", fmt.Sprintf("http://127.0.0.1:%d/metrics", d.ports.agent)},
		{"csi-node", fmt.Sprintf("http://127.0.0.1:%d/metrics", d.ports.csiNode)},
		{"csi-controller", fmt.Sprintf("http://127.0.0.1:%d/metrics", d.ports.csiController)},
		{"scheduler", fmt.Sprintf("https://127.0.0.1:%d/metrics", d.ports.scheduler)},
		{"kubelet", fmt.Sprintf("https://127.0.0.1:%d/metrics", d.ports.kubelet)},
	}
	// The kubelet computes volume statistics in the background (every
	// volumeStatsAggPeriod): wait for them before scraping everything.
	client := insecureLoopbackClient()
	kubelet := endpoints[len(endpoints)-1]
	err = d.poll(ctx, time.Minute, "kubelet", func(ctx context.Context) (bool, string, error) {
		lines, err := scrape(ctx, client, kubelet.url)
		if err != nil {
			return false, err.Error(), nil
		}
		for _, l := range lines {
			if strings.HasPrefix(l, "kubelet_volume_stats_used_bytes") {
				return true, "", nil
			}
		}
		return false, "no kubelet_volume_stats_used_bytes yet", nil
	})
	if err != nil {
		return fmt.Errorf("the kubelet reports no volume statistics for our volumes: %w", err)
	}
	series := map[string][]string{} // metric → "endpoint: line"
	for _, ep := range endpoints {
		lines, err := scrape(ctx, client, ep.url)
		if err != nil {
			return fmt.Errorf("scrape %s at %s: %w", ep.name, ep.url, err)
		}
		for _, l := range lines {
			name := l
			if i := strings.IndexAny(l, "{ "); i > 0 {
				name = l[:i]
			}
			base := name
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				base = strings.TrimSuffix(base, suffix)
			}
			if slices.Contains(want, base) || name == "kubelet_volume_stats_used_bytes" {
				series[base] = append(series[base], ep.name+"  "+l)
			}
		}
		p.say("scraped %s (%s): %d series", ep.name, ep.url, len(lines))
	}
	p.say("the metrics the chart's Grafana dashboard (deploy/helm/open-local/dashboards/open-local.json) queries:")
	var present, absent []string
	for _, m := range want {
		lines := series[m]
		if len(lines) == 0 {
			absent = append(absent, m)
			continue
		}
		present = append(present, m)
		shown := lines
		if len(shown) > 3 {
			shown = append(slices.Clone(shown[:3]), fmt.Sprintf("… %d more series", len(lines)-3))
		}
		for _, l := range shown {
			p.printf("     %s\n", l)
		}
	}
	p.say("and the kubelet's own volume statistics (from NodeGetVolumeStats of our CSI node plugin):")
	for _, l := range series["kubelet_volume_stats_used_bytes"] {
		p.printf("     %s\n", l)
	}
	var missingCore []string
	for _, m := range coreMetrics {
		if len(series[m]) == 0 {
			missingCore = append(missingCore, m)
		}
	}
	if len(missingCore) > 0 {
		return fmt.Errorf("dashboard metrics without data: %v", missingCore)
	}
	p.check(res, "%d of the dashboard's %d metrics have data, among them every core one (%s)", len(present), len(want), strings.Join(coreMetrics, ", "))
	for _, m := range absent {
		why := whyAbsent[m]
		if why == "" {
			return fmt.Errorf("dashboard metric %s has no data and no known reason", m)
		}
		p.say("no data for %s: %s", m, why)
	}
	if len(series["kubelet_volume_stats_used_bytes"]) == 0 {
		return fmt.Errorf("the kubelet reports no volume statistics for our volumes")
	}
	p.check(res, "the kubelet reports volume statistics of %d volumes through our NodeGetVolumeStats", len(series["kubelet_volume_stats_used_bytes"]))
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
