/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package csitest sets up, for the CSI tests, one storage node on the local
// cluster backed by real lvm2: a VG on loop devices (test/loopvg), the Node
// object with its hostname label, a NodeLocalStorage whose status carries
// the VG's real size (what the agent's discovery reports), and the real
// LocalVolume reconciler (agent/volumes) for that node, running in the test
// process (NewNode) or the chart's agent binary (NewAgentNode). It serves
// the CSI services in-process on unix sockets, or starts the chart's CSI
// driver, sidecars and scheduler as processes (test/launcher), the start
// sequence the CSI suites share.
package csitest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/open-local/open-local/agent/volumes"
	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/config/profile"
	"github.com/open-local/open-local/csi/controller"
	"github.com/open-local/open-local/csi/grpcserver"
	"github.com/open-local/open-local/csi/identity"
	"github.com/open-local/open-local/csi/node"
	"github.com/open-local/open-local/lvm"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/launcher"
	"github.com/open-local/open-local/test/loopvg"
)

// Node is a storage node of the local cluster backed by real lvm2.
type Node struct {
	Name     string
	VG       *loopvg.VG
	LVM      *lvm.Client
	Mode     lvm.Mode
	LockFile string
	cluster  *cluster.Cluster
}

// NewNode creates the VG vgName on loop devices of the given sizes, the
// Node, CSINode and NodeLocalStorage objects for name, and starts the
// LocalVolume reconciler for it; all is undone when the test ends.
func NewNode(t testing.TB, c *cluster.Cluster, name, vgName string, sizes ...int64) *Node {
	t.Helper()
	capability.Require(t, capability.Root, capability.LoopDevices, capability.LVM)
	n := newNode(t, c, name, vgName, sizes...)
	n.createObjects(t, t.Context())
	n.startReconciler(t)
	return n
}

func newNode(t testing.TB, c *cluster.Cluster, name, vgName string, sizes ...int64) *Node {
	t.Helper()
	vg := loopvg.New(t, vgName, sizes...)
	mode := lvm.ModeDeviceMapper
	var opts []lvm.Option
	if !vg.Config.FullMode {
		mode = lvm.ModeLoop
		opts = append(opts, lvm.WithAlloc(lvm.AllocContiguous))
	}
	return &Node{
		Name:     name,
		VG:       vg,
		LVM:      lvm.New(&lvm.ExecRunner{Env: vg.Config.Env()}, opts...),
		Mode:     mode,
		LockFile: filepath.Join(t.TempDir(), "activation.lock"),
		cluster:  c,
	}
}

// NewAgentNode is NewNode with the real agent binary (./agent) instead of
// the in-process reconciler: it discovers the VG, writes the
// NodeLocalStorage status itself and carries out the node's LocalVolumes.
func NewAgentNode(t testing.TB, c *cluster.Cluster, name, vgName string, sizes ...int64) *Node {
	t.Helper()
	capability.Require(t, capability.Root, capability.LoopDevices, capability.LVM)
	n := newNode(t, c, name, vgName, sizes...)
	ctx := t.Context()
	n.createNodeObjects(t, ctx)
	nls := &v1alpha1.NodeLocalStorage{ObjectMeta: metav1.ObjectMeta{Name: n.Name}, Spec: v1alpha1.NodeLocalStorageSpec{
		NodeName: n.Name, ListConfig: v1alpha1.ListConfig{VGs: v1alpha1.VGList{Include: []string{"^" + regexp.QuoteMeta(vgName) + "$"}}}}}
	ol := c.OpenLocalClient().CsiV1alpha1().NodeLocalStorages()
	if _, err := ol.Create(ctx, nls, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ol.Delete(context.Background(), n.Name, metav1.DeleteOptions{}) })
	var devs []string
	for _, d := range n.VG.Devices {
		devs = append(devs, regexp.QuoteMeta(filepath.Base(d.Path)))
	}
	// The chart's agent, on this node's devices, polled every second.
	agent := launcher.ForTest(t).Start(t, c, "agent-"+name, cluster.Binary(t, "./agent"), launcher.Agent, n.pod(),
		slices.Concat(n.local(c), []string{"--regexp", "^(" + strings.Join(devs, "|") + ")$", "--interval", "1s",
			"--healthz-bind-address", ""})...)
	// Registered after the agent's own cleanup, so it runs first: volumes
	// are removed by the agent while it still runs.
	t.Cleanup(func() { n.deleteLocalVolumes(t) })
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		if !agent.Alive() {
			return false, fmt.Errorf("agent exited:\n%s", agent.LogTail(30))
		}
		got, err := ol.Get(ctx, n.Name, metav1.GetOptions{})
		return err == nil && slices.Contains(got.Status.FilteredStorageInfo.VolumeGroups, vgName), nil
	})
	if err != nil {
		t.Fatalf("agent did not report VG %s in NodeLocalStorage %s: %v", vgName, n.Name, err)
	}
	return n
}

