// Package e2e runs the real scheduler binary against the local real
// cluster (etcd, kube-apiserver, kube-controller-manager, kwok): simulated
// nodes with NodeLocalStorage, PVCs that really bind through the PV
// controller, the simulated node agent and the stand-in provisioner
// (test/simagent).
package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	olclient "github.com/open-local/open-local/apis/client/clientset/versioned"
	"github.com/open-local/open-local/apis/storage/ledger"
	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/config"
	"github.com/open-local/open-local/config/profile"
	configv1 "github.com/open-local/open-local/config/v1"
	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/launcher"
	"github.com/open-local/open-local/test/simagent"
)

func TestMain(m *testing.M) { cluster.Main(m) }

const gi = int64(1) << 30

// nodeSpec is a simulated node and the storage its NLS status reports
// (nil vgs and devices: no NodeLocalStorage at all).
type nodeSpec struct {
	name    string
	vgs     map[string]int64 // VG -> allocatable GiB
	devices map[string]int64 // ssd device -> GiB
}

// env is one test's world: its nodes (labelled with the test's id, which
// its pods select), StorageClasses, the simulated agent and provisioner,
// and the scheduler binary.
type env struct {
	t      testing.TB
	ctx    context.Context
	c      *cluster.Cluster
	kube   kubernetes.Interface
	ol     olclient.Interface
	id     string // unique per test: prefixes every object name
	ns     string
	nodes  []string
	sched  *cluster.Process
	cfg    string // scheduler config file
	port   int
	bin    string
	schedN int
	// schedulerName goes into the pods phase creates: the profile of the
	// scheduler under test (ours unless useScheduler chose another).
	schedulerName string
}

func newEnv(t testing.TB, nodes []nodeSpec, args *configv1.OpenLocalArgs) *env {
	t.Helper()
	c := cluster.ForTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, c: c, kube: c.Client(), ol: c.OpenLocalClient(), id: uniqueID(t), schedulerName: profile.SchedulerName}
	e.ns = e.id
	if _, err := e.kube.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.cleanup() })
	e.addNodes(nodes)
	for _, sc := range []*storagev1.StorageClass{
		e.class("lvm", map[string]string{"volumeType": "LVM"}),
		e.class("lvm-pool0", map[string]string{"volumeType": "LVM", "vgName": "pool0"}),
		e.class("ssd", map[string]string{"volumeType": "Device", "mediaType": "ssd"}),
	} {
		if _, err := e.kube.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The simulated node creates inline volumes by the scheduler's rules,
	// as the chart passes them to the CSI node plugin.
	simNodes := simagent.Nodes{Names: e.nodes}
	if args != nil && args.Strategy != nil {
		var err error
		if simNodes.InlineStrategy, err = ledger.ParseStrategy(*args.Strategy); err != nil {
			t.Fatal(err)
		}
	}
	if args != nil && args.DefaultInlineVolumeSize != nil {
		simNodes.DefaultInlineSize = args.DefaultInlineVolumeSize.Value()
	}
	if _, err := simagent.StartAgent(ctx, c.RESTConfig(), simNodes, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := simagent.StartProvisioner(ctx, c.RESTConfig(), []string{config.ProvisionerName}, 4); err != nil {
		t.Fatal(err)
	}
	e.writeConfig(args)
	e.bin = cluster.Binary(t, "./scheduler")
	e.startScheduler()
	return e
}

func uniqueID(t testing.TB) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-", "#", "").Replace(t.Name()))
	if len(name) > 20 {
		name = name[:20]
	}
	return strings.Trim(name, "-") + "-" + hex.EncodeToString(b)
}

func (e *env) name(s string) string { return e.id + "-" + s }

// testLabel marks the test's nodes; its pods select them.
const testLabel = "open-local.test/env"

// addNodes creates the nodes and their NodeLocalStorage, 32 at a time
// (the benchmark has a thousand), then waits until kwok reports them Ready.
func (e *env) addNodes(specs []nodeSpec) {
	e.t.Helper()
	errs := make(chan error, len(specs))
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for _, n := range specs {
		e.nodes = append(e.nodes, e.name(n.name))
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs <- e.addNode(n)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			e.t.Fatal(err)
		}
	}
	e.waitFor("nodes Ready without the not-ready taint", 5*time.Minute, func() (bool, error) {
		list, err := e.kube.CoreV1().Nodes().List(e.ctx, metav1.ListOptions{LabelSelector: testLabel + "=" + e.id})
		if err != nil {
			return false, nil //nolint:nilerr // keep polling
		}
		ready := 0
		for _, n := range list.Items {
			ok := len(n.Spec.Taints) == 0
			for _, c := range n.Status.Conditions {
				if c.Type == v1.NodeReady && c.Status != v1.ConditionTrue {
					ok = false
				}
			}
			if ok {
				ready++
			}
		}
		return ready == len(specs), nil
	})
}

