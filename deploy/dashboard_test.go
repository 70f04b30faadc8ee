/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package deploy_test

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"

	agentmetrics "github.com/open-local/open-local/agent/metrics"
	"github.com/open-local/open-local/apis/client/clientset/versioned"
	"github.com/open-local/open-local/csi/grpcserver"
	csimetrics "github.com/open-local/open-local/csi/metrics"
	"github.com/open-local/open-local/deploy"
	lvmmetrics "github.com/open-local/open-local/lvm/metrics"
	"github.com/open-local/open-local/test/cluster"
	promtest "github.com/open-local/open-local/test/prometheus"
)

func loadDashboard(t *testing.T) *promtest.Dashboard {
	t.Helper()
	var d promtest.Dashboard
	if err := json.Unmarshal(deploy.Dashboard, &d); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	return &d
}

// TestDashboardStructure checks what Grafana needs to load the dashboard and
// what an operator needs to use it.
func TestDashboardStructure(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Error("dashboard without uid or title")
	}
	// Grafana 10/11 dashboards; older Grafana migrates up, not down.
	if d.SchemaVersion < 36 || d.SchemaVersion > 41 {
		t.Errorf("schemaVersion %d", d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Name == "nodename" {
			q, _ := json.Marshal(v.Query)
			if !strings.Contains(string(q), "label_values(") || !strings.Contains(string(q), "nodename)") {
				t.Errorf("nodename variable query %s: want label_values(<metric>, nodename)", q)
			}
		}
	}
	if vars["nodename"] != "query" || vars["datasource"] != "datasource" {
		t.Errorf("variables %v: want a nodename query and a datasource variable", vars)
	}
	ids := map[int]bool{}
	queries := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %d %q: title and the ${datasource} variable are required", p.ID, p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no targets", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" || tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: target %+v without expr or with a duplicate refId", p.Title, tg)
			}
			refs[tg.RefID] = true
			queries++
		}
	}
	if queries < 20 {
		t.Errorf("only %d queries", queries)
	}
	checkDashboardRows(t, d)
	// The chart ships this file in the dashboard ConfigMap.
	m := render(t, "monitoring.grafanaDashboard.enabled=true")
	cm := m.get(t, "ConfigMap", "open-local-grafana-dashboard")
	data, _ := cm.Object["data"].(map[string]any)
	if data["open-local.json"] != strings.TrimRight(string(deploy.Dashboard), "\n") {
		t.Error("the chart's dashboard ConfigMap does not carry dashboards/open-local.json")
	}
	if labels := cm.GetLabels(); labels["grafana_dashboard"] != "1" {
		t.Errorf("dashboard ConfigMap labels %v: Grafana's sidecar looks for grafana_dashboard=1", labels)
	}
}

// TestDashboardMetricsExist: every metric a dashboard query references is
// exported by a component: the agent's and the CSI binary's registries as
// their main packages build them, and the scheduler's metrics as
// scheduler/plugin/metrics.go declares them.
func TestDashboardMetricsExist(t *testing.T) {
	exported := map[string]string{} // name -> component
	for n := range agentMetricNames(t) {
		exported[n] = "agent"
	}
	for n := range csiMetricNames(t) {
		exported[n] = "csi"
	}
	for n := range schedulerMetricNames(t) {
		exported[n] = "scheduler"
	}
	used := dashboardMetrics(t)
	if len(used) < 20 {
		t.Fatalf("found only %d metric names in the dashboard: %v", len(used), used)
	}
	for _, name := range used {
		if _, ok := resolve(name, exported); !ok {
			t.Errorf("the dashboard queries %s, which no component exports", name)
		}
	}
	// The scheduler's decisions and reservations are on the dashboard.
	for _, want := range []string{"open_local_scheduler_filter_decisions_total", "open_local_scheduler_reservations_total"} {
		if !slices.Contains(used, want) {
			t.Errorf("dashboard lacks %s", want)
		}
	}
}

// dashboardConcerns are the rows, in order: one per concern an operator
// looks at (the row titles start with these words).
var dashboardConcerns = []string{"Capacity", "Devices", "Volumes", "IO", "Latency", "Scheduler"}

// checkDashboardRows: the panels are grouped under one row per concern, in
// dashboardConcerns' order, laid out top to bottom (a panel belongs to the
// row above it), each row with panels, every panel with a unit.
func checkDashboardRows(t *testing.T, d *promtest.Dashboard) {
	t.Helper()
	var rows []string
	inRow := map[string]int{}
	lastY := -1
	for _, p := range d.Panels {
		if p.GridPos.Y < lastY {
			t.Errorf("panel %d %q at y=%d above the panel before it (y=%d): Grafana would show it in another row", p.ID, p.Title, p.GridPos.Y, lastY)
		}
		lastY = p.GridPos.Y
		if p.Type == "row" {
			rows = append(rows, p.Title)
			continue
		}
		if len(rows) == 0 {
			t.Errorf("panel %d %q above the first row", p.ID, p.Title)
			continue
		}
		inRow[rows[len(rows)-1]]++
		if p.FieldConfig.Defaults.Unit == "" {
			t.Errorf("panel %d %q (row %q) has no unit", p.ID, p.Title, rows[len(rows)-1])
		}
	}
	if len(rows) != len(dashboardConcerns) {
		t.Fatalf("rows %q: want one per concern %v", rows, dashboardConcerns)
	}
	for i, r := range rows {
		if first, _, _ := strings.Cut(r, " "); first != dashboardConcerns[i] {
			t.Errorf("row %d %q: want the %s row", i, r, dashboardConcerns[i])
		}
		if inRow[r] == 0 {
			t.Errorf("row %q has no panels", r)
		}
	}
}

