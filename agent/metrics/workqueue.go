/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"
)

// Workqueues is a client-go workqueue.MetricsProvider backed by a private
// registry. Every controller of the agent binary retries a failed reconcile
// through its rate-limited queue, so the queue's retry count is the count of
// failed reconciles: open_local_agent_reconcile_errors_total{controller}.
// The queue's name (e.g. "localvolumes", "nodestorage") is the label.
//
// client-go takes a provider process-wide (workqueue.SetProvider, first call
// wins), which main does once; tests pass it per queue instead
// (TypedRateLimitingQueueConfig.MetricsProvider).
type Workqueues struct {
	errors   *prometheus.CounterVec
	depth    *prometheus.GaugeVec
	adds     *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

var _ workqueue.MetricsProvider = (*Workqueues)(nil)

// NewWorkqueues registers the queue metrics with reg.
func NewWorkqueues(reg prometheus.Registerer) *Workqueues {
	w := &Workqueues{
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "open_local_agent_reconcile_errors_total",
			Help: "Reconciles that failed and were requeued with backoff, by controller (its work queue: localvolumes, nodestorage, the NLS controller's queue).",
		}, []string{"controller"}),
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "open_local_agent_workqueue_depth",
			Help: "Items waiting in a controller's work queue.",
		}, []string{"controller"}),
		adds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "open_local_agent_workqueue_adds_total",
			Help: "Items added to a controller's work queue.",
		}, []string{"controller"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "open_local_agent_reconcile_duration_seconds",
			Help:    "Time one reconcile takes (from the queue's Get to Done), by controller.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 17), // 1 ms .. 65 s
		}, []string{"controller"}),
	}
	reg.MustRegister(w.errors, w.depth, w.adds, w.duration)
	return w
}

// NewDepthMetric implements workqueue.MetricsProvider.
func (w *Workqueues) NewDepthMetric(name string) workqueue.GaugeMetric {
	return w.depth.WithLabelValues(name)
}

// NewAddsMetric implements workqueue.MetricsProvider.
func (w *Workqueues) NewAddsMetric(name string) workqueue.CounterMetric {
	return w.adds.WithLabelValues(name)
}

// NewLatencyMetric implements workqueue.MetricsProvider (not exported: the
// reconcile duration and the depth tell what an operator needs).
func (w *Workqueues) NewLatencyMetric(string) workqueue.HistogramMetric { return noop{} }

// NewWorkDurationMetric implements workqueue.MetricsProvider.
func (w *Workqueues) NewWorkDurationMetric(name string) workqueue.HistogramMetric {
	return w.duration.WithLabelValues(name)
}

// NewUnfinishedWorkSecondsMetric implements workqueue.MetricsProvider (not exported).
func (w *Workqueues) NewUnfinishedWorkSecondsMetric(string) workqueue.SettableGaugeMetric {
	return noop{}
}

// NewLongestRunningProcessorSecondsMetric implements workqueue.MetricsProvider (not exported).
func (w *Workqueues) NewLongestRunningProcessorSecondsMetric(string) workqueue.SettableGaugeMetric {
	return noop{}
}

// NewRetriesMetric implements workqueue.MetricsProvider.
func (w *Workqueues) NewRetriesMetric(name string) workqueue.CounterMetric {
	return w.errors.WithLabelValues(name)
}

type noop struct{}

func (noop) Observe(float64) {}
func (noop) Set(float64)     {}
