/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package main

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// The controller's node-loss flags: defaults (marking on, cleanup off) and
// the combinations refused at start.
func TestControllerNodeLossFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{args: nil},
		{args: []string{"--node-loss-cleanup"}},
		{args: []string{"--node-loss-grace=0"}},
		{args: []string{"--node-loss-grace=-1s"}, wantErr: "--node-loss-grace must not be negative"},
		{args: []string{"--node-loss-grace=0", "--node-loss-cleanup"}, wantErr: "--node-loss-cleanup needs --node-loss-grace > 0"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			o := &options{}
			fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
			o.addFlags(fs)
			if err := fs.Parse(append([]string{"--mode=controller"}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			err := o.validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("validate: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("validate: %v, want %q", err, tc.wantErr)
			}
			if tc.args == nil && (o.nodeLossGrace <= 0 || o.nodeLossClean) {
				t.Errorf("defaults: grace %s, cleanup %v; want marking on, cleanup off", o.nodeLossGrace, o.nodeLossClean)
			}
		})
	}
}

// --interval takes a duration, or open-local's integer seconds, so an
// open-local DaemonSet's `--interval=60` keeps working after the switch.
func TestIntervalFlag(t *testing.T) {
	for _, tc := range []struct {
		arg     string
		want    time.Duration
		wantErr bool
	}{
		{arg: "", want: 60 * time.Second},
		{arg: "--interval=60", want: 60 * time.Second},
		{arg: "--interval=5", want: 5 * time.Second},
		{arg: "--interval=90s", want: 90 * time.Second},
		{arg: "--interval=1m30s", want: 90 * time.Second},
		{arg: "--interval=abc", wantErr: true},
		{arg: "--interval=1.5", wantErr: true},
		{arg: "--interval=99999999999999999999", wantErr: true},
		{arg: "--interval=9223372037", wantErr: true}, // seconds past what a Duration holds
	} {
		t.Run(tc.arg, func(t *testing.T) {
			o := &options{}
			fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
			o.addFlags(fs)
			var args []string
			if tc.arg != "" {
				args = []string{tc.arg}
			}
			err := fs.Parse(args)
			switch {
			case tc.wantErr && err == nil:
				t.Fatalf("parse %q: no error, interval %s", tc.arg, o.interval)
			case !tc.wantErr && err != nil:
				t.Fatalf("parse %q: %v", tc.arg, err)
			case !tc.wantErr && o.interval != tc.want:
				t.Errorf("interval %s, want %s", o.interval, tc.want)
			}
		})
	}
}
