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
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"k8s.io/klog/v2"

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

// Serve serves /metrics on addr until ctx is done and returns the address
// it listens on. The listener is opened before Serve returns, so a taken
// port is an error at start-up, not a log line later.
func (m *Metrics) Serve(ctx context.Context, addr string) (net.Addr, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{
		Registry: m.Registry, ErrorHandling: promhttp.ContinueOnError,
	}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "metrics server failed", "address", addr)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return lis.Addr(), nil
}