func (e *env) addNode(n nodeSpec) error {
	name := e.name(n.name)
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		v1.LabelHostname: name, testLabel: e.id, "type": "kwok",
	}, Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"}},
		Status: v1.NodeStatus{Allocatable: v1.ResourceList{v1.ResourceCPU: resource.MustParse("32"), v1.ResourceMemory: resource.MustParse("256Gi"), v1.ResourcePods: resource.MustParse("110")},
			Capacity: v1.ResourceList{v1.ResourceCPU: resource.MustParse("32"), v1.ResourceMemory: resource.MustParse("256Gi"), v1.ResourcePods: resource.MustParse("110")}}}
	if _, err := e.kube.CoreV1().Nodes().Create(e.ctx, node, metav1.CreateOptions{}); err != nil {
		return err
	}
	if n.vgs == nil && n.devices == nil {
		return nil
	}
	return e.setStorage(name, n.vgs, n.devices)
}

// setStorage writes the node's NodeLocalStorage with the status an agent
// would report.
func (e *env) setStorage(node string, vgs, devices map[string]int64) error {
	api := e.ol.CsiV1alpha1().NodeLocalStorages()
	_, err := api.Get(e.ctx, node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = api.Create(e.ctx, &v1alpha1.NodeLocalStorage{ObjectMeta: metav1.ObjectMeta{Name: node},
			Spec: v1alpha1.NodeLocalStorageSpec{NodeName: node}}, metav1.CreateOptions{})
	}
	if err != nil {
		return err
	}
	now := metav1.Now()
	st := v1alpha1.NodeLocalStorageStatus{}
	st.NodeStorageInfo.Phase = v1alpha1.NodeStorageRunning
	st.NodeStorageInfo.State = v1alpha1.StorageState{Type: v1alpha1.StorageReady, Status: v1alpha1.ConditionTrue, LastHeartbeatTime: &now}
	for _, vg := range sortedKeys(vgs) {
		size := uint64(vgs[vg] * gi)
		st.NodeStorageInfo.VolumeGroups = append(st.NodeStorageInfo.VolumeGroups, v1alpha1.VolumeGroup{
			Name: vg, PhysicalVolumes: []string{"/dev/vd" + vg}, Total: size, Available: size, Allocatable: size, Condition: v1alpha1.StorageReady})
		st.FilteredStorageInfo.VolumeGroups = append(st.FilteredStorageInfo.VolumeGroups, vg)
	}
	for _, d := range sortedKeys(devices) {
		st.NodeStorageInfo.DeviceInfos = append(st.NodeStorageInfo.DeviceInfos, v1alpha1.DeviceInfo{
			Name: d, MediaType: "ssd", Total: uint64(devices[d] * gi), Condition: v1alpha1.StorageReady})
		st.FilteredStorageInfo.Devices = append(st.FilteredStorageInfo.Devices, d)
	}
	st.FilteredStorageInfo.UpdateStatus = v1alpha1.UpdateStatusInfo{LastUpdateTime: &now, Status: v1alpha1.UpdateStatusAccepted}
	_, err = cluster.Update(e.ctx, api.Get, api.UpdateStatus, node, func(nls *v1alpha1.NodeLocalStorage) { nls.Status = st })
	return err
}

func sortedKeys(m map[string]int64) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (e *env) class(suffix string, params map[string]string) *storagev1.StorageClass {
	return &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: e.name(suffix)}, Provisioner: config.ProvisionerName, Parameters: params,
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingWaitForFirstConsumer),
		ReclaimPolicy:     ptr.To(v1.PersistentVolumeReclaimDelete),
	}
}

