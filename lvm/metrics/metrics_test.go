/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package metrics

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/open-local/open-local/lvm"
)

func TestCommand(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{[]string{"lvm", "lvcreate", "--yes", "vg0"}, "lvcreate"},
		{[]string{"/usr/sbin/lvm", "lvs"}, "lvs"},
		{[]string{"lvm"}, "lvm"},
		{[]string{"blkid", "-p", "/dev/loop0"}, "blkid"},
		{[]string{"/sbin/losetup", "-f"}, "losetup"},
		{nil, ""},
	} {
		if got := Command(tc.argv); got != tc.want {
			t.Errorf("Command(%q) = %q, want %q", tc.argv, got, tc.want)
		}
	}
}

func TestObserve(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	c := NewCommands(reg)
	c.Observe([]string{"lvm", "lvs"}, 70*time.Millisecond, nil)
	c.Observe([]string{"lvm", "lvs"}, 90*time.Millisecond, nil)
	c.Observe([]string{"lvm", "lvcreate"}, time.Second, errors.New("exit status 5"))
	for _, tc := range []struct {
		command, result string
		count           int
	}{{"lvs", "success", 2}, {"lvcreate", "error", 1}, {"lvcreate", "success", 0}} {
		h := c.duration.WithLabelValues(tc.command, tc.result)
		var m dto.Metric
		if err := h.(prometheus.Metric).Write(&m); err != nil {
			t.Fatal(err)
		}
		if got := int(m.GetHistogram().GetSampleCount()); got != tc.count {
			t.Errorf("%s/%s: %d observations, want %d", tc.command, tc.result, got, tc.count)
		}
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// TestExecRunnerHook runs a real command through lvm.ExecRunner with the
// hook installed, as the agent and the CSI node plugin do.
func TestExecRunnerHook(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := NewCommands(reg)
	r := &lvm.ExecRunner{Observe: c.Observe}
	if _, err := r.Run(context.Background(), "true"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Run(context.Background(), "false"); err == nil {
		t.Fatal("false succeeded")
	}
	if n := testutil.CollectAndCount(c.duration); n != 2 {
		t.Errorf("%d series after a success and a failure, want 2", n)
	}
}
