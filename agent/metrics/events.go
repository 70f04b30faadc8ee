/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/record"
)

// CountWarnings wraps an EventRecorder so every Warning Event it emits is
// counted by reason (CreateVGFailed, CreateFailed, DiscoveryFailed, ...):
// the agent explains each failure with a Warning Event, so the counter says
// which failures happen and how often, with no change to the controllers.
// Reasons are constants of our code, so the label set is bounded.
func CountWarnings(reg prometheus.Registerer, r record.EventRecorder) record.EventRecorder {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "open_local_agent_warning_events_total",
		Help: "Warning Events the agent emitted (on NodeLocalStorages, LocalVolumes, the init config), by reason.",
	}, []string{"reason"})
	reg.MustRegister(c)
	return &warningCounter{EventRecorder: r, warnings: c}
}

type warningCounter struct {
	record.EventRecorder
	warnings *prometheus.CounterVec
}

func (w *warningCounter) count(eventtype, reason string) {
	if eventtype == corev1.EventTypeWarning {
		w.warnings.WithLabelValues(reason).Inc()
	}
}

func (w *warningCounter) Event(object runtime.Object, eventtype, reason, message string) {
	w.count(eventtype, reason)
	w.EventRecorder.Event(object, eventtype, reason, message)
}

func (w *warningCounter) Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...any) {
	w.count(eventtype, reason)
	w.EventRecorder.Eventf(object, eventtype, reason, messageFmt, args...)
}

func (w *warningCounter) AnnotatedEventf(object runtime.Object, annotations map[string]string, eventtype, reason, messageFmt string, args ...any) {
	w.count(eventtype, reason)
	w.EventRecorder.AnnotatedEventf(object, annotations, eventtype, reason, messageFmt, args...)
}
