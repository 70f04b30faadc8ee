/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package prometheus runs Debian's Prometheus as a real component against
// open-local's endpoints and evaluates the chart's Grafana dashboard
// through its HTTP API, panel by panel, as Grafana would ask.
package prometheus

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"
)

// Job is one scrape job: HTTPS endpoints that check a bearer token (as the
// chart's ServiceMonitors scrape them), or plain HTTP ones.
type Job struct {
	Name    string
	Targets []string // host:port
	// TokenFile holds the ServiceAccount token sent as a bearer token;
	// empty: plain HTTP without one.
	TokenFile string
	// Labels are added to every target (the ServiceMonitor's relabelings).
	Labels map[string]string
}

// Config renders prometheus.yml: every job scraped every interval, rules
// evaluated as often.
func Config(jobs []Job, ruleFiles []string, interval time.Duration) ([]byte, error) {
	var scrapes []map[string]any
	for _, j := range jobs {
		sc := map[string]any{
			"job_name":       j.Name,
			"metrics_path":   "/metrics",
			"static_configs": []map[string]any{{"targets": j.Targets, "labels": j.Labels}},
		}
		if j.TokenFile != "" {
			sc["scheme"] = "https"
			sc["authorization"] = map[string]any{"type": "Bearer", "credentials_file": j.TokenFile}
			// Self-signed serving certificates (secureserving), as the
			// ServiceMonitors' insecureSkipVerify.
			sc["tls_config"] = map[string]any{"insecure_skip_verify": true}
		}
		scrapes = append(scrapes, sc)
	}
	return yaml.Marshal(map[string]any{
		"global":         map[string]any{"scrape_interval": interval.String(), "evaluation_interval": interval.String()},
		"rule_files":     ruleFiles,
		"scrape_configs": scrapes,
	})
}

// Args are prometheus' flags for a server on addr keeping its data in dir.
func Args(configFile, dataDir, addr string) []string {
	return []string{"--config.file=" + configFile, "--storage.tsdb.path=" + dataDir,
		"--web.listen-address=" + addr, "--storage.tsdb.retention.time=1h", "--log.level=warn"}
}

// Client talks to a Prometheus' HTTP API.
type Client struct{ api promv1.API }

// NewClient for the server at http://addr.
func NewClient(addr string) (*Client, error) {
	c, err := promapi.NewClient(promapi.Config{Address: "http://" + addr})
	if err != nil {
		return nil, err
	}
	return &Client{api: promv1.NewAPI(c)}, nil
}

// Ready reports whether the server answers and every target of jobs was
// scraped successfully (with the reason when not).
func (c *Client) Ready(ctx context.Context, jobs []Job) (bool, string) {
	res, err := c.api.Targets(ctx)
	if err != nil {
		return false, err.Error()
	}
	up := map[string]bool{}
	var bad []string
	for _, t := range res.Active {
		if t.Health == promv1.HealthGood {
			up[string(t.Labels["job"])+" "+string(t.Labels["instance"])] = true
		} else {
			bad = append(bad, fmt.Sprintf("%s %s: %s %s", t.Labels["job"], t.Labels["instance"], t.Health, t.LastError))
		}
	}
	for _, j := range jobs {
		for _, tg := range j.Targets {
			if !up[j.Name+" "+tg] {
				return false, fmt.Sprintf("target %s %s not up yet (%s)", j.Name, tg, strings.Join(bad, "; "))
			}
		}
	}
	return true, ""
}

// Query evaluates expr now.
func (c *Client) Query(ctx context.Context, expr string) (model.Vector, error) {
	v, warnings, err := c.api.Query(ctx, expr, time.Now())
	if err != nil {
		return nil, err
	}
	if len(warnings) > 0 {
		return nil, fmt.Errorf("warnings: %v", warnings)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("%s: a %s, not an instant vector", expr, v.Type())
	}
	return vec, nil
}

// LabelValues is Grafana's label_values(metric, label).
func (c *Client) LabelValues(ctx context.Context, metric, label string) ([]string, error) {
	vals, _, err := c.api.LabelValues(ctx, label, []string{metric}, time.Now().Add(-time.Hour), time.Now())
	if err != nil {
		return nil, err
	}
	var out []string
	for _, v := range vals {
		out = append(out, string(v))
	}
	sort.Strings(out)
	return out, nil
}

