/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package metrics is what the CSI binary exports on /metrics
// (--metrics-bind-address), in a registry of its own:
//
//   - gRPC server metrics of every CSI call, from go-grpc-middleware's
//     Prometheus provider (the names every gRPC dashboard knows):
//     grpc_server_started_total, grpc_server_handled_total{grpc_code} and the
//     grpc_server_handling_seconds histogram, labelled grpc_service,
//     grpc_method, grpc_type. Codes are the final ones, after the recovery
//     interceptor turned panics and unclassified errors into Internal.
//   - in node mode, lvm command latency (lvm/metrics), as the agent.
//   - Go runtime and process collectors.
package metrics

import (
	"net/http"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	lvmmetrics "github.com/open-local/open-local/lvm/metrics"
)

// Metrics of one CSI process.
type Metrics struct {
	Registry *prometheus.Registry
	grpc     *grpcprom.ServerMetrics
	commands *lvmmetrics.Commands
}

// New builds the registry.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	g := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		// Node calls take milliseconds (mounts) to a minute (mkfs of a
		// large volume); controller calls wait for the agent.
		grpcprom.WithHistogramBuckets(prometheus.ExponentialBuckets(0.005, 2, 15)))) // 5 ms .. 82 s
	reg.MustRegister(g)
	return &Metrics{Registry: reg, grpc: g}
}

// UnaryServerInterceptor counts and times every call; pass it to
// grpcserver.New.
func (m *Metrics) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return m.grpc.UnaryServerInterceptor()
}

// Initialize creates the zero-valued series of every method srv serves, so
// dashboards show 0 instead of "no data" before the first call. Call it
// after registering the services.
func (m *Metrics) Initialize(srv *grpc.Server) { m.grpc.InitializeMetrics(srv) }

// Commands returns the lvm command latency histogram, registered on first use
// (node mode only: the controller runs no commands).
func (m *Metrics) Commands() *lvmmetrics.Commands {
	if m.commands == nil {
		m.commands = lvmmetrics.NewCommands(m.Registry)
	}
	return m.commands
}

// Handler serves the registry (the binary puts it at /metrics behind
// secureserving).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry, ErrorHandling: promhttp.ContinueOnError})
}