func (e *env) writeConfig(args *configv1.OpenLocalArgs) {
	e.t.Helper()
	data, err := profile.Render(profile.Options{Kubeconfig: e.c.Kubeconfig, QPS: 1000, Burst: 2000, DisableLeaderElection: true, Args: args})
	if err != nil {
		e.t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "open-local-sched-")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { os.RemoveAll(dir) })
	e.cfg = filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(e.cfg, data, 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// useScheduler stops the running scheduler and starts bin with the
// configuration cfg (YAML) instead; phase then gives its pods
// schedulerName. The benchmark compares schedulers this way on one set of
// nodes.
func (e *env) useScheduler(bin string, cfg []byte, schedulerName string) {
	e.t.Helper()
	if e.sched != nil {
		e.sched.Stop()
	}
	if err := os.WriteFile(e.cfg, cfg, 0o600); err != nil {
		e.t.Fatal(err)
	}
	e.bin, e.schedulerName = bin, schedulerName
	e.startScheduler()
}

// startScheduler runs the scheduler binary with the chart's command line
// (test/launcher; the stock kube-scheduler takes the same flags) and the
// test's configuration, on a free loopback port serving /metrics without a
// token, and waits until it is healthy.
func (e *env) startScheduler() {
	e.t.Helper()
	ports, err := cluster.FreePorts(1)
	if err != nil {
		e.t.Fatal(err)
	}
	e.port = ports[0]
	e.schedN++
	e.sched = launcher.ForTest(e.t).Start(e.t, e.c, fmt.Sprintf("%s-scheduler-%d", e.id, e.schedN), e.bin, launcher.Scheduler, launcher.Pod{},
		"--config", e.cfg, "--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(e.port),
		"--authorization-always-allow-paths", "/healthz,/readyz,/livez,/metrics")
	if err := e.sched.WaitHealthy(e.ctx, e.url("/healthz"), 2*time.Minute); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) url(path string) string { return "https://127.0.0.1:" + strconv.Itoa(e.port) + path }

// metrics scrapes the scheduler's /metrics.
func (e *env) metrics() string {
	e.t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // our own self-signed loopback endpoint
	resp, err := client.Get(e.url("/metrics"))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("/metrics: %s\n%s", resp.Status, body)
	}
	return string(body)
}

func resourceGi(g int64) *resource.Quantity { return resource.NewQuantity(g*gi, resource.BinarySI) }

// claim creates a PVC of the test's class suffix.
func (e *env) claim(name, class string, gib int64) *v1.PersistentVolumeClaim {
	e.t.Helper()
	out, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Create(e.ctx, podClaim(e.ns, name, e.name(class), gib), metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// pod creates a pod of the open-local scheduler on the test's nodes.
func (e *env) pod(name string, claims ...string) *v1.Pod {
	e.t.Helper()
	p := podSpec(e.ns, name, e.id, claims...)
	out, err := e.kube.CoreV1().Pods(e.ns).Create(e.ctx, p, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func podSpec(ns, name, envID string, claims ...string) *v1.Pod {
	p := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1.PodSpec{
			SchedulerName: profile.SchedulerName,
			NodeSelector:  map[string]string{testLabel: envID},
			Containers:    []v1.Container{{Name: "app", Image: "busybox"}},
		},
	}
	for _, c := range claims {
		p.Spec.Volumes = append(p.Spec.Volumes, v1.Volume{Name: c, VolumeSource: v1.VolumeSource{
			PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: c}}})
	}
	return p
}

// waitFor polls cond every 100 ms until it holds or timeout passes.
func (e *env) waitFor(what string, timeout time.Duration, cond func() (bool, error)) {
	e.t.Helper()
	err := wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		return cond()
	})
	if err != nil {
		e.t.Fatalf("waiting for %s: %v", what, err)
	}
}

// waitBound waits until the pod has a node and all its PVCs are Bound.
func (e *env) waitBound(pod string, timeout time.Duration) *v1.Pod {
	e.t.Helper()
	var got *v1.Pod
	e.waitFor("pod "+pod+" bound with its PVCs", timeout, func() (bool, error) {
		p, err := e.kube.CoreV1().Pods(e.ns).Get(e.ctx, pod, metav1.GetOptions{})
		if err != nil || p.Spec.NodeName == "" {
			return false, nil //nolint:nilerr // keep polling
		}
		for _, v := range p.Spec.Volumes {
			if v.PersistentVolumeClaim == nil {
				continue
			}
			pvc, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Get(e.ctx, v.PersistentVolumeClaim.ClaimName, metav1.GetOptions{})
			if err != nil || pvc.Status.Phase != v1.ClaimBound {
				return false, nil //nolint:nilerr // keep polling
			}
		}
		got = p
		return true, nil
	})
	return got
}

