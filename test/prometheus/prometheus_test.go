/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package prometheus

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/open-local/open-local/test/capability"
)

func TestQueries(t *testing.T) {
	dash := []byte(`{"panels":[
	  {"id":1,"type":"row","title":"Capacity"},
	  {"id":2,"type":"stat","title":"Used","fieldConfig":{"defaults":{"unit":"bytes"}},
	   "targets":[{"refId":"A","expr":"sum(x{nodename=~\"$nodename\"})"},{"refId":"B","expr":"rate(y{n=~\"${nodename}\"}[$__rate_interval])"}]},
	  {"id":3,"type":"row","title":"IO"},
	  {"id":4,"type":"timeseries","title":"IOPS","targets":[{"refId":"A","expr":"z"}]}]}`)
	got, err := Queries(dash, map[string]string{"nodename": "(a|b)"}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := []PanelQuery{
		{PanelID: 2, Row: "Capacity", Panel: "Used", Unit: "bytes", RefID: "A", Expr: `sum(x{nodename=~"(a|b)"})`},
		{PanelID: 2, Row: "Capacity", Panel: "Used", Unit: "bytes", RefID: "B", Expr: `rate(y{n=~"(a|b)"}[30s])`},
		{PanelID: 4, Row: "IO", Panel: "IOPS", RefID: "A", Expr: "z"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := Queries([]byte("{"), nil, time.Second); err == nil {
		t.Error("a broken dashboard parsed")
	}
}

// TestServer runs Debian's Prometheus against a plain HTTP target and
// queries it: the config, flags and client work with the real server.
func TestServer(t *testing.T) {
	capability.Require(t, capability.Prometheus)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "# TYPE demo_bytes gauge\ndemo_bytes{vg=\"pool0\"} 42\n")
	}))
	defer target.Close()
	dir := t.TempDir()
	rules := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rules, []byte("groups:\n- name: t\n  rules:\n  - alert: Big\n    expr: demo_bytes > 40\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	jobs := []Job{{Name: "demo", Targets: []string{strings.TrimPrefix(target.URL, "http://")}, Labels: map[string]string{"node": "n1"}}}
	cfg, err := Config(jobs, []string{rules}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(t.Context())
	cmd := exec.CommandContext(ctx, "prometheus", Args(cfgFile, filepath.Join(dir, "data"), addr)...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	c, err := NewClient(addr)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		alerts, _ := c.Alerts(ctx)
		if len(alerts) == 1 && alerts[0].Name == "Big" && alerts[0].State == "firing" {
			break
		}
		if time.Now().After(deadline) {
			ok, why := c.Ready(ctx, jobs)
			t.Fatalf("no firing alert Big: %v (ready %v %s)\n%s", alerts, ok, why, out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if ok, why := c.Ready(ctx, jobs); !ok {
		t.Fatal(why)
	}
	res := c.Evaluate(ctx, []PanelQuery{{Expr: `demo_bytes{node="n1"}`}, {Expr: `sum(nothing)`}, {Expr: `rate(demo_bytes[`}})
	if res[0].Err != nil || res[0].Series != 1 || !strings.HasSuffix(res[0].Sample, "= 42") {
		t.Errorf("demo_bytes: %+v", res[0])
	}
	if res[1].Err != nil || res[1].Series != 0 {
		t.Errorf("sum(nothing): %+v, want no series", res[1])
	}
	if res[2].Err == nil {
		t.Errorf("invalid PromQL accepted: %+v", res[2])
	}
	vals, err := c.LabelValues(ctx, "demo_bytes", "node")
	if err != nil || !cmp.Equal(vals, []string{"n1"}) {
		t.Errorf("label values %v %v", vals, err)
	}
}

// ShortenFor changes only the hold time of the alerts it names, keeps every
// other key, and refuses a name the rules do not have.
func TestShortenFor(t *testing.T) {
	raw := []byte(`groups:
  - name: g
    interval: 1m
    rules:
      - alert: A
        expr: up == 0
        for: 30m
        labels: {severity: warning}
      - alert: B
        expr: up == 1
        for: 1h
      - record: r
        expr: sum(up)
`)
	for _, tc := range []struct {
		alerts  []string
		want    map[string]string // alert -> for
		wantErr bool
	}{
		{alerts: nil, want: map[string]string{"A": "10s", "B": "10s"}},
		{alerts: []string{"B"}, want: map[string]string{"A": "30m", "B": "10s"}},
		{alerts: []string{"C"}, wantErr: true},
	} {
		out, err := ShortenFor(raw, 10*time.Second, tc.alerts...)
		if tc.wantErr {
			if err == nil {
				t.Errorf("%v: no error", tc.alerts)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Groups []struct {
				Interval string `json:"interval"`
				Rules    []struct {
					Alert, Record, For string
					Labels             map[string]string
				} `json:"rules"`
			} `json:"groups"`
		}
		if err := yaml.Unmarshal(out, &doc); err != nil {
			t.Fatal(err)
		}
		g := doc.Groups[0]
		if g.Interval != "1m" || len(g.Rules) != 3 || g.Rules[0].Labels["severity"] != "warning" || g.Rules[2].Record != "r" {
			t.Errorf("%v: keys lost:\n%s", tc.alerts, out)
		}
		for _, r := range g.Rules[:2] {
			if r.For != tc.want[r.Alert] {
				t.Errorf("%v: %s for %s, want %s", tc.alerts, r.Alert, r.For, tc.want[r.Alert])
			}
		}
	}
}