// Activator returns a new Activator for the node's LVs (like a second
// process on the node, sharing the lock file).
func (n *Node) Activator(t testing.TB) lvm.Activator {
	t.Helper()
	a, err := lvm.NewActivator(n.Mode, n.LVM, n.LockFile)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// createNodeObjects creates the Node (with its hostname label) and the
// CSINode listing the driver.
func (n *Node) createNodeObjects(t testing.TB, ctx context.Context) {
	t.Helper()
	kube := n.cluster.Client()
	room := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("32"), corev1.ResourceMemory: resource.MustParse("64Gi"),
		corev1.ResourcePods: resource.MustParse("110")}
	k8sNode := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{parameters.TopologyKey: n.Name}},
		Status: corev1.NodeStatus{Allocatable: room, Capacity: room}}
	if _, err := kube.CoreV1().Nodes().Create(ctx, k8sNode, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	// No kubelet or node-driver-registrar runs here: register the driver
	// with its topology key as the registrar would.
	csiNode := &storagev1.CSINode{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name},
		Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{
			Name: identity.DefaultDriverName, NodeID: n.Name, TopologyKeys: []string{parameters.TopologyKey}}}},
	}
	if _, err := kube.StorageV1().CSINodes().Create(ctx, csiNode, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_ = kube.StorageV1().CSINodes().Delete(ctx, n.Name, metav1.DeleteOptions{})
		_ = kube.CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{})
	})
}

