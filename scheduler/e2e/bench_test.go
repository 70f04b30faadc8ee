package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	olinformers "github.com/open-local/open-local/apis/client/informers/externalversions"
	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/config/profile"
)

// BenchmarkScheduling1000Nodes measures the real scheduler binary on the
// local cluster with simulated nodes (default 1000, OPEN_LOCAL_BENCH_NODES):
// first P pods without volumes, then P pods with two 10Gi WaitForFirstConsumer
// PVCs each (default P = 1000, OPEN_LOCAL_BENCH_PODS), same scheduler, same
// run. Each phase creates all its pods at once and reports pods/s (first
// create to last placement), p50/p99 latency from a pod's create call to
// the watch seeing its node (for storage pods this includes the binding
// cycle: LocalVolumes, provisioning by the stand-in provisioner, PV
// binding by kube-controller-manager and VolumeBinding's 1 s poll), the
// mean scheduling-cycle time the scheduler itself measured, and the
// scheduler's peak RSS (VmHWM) after the phase. Run it once:
//
//	go test ./scheduler/e2e -run XXX -bench Scheduling1000Nodes -benchtime 1x -timeout 60m
func BenchmarkScheduling1000Nodes(b *testing.B) {
	nodes, pods := envInt("OPEN_LOCAL_BENCH_NODES", 1000), envInt("OPEN_LOCAL_BENCH_PODS", 1000)
	var specs []nodeSpec
	for i := range nodes {
		specs = append(specs, nodeSpec{name: fmt.Sprintf("n%04d", i), vgs: map[string]int64{"pool0": 1000, "pool1": 500}})
	}
	start := time.Now()
	e := newEnv(b, specs, nil)
	b.Logf("%d nodes with NodeLocalStorage, scheduler up: %s", nodes, time.Since(start).Round(time.Second))
	// The test's own client must not be what limits the burst.
	cfg := e.c.RESTConfig()
	cfg.QPS, cfg.Burst = 2000, 4000
	fast := kubernetes.NewForConfigOrDie(cfg)

	plain := e.phase(b, fast, "no-volumes", pods, 0, false)
	e.createClaims(b, fast, pods)
	storage := e.phase(b, fast, "two-pvcs", pods, 2, false)
	for _, r := range []phaseResult{plain, storage} {
		b.Logf("%-10s %5d pods placed: %7.1f pods/s, latency p50 %6.0f ms p99 %6.0f ms; scheduling algorithm mean %.2f ms; peak RSS %d MiB",
			r.name, pods, r.podsPerSec, ms(r.p50), ms(r.p99), r.cycleMean*1000, r.peakRSS>>20)
	}
	b.Logf("two-pvcs decided (LocalVolumes written): %7.1f pods/s, latency p50 %6.0f ms p99 %6.0f ms",
		storage.decisionsPerSec, ms(storage.decisionP50), ms(storage.decisionP99))
	b.Logf("plugin time per call (sampled): %s", storage.plugins)
	b.Logf("ratio two-pvcs/no-volumes: throughput %.2f, p50 latency %.1fx, p99 latency %.1fx, scheduling cycle %.2fx",
		storage.podsPerSec/plain.podsPerSec, ms(storage.p50)/ms(plain.p50), ms(storage.p99)/ms(plain.p99), storage.cycleMean/plain.cycleMean)
	b.ReportMetric(plain.podsPerSec, "plain-pods/s")
	b.ReportMetric(storage.podsPerSec, "storage-pods/s")
	b.ReportMetric(ms(plain.p50), "plain-p50-ms")
	b.ReportMetric(ms(plain.p99), "plain-p99-ms")
	b.ReportMetric(ms(storage.p50), "storage-p50-ms")
	b.ReportMetric(ms(storage.p99), "storage-p99-ms")
	b.ReportMetric(float64(storage.peakRSS>>20), "peak-RSS-MiB")
	b.ReportMetric(storage.decisionsPerSec, "decided-pods/s")
	b.ReportMetric(ms(storage.decisionP50), "decided-p50-ms")
	b.ReportMetric(ms(storage.decisionP99), "decided-p99-ms")
	e.assertNoOvercommit(allPools(nodes))
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func allPools(nodes int) map[string]int64 {
	m := map[string]int64{}
	for i := range nodes {
		m[fmt.Sprintf("n%04d/pool0", i)] = 1000
		m[fmt.Sprintf("n%04d/pool1", i)] = 500
	}
	return m
}

type phaseResult struct {
	name       string
	podsPerSec float64
	p50, p99   time.Duration
	// decisions: the pod's LocalVolumes written (storage pods only).
	decisionsPerSec          float64
	decisionP50, decisionP99 time.Duration
	cycleMean                float64 // seconds
	peakRSS                  int64   // bytes
	plugins                  string
	extensionPoints          string
	// createdIn is how long creating the pods took: pods/s cannot exceed
	// pods/createdIn, so when the two are close the client side bounds it.
	createdIn time.Duration
}

// createClaims makes two PVCs per storage pod ahead of the measured phase.
func (e *env) createClaims(b *testing.B, client kubernetes.Interface, pods int) {
	b.Helper()
	parallel(b, pods, func(i int) error {
		for _, s := range []string{"x", "y"} {
			if _, err := client.CoreV1().PersistentVolumeClaims(e.ns).Create(e.ctx,
				podClaim(e.ns, fmt.Sprintf("two-pvcs-%04d-%s", i, s), e.name("lvm"), 10), metav1.CreateOptions{}); err != nil {
				return err
			}
		}
		return nil
	})
}

// phase creates the pods all at once and waits until every one has a node;
// inline: each pod has one 1Gi CSI inline volume of ours instead of claims.
func (e *env) phase(b *testing.B, client kubernetes.Interface, name string, pods, claims int, inline bool) phaseResult {
	b.Helper()
	cycleCount0, cycleSum0 := e.cycleStats(b)
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	var mu sync.Mutex
	created, placed := map[string]time.Time{}, map[string]time.Time{}
	done := make(chan struct{})
	// An informer, not a bare watch: it survives the apiserver closing a watch.
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(e.ns))
	seen := func(obj any) {
		p, ok := obj.(*v1.Pod)
		if !ok || p.Spec.NodeName == "" || !strings.HasPrefix(p.Name, name+"-") {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if _, dup := placed[p.Name]; !dup {
			placed[p.Name] = time.Now()
			if len(placed) == pods {
				close(done)
			}
		}
	}
	if _, err := factory.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: seen, UpdateFunc: func(_, o any) { seen(o) },
	}); err != nil {
		b.Fatal(err)
	}
	// For storage pods, the scheduler's decision is persisted when the
	// pod's last LocalVolume appears (our PreBind, before VolumeBinding's
	// and provisioning): that is the scheduler's own latency.
	decided := map[string]time.Time{}
	lvCount := map[string]int{}
	olFactory := olinformers.NewSharedInformerFactory(e.ol, 0)
	if _, err := olFactory.Csi().V1alpha1().LocalVolumes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			lv, ok := obj.(*v1alpha1.LocalVolume)
			if !ok || lv.Spec.ClaimRef == nil || lv.Spec.ClaimRef.Namespace != e.ns || !strings.HasPrefix(lv.Spec.ClaimRef.Name, name+"-") {
				return
			}
			pod := lv.Spec.ClaimRef.Name[:strings.LastIndex(lv.Spec.ClaimRef.Name, "-")]
			mu.Lock()
			defer mu.Unlock()
			if lvCount[pod]++; lvCount[pod] == claims {
				decided[pod] = time.Now()
			}
		},
	}); err != nil {
		b.Fatal(err)
	}
	factory.Start(ctx.Done())
	olFactory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	olFactory.WaitForCacheSync(ctx.Done())
	begin := time.Now()
	parallel(b, pods, func(i int) error {
		podName := fmt.Sprintf("%s-%04d", name, i)
		var cs []string
		for j := range claims {
			cs = append(cs, fmt.Sprintf("%s-%s", podName, []string{"x", "y"}[j]))
		}
		t := time.Now()
		mu.Lock()
		created[podName] = t
		mu.Unlock()
		p := podSpec(e.ns, podName, e.id, cs...)
		if inline {
			p = e.inlinePodSpec(podName, 1)
		}
		p.Spec.SchedulerName = e.schedulerName
		_, err := client.CoreV1().Pods(e.ns).Create(e.ctx, p, metav1.CreateOptions{})
		return err
	})
	createdIn := time.Since(begin)
	b.Logf("%s: %d pods created in %s", name, pods, createdIn.Round(time.Millisecond))
	select {
	case <-done:
	case <-time.After(20 * time.Minute):
		mu.Lock()
		b.Fatalf("%s: only %d of %d pods placed after 20 minutes", name, len(placed), pods)
	}
	mu.Lock()
	defer mu.Unlock()
	r := phaseResult{name: name, peakRSS: peakRSS(b, e.sched.Pid()), createdIn: createdIn}
	r.podsPerSec, r.p50, r.p99 = rate(begin, created, placed, pods)
	if claims > 0 {
		r.decisionsPerSec, r.decisionP50, r.decisionP99 = rate(begin, created, decided, pods)
	}
	cycleCount1, cycleSum1 := e.cycleStats(b)
	r.cycleMean = (cycleSum1 - cycleSum0) / max(cycleCount1-cycleCount0, 1)
	r.plugins = e.pluginStats(b)
	r.extensionPoints = e.extensionPointStats(b)
	return r
}

