/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package launcher

import (
	"slices"
	"strings"
	"testing"
)

const manifest = `
apiVersion: v1
kind: ServiceAccount
metadata: {name: x}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: open-local-controller}
spec:
  selector: {}
  template:
    spec:
      containers:
      - name: csi-controller
        command: [/csi, --mode=controller, --endpoint=unix:///csi/csi.sock, --v=2]
      - name: csi-provisioner
        args: [--csi-address=/csi/csi.sock, --strict-topology, --timeout=5m, --http-endpoint=:9810]
`

func TestArgs(t *testing.T) {
	c, err := Parse([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, workload, container string
		changes                   []string
		want                      string
		err                       string
	}{
		{name: "command after the binary", workload: "open-local-controller", container: "csi-controller",
			want: "--mode=controller --endpoint=unix:///csi/csi.sock --v=2"},
		{name: "replace, append", workload: "open-local-controller", container: "csi-controller",
			changes: []string{"--endpoint", "unix:///tmp/c.sock", "--kubeconfig", "/k"},
			want:    "--mode=controller --endpoint=unix:///tmp/c.sock --v=2 --kubeconfig=/k"},
		{name: "drop, bare flag", workload: "open-local-controller", container: "csi-provisioner",
			changes: []string{"--http-endpoint", Drop, "--extra-create-metadata", ""},
			want:    "--csi-address=/csi/csi.sock --strict-topology --timeout=5m --extra-create-metadata"},
		{name: "a bare flag of the chart is replaced whole", workload: "open-local-controller", container: "csi-provisioner",
			changes: []string{"--strict-topology", "false"},
			want:    "--csi-address=/csi/csi.sock --strict-topology=false --timeout=5m --http-endpoint=:9810"},
		{name: "prefix of another flag is not it", workload: "open-local-controller", container: "csi-provisioner",
			changes: []string{"--time", "1s"},
			want:    "--csi-address=/csi/csi.sock --strict-topology --timeout=5m --http-endpoint=:9810 --time=1s"},
		{name: "no such container", workload: "open-local-controller", container: "nope", err: "no container"},
		{name: "no such workload", workload: "ServiceAccount", container: "x", err: "no container"},
		{name: "odd changes", workload: "open-local-controller", container: "csi-controller", changes: []string{"--v"}, err: "pairs"},
		{name: "not a flag", workload: "open-local-controller", container: "csi-controller", changes: []string{"v", "3"}, err: "not a flag"},
		{name: "drop what is not there", workload: "open-local-controller", container: "csi-controller", changes: []string{"--x", Drop}, err: "does not set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.Args(tc.workload, tc.container, tc.changes...)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := strings.Join(got, " "); s != tc.want {
				t.Errorf("got  %s\nwant %s", s, tc.want)
			}
		})
	}
	// Args does not change the chart.
	a, _ := c.Args("open-local-controller", "csi-controller", "--v", "5")
	b, _ := c.Args("open-local-controller", "csi-controller")
	if slices.Equal(a, b) {
		t.Errorf("a change leaked into the chart: %q", b)
	}
}
