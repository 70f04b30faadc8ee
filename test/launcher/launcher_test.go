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
        env:
        - {name: NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: open-local-agent}
spec:
  selector: {}
  template:
    spec:
      containers:
      - name: agent
        command: [/agent, --node-name=$(NODE_NAME), --price=$$5, --lvm-env=DM_X=$(DM_X), --healthz-bind-address=:10265]
        env:
        - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        - {name: DM_X, value: "1"}
      - name: secret
        command: [/x, --token=$(TOKEN)]
        env:
        - {name: TOKEN, valueFrom: {secretKeyRef: {name: s, key: k}}}
      - name: unset
        command: [/x, --y=$(NOPE)]
`

func TestProcess(t *testing.T) {
	c, err := Parse([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	ctrl := func(name string) Container { return Container{"open-local-controller", name} }
	agent := func(name string) Container { return Container{"open-local-agent", name} }
	node := Pod{NodeName: "n1"}
	for _, tc := range []struct {
		name    string
		ctr     Container
		pod     Pod
		changes []string
		want    string
		env     string
		err     string
	}{
		{name: "command after the binary", ctr: ctrl("csi-controller"),
			want: "--mode=controller --endpoint=unix:///csi/csi.sock --v=2"},
		{name: "replace, append", ctr: ctrl("csi-controller"),
			changes: []string{"--endpoint", "unix:///tmp/c.sock", "--kubeconfig", "/k"},
			want:    "--mode=controller --endpoint=unix:///tmp/c.sock --v=2 --kubeconfig=/k"},
		{name: "drop, bare flag, empty value", ctr: ctrl("csi-provisioner"), pod: Pod{Namespace: "ns"},
			changes: []string{"--http-endpoint", Drop, "--extra-create-metadata", Bare, "--timeout", ""},
			want:    "--csi-address=/csi/csi.sock --strict-topology --timeout= --extra-create-metadata", env: "NAMESPACE=ns"},
		{name: "a bare flag of the chart is replaced whole", ctr: ctrl("csi-provisioner"), pod: Pod{Namespace: "ns"},
			changes: []string{"--strict-topology", "false"},
			want:    "--csi-address=/csi/csi.sock --strict-topology=false --timeout=5m --http-endpoint=:9810", env: "NAMESPACE=ns"},
		{name: "prefix of another flag is not it", ctr: ctrl("csi-provisioner"), pod: Pod{Namespace: "ns"},
			changes: []string{"--time", "1s"},
			want:    "--csi-address=/csi/csi.sock --strict-topology --timeout=5m --http-endpoint=:9810 --time=1s", env: "NAMESPACE=ns"},
		{name: "env from the pod and values, $(VAR) and $$ expanded", ctr: agent("agent"), pod: node,
			changes: []string{"--healthz-bind-address", ""},
			want:    "--node-name=n1 --price=$5 --lvm-env=DM_X=1 --healthz-bind-address=", env: "NODE_NAME=n1 DM_X=1"},
		{name: "a change after the expansion", ctr: agent("agent"), pod: node, changes: []string{"--node-name", "$(NODE_NAME)x"},
			want: "--node-name=$(NODE_NAME)x --price=$5 --lvm-env=DM_X=1 --healthz-bind-address=:10265", env: "NODE_NAME=n1 DM_X=1"},
		{name: "a pod field the chart reads is missing", ctr: agent("agent"), err: "spec.nodeName: set it in Pod"},
		{name: "secrets are not for a local process", ctr: agent("secret"), err: "only values and fieldRefs"},
		{name: "a variable the env lacks", ctr: agent("unset"), err: "$(NOPE)"},
		{name: "no such container", ctr: ctrl("nope"), err: "no container"},
		{name: "no such workload", ctr: Container{"ServiceAccount", "x"}, err: "no container"},
		{name: "odd changes", ctr: ctrl("csi-controller"), changes: []string{"--v"}, err: "pairs"},
		{name: "not a flag", ctr: ctrl("csi-controller"), changes: []string{"v", "3"}, err: "not a flag"},
		{name: "drop what is not there", ctr: ctrl("csi-controller"), changes: []string{"--x", Drop}, err: "does not set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.Process(tc.ctr, tc.pod, tc.changes...)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s := strings.Join(got.Args, " "); s != tc.want {
				t.Errorf("args got  %s\nwant %s", s, tc.want)
			}
			if s := strings.Join(got.Env, " "); s != tc.env {
				t.Errorf("env got  %s\nwant %s", s, tc.env)
			}
		})
	}
	// Process does not change the chart.
	a, _ := c.Process(ctrl("csi-controller"), Pod{}, "--v", "5")
	b, _ := c.Process(ctrl("csi-controller"), Pod{})
	if slices.Equal(a.Args, b.Args) {
		t.Errorf("a change leaked into the chart: %q", b.Args)
	}
}

// TestTheChartsContainers renders the real chart: every container the
// suites start is in it and gives a process with nothing left unexpanded.
func TestTheChartsContainers(t *testing.T) {
	c := ForTest(t)
	pod := Pod{Name: "p", Namespace: "ns", NodeName: "n1"}
	for _, ctr := range []Container{Agent, CSINode, CSIController, NLSController, Provisioner, Resizer, Snapshotter, SnapshotController, Scheduler} {
		p, err := c.Process(ctr, pod)
		if err != nil {
			t.Errorf("%s: %v", ctr, err)
			continue
		}
		if s := strings.Join(p.Args, " "); len(p.Args) == 0 || strings.Contains(s, "$(") {
			t.Errorf("%s: %q", ctr, s)
		}
	}
	if p, err := c.Process(Agent, pod); err == nil && !slices.Contains(p.Args, "--node-name=n1") {
		t.Errorf("agent: --node-name is not the pod's node: %q", p.Args)
	}
}