var extensionPointRE = regexp.MustCompile(`(?m)^scheduler_framework_extension_point_duration_seconds_(sum|count)\{extension_point="(\w+)",profile="[^"]*",status="\w+"\} (\S+)$`)

// extensionPointStats is the mean time of the binding cycle's extension
// points (PreBind: all PreBind plugins of a pod; Bind: the binding call),
// cumulative since the scheduler started.
func (e *env) extensionPointStats(b *testing.B) string {
	b.Helper()
	sum, count := map[string]float64{}, map[string]float64{}
	for _, m := range extensionPointRE.FindAllStringSubmatch(e.metrics(), -1) {
		if m[2] != "PreBind" && m[2] != "Bind" && m[2] != "Reserve" {
			continue
		}
		v, _ := strconv.ParseFloat(m[3], 64)
		if m[1] == "sum" {
			sum[m[2]] += v
		} else {
			count[m[2]] += v
		}
	}
	var out []string
	for _, k := range []string{"Reserve", "PreBind", "Bind"} {
		if c := count[k]; c > 0 {
			out = append(out, fmt.Sprintf("%s %.2f ms (%.0f calls, %.1f s in all)", k, sum[k]/c*1e3, c, sum[k]))
		}
	}
	return strings.Join(out, ", ")
}

// BenchmarkSchedulingInline500Nodes measures the inline workload of issue
// 15: 500 simulated nodes (OPEN_LOCAL_BENCH_NODES), 2000 pods
// (OPEN_LOCAL_BENCH_PODS) each with one 1Gi CSI inline volume of ours,
// created at once. It prints pods/s and latency (create to the pod having
// a node), and the mean time of Reserve, PreBind and Bind as the scheduler
// measured them, then checks no node got more than it holds. Run it:
//
//	go test ./scheduler/e2e -run XXX -bench SchedulingInline500Nodes -benchtime 1x -timeout 30m
func BenchmarkSchedulingInline500Nodes(b *testing.B) {
	nodes, pods := envInt("OPEN_LOCAL_BENCH_NODES", 500), envInt("OPEN_LOCAL_BENCH_PODS", 2000)
	specs := make([]nodeSpec, nodes)
	for i := range specs {
		specs[i] = nodeSpec{name: fmt.Sprintf("n%04d", i), vgs: map[string]int64{"pool0": 100}}
	}
	start := time.Now()
	e := newEnv(b, specs, nil)
	b.Logf("%d nodes with NodeLocalStorage, scheduler up: %s", nodes, time.Since(start).Round(time.Second))
	cfg := e.c.RESTConfig()
	cfg.QPS, cfg.Burst = 2000, 4000
	fast := kubernetes.NewForConfigOrDie(cfg)
	r := e.phase(b, fast, "inline", pods, 0, true)
	b.Logf("inline %5d pods placed: %7.1f pods/s, latency p50 %6.0f ms p99 %6.0f ms; scheduling algorithm mean %.2f ms; peak RSS %d MiB",
		pods, r.podsPerSec, ms(r.p50), ms(r.p99), r.cycleMean*1000, r.peakRSS>>20)
	b.Logf("binding cycle: %s", r.extensionPoints)
	b.Logf("plugin time per call (sampled): %s", r.plugins)
	b.ReportMetric(r.podsPerSec, "inline-pods/s")
	b.ReportMetric(ms(r.p50), "inline-p50-ms")
	b.ReportMetric(ms(r.p99), "inline-p99-ms")
	b.ReportMetric(float64(r.peakRSS>>20), "peak-RSS-MiB")
}