// Alert is an alert's state (pending or firing) and labels.
type Alert struct {
	Name, State string
	Labels      map[string]string
}

// Alerts lists the alerts Prometheus holds now.
func (c *Client) Alerts(ctx context.Context) ([]Alert, error) {
	res, err := c.api.Alerts(ctx)
	if err != nil {
		return nil, err
	}
	var out []Alert
	for _, a := range res.Alerts {
		l := map[string]string{}
		for k, v := range a.Labels {
			l[string(k)] = string(v)
		}
		out = append(out, Alert{Name: l["alertname"], State: string(a.State), Labels: l})
	}
	return out, nil
}

// PanelQuery is one target of a dashboard panel.
type PanelQuery struct {
	PanelID          int
	Row, Panel, Unit string
	RefID, Expr      string
}

// Dashboard is the part of Grafana's JSON model the tests look at: the
// queries (Queries) and the structure (deploy's dashboard test).
type Dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []Panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// Panel is one panel (or row) of a Dashboard.
type Panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos     struct{ H, W, X, Y int } `json:"gridPos"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
}

// Queries lists every panel target of dashboard JSON, with Grafana's
// variables replaced: vars by name ($nodename), $__rate_interval by
// rateInterval.
func Queries(dashboard []byte, vars map[string]string, rateInterval time.Duration) ([]PanelQuery, error) {
	var d Dashboard
	if err := json.Unmarshal(dashboard, &d); err != nil {
		return nil, err
	}
	repl := []string{"$__rate_interval", model.Duration(rateInterval).String()}
	for k, v := range vars {
		repl = append(repl, "${"+k+"}", v, "$"+k, v)
	}
	r := strings.NewReplacer(repl...)
	var out []PanelQuery
	row := ""
	for _, p := range d.Panels {
		if p.Type == "row" {
			row = p.Title
			continue
		}
		for _, t := range p.Targets {
			out = append(out, PanelQuery{PanelID: p.ID, Row: row, Panel: p.Title, Unit: p.FieldConfig.Defaults.Unit,
				RefID: t.RefID, Expr: r.Replace(t.Expr)})
		}
	}
	return out, nil
}

// Result is one panel query's outcome.
type Result struct {
	PanelQuery
	Err    error  // the query was refused (invalid PromQL, a bad join)
	Series int    // series returned
	Sample string // one series and its value
}

// Evaluate runs every query once.
func (c *Client) Evaluate(ctx context.Context, qs []PanelQuery) []Result {
	var out []Result
	for _, q := range qs {
		r := Result{PanelQuery: q}
		vec, err := c.Query(ctx, q.Expr)
		r.Err, r.Series = err, len(vec)
		if len(vec) > 0 {
			// Prefer a series with a number (a rate over an idle volume
			// is 0; a quantile of no observations NaN).
			s := vec[0]
			for _, x := range vec {
				if !math.IsNaN(float64(x.Value)) && x.Value != 0 {
					s = x
					break
				}
			}
			r.Sample = fmt.Sprintf("%s = %s", s.Metric, s.Value)
		}
		out = append(out, r)
	}
	return out
}

// ShortenFor returns rules (a Prometheus rules file) with the `for:` of
// the named alerts (all when none are named) set to d: the expressions
// stay the shipped ones, but a test or the demo need not sit out a
// production hold time of half an hour.
func ShortenFor(rules []byte, d time.Duration, alerts ...string) ([]byte, error) {
	var doc map[string]any // every key kept, only `for` changed
	if err := yaml.Unmarshal(rules, &doc); err != nil {
		return nil, err
	}
	found := map[string]bool{}
	groups, _ := doc["groups"].([]any)
	for _, g := range groups {
		group, _ := g.(map[string]any)
		list, _ := group["rules"].([]any)
		for _, r := range list {
			rule, _ := r.(map[string]any)
			name, _ := rule["alert"].(string)
			if name == "" || (len(alerts) > 0 && !slices.Contains(alerts, name)) {
				continue
			}
			rule["for"] = d.String()
			found[name] = true
		}
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("no alert rules to shorten")
	}
	for _, a := range alerts {
		if !found[a] {
			return nil, fmt.Errorf("no alert %s in the rules", a)
		}
	}
	return yaml.Marshal(doc)
}
