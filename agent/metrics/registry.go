/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package metrics is what the agent binary exports on /metrics, in a
// registry of its own (no process-global registry: tests build as many as
// they like):
//
//   - Node: its node's view, open-local-compatible gauges (local_*: VG
//     total/used, devices, PVs, inline volumes) computed at scrape time from
//     the node's NodeLocalStorage and LocalVolumes, plus per-volume IO from
//     /proc/diskstats, LocalVolumes by phase and thin pool fullness.
//   - Workqueues: a client-go workqueue MetricsProvider, so every controller
//     queue of the binary reports its failed reconciles (retries), depth and
//     work time.
//   - Warnings: an EventRecorder wrapper counting Warning Events by reason.
//
// lvm command latency comes from lvm/metrics, registered in the same
// registry by main.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves reg in the Prometheus exposition formats. A collector that
// fails does not fail the scrape: the rest is still served.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:      reg, // promhttp_metric_handler_errors_total
		ErrorHandling: promhttp.ContinueOnError,
	})
}
