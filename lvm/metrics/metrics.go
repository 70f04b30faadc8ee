/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package metrics measures the LVM layer's one exec seam: every command
// lvm.ExecRunner runs (lvm subcommands, blkid, losetup) is observed through
// its Observe hook, by command and outcome. The agent and the CSI node
// plugin both register it, each in its own registry.
package metrics

import (
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CommandDurationName is the histogram's metric name.
const CommandDurationName = "open_local_lvm_command_duration_seconds"

// Commands is the command latency histogram.
type Commands struct {
	duration *prometheus.HistogramVec
}

// NewCommands registers the histogram with reg.
func NewCommands(reg prometheus.Registerer) *Commands {
	c := &Commands{duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: CommandDurationName,
		Help: "Time lvm2 (and blkid, losetup) commands take, by command (lvm subcommand such as lvcreate, or the binary) and result (success, error).",
		// lvm takes ~70 ms on an idle node and seconds when it waits for a
		// VG lock or a slow disk; 10 ms .. 41 s covers both ends.
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 13),
	}, []string{"command", "result"})}
	reg.MustRegister(c.duration)
	return c
}

// Observe has the signature of lvm.ExecRunner.Observe.
func (c *Commands) Observe(argv []string, took time.Duration, err error) {
	result := "success"
	if err != nil {
		result = "error"
	}
	c.duration.WithLabelValues(Command(argv), result).Observe(took.Seconds())
}

// Command names a command for the label: the lvm subcommand ("lvs",
// "lvcreate") for `lvm <subcommand> ...`, else the binary's base name. The
// argv comes from our code, never from users, so the label set is bounded.
func Command(argv []string) string {
	if len(argv) == 0 {
		return ""
	}
	bin := filepath.Base(argv[0])
	if bin == "lvm" && len(argv) > 1 {
		return argv[1]
	}
	return bin
}
