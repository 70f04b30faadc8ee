package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
	configv1 "github.com/open-local/open-local/config/v1"
)

// Placement, VG choice, vgName pinning, device exclusivity, specific
// failure reasons, real PVC binding, PreBind order and metrics, with the
// real scheduler binary on the local cluster.
func TestSchedulerPlacesAndBinds(t *testing.T) {
	e := newEnv(t, []nodeSpec{
		{name: "a", vgs: map[string]int64{"pool0": 100, "pool1": 50}, devices: map[string]int64{"/dev/sdb": 100, "/dev/sdc": 200}},
		{name: "b", vgs: map[string]int64{"pool0": 100}},
		{name: "c"}, // no NodeLocalStorage
	}, nil)

	t.Run("binpack picks the fullest VG that fits, and the LocalVolume precedes selected-node", func(t *testing.T) {
		order := e.watchOrder()
		e.claim("one", "lvm", 10)
		e.pod("p1", "one")
		p := e.waitBound("p1", time.Minute)
		lv := e.localVolumeOf("one")
		if p.Spec.NodeName != e.name("a") || lv.Spec.VGName != "pool1" || lv.Spec.NodeName != p.Spec.NodeName {
			t.Errorf("placed on %s, VG %s (LocalVolume on %s); want node a, VG pool1 (binpack: 10/50 beats 10/100)",
				p.Spec.NodeName, lv.Spec.VGName, lv.Spec.NodeName)
		}
		if lv.Spec.ClaimRef == nil || lv.Spec.ClaimRef.Name != "one" || lv.Status.Phase != v1alpha1.PhaseReady ||
			len(lv.Finalizers) != 1 || lv.Finalizers[0] != v1alpha1.LocalVolumeFinalizer {
			t.Errorf("LocalVolume %s: claimRef %+v, phase %s, finalizers %v", lv.Name, lv.Spec.ClaimRef, lv.Status.Phase, lv.Finalizers)
		}
		lvRV, pvcRV := order(lv.Name, "one")
		t.Logf("LocalVolume %s created at resourceVersion %d, PVC got selected-node at %d", lv.Name, lvRV, pvcRV)
		if lvRV == 0 || pvcRV == 0 || lvRV >= pvcRV {
			t.Errorf("PreBind order: LocalVolume created at RV %d, selected-node set at RV %d; want the LocalVolume first", lvRV, pvcRV)
		}
	})

	t.Run("vgName pins the VG", func(t *testing.T) {
		e.claim("pinned", "lvm-pool0", 20)
		e.pod("p2", "pinned")
		e.waitBound("p2", time.Minute)
		if lv := e.localVolumeOf("pinned"); lv.Spec.VGName != "pool0" {
			t.Errorf("vgName pool0 ignored: LocalVolume in %s on %s", lv.Spec.VGName, lv.Spec.NodeName)
		}
	})

	t.Run("three volumes of one pod, with the smallest device that fits", func(t *testing.T) {
		e.claim("dev", "ssd", 150)
		e.claim("data", "lvm", 30)
		e.claim("log", "lvm", 5)
		e.pod("p3", "dev", "data", "log")
		p := e.waitBound("p3", time.Minute)
		dev := e.localVolumeOf("dev")
		if p.Spec.NodeName != e.name("a") || dev.Spec.VolumeType != v1alpha1.VolumeTypeDevice || dev.Spec.Device != "/dev/sdc" {
			t.Errorf("placed on %s with device %q; want node a, /dev/sdc (the only ssd of at least 150Gi)", p.Spec.NodeName, dev.Spec.Device)
		}
	})

	t.Run("devices are exclusive, and the refusal says why", func(t *testing.T) {
		e.claim("dev2", "ssd", 150)
		e.pod("p4", "dev2")
		msg := e.schedulingFailure("p4",
			"node(s) had no free ssd device of at least 150Gi for pvc "+e.ns+"/dev2",
			"node(s) had no NodeLocalStorage",
			"OpenLocal: closest fit: ssd devices on "+e.name("a")+": need 150Gi, largest free 100Gi")
		t.Logf("event: %s", msg)
	})

	t.Run("volumes of a pod must fit together (alibaba/open-local#158)", func(t *testing.T) {
		e.claim("big1", "lvm-pool0", 60)
		e.claim("big2", "lvm-pool0", 60)
		e.pod("p5", "big1", "big2")
		// The near miss is the node with the most free in pool0 (ties: the
		// first by name). Where p2 and p3 went is the scheduler's choice
		// among equal scores, so compute it from the LocalVolumes.
		lvs, err := e.ol.CsiV1alpha1().LocalVolumes().List(e.ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		free := map[string]int64{e.name("a"): 100 << 30, e.name("b"): 100 << 30}
		for _, lv := range lvs.Items {
			if _, ok := free[lv.Spec.NodeName]; ok && lv.Spec.VGName == "pool0" {
				free[lv.Spec.NodeName] -= lv.Spec.Size.Value()
			}
		}
		closest := e.name("a")
		if free[e.name("b")] > free[closest] {
			closest = e.name("b")
		}
		msg := e.schedulingFailure("p5", "node(s) had less than 120Gi free in VG pool0",
			fmt.Sprintf("closest fit: VG pool0 on %s: need 120Gi, free %dGi", closest, free[closest]>>30))
		t.Logf("event: %s", msg)
	})

	t.Run("a missing StorageClass fails only its pod (alibaba/open-local#211)", func(t *testing.T) {
		if _, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Create(e.ctx, podClaim(e.ns, "orphan", "no-such-class", 1), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.pod("p6", "orphan")
		// VolumeBinding's PreFilter, which runs before ours, refuses it first
		// (our own reason for it is covered by the plugin's unit tests).
		e.schedulingFailure("p6", "pod has unbound immediate PersistentVolumeClaims")
		e.claim("fine", "lvm", 1)
		e.pod("p7", "fine")
		e.waitBound("p7", time.Minute)
	})

	t.Run("CSI inline volume: allocated with the pod, gone with it", func(t *testing.T) {
		p := podSpec(e.ns, "inline", e.id)
		p.Spec.Volumes = append(p.Spec.Volumes, v1.Volume{Name: "scratch", VolumeSource: v1.VolumeSource{CSI: &v1.CSIVolumeSource{
			Driver: "local.csi.aliyun.com", VolumeAttributes: map[string]string{"vgName": "pool0", "size": "3Gi"}}}})
		created, err := e.kube.CoreV1().Pods(e.ns).Create(e.ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		placed := e.waitBound("inline", time.Minute)
		name := v1alpha1.InlineVolumeName(created.UID, "scratch")
		// The node side writes it (the scheduler counts the pod meanwhile).
		var lv *v1alpha1.LocalVolume
		e.waitFor("inline LocalVolume "+name, time.Minute, func() (bool, error) {
			lv, err = e.ol.CsiV1alpha1().LocalVolumes().Get(e.ctx, name, metav1.GetOptions{})
			return err == nil, nil
		})
		if lv.Spec.NodeName != placed.Spec.NodeName || lv.Spec.VGName != "pool0" || lv.Spec.Size.Value() != 3*gi ||
			lv.Spec.PodRef == nil || lv.Spec.PodRef.UID != created.UID {
			t.Errorf("inline LocalVolume %+v, pod on %s", lv.Spec, placed.Spec.NodeName)
		}
		e.deletePodAndClaims(placed)
		e.waitFor("inline LocalVolume gone with its pod", time.Minute, func() (bool, error) {
			_, err := e.ol.CsiV1alpha1().LocalVolumes().Get(e.ctx, name, metav1.GetOptions{})
			return err != nil, nil
		})
	})

	t.Run("metrics", func(t *testing.T) {
		m := e.metrics()
		for _, re := range []string{
			`open_local_scheduler_filter_decisions_total\{result="fit"\} [1-9]`,
			`open_local_scheduler_filter_decisions_total\{result="no_device"\} [1-9]`,
			`open_local_scheduler_reservations_total\{result="reserved"\} [1-9]`,
			`open_local_scheduler_local_volumes_total\{result="created"\} [1-9]`,
			`open_local_scheduler_cache_size\{kind="local_volumes"\} [1-9]`,
			`open_local_scheduler_vg_capacity_bytes\{node="` + e.name("a") + `",vg="pool1"\} 5.36870912e\+10`,
			`open_local_scheduler_vg_allocated_bytes\{node="` + e.name("a") + `",state="volumes",vg="pool1"\} [1-9]`,
			`open_local_scheduler_prebind_duration_seconds_count [1-9]`,
		} {
			if !regexp.MustCompile(re).MatchString(m) {
				t.Errorf("/metrics lacks %s", re)
			}
		}
	})

	t.Run("deleting pod and PVC frees the space, and a waiting pod gets it", func(t *testing.T) {
		// p4 waits for a 150Gi ssd; p3 holds /dev/sdc.
		p3, err := e.kube.CoreV1().Pods(e.ns).Get(e.ctx, "p3", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		devLV := e.localVolumeOf("dev").Name
		e.deletePodAndClaims(p3)
		e.waitFor("LocalVolume "+devLV+" gone", time.Minute, func() (bool, error) {
			_, err := e.ol.CsiV1alpha1().LocalVolumes().Get(e.ctx, devLV, metav1.GetOptions{})
			return err != nil, nil
		})
		p := e.waitBound("p4", time.Minute)
		if got := e.localVolumeOf("dev2"); got.Spec.Device != "/dev/sdc" || p.Spec.NodeName != e.name("a") {
			t.Errorf("p4 got %s on %s", got.Spec.Device, p.Spec.NodeName)
		}
	})
	e.assertNoOvercommit(map[string]int64{"a/pool0": 100, "a/pool1": 50, "b/pool0": 100})
}

// watchOrder starts watching LocalVolumes and PVCs from the current
// resourceVersion; the returned function reports the resourceVersion at
// which a LocalVolume was created and at which a PVC first carried
// volume.kubernetes.io/selected-node. Both come from the one etcd, whose
// revisions order all writes: a smaller one happened first.
func (e *env) watchOrder() func(lv, pvc string) (int64, int64) {
	e.t.Helper()
	list, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).List(e.ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	rv := list.ResourceVersion
	ctx, cancel := context.WithCancel(e.ctx)
	e.t.Cleanup(cancel)
	lvW, err := e.ol.CsiV1alpha1().LocalVolumes().Watch(ctx, metav1.ListOptions{ResourceVersion: rv})
	if err != nil {
		e.t.Fatal(err)
	}
	pvcW, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Watch(ctx, metav1.ListOptions{ResourceVersion: rv})
	if err != nil {
		e.t.Fatal(err)
	}
	var mu sync.Mutex
	lvCreated, pvcSelected := map[string]int64{}, map[string]int64{}
	parse := func(s string) int64 { n, _ := strconv.ParseInt(s, 10, 64); return n }
	go func() {
		for ev := range lvW.ResultChan() {
			if lv, ok := ev.Object.(*v1alpha1.LocalVolume); ok && ev.Type == watch.Added {
				mu.Lock()
				lvCreated[lv.Name] = parse(lv.ResourceVersion)
				mu.Unlock()
			}
		}
	}()
	go func() {
		for ev := range pvcW.ResultChan() {
			if pvc, ok := ev.Object.(*v1.PersistentVolumeClaim); ok && pvc.Annotations["volume.kubernetes.io/selected-node"] != "" {
				mu.Lock()
				if _, seen := pvcSelected[pvc.Name]; !seen {
					pvcSelected[pvc.Name] = parse(pvc.ResourceVersion)
				}
				mu.Unlock()
			}
		}
	}()
	return func(lv, pvc string) (int64, int64) {
		var a, b int64
		e.waitFor("watch events of "+lv+" and "+pvc, 10*time.Second, func() (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			a, b = lvCreated[lv], pvcSelected[pvc]
			return a != 0 && b != 0, nil
		})
		return a, b
	}
}

// Spread puts each volume on the emptiest VG and each pod on the emptiest node.
func TestSchedulerSpreads(t *testing.T) {
	e := newEnv(t, []nodeSpec{
		{name: "a", vgs: map[string]int64{"pool0": 100, "pool1": 50}},
		{name: "b", vgs: map[string]int64{"pool0": 100}},
	}, &configv1.OpenLocalArgs{Strategy: ptr.To("spread")})
	perNode := map[string]int{}
	for i := range 4 {
		name := fmt.Sprintf("s%d", i)
		e.claim(name, "lvm", 10)
		e.pod(name, name)
		p := e.waitBound(name, time.Minute)
		perNode[strings.TrimPrefix(p.Spec.NodeName, e.id+"-")]++
		if lv := e.localVolumeOf(name); lv.Spec.VGName != "pool0" {
			t.Errorf("%s in VG %s; spread wants the emptiest, pool0", name, lv.Spec.VGName)
		}
	}
	if perNode["a"] != 2 || perNode["b"] != 2 {
		t.Errorf("pods per node = %v, want 2 and 2", perNode)
	}
}

// burst creates n pods of two 10Gi PVCs each, all at once.
func (e *env) burst(n int) {
	e.t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("b%02d", i)
			for _, c := range []string{name + "-x", name + "-y"} {
				pvc := podClaim(e.ns, c, e.name("lvm"), 10)
				if _, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Create(e.ctx, pvc, metav1.CreateOptions{}); err != nil {
					errs <- err
					return
				}
			}
			if _, err := e.kube.CoreV1().Pods(e.ns).Create(e.ctx, podSpec(e.ns, name, e.id, name+"-x", name+"-y"), metav1.CreateOptions{}); err != nil {
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

// placed lists the test's pods with a node, and those without.
func (e *env) placed() (bound, pending []v1.Pod) {
	e.t.Helper()
	pods, err := e.kube.CoreV1().Pods(e.ns).List(e.ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		if p.Spec.NodeName != "" {
			bound = append(bound, p)
		} else {
			pending = append(pending, p)
		}
	}
	return bound, pending
}

// N pods arrive at once where only k fit: exactly k are placed, no VG is
// over-committed, the rest wait with a reason and are placed as soon as
// space is freed.
func TestBurstNeverOvercommits(t *testing.T) {
	const n, k = 24, 15 // 3 nodes x 100Gi, 20Gi a pod: 5 pods a node
	e := newEnv(t, []nodeSpec{
		{name: "a", vgs: map[string]int64{"pool0": 100}},
		{name: "b", vgs: map[string]int64{"pool0": 100}},
		{name: "c", vgs: map[string]int64{"pool0": 100}},
	}, nil)
	alloc := map[string]int64{"a/pool0": 100, "b/pool0": 100, "c/pool0": 100}
	e.burst(n)
	e.waitSettled(k, n-k, 2*time.Minute, alloc)
	_, pending := e.placed()
	for _, p := range pending {
		e.schedulingFailure(p.Name, "node(s) had no VG with 10Gi free for pvc "+e.ns+"/")
	}
	// Free room for exactly the waiting pods: delete as many placed pods.
	bound, _ := e.placed()
	for _, p := range bound[:n-k] {
		e.deletePodAndClaims(&p)
	}
	e.waitSettled(k, 0, 2*time.Minute, alloc)
	for _, p := range pending {
		e.waitBound(p.Name, time.Minute)
	}
}

// waitSettled waits until exactly `bound` pods are placed with all PVCs
// Bound and `pending` wait, checking for over-commit on every poll.
func (e *env) waitSettled(bound, pending int, timeout time.Duration, alloc map[string]int64) {
	e.t.Helper()
	var b, p []v1.Pod
	defer func() {
		if e.t.Failed() {
			e.dumpAllocations()
		}
	}()
	e.waitFor(fmt.Sprintf("%d pods placed and bound, %d pending", bound, pending), timeout, func() (bool, error) {
		e.assertNoOvercommit(alloc)
		if e.t.Failed() {
			return false, fmt.Errorf("over-committed")
		}
		b, p = e.placed()
		if len(b) != bound || len(p) != pending {
			return false, nil
		}
		for _, pod := range b {
			for _, v := range pod.Spec.Volumes {
				if v.PersistentVolumeClaim == nil {
					continue
				}
				pvc, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Get(e.ctx, v.PersistentVolumeClaim.ClaimName, metav1.GetOptions{})
				if err != nil || pvc.Status.Phase != v1.ClaimBound {
					return false, nil //nolint:nilerr // keep polling
				}
			}
		}
		return true, nil
	})
	used := e.assertNoOvercommit(alloc)
	e.t.Logf("settled: %d placed, %d pending; allocated %v", len(b), len(p), used)
}

// Killing the scheduler (SIGKILL) mid-burst loses its in-memory
// reservations, never an allocation: the restarted one rebuilds the ledger
// from the LocalVolumes, over-commits nothing and places every pod that fits.
func TestRestartMidBurst(t *testing.T) {
	const n, k = 24, 15
	e := newEnv(t, []nodeSpec{
		{name: "a", vgs: map[string]int64{"pool0": 100}},
		{name: "b", vgs: map[string]int64{"pool0": 100}},
		{name: "c", vgs: map[string]int64{"pool0": 100}},
	}, nil)
	alloc := map[string]int64{"a/pool0": 100, "b/pool0": 100, "c/pool0": 100}
	e.burst(n)
	e.waitFor("a few LocalVolumes written", time.Minute, func() (bool, error) {
		lvs, err := e.ol.CsiV1alpha1().LocalVolumes().List(e.ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil //nolint:nilerr // keep polling
		}
		count := 0
		for _, lv := range lvs.Items {
			if strings.HasPrefix(lv.Spec.NodeName, e.id+"-") {
				count++
			}
		}
		return count >= 6, nil
	})
	e.sched.Kill()
	b, p := e.placed()
	t.Logf("killed the scheduler with %d pods placed, %d not", len(b), len(p))
	e.assertNoOvercommit(alloc)
	e.startScheduler()
	e.waitSettled(k, n-k, 2*time.Minute, alloc)
}

func podClaim(ns, name, class string, gib int64) *v1.PersistentVolumeClaim {
	return &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			StorageClassName: ptr.To(class),
			Resources: v1.VolumeResourceRequirements{Requests: v1.ResourceList{
				v1.ResourceStorage: *resourceGi(gib)}},
		},
	}
}

// dumpAllocations logs every LocalVolume of this test with its claim's
// phase and the node of the claim's pod, to explain a failed settlement.
func (e *env) dumpAllocations() {
	lvs, err := e.ol.CsiV1alpha1().LocalVolumes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		e.t.Logf("list LocalVolumes: %v", err)
		return
	}
	pods, _ := e.kube.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{})
	nodeOf := map[string]string{}
	for _, p := range pods.Items {
		for _, v := range p.Spec.Volumes {
			if v.PersistentVolumeClaim != nil {
				nodeOf[v.PersistentVolumeClaim.ClaimName] = p.Name + "@" + p.Spec.NodeName
			}
		}
	}
	for _, lv := range lvs.Items {
		if !strings.HasPrefix(lv.Spec.NodeName, e.id+"-") || lv.Spec.ClaimRef == nil {
			continue
		}
		phase := "?"
		if pvc, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Get(context.Background(), lv.Spec.ClaimRef.Name, metav1.GetOptions{}); err == nil {
			phase = string(pvc.Status.Phase) + " selected-node=" + pvc.Annotations["volume.kubernetes.io/selected-node"]
		}
		e.t.Logf("LocalVolume %s on %s %s: claim %s (%s), pod %s, phase %s", lv.Name, lv.Spec.NodeName, lv.Spec.Size.String(),
			lv.Spec.ClaimRef.Name, phase, nodeOf[lv.Spec.ClaimRef.Name], lv.Status.Phase)
	}
}