// createObjects creates the node objects and a NodeLocalStorage whose
// status carries the VG's real size, as the agent's discovery reports it.
func (n *Node) createObjects(t testing.TB, ctx context.Context) {
	t.Helper()
	n.createNodeObjects(t, ctx)
	ol := n.cluster.OpenLocalClient()
	vgInfo, err := n.LVM.GetVG(ctx, n.VG.Name)
	if err != nil {
		t.Fatal(err)
	}
	nls := &v1alpha1.NodeLocalStorage{ObjectMeta: metav1.ObjectMeta{Name: n.Name}, Spec: v1alpha1.NodeLocalStorageSpec{NodeName: n.Name}}
	api := ol.CsiV1alpha1().NodeLocalStorages()
	if _, err := api.Create(ctx, nls, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pvs []string
	for _, d := range n.VG.Devices {
		pvs = append(pvs, d.Path)
	}
	_, err = cluster.Update(ctx, api.Get, api.UpdateStatus, n.Name, func(nls *v1alpha1.NodeLocalStorage) {
		nls.Status = v1alpha1.NodeLocalStorageStatus{
			NodeStorageInfo: v1alpha1.NodeStorageInfo{VolumeGroups: []v1alpha1.VolumeGroup{{
				Name: n.VG.Name, PhysicalVolumes: pvs, Total: vgInfo.Size, Available: vgInfo.Free, Allocatable: vgInfo.Size,
				Condition: v1alpha1.StorageReady,
			}}},
			FilteredStorageInfo: v1alpha1.FilteredStorageInfo{VolumeGroups: []string{n.VG.Name}},
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ol.CsiV1alpha1().NodeLocalStorages().Delete(context.Background(), n.Name, metav1.DeleteOptions{})
	})
}

// AddThinPool creates thin pool name of size bytes in the node's VG and
// reports it in the NodeLocalStorage status as the agent's discovery does:
// allocatable = ratio × size, and the VG's allocatable without the pool.
// It needs device-mapper (lvm refuses thin pools without it).
func (n *Node) AddThinPool(t testing.TB, name string, size int64, ratio int64) {
	t.Helper()
	ctx := t.Context()
	pool, err := n.LVM.CreateThinPool(ctx, lvm.ThinPoolOptions{VG: n.VG.Name, Name: name, Size: uint64(size), Tags: []string{lvm.OwnedTag}})
	if err != nil {
		t.Fatal(err)
	}
	vgInfo, err := n.LVM.GetVG(ctx, n.VG.Name)
	if err != nil {
		t.Fatal(err)
	}
	api := n.cluster.OpenLocalClient().CsiV1alpha1().NodeLocalStorages()
	_, err = cluster.Update(ctx, api.Get, api.UpdateStatus, n.Name, func(nls *v1alpha1.NodeLocalStorage) {
		for i := range nls.Status.NodeStorageInfo.VolumeGroups {
			g := &nls.Status.NodeStorageInfo.VolumeGroups[i]
			if g.Name != n.VG.Name {
				continue
			}
			g.Available, g.Allocatable = vgInfo.Free, vgInfo.Free
			g.ThinPools = append(g.ThinPools, v1alpha1.ThinPool{Name: name, Total: pool.Size,
				OverprovisionRatio: *resource.NewQuantity(ratio, resource.DecimalSI), Allocatable: pool.Size * uint64(ratio)})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

// startReconciler runs agent/volumes for the node until the test ends. It
// is registered after the VG, so its cleanup (stop) runs before the VG's.
func (n *Node) startReconciler(t testing.TB) {
	t.Helper()
	r, err := volumes.New(volumes.Options{
		NodeName: n.Name, Client: n.cluster.OpenLocalClient(), Kube: n.cluster.Client(),
		LVM: n.LVM, Activator: n.Activator(t), RetryBase: 200 * time.Millisecond, RetryMax: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		// Volumes still on the node are removed by the reconciler, so
		// loop devices are detached before the VG goes.
		n.deleteLocalVolumes(t)
		cancel()
		if err := <-done; err != nil {
			t.Errorf("reconciler of %s: %v", n.Name, err)
		}
	})
}

// deleteLocalVolumes deletes the LocalVolumes left on the node and waits for
// the reconciler to remove them.
func (n *Node) deleteLocalVolumes(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lvs := n.cluster.OpenLocalClient().CsiV1alpha1().LocalVolumes()
	list, err := lvs.List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + n.Name})
	if err != nil {
		t.Errorf("list LocalVolumes of %s: %v", n.Name, err)
		return
	}
	for _, lv := range list.Items {
		_ = lvs.Delete(ctx, lv.Name, metav1.DeleteOptions{})
	}
	for ctx.Err() == nil {
		list, err = lvs.List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + n.Name})
		if err == nil && len(list.Items) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("LocalVolumes of %s left after cleanup: %v", n.Name, list.Items)
}

// Driver is the CSI driver served in-process.
type Driver struct {
	ControllerAddr, NodeAddr string
	Node                     *node.Server
	Controller               *controller.Server
}

// StartDriver serves Identity+Controller and Identity+Node for n on unix
// sockets in a temporary directory, until the test ends.
func StartDriver(t testing.TB, c *cluster.Cluster, n *Node) *Driver {
	t.Helper()
	dir := t.TempDir()
	d := &Driver{
		ControllerAddr: "unix://" + filepath.Join(dir, "controller.sock"),
		NodeAddr:       "unix://" + filepath.Join(dir, "node.sock"),
		Controller:     controller.New(c.OpenLocalClient(), c.Client()),
	}
	var err error
	if d.Node, err = node.New(node.Options{NodeID: n.Name, MaxVolumes: 100, Client: c.OpenLocalClient(), Activator: n.Activator(t)}); err != nil {
		t.Fatal(err)
	}
	ctrl := grpcserver.New()
	csi.RegisterIdentityServer(ctrl, identity.New(identity.DefaultDriverName, "test"))
	csi.RegisterControllerServer(ctrl, d.Controller)
	serve(t, ctrl, d.ControllerAddr)
	nodeSrv := grpcserver.New()
	csi.RegisterIdentityServer(nodeSrv, identity.New(identity.DefaultDriverName, "test"))
	csi.RegisterNodeServer(nodeSrv, d.Node)
	serve(t, nodeSrv, d.NodeAddr)
	return d
}

func serve(t testing.TB, srv *grpc.Server, endpoint string) {
	t.Helper()
	lis, err := grpcserver.Listen(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
}

// Dial connects to a CSI endpoint.
func Dial(t testing.TB, endpoint string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			path, err := grpcserver.SocketPath(endpoint)
			if err != nil {
				return nil, err
			}
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}))
	if err != nil {
		t.Fatal(fmt.Errorf("dial %s: %w", endpoint, err))
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// pod is the node daemons' pod on this node.
func (n *Node) pod() launcher.Pod { return launcher.Pod{NodeName: n.Name} }

// local are the changes every node daemon of the chart needs here: the
// kubeconfig, and this node's lvm configuration, activation and lock.
func (n *Node) local(c *cluster.Cluster) []string {
	return []string{"--kubeconfig", c.Kubeconfig, "--lvm-system-dir", n.VG.Config.Dir, "--activation", string(n.Mode),
		"--loop-lock-file", n.LockFile}
}

// StartDriverProcesses runs our CSI driver binary for this node against c,
// as the chart does (test/launcher): the controller and the node plugin,
// sockets in dir, no metrics endpoints, process names ending in suffix. It
// returns once both serve their sockets.
func (n *Node) StartDriverProcesses(t testing.TB, c *cluster.Cluster, dir, suffix string) (ctrlSock, nodeSock string) {
	t.Helper()
	bin := cluster.Binary(t, "./csi")
	chart := launcher.ForTest(t)
	ctrlSock, nodeSock = filepath.Join(dir, "controller.sock"), filepath.Join(dir, "node.sock")
	ctrl := chart.Start(t, c, "csi-controller"+suffix, bin, launcher.CSIController, launcher.Pod{},
		"--endpoint", "unix://"+ctrlSock, "--kubeconfig", c.Kubeconfig, "--metrics-bind-address", "")
	node := chart.Start(t, c, "csi-node"+suffix, bin, launcher.CSINode, n.pod(), slices.Concat(n.local(c), []string{
		"--endpoint", "unix://" + nodeSock, "--io-limit-state-dir", filepath.Join(dir, "io-limits"), "--metrics-bind-address", ""})...)
	for p, sock := range map[*cluster.Process]string{ctrl: ctrlSock, node: nodeSock} {
		// Generous: in the emulated VM a start takes seconds.
		err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 4*time.Minute, true, func(context.Context) (bool, error) {
			if _, err := os.Stat(sock); err == nil {
				return true, nil
			}
			if !p.Alive() {
				return false, fmt.Errorf("%s exited", p.Name)
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("%s did not serve %s: %v\n%s", p.Name, sock, err, p.LogTail(30))
		}
	}
	return ctrlSock, nodeSock
}

// FastRetries make a sidecar retry a failed call after 500 ms, backing off
// to 5 s (the sidecars' defaults: 1 s doubling to 5 min), for a suite that
// waits for a retry.
var FastRetries = []string{"--retry-interval-start", "500ms", "--retry-interval-max", "5s"}

// Sidecar is one of the chart's controller sidecars (launcher.Provisioner,
// Resizer, Snapshotter, SnapshotController) with the suite's changes.
type Sidecar struct {
	Container launcher.Container
	Changes   []string
}

// StartSidecars runs the sidecars as the chart does (test/launcher), with
// what a process here must change: the CSI controller's socket ctrlSock,
// the kubeconfig, no leader election (no peer) and no HTTP endpoint (no
// port); csi-provisioner also publishes CSIStorageCapacity in "default"
// with no owner (no pod runs it) every 2 s (the suites wait for it).
// Process names end in suffix.
func StartSidecars(t testing.TB, c *cluster.Cluster, ctrlSock, suffix string, sidecars ...Sidecar) {
	t.Helper()
	chart := launcher.ForTest(t)
	pod := launcher.Pod{Name: "open-local-controller", Namespace: "default"}
	for _, s := range sidecars {
		local := []string{"--kubeconfig", c.Kubeconfig, "--leader-election", "false", "--http-endpoint", launcher.Drop}
		if s.Container != launcher.SnapshotController {
			local = append(local, "--csi-address", ctrlSock)
		}
		if s.Container == launcher.Provisioner {
			local = append(local, "--capacity-ownerref-level", "-1", "--capacity-poll-interval", "2s")
		}
		chart.Start(t, c, s.Container.Name+suffix, c.Tool(s.Container.Name), s.Container, pod, slices.Concat(local, s.Changes)...)
	}
}

// StartScheduler runs our scheduler (./scheduler) as the chart does
// (test/launcher) with the shipped profile, told the kubeconfig and
// without leader election (profile.Render); on a free loopback port,
// serving /healthz and /metrics without a token. It returns once healthy,
// with the port.
func StartScheduler(t testing.TB, c *cluster.Cluster, name string, timeout time.Duration) int {
	t.Helper()
	data, err := profile.Render(profile.Options{Kubeconfig: c.Kubeconfig, DisableLeaderElection: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "scheduler.yaml")
	if err := os.WriteFile(cfg, data, 0o600); err != nil {
		t.Fatal(err)
	}
	ports, err := cluster.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ports[0])
	p := launcher.ForTest(t).Start(t, c, name, cluster.Binary(t, "./scheduler"), launcher.Scheduler, launcher.Pod{},
		"--config", cfg, "--bind-address", "127.0.0.1", "--secure-port", port,
		"--authorization-always-allow-paths", "/healthz,/readyz,/livez,/metrics")
	if err := p.WaitHealthy(t.Context(), "https://127.0.0.1:"+port+"/healthz", timeout); err != nil {
		t.Fatal(err)
	}
	return ports[0]
}
