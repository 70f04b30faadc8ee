/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// TestWorkqueues drives a real client-go rate-limited queue the way the
// agent's controllers do: a failed reconcile is AddRateLimited.
func TestWorkqueues(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	w := NewWorkqueues(reg)
	q := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Millisecond, time.Millisecond),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "localvolumes", MetricsProvider: w})
	defer q.ShutDown()

	q.Add("pvc-a")
	for attempt := range 3 {
		item, _ := q.Get()
		if attempt < 2 {
			q.AddRateLimited(item) // reconcile failed
		} else {
			q.Forget(item)
		}
		q.Done(item)
	}
	want := `
# HELP open_local_agent_reconcile_errors_total Reconciles that failed and were requeued with backoff, by controller (its work queue: localvolumes, nodestorage, the NLS controller's queue).
# TYPE open_local_agent_reconcile_errors_total counter
open_local_agent_reconcile_errors_total{controller="localvolumes"} 2
# HELP open_local_agent_workqueue_adds_total Items added to a controller's work queue.
# TYPE open_local_agent_workqueue_adds_total counter
open_local_agent_workqueue_adds_total{controller="localvolumes"} 3
# HELP open_local_agent_workqueue_depth Items waiting in a controller's work queue.
# TYPE open_local_agent_workqueue_depth gauge
open_local_agent_workqueue_depth{controller="localvolumes"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "open_local_agent_reconcile_errors_total",
		"open_local_agent_workqueue_adds_total", "open_local_agent_workqueue_depth"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(w.duration, "open_local_agent_reconcile_duration_seconds"); n != 1 {
		t.Errorf("reconcile duration: %d series, want 1", n)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestCountWarnings(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	fake := record.NewFakeRecorder(10)
	r := CountWarnings(reg, fake)
	obj := &corev1.Node{}
	r.Event(obj, corev1.EventTypeWarning, "CreateVGFailed", "no device")
	r.Eventf(obj, corev1.EventTypeWarning, "CreateVGFailed", "no device %s", "/dev/sdz")
	r.AnnotatedEventf(obj, nil, corev1.EventTypeWarning, "DiscoveryFailed", "lvm: %v", "exit 5")
	r.Event(obj, corev1.EventTypeNormal, "VGCreated", "ok")
	if got := len(fake.Events); got != 4 {
		t.Errorf("%d events reached the wrapped recorder, want 4", got)
	}
	want := `
# HELP open_local_agent_warning_events_total Warning Events the agent emitted (on NodeLocalStorages, LocalVolumes, the init config), by reason.
# TYPE open_local_agent_warning_events_total counter
open_local_agent_warning_events_total{reason="CreateVGFailed"} 2
open_local_agent_warning_events_total{reason="DiscoveryFailed"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
