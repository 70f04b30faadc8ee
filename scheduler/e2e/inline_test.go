package e2e

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// inlinePodSpec is a pod of the open-local scheduler with one CSI inline
// volume of our driver of gib GiB (no vgName: the scheduler and the node
// choose the VG).
func (e *env) inlinePodSpec(name string, gib int64) *v1.Pod {
	p := podSpec(e.ns, name, e.id)
	p.Spec.Volumes = append(p.Spec.Volumes, v1.Volume{Name: "scratch", VolumeSource: v1.VolumeSource{CSI: &v1.CSIVolumeSource{
		Driver: "local.csi.aliyun.com", VolumeAttributes: map[string]string{"size": strconv.FormatInt(gib, 10) + "Gi"}}}})
	return p
}

// inlineBurst creates n inline pods of gib GiB at once (32 in flight).
func (e *env) inlineBurst(n int, gib int64) {
	e.t.Helper()
	errs := make(chan error, n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := e.kube.CoreV1().Pods(e.ns).Create(e.ctx, e.inlinePodSpec(fmt.Sprintf("i%03d", i), gib), metav1.CreateOptions{}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Fatal(err)
	}
}

// metricValue reads one sample of the scheduler's /metrics (0 if absent).
func (e *env) metricValue(series string) float64 {
	e.t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(e.metrics())
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// waitInlineSettled waits until exactly bound inline pods have a node and
// their LocalVolume (written by the node side), and pending have none;
// on every poll no node holds more than perNode such pods.
func (e *env) waitInlineSettled(bound, pending, perNode int, timeout time.Duration) {
	e.t.Helper()
	var counts map[string]int
	e.waitFor(fmt.Sprintf("%d inline pods placed with their LocalVolumes, %d pending", bound, pending), timeout, func() (bool, error) {
		b, p := e.placed()
		counts = map[string]int{}
		for _, pod := range b {
			counts[pod.Spec.NodeName]++
			if counts[pod.Spec.NodeName] > perNode {
				e.t.Fatalf("over-commit: node %s got %d inline pods, room for %d", pod.Spec.NodeName, counts[pod.Spec.NodeName], perNode)
			}
		}
		if len(b) != bound || len(p) != pending {
			return false, nil
		}
		lvs, err := e.ol.CsiV1alpha1().LocalVolumes().List(e.ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil //nolint:nilerr // keep polling
		}
		have := map[string]bool{}
		for _, lv := range lvs.Items {
			have[lv.Name] = true
		}
		for _, pod := range b {
			if !have[v1alpha1.InlineVolumeName(pod.UID, "scratch")] {
				return false, nil
			}
		}
		return true, nil
	})
	over := 0
	for _, c := range counts {
		if c > perNode {
			over++
		}
	}
	e.t.Logf("settled: %d inline pods placed on %d nodes (%d above %d), %d pending", bound, len(counts), over, perNode, pending)
}

// The binding cycle writes nothing for inline-only pods: no LocalVolume is
// created by the scheduler (its created counter and PreBind histogram stay
// put, and every LocalVolume's creator is the node side), yet the node side
// still creates each LocalVolume and the ledger counts the pods: 2 nodes of
// 3Gi take exactly 6 pods of 1Gi.
func TestInlineWithoutPreBindWrite(t *testing.T) {
	e := newEnv(t, []nodeSpec{
		{name: "a", vgs: map[string]int64{"pool0": 3}},
		{name: "b", vgs: map[string]int64{"pool0": 3}},
	}, nil)
	created := `open_local_scheduler_local_volumes_total{result="created"}`
	preBinds := `open_local_scheduler_prebind_duration_seconds_count`
	createdBefore, preBindBefore := e.metricValue(created), e.metricValue(preBinds)
	e.inlineBurst(8, 1)
	e.waitInlineSettled(6, 2, 3, 2*time.Minute)
	if got := e.metricValue(created); got != createdBefore {
		t.Errorf("the scheduler created %v LocalVolumes for inline-only pods", got-createdBefore)
	}
	if got := e.metricValue(preBinds); got != preBindBefore {
		t.Errorf("PreBind ran %v times for inline-only pods", got-preBindBefore)
	}
	if got := e.metricValue(`open_local_scheduler_cache_size{kind="inline_volumes"}`); got != 6 {
		t.Errorf("the ledger counts %v inline volumes of bound pods, want 6", got)
	}
	lvs, err := e.ol.CsiV1alpha1().LocalVolumes().List(e.ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, lv := range lvs.Items {
		if !strings.HasPrefix(lv.Spec.NodeName, e.id+"-") {
			continue
		}
		for _, f := range lv.ManagedFields {
			// A field manager is its client's user agent up to '/': the binary's name.
			if f.Manager == filepath.Base(e.bin) {
				t.Errorf("LocalVolume %s was written by %s", lv.Name, f.Manager)
			}
		}
		if lv.Spec.PodRef == nil || lv.Spec.VGName != "pool0" {
			t.Errorf("LocalVolume %s: %+v", lv.Name, lv.Spec)
		}
	}
	// A pod gone frees its space for a waiting one (its LocalVolume goes too).
	bound, pending := e.placed()
	if err := e.kube.CoreV1().Pods(e.ns).Delete(e.ctx, bound[0].Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	e.waitInlineSettled(6, 1, 3, 2*time.Minute)
	t.Logf("%d pending before, 1 after a pod went", len(pending))
}

// The over-commit guarantee without the PreBind write: 100 nodes of 3Gi,
// 500 pods of 1Gi inline at once: exactly 300 placed, none above 3 a node.
func TestInlineBurstNeverOvercommits(t *testing.T) {
	const nodes, pods = 100, 500
	e := newEnv(t, inlineNodes(nodes, 3), nil)
	e.inlineBurst(pods, 1)
	e.waitInlineSettled(3*nodes, pods-3*nodes, 3, 5*time.Minute)
}

// Killing the scheduler mid-burst: the restarted one rebuilds the ledger
// from the bound pods (inline volumes whose LocalVolume the node has not
// written yet) and the LocalVolumes, each counted once, and places exactly
// what fits.
func TestInlineRestartMidBurst(t *testing.T) {
	const nodes, pods = 20, 100
	e := newEnv(t, inlineNodes(nodes, 3), nil)
	e.inlineBurst(pods, 1)
	e.waitFor("a few inline pods placed", time.Minute, func() (bool, error) {
		b, _ := e.placed()
		return len(b) >= 10, nil
	})
	e.sched.Kill()
	b, p := e.placed()
	t.Logf("killed the scheduler with %d pods placed, %d not", len(b), len(p))
	e.startScheduler()
	e.waitInlineSettled(3*nodes, pods-3*nodes, 3, 3*time.Minute)
}

func inlineNodes(n int, gib int64) []nodeSpec {
	specs := make([]nodeSpec, n)
	for i := range specs {
		specs[i] = nodeSpec{name: fmt.Sprintf("n%03d", i), vgs: map[string]int64{"pool0": gib}}
	}
	return specs
}