// resolve maps a referenced series name to an exported metric family
// (histogram series carry _bucket, _count, _sum).
func resolve(name string, exported map[string]string) (string, bool) {
	if c, ok := exported[name]; ok {
		return c, true
	}
	for _, suffix := range []string{"_bucket", "_count", "_sum"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if c, ok := exported[base]; ok {
				return c, true
			}
		}
	}
	return "", false
}

var (
	promClause  = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promMatcher = regexp.MustCompile(`\{[^}]*\}`)
	promRange   = regexp.MustCompile(`\[[^\]]*\]`)
	promString  = regexp.MustCompile(`"[^"]*"`)
	promIdent   = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	promWords   = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true}
)

// dashboardMetrics returns the metric names the dashboard's queries use: the
// identifiers left after label matchers, ranges, strings and grouping
// clauses are removed, that are not function calls or keywords.
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	d := loadDashboard(t)
	set := map[string]bool{}
	var exprs []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(map[string]any); ok && v.Type == "query" {
			s, _ := q["query"].(string)
			exprs = append(exprs, strings.NewReplacer("label_values(", "metric(", ", nodename)", ")").Replace(s))
		}
	}
	for _, e := range exprs {
		e = promString.ReplaceAllString(e, "")
		e = promMatcher.ReplaceAllString(e, "")
		e = promRange.ReplaceAllString(e, "")
		e = promClause.ReplaceAllString(e, "")
		for _, m := range promIdent.FindAllString(e, -1) {
			if strings.HasSuffix(m, "(") || promWords[m] {
				continue
			}
			if _, err := strconv.ParseFloat(m, 64); err == nil {
				continue
			}
			set[m] = true
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// describer is a Registerer that records the names of what registers.
type describer map[string]bool

func (d describer) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		m := regexp.MustCompile(`fqName: "([^"]+)"`).FindStringSubmatch(desc.String())
		if m != nil {
			d[m[1]] = true
		}
	}
	return nil
}

func (d describer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = d.Register(c)
	}
}

func (d describer) Unregister(prometheus.Collector) bool { return true }

// agentMetricNames registers what agent/main.go registers (agent and
// controller mode) into a describer.
func agentMetricNames(t *testing.T) describer {
	t.Helper()
	d := describer{}
	agentmetrics.NewWorkqueues(d)
	lvmmetrics.NewCommands(d)
	agentmetrics.CountWarnings(d, record.NewFakeRecorder(1))
	client, err := versioned.NewForConfig(&rest.Config{Host: "https://127.0.0.1:1"}) // never contacted
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agentmetrics.NewNode(d, agentmetrics.NodeOptions{NodeName: "n", Client: client}); err != nil {
		t.Fatal(err)
	}
	return d
}

// csiMetricNames gathers the CSI binary's registry with every CSI service
// registered, as csi/main.go does in both modes.
func csiMetricNames(t *testing.T) describer {
	t.Helper()
	m := csimetrics.New()
	m.Commands()
	srv := grpcserver.New(m.UnaryServerInterceptor())
	csi.RegisterIdentityServer(srv, csi.UnimplementedIdentityServer{})
	csi.RegisterControllerServer(srv, csi.UnimplementedControllerServer{})
	csi.RegisterNodeServer(srv, csi.UnimplementedNodeServer{})
	m.Initialize(srv)
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	d := describer{}
	for _, f := range fams {
		d[f.GetName()] = true
	}
	// The histogram has no series before a command ran.
	d[lvmmetrics.CommandDurationName] = true
	return d
}

// schedulerMetricNames reads scheduler/plugin/metrics.go (another
// engineer's package, not importable piecemeal): the Subsystem+Name of every
// metrics.*Opts literal and the name of every metrics.NewDesc, with the
// subsystem constant resolved.
func schedulerMetricNames(t *testing.T) describer {
	t.Helper()
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(root, "scheduler", "plugin", "metrics.go")
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		if vs, ok := n.(*ast.ValueSpec); ok {
			for i, name := range vs.Names {
				if i < len(vs.Values) {
					if s, ok := stringValue(vs.Values[i], consts); ok {
						consts[name.Name] = s
					}
				}
			}
		}
		return true
	})
	d := describer{}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CompositeLit:
			var sub, name string
			for _, el := range n.Elts {
				kv, ok := el.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				key, _ := kv.Key.(*ast.Ident)
				if key == nil {
					continue
				}
				v, _ := stringValue(kv.Value, consts)
				switch key.Name {
				case "Subsystem":
					sub = v
				case "Name":
					name = v
				}
			}
			if name != "" {
				d[strings.TrimPrefix(sub+"_"+name, "_")] = true
			}
		case *ast.CallExpr:
			if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "NewDesc" && len(n.Args) > 0 {
				if v, ok := stringValue(n.Args[0], consts); ok {
					d[v] = true
				}
			}
		}
		return true
	})
	if len(d) < 5 {
		t.Fatalf("found only %v in %s: has its style changed?", d, file)
	}
	return d
}

// stringValue evaluates string literals, known constants and their sums.
func stringValue(e ast.Expr, consts map[string]string) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind == token.STRING {
			s, err := strconv.Unquote(e.Value)
			return s, err == nil
		}
	case *ast.Ident:
		s, ok := consts[e.Name]
		return s, ok
	case *ast.BinaryExpr:
		if e.Op == token.ADD {
			a, ok1 := stringValue(e.X, consts)
			b, ok2 := stringValue(e.Y, consts)
			return a + b, ok1 && ok2
		}
	}
	return "", false
}
