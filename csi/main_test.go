/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package main

import (
	"strings"
	"testing"

	"github.com/open-local/open-local/apis/storage/ledger"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "controller", args: []string{"--mode=controller"}},
		{name: "metrics", args: []string{"--mode=controller", "--metrics-bind-address=:10266"}},
		{name: "node", args: []string{"--mode=node", "--node-id=n1", "--activation=loop", "--lvm-env=DM_DISABLE_UDEV=1"}},
		{name: "no mode", args: nil, wantErr: "--mode"},
		{name: "node without id", args: []string{"--mode=node", "--node-id="}, wantErr: "--node-id"},
		{name: "bad activation", args: []string{"--mode=node", "--node-id=n", "--activation=magic"}, wantErr: "activation"},
		{name: "tcp endpoint", args: []string{"--mode=controller", "--endpoint=tcp://0.0.0.0:1736"}, wantErr: "unix"},
		{name: "bad lvm-env", args: []string{"--mode=node", "--node-id=n", "--lvm-env=NOEQUALS"}, wantErr: "KEY=VALUE"},
		{name: "cgroup layout", args: []string{"--mode=node", "--node-id=n", "--cgroup-driver=systemd", "--cgroup-root=/kubelet", "--cgroup-mount=/host/sys/fs/cgroup"}},
		{name: "bad cgroup driver", args: []string{"--mode=node", "--node-id=n", "--cgroup-driver=upstart"}, wantErr: "--cgroup-driver"},
		{name: "thin pool fill thresholds", args: []string{"--mode=controller", "--thin-pool-data-fill-percent=95", "--thin-pool-metadata-fill-percent=70"}},
		{name: "fill threshold out of range", args: []string{"--mode=controller", "--thin-pool-metadata-fill-percent=0"}, wantErr: "metadata fill threshold"},
		{name: "fill threshold not a number", args: []string{"--mode=controller", "--thin-pool-data-fill-percent=ninety"}, wantErr: "thin-pool-data-fill-percent"},
		{name: "stray argument", args: []string{"--mode=controller", "extra"}, wantErr: "unexpected"},
		{name: "inline rules", args: []string{"--mode=node", "--node-id=n", "--inline-strategy=spread", "--default-inline-volume-size=2Gi"}},
		{name: "unknown inline strategy", args: []string{"--mode=node", "--node-id=n", "--inline-strategy=roundrobin"}, wantErr: "strategy"},
		{name: "inline size past 2^63", args: []string{"--mode=node", "--node-id=n", "--default-inline-volume-size=16Ei"}, wantErr: "default-inline-volume-size"},
		{name: "zero inline size", args: []string{"--mode=node", "--node-id=n", "--default-inline-volume-size=0"}, wantErr: "default-inline-volume-size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("NODE_NAME", "")
			o, err := parseFlags(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || o.mode == "" {
				t.Fatalf("parseFlags(%v) = %+v, %v", tt.args, o, err)
			}
			if tt.name == "inline rules" && (o.inlineStrategy != ledger.Spread || o.defaultInlineSize != 2<<30) {
				t.Errorf("inline rules = %v, %d; want spread, 2Gi", o.inlineStrategy, o.defaultInlineSize)
			}
		})
	}
}

// The kubelet is told the CSI socket it can dial: by default the --endpoint
// path, or --kubelet-registration-path when the driver sees another path.
func TestKubeletRegistrationFlags(t *testing.T) {
	o, err := parseFlags([]string{"--mode=node", "--node-id=n", "--endpoint=unix:///k/plugins/d/csi.sock", "--kubelet-registration-dir=/k/plugins_registry"})
	if err != nil || o.kubeletRegistryDir != "/k/plugins_registry" || o.kubeletEndpoint != "/k/plugins/d/csi.sock" {
		t.Fatalf("parseFlags = %+v, %v", o, err)
	}
	o, err = parseFlags([]string{"--mode=node", "--node-id=n", "--endpoint=/csi/csi.sock", "--kubelet-registration-dir=/r", "--kubelet-registration-path=/host/csi.sock"})
	if err != nil || o.kubeletEndpoint != "/host/csi.sock" {
		t.Fatalf("parseFlags = %+v, %v", o, err)
	}
}