// rate is pods/s from begin to the last event, and p50/p99 latency.
func rate(begin time.Time, created, events map[string]time.Time, pods int) (float64, time.Duration, time.Duration) {
	var lat []time.Duration
	last := begin
	for p, t := range events {
		lat = append(lat, t.Sub(created[p]))
		if t.After(last) {
			last = t
		}
	}
	if len(lat) == 0 {
		return 0, 0, 0
	}
	slices.Sort(lat)
	return float64(pods) / last.Sub(begin).Seconds(), lat[len(lat)/2], lat[(len(lat)*99)/100]
}

var pluginRE = regexp.MustCompile(`(?m)^scheduler_plugin_execution_duration_seconds_(sum|count)\{extension_point="(\w+)",plugin="(\w+)",status="\w+"\} (\S+)$`)

// pluginStats is the mean time per call of OpenLocal and VolumeBinding at
// each extension point, from the scheduler's (sampled) plugin histograms,
// cumulative since the scheduler started.
func (e *env) pluginStats(b *testing.B) string {
	b.Helper()
	sum, count := map[string]float64{}, map[string]float64{}
	for _, m := range pluginRE.FindAllStringSubmatch(e.metrics(), -1) {
		if m[3] != "OpenLocal" && m[3] != "VolumeBinding" {
			continue
		}
		v, _ := strconv.ParseFloat(m[4], 64)
		key := m[3] + "/" + m[2]
		if m[1] == "sum" {
			sum[key] += v
		} else {
			count[key] += v
		}
	}
	var out []string
	for k, c := range count {
		if c > 0 {
			out = append(out, fmt.Sprintf("%s %.1fµs", k, sum[k]/c*1e6))
		}
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// parallel runs fn(0..n-1) on 64 goroutines.
func parallel(b *testing.B, n int, fn func(int) error) {
	b.Helper()
	errs := make(chan error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

var cycleRE = regexp.MustCompile(`(?m)^scheduler_scheduling_algorithm_duration_seconds_(sum|count) (\S+)$`)

// cycleStats reads the scheduler's own scheduling-algorithm histogram
// (PreFilter to Score of one attempt, without the binding cycle).
func (e *env) cycleStats(b *testing.B) (count, sum float64) {
	b.Helper()
	for _, m := range cycleRE.FindAllStringSubmatch(e.metrics(), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		if m[1] == "sum" {
			sum = v
		} else {
			count = v
		}
	}
	return count, sum
}

// peakRSS is the process's high-water resident set (VmHWM).
func peakRSS(b *testing.B, pid int) int64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmHWM in /proc status")
	return 0
}

// stockSchedulerName is the profile of the stock kube-scheduler in the
// comparison: its default plugins, no storage plugin of ours.
const stockSchedulerName = "stock-scheduler"

// stockConfig is the stock kube-scheduler's configuration: one profile with
// the default plugins, and the client limits and leader election ours gets
// from profile.Render, so the two differ only in the OpenLocal plugin.
func (e *env) stockConfig() []byte {
	return fmt.Appendf(nil, `apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: %q
  qps: 1000
  burst: 2000
leaderElection:
  leaderElect: false
profiles:
- schedulerName: %s
`, e.c.Kubeconfig, stockSchedulerName)
}

// BenchmarkStockVsOurs runs the stock kube-scheduler (OPEN_LOCAL_STOCK_SCHEDULER,
// built by hack/stock-scheduler.sh; `make bench` sets it) and ours
// interleaved, A B A B (OPEN_LOCAL_BENCH_RUNS pairs, default 2), on one set
// of nodes: the inline workload of issue 15 (500 nodes, 2000 pods with one
// 1Gi CSI inline volume each; OPEN_LOCAL_BENCH_NODES, OPEN_LOCAL_BENCH_PODS).
// The stock scheduler schedules the same pods under its own profile and
// counts no VG space: that is the point of the comparison. Each run starts
// a fresh scheduler (so its VmHWM is the run's own), creates all pods at
// once, waits until each has a node, then deletes them; an unrecorded
// warm-up burst comes first. It prints one table (pods/s, p50/p99
// create->scheduled, scheduling algorithm mean, peak RSS, pod-creation time)
// and the ratio ours/stock of the means. Numbers only: nothing is asserted
// on time.
//
//	make bench
func BenchmarkStockVsOurs(b *testing.B) {
	stock := os.Getenv("OPEN_LOCAL_STOCK_SCHEDULER")
	if stock == "" {
		b.Skip("OPEN_LOCAL_STOCK_SCHEDULER is not set (the stock kube-scheduler binary; `make bench` builds it with hack/stock-scheduler.sh)")
	}
	nodes, pods, runs := envInt("OPEN_LOCAL_BENCH_NODES", 500), envInt("OPEN_LOCAL_BENCH_PODS", 2000), envInt("OPEN_LOCAL_BENCH_RUNS", 2)
	specs := make([]nodeSpec, nodes)
	for i := range specs {
		specs[i] = nodeSpec{name: fmt.Sprintf("n%04d", i), vgs: map[string]int64{"pool0": 100}}
	}
	start := time.Now()
	e := newEnv(b, specs, nil)
	b.Logf("%d nodes with NodeLocalStorage, up in %s", nodes, time.Since(start).Round(time.Second))
	ours, oursCfg := e.bin, mustRead(b, e.cfg)
	cfg := e.c.RESTConfig()
	cfg.QPS, cfg.Burst = 2000, 4000
	fast := kubernetes.NewForConfigOrDie(cfg)

	type row struct {
		scheduler string
		run       int
		r         phaseResult
	}
	// The first burst on a fresh cluster is slower whoever schedules it
	// (p50 ~3x the later runs, measured): one unrecorded burst first, so
	// run 1 of the stock scheduler does not pay for it.
	e.useScheduler(stock, e.stockConfig(), stockSchedulerName)
	w := e.phase(b, fast, "inline-warmup", pods, 0, true)
	b.Logf("warm-up (stock, not in the table): %.1f pods/s, p50 %.0f ms, p99 %.0f ms", w.podsPerSec, ms(w.p50), ms(w.p99))
	e.deletePods(b, fast)
	var rows []row
	for run := 1; run <= runs; run++ {
		for _, s := range []struct {
			name, bin, profile string
			cfg                []byte
		}{
			{"stock", stock, stockSchedulerName, e.stockConfig()},
			{"ours", ours, profile.SchedulerName, oursCfg},
		} {
			e.useScheduler(s.bin, s.cfg, s.profile)
			e.heartbeat(b, specs)
			r := e.phase(b, fast, fmt.Sprintf("inline-%s-%d", s.name, run), pods, 0, true)
			b.Logf("%s run %d: %.1f pods/s, p50 %.0f ms, p99 %.0f ms, scheduling algorithm mean %.2f ms, peak RSS %d MiB; binding cycle: %s",
				s.name, run, r.podsPerSec, ms(r.p50), ms(r.p99), r.cycleMean*1000, r.peakRSS>>20, r.extensionPoints)
			rows = append(rows, row{s.name, run, r})
			if run < runs || s.name != "ours" {
				e.deletePods(b, fast)
			}
		}
	}
	pools := map[string]int64{}
	for _, n := range specs {
		pools[n.name+"/pool0"] = 100
	}
	e.assertNoOvercommit(pools)

	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%-8s %-9s %3s %8s %9s %9s %9s %8s %9s\n", "workload", "scheduler", "run", "pods/s", "p50 ms", "p99 ms", "algo ms", "RSS MiB", "create s")
	mean := map[string]*[4]float64{"stock": {}, "ours": {}}
	for _, x := range rows {
		fmt.Fprintf(&sb, "%-8s %-9s %3d %8.1f %9.0f %9.0f %9.2f %8d %9.1f\n", "inline", x.scheduler, x.run,
			x.r.podsPerSec, ms(x.r.p50), ms(x.r.p99), x.r.cycleMean*1000, x.r.peakRSS>>20, x.r.createdIn.Seconds())
		m := mean[x.scheduler]
		m[0] += x.r.podsPerSec / float64(runs)
		m[1] += ms(x.r.p50) / float64(runs)
		m[2] += ms(x.r.p99) / float64(runs)
		m[3] += float64(x.r.peakRSS>>20) / float64(runs)
	}
	s, o := mean["stock"], mean["ours"]
	fmt.Fprintf(&sb, "%-8s %-9s %3s %8.2f %9.2f %9.2f %9s %8.2f\n", "inline", "ours/stock", "", o[0]/s[0], o[1]/s[1], o[2]/s[2], "", o[3]/s[3])
	b.Log(sb.String())
	b.ReportMetric(o[0]/s[0], "ratio-pods/s")
	b.ReportMetric(s[0], "stock-pods/s")
	b.ReportMetric(o[0], "ours-pods/s")
}

// heartbeat rewrites the nodes' NodeLocalStorage status, as their agents
// would every 2 minutes: the whole comparison outlasts the ledger's 6-minute
// staleness limit, after which ours (rightly) places nothing.
func (e *env) heartbeat(b *testing.B, specs []nodeSpec) {
	b.Helper()
	parallel(b, len(specs), func(i int) error { return e.setStorage(e.nodes[i], specs[i].vgs, specs[i].devices) })
}

func mustRead(b *testing.B, path string) []byte {
	b.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// deletePods removes the namespace's pods (grace 0: kwok nodes run no
// containers) and waits until they are gone, so every run starts from the
// same objects. DeleteCollection of thousands of pods can outlast the
// apiserver's request timeout on a loaded machine: it is simply repeated
// until none is left.
func (e *env) deletePods(b *testing.B, client kubernetes.Interface) {
	b.Helper()
	e.waitFor("the run's pods deleted", 5*time.Minute, func() (bool, error) {
		list, err := client.CoreV1().Pods(e.ns).List(e.ctx, metav1.ListOptions{})
		if err != nil || len(list.Items) > 0 {
			_ = client.CoreV1().Pods(e.ns).DeleteCollection(e.ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}, metav1.ListOptions{})
			return false, nil //nolint:nilerr // keep polling
		}
		return true, nil
	})
}