// schedulingFailure waits for a FailedScheduling event of the pod and returns its message.
func (e *env) schedulingFailure(pod string, contains ...string) string {
	e.t.Helper()
	var msg string
	e.waitFor("FailedScheduling event of "+pod+" mentioning "+strings.Join(contains, " & "), time.Minute, func() (bool, error) {
		evs, err := e.kube.CoreV1().Events(e.ns).List(e.ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod})
		if err != nil {
			return false, nil //nolint:nilerr // keep polling
		}
		for _, ev := range evs.Items {
			if ev.Reason != "FailedScheduling" {
				continue
			}
			msg = ev.Message
			ok := true
			for _, c := range contains {
				ok = ok && strings.Contains(ev.Message, c)
			}
			if ok {
				return true, nil
			}
		}
		return false, nil
	})
	return msg
}

// localVolumeOf returns the LocalVolume of a PVC.
func (e *env) localVolumeOf(pvc string) *v1alpha1.LocalVolume {
	e.t.Helper()
	c, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Get(e.ctx, pvc, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	lv, err := e.ol.CsiV1alpha1().LocalVolumes().Get(e.ctx, "pvc-"+string(c.UID), metav1.GetOptions{})
	if err != nil {
		e.t.Fatalf("LocalVolume of %s: %v", pvc, err)
	}
	return lv
}

// assertNoOvercommit checks, from the LocalVolumes alone, that no VG of
// the test's nodes holds more than its allocatable and no device is taken
// twice. It returns the bytes allocated per node/VG.
func (e *env) assertNoOvercommit(allocatable map[string]int64) map[string]int64 {
	e.t.Helper()
	lvs, err := e.ol.CsiV1alpha1().LocalVolumes().List(e.ctx, metav1.ListOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	used := map[string]int64{}
	devices := map[string]string{}
	for _, lv := range lvs.Items {
		if !strings.HasPrefix(lv.Spec.NodeName, e.id+"-") {
			continue
		}
		if lv.Spec.VolumeType == v1alpha1.VolumeTypeDevice {
			key := lv.Spec.NodeName + lv.Spec.Device
			if other, ok := devices[key]; ok {
				e.t.Errorf("device %s given to %s and %s", key, other, lv.Name)
			}
			devices[key] = lv.Name
			continue
		}
		used[lv.Spec.NodeName+"/"+lv.Spec.VGName] += lv.Spec.Size.Value()
	}
	for key, u := range used {
		node, vg, _ := strings.Cut(key, "/")
		limit, ok := allocatable[strings.TrimPrefix(node, e.id+"-")+"/"+vg]
		if !ok || u > limit*gi {
			e.t.Errorf("over-commit: %s holds %dGi of %dGi", key, u/gi, limit)
		}
	}
	return used
}

// deletePodAndClaims deletes a pod and its PVCs; the provisioner then
// deletes their LocalVolumes and PVs.
func (e *env) deletePodAndClaims(pod *v1.Pod) {
	e.t.Helper()
	if err := e.kube.CoreV1().Pods(e.ns).Delete(e.ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil && !apierrors.IsNotFound(err) {
		e.t.Fatal(err)
	}
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			if err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Delete(e.ctx, v.PersistentVolumeClaim.ClaimName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				e.t.Fatal(err)
			}
		}
	}
}

// cleanup removes what the test created, so the shared cluster stays tidy.
func (e *env) cleanup() {
	ctx := context.Background()
	_ = e.kube.CoreV1().Namespaces().Delete(ctx, e.ns, metav1.DeleteOptions{})
	for _, suffix := range []string{"lvm", "lvm-pool0", "ssd"} {
		_ = e.kube.StorageV1().StorageClasses().Delete(ctx, e.name(suffix), metav1.DeleteOptions{})
	}
	for _, n := range e.nodes {
		_ = e.ol.CsiV1alpha1().NodeLocalStorages().Delete(ctx, n, metav1.DeleteOptions{})
		_ = e.kube.CoreV1().Nodes().Delete(ctx, n, metav1.DeleteOptions{})
	}
	// LocalVolumes of the test's nodes: no agent will remove their finalizers now.
	lvs, err := e.ol.CsiV1alpha1().LocalVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	for _, lv := range lvs.Items {
		if strings.HasPrefix(lv.Spec.NodeName, e.id+"-") {
			api := e.ol.CsiV1alpha1().LocalVolumes()
			_, _ = cluster.Update(ctx, api.Get, api.Update, lv.Name, func(lv *v1alpha1.LocalVolume) { lv.Finalizers = nil })
			_ = api.Delete(ctx, lv.Name, metav1.DeleteOptions{})
		}
	}
}
