/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package demo

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/open-local/open-local/apis/client/clientset/versioned"
	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/config/profile"
	"github.com/open-local/open-local/csi/identity"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/launcher"
	"github.com/open-local/open-local/test/loopvg"
)

// NodeName is the demo's one real node. The kubelet refuses a loopback
// --node-ip, and the apiserver reaches a kubelet (kubectl logs, exec) at
// the node's Hostname address first; naming the node after the address
// the kubelet listens on (as Kubernetes' own hack/local-up-cluster.sh
// does) makes that work with the kubelet bound to loopback only.
const NodeName = "127.0.0.1"

// kwokSelector keeps kwok off the real node: it manages only simulated
// nodes labelled so (the demo has none; add one to play).
const kwokSelector = "type=kwok"

// VG is the volume group the chart's NodeLocalStorageInitConfig creates.
const VG = "open-local-pool-0"

// demo is one run: the environment and its clients.
type demo struct {
	cfg     Config
	p       *printer
	cluster *cluster.Cluster
	host    *hostState
	kube    kubernetes.Interface
	ol      versioned.Interface
	lvm     *loopvg.Config
	disk    loopvg.Device
	// activation is how LVs become block devices: loop on kernels without
	// device-mapper, device-mapper otherwise.
	activation  string
	kubeletRoot string
	// nodeName is the node this process runs (NodeName, or the VM's).
	nodeName string
	// kubeletAddress is where the kubelet listens: loopback on this
	// machine, every address in the VM (QEMU forwards its port in).
	kubeletAddress string
	// vm is step 4's VM node while it runs (kernels without device-mapper).
	vm    *vmNode
	ports struct{ kubelet, kubeletHealthz, agent, nlsController, csiNode, csiController, scheduler, prometheus int }
	// rendered is the chart's workloads (chart).
	rendered *launcher.Chart
}

func (d *demo) path(elem ...string) string {
	return filepath.Join(append([]string{d.cfg.Dir}, elem...)...)
}

func (d *demo) setUp(ctx context.Context) error {
	p := d.p
	p.section("Setting up: control plane, one real node, open-local")
	if os.Geteuid() != 0 {
		return errors.New("the demo needs root (loop devices, lvm2, mounts, cgroups, a kubelet)")
	}
	// The VM's root is an overlay of this machine's: it shows the host's
	// kubelet files, but its kubelet writes over them, in a world of its own.
	if !capability.InVM() {
		if err := preflightHost(cgroupRootFor(d.cfg.Dir)); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(d.path("manifests"), 0o755); err != nil {
		return err
	}
	if err := d.initNode(NodeName, "127.0.0.1", 0); err != nil {
		return err
	}

	return d.setUpParts(ctx, []setUpPart{
		{"node disk", d.setUpDisk},
		{"control plane", d.setUpControlPlane},
		{"node", d.setUpNode},
		{"open-local", d.setUpOpenLocal},
		{"prometheus", d.setUpPrometheus},
	})
}

// setUpPart is one part of the environment; run says what it made.
type setUpPart struct {
	what string
	run  func(context.Context) (string, error)
}

func (d *demo) setUpParts(ctx context.Context, parts []setUpPart) error {
	for _, part := range parts {
		start := time.Now()
		note, err := part.run(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", part.what, err)
		}
		d.p.printf("   ok   %-14s %s (%s)\n", part.what, note, time.Since(start).Round(100*time.Millisecond))
	}
	return nil
}

// initNode records this machine's node (name, kubelet address and port;
// 0 picks a free one) and picks the daemons' ports.
func (d *demo) initNode(name, kubeletAddress string, kubeletPort int) error {
	d.nodeName, d.kubeletAddress = name, kubeletAddress
	d.kubeletRoot = d.path("kubelet")
	d.host = &hostState{Dir: d.cfg.Dir, CgroupRoot: cgroupRootFor(d.cfg.Dir)}
	if err := d.host.save(); err != nil {
		return err
	}
	ports, err := cluster.FreePorts(8)
	if err != nil {
		return err
	}
	d.ports.kubelet, d.ports.kubeletHealthz, d.ports.agent, d.ports.nlsController = ports[0], ports[1], ports[2], ports[3]
	d.ports.csiNode, d.ports.csiController, d.ports.scheduler, d.ports.prometheus = ports[4], ports[5], ports[6], ports[7]
	if kubeletPort != 0 {
		d.ports.kubelet = kubeletPort
	}
	return nil
}

// setUpDisk makes the block device step 1 turns into a VG: a loop device
// on a sparse file, and the private lvm configuration (its filter accepts
// only that device) the agent and CSI node plugin use.
func (d *demo) setUpDisk(ctx context.Context) (string, error) {
	if err := os.MkdirAll(d.path("node"), 0o700); err != nil {
		return "", err
	}
	what := ""
	if d.cfg.Disk != "" {
		// A real empty disk (the VM's): used as is, never detached.
		size, err := blockDeviceSize(d.cfg.Disk)
		if err != nil {
			return "", err
		}
		d.disk, d.cfg.DiskSize = loopvg.Device{Path: d.cfg.Disk, Size: size}, size
		what = fmt.Sprintf("%s: an empty %s disk", d.cfg.Disk, humanBytes(size))
	} else {
		file := d.path("node", "disk0.img")
		if err := loopvg.CreateSparseFile(file, d.cfg.DiskSize); err != nil {
			return "", err
		}
		disk, err := loopvg.Attach(ctx, file)
		if err != nil {
			return "", err
		}
		d.disk = disk
		d.host.Disk = &disk
		if err := d.host.save(); err != nil {
			return "", err
		}
		what = fmt.Sprintf("%s: a loop device on a %s sparse file (%s)", disk.Path, humanBytes(d.cfg.DiskSize), file)
	}
	full := loopvg.DetectFullMode()
	var err error
	if d.lvm, err = loopvg.WriteConfig(d.path("node", "lvm"), full, d.disk.Path); err != nil {
		return "", err
	}
	mode := "metadata mode (this kernel has no device-mapper): an LV is used through a loop device at its extents"
	d.activation = "loop"
	if full {
		mode, d.activation = "full mode (device-mapper)", "device-mapper"
	}
	return fmt.Sprintf("%s; lvm2 in %s, its filter sees only this device", what, mode), nil
}

// blockDeviceSize reads a block device's size from sysfs.
func blockDeviceSize(dev string) (int64, error) {
	data, err := os.ReadFile(filepath.Join("/sys/class/block", filepath.Base(dev), "size"))
	if err != nil {
		return 0, fmt.Errorf("%s is not a block device: %w", dev, err)
	}
	sectors, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	return sectors * 512, err
}

func (d *demo) setUpControlPlane(ctx context.Context) (string, error) {
	c, err := cluster.Start(ctx, cluster.Options{Dir: d.path("cluster"), ToolsDir: d.cfg.ToolsDir, Detached: true,
		KwokNodeSelector: kwokSelector})
	if err != nil {
		return "", err
	}
	d.cluster, d.kube, d.ol = c, c.Client(), c.OpenLocalClient()
	// The chart's cluster-wide objects: CSIDriver, StorageClasses, VolumeSnapshotClass.
	manifest, err := d.helmTemplate(ctx, nil, "templates/csidriver.yaml", "templates/storageclasses.yaml")
	if err != nil {
		return "", err
	}
	if _, err := d.applyManifest(ctx, "open-local-classes.yaml", manifest); err != nil {
		return "", err
	}
	return fmt.Sprintf("etcd, kube-apiserver, kube-controller-manager %s from source at %s; CRDs, and the chart's CSIDriver, StorageClasses and VolumeSnapshotClass (helm template)",
		c.Server(), "k8s.io/kubernetes "+kubeVersion), nil
}

// kubeVersion is the Kubernetes version the tools are built from.
const kubeVersion = "v" + launcher.KubeVersion

// setUpNode starts the node: procruntime and the real kubelet.
func (d *demo) setUpNode(ctx context.Context) (string, error) {
	runtimeSock := d.path("node", "procruntime.sock")
	if err := d.host.recordKubeletPaths(); err != nil {
		return "", err
	}
	if err := d.cluster.StartDaemon("procruntime", d.cfg.Binaries["procruntime"], nil,
		"--endpoint=unix://"+runtimeSock, "--state-dir="+d.path("node", "procruntime"), "--pod-ip=127.0.0.1", "-v=2"); err != nil {
		return "", err
	}
	if err := d.waitFile(ctx, "procruntime", runtimeSock); err != nil {
		return "", err
	}
	cfgPath := d.path("node", "kubelet.yaml")
	if err := os.WriteFile(cfgPath, []byte(d.kubeletConfig(runtimeSock)), 0o600); err != nil {
		return "", err
	}
	if err := d.cluster.StartDaemon("kubelet", filepath.Join(d.cfg.ToolsDir, "kubelet"), nil, d.kubeletArgs(cfgPath)...); err != nil {
		return "", err
	}
	err := d.poll(ctx, 2*time.Minute, "kubelet", func(ctx context.Context) (bool, string, error) {
		return nodeReady(ctx, d.kube, d.nodeName)
	})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("node %s Ready: kubelet %s (built from source) with procruntime, a CRI runtime whose images are this "+
		"host's root filesystem, read-only: containers are host processes in their own mount namespace, in the kubelet's pod cgroups, "+
		"sharing the host network", d.nodeName, kubeVersion), nil
}

func (d *demo) kubeletArgs(cfgPath string) []string {
	return []string{"--config=" + cfgPath, "--kubeconfig=" + d.cluster.Kubeconfig, "--root-dir=" + d.kubeletRoot,
		"--cert-dir=" + filepath.Join(d.kubeletRoot, "pki"), "--hostname-override=" + d.nodeName, "-v=2"}
}

func (d *demo) kubeletConfig(runtimeSock string) string {
	return fmt.Sprintf(`# The demo's kubelet (test/demo). Loopback only (in the VM: reached only
# through QEMU's port forward from the host's loopback); anonymous access
# is allowed because nothing outside this machine can reach it.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://%s
imageServiceEndpoint: unix://%s
# procruntime makes container cgroups the way runc does with cgroupfs.
cgroupDriver: cgroupfs
cgroupsPerQOS: true
# The demo's own tree: another kubelet on this host has its own.
cgroupRoot: %s
enforceNodeAllocatable: []
# This machine has cgroup v1 and may have swap.
failCgroupV1: false
failSwapOn: false
podLogsDir: %s
# A demo waits for the kubelet: resync pods (and so notice an expanded
# volume) and refresh volume statistics every 10s instead of every minute.
syncFrequency: 10s
volumeStatsAggPeriod: 10s
# The host's disk may be fuller than a dedicated node's: evict only when it is really full.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
`, d.kubeletAddress, d.ports.kubelet, d.ports.kubeletHealthz, runtimeSock, runtimeSock, d.host.CgroupRoot, d.path("pod-logs"))
}

// daemon is one process of open-local (or a CSI sidecar) to start.
type daemon struct {
	name string
	bin  string
	env  []string
	args []string
}

// newDaemon is the chart's container ctr run from bin, named as the
// container, with changes (test/launcher).
func newDaemon(chart *launcher.Chart, ctr launcher.Container, bin string, pod launcher.Pod, changes ...string) (daemon, error) {
	p, err := chart.Process(ctr, pod, changes...)
	if err != nil {
		return daemon{}, err
	}
	return daemon{ctr.Name, bin, p.Env, p.Args}, nil
}

// chart renders the chart's workloads once (the node's VM renders its own).
func (d *demo) chart(ctx context.Context) (*launcher.Chart, error) {
	if d.rendered != nil {
		return d.rendered, nil
	}
	manifest, err := d.helmTemplate(ctx, nil, "templates/controller-deployment.yaml", "templates/agent-daemonset.yaml",
		"templates/scheduler.yaml")
	if err != nil {
		return nil, err
	}
	d.rendered, err = launcher.Parse([]byte(manifest))
	return d.rendered, err
}

func (d *demo) startDaemons(daemons []daemon) error {
	for _, dm := range daemons {
		if err := d.cluster.StartDaemon(dm.name, dm.bin, dm.env, dm.args...); err != nil {
			return err
		}
	}
	return nil
}

func loopback(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// setUpOpenLocal starts open-local as the chart deploys it, with
// the same flags where they matter: the cluster's part (NLS controller,
// CSI controller and sidecars, scheduler) and this node's.
func (d *demo) setUpOpenLocal(ctx context.Context) (string, error) {
	ctrlSock := d.path("csi", "controller.sock")
	if err := os.MkdirAll(d.path("csi"), 0o755); err != nil {
		return "", err
	}
	// The controller Deployment's containers as the chart renders them,
	// changed only where a process on this machine must differ: its socket
	// and kubeconfig, loopback ports, no peer to elect a leader with, no
	// pod to own CSIStorageCapacity, capacity polled faster (the steps wait
	// for it).
	chart, err := d.chart(ctx)
	if err != nil {
		return "", err
	}
	kc := []string{"--kubeconfig", d.cluster.Kubeconfig}
	single := append([]string{"--leader-election", "false", "--http-endpoint", launcher.Drop}, kc...)
	sidecar := append([]string{"--csi-address", ctrlSock}, single...)
	pod := launcher.Pod{Name: "open-local-controller", Namespace: "kube-system"}
	var daemons []daemon
	for _, c := range []struct {
		ctr     launcher.Container
		bin     string
		changes []string
	}{
		{launcher.NLSController, d.cfg.Binaries["agent"], append([]string{"--leader-elect", "false",
			"--healthz-bind-address", loopback(d.ports.nlsController)}, kc...)},
		{launcher.CSIController, d.cfg.Binaries["csi"], append([]string{"--endpoint", "unix://" + ctrlSock,
			"--metrics-bind-address", loopback(d.ports.csiController)}, kc...)},
		{launcher.Provisioner, filepath.Join(d.cfg.ToolsDir, "csi-provisioner"),
			append([]string{"--capacity-ownerref-level", "-1", "--capacity-poll-interval", "10s"}, sidecar...)},
		{launcher.Resizer, filepath.Join(d.cfg.ToolsDir, "csi-resizer"), sidecar},
		{launcher.Snapshotter, filepath.Join(d.cfg.ToolsDir, "csi-snapshotter"), sidecar},
		{launcher.SnapshotController, filepath.Join(d.cfg.ToolsDir, "snapshot-controller"), single},
	} {
		dm, err := newDaemon(chart, c.ctr, c.bin, pod, c.changes...)
		if err != nil {
			return "", err
		}
		daemons = append(daemons, dm)
	}
	if err := d.startDaemons(daemons); err != nil {
		return "", err
	}
	if err := d.startScheduler(chart); err != nil {
		return "", err
	}
	for name, url := range map[string]string{"nls-controller": "https://" + loopback(d.ports.nlsController) + "/healthz",
		"scheduler": "https://" + loopback(d.ports.scheduler) + "/healthz"} {
		if err := d.waitHTTP(ctx, name, url); err != nil {
			return "", err
		}
	}
	if err := d.waitFile(ctx, "csi-controller", ctrlSock); err != nil {
		return "", err
	}
	node, err := d.setUpNodePlugins(ctx)
	if err != nil {
		return "", err
	}
	return "NLS controller, CSI controller + csi-provisioner/resizer/snapshotter + snapshot-controller, scheduler; " + node, nil
}

// setUpNodePlugins starts open-local's node daemons (the chart's
// DaemonSet): the agent and the CSI node plugin, which registers with
// this node's kubelet.
func (d *demo) setUpNodePlugins(ctx context.Context) (string, error) {
	chart, err := d.chart(ctx)
	if err != nil {
		return "", err
	}
	daemons, err := d.nodeDaemons(chart)
	if err != nil {
		return "", err
	}
	if err := d.startDaemons(daemons); err != nil {
		return "", err
	}
	if err := d.waitHTTP(ctx, "agent", "https://"+loopback(d.ports.agent)+"/healthz"); err != nil {
		return "", err
	}
	// The real kubelet found our registration socket, called NodeGetInfo and
	// wrote the CSINode entry (what node-driver-registrar is for).
	err = d.poll(ctx, time.Minute, "csi-node", func(ctx context.Context) (bool, string, error) {
		return csiNodeRegistered(ctx, d.kube, d.nodeName)
	})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("agent and CSI node plugin on %s, registered with its kubelet (CSINode %s lists %s, topology key %s)",
		d.nodeName, d.nodeName, identity.DefaultDriverName, parameters.TopologyKey), nil
}

// nodeDaemons are open-local's node daemons as the chart's DaemonSet runs
// them, with this node's own paths (kubelet root, lvm configuration, loop
// lock, IO limit records), ports and kubeconfig, the activation this
// kernel allows, the demo's disk, and a kubelet with its own cgroup root
// (no node-driver-registrar: the CSI plugin registers itself).
func (d *demo) nodeDaemons(chart *launcher.Chart) ([]daemon, error) {
	pod := launcher.Pod{Name: "open-local-agent", Namespace: "kube-system", NodeName: d.nodeName}
	kc := []string{"--kubeconfig", d.cluster.Kubeconfig}
	lvm := []string{"--lvm-system-dir", d.lvm.Dir, "--activation", d.activation, "--loop-lock-file", d.path("node", "loop-activator.lock")}
	agent, err := newDaemon(chart, launcher.Agent, d.cfg.Binaries["agent"], pod, slices.Concat(kc, lvm, []string{
		"--regexp", "^" + regexp.QuoteMeta(filepath.Base(d.disk.Path)) + "$", "--interval", "2s",
		"--healthz-bind-address", loopback(d.ports.agent)})...)
	if err != nil {
		return nil, err
	}
	csiSock := filepath.Join(d.kubeletRoot, "plugins", identity.DefaultDriverName, "csi.sock")
	csiNode, err := newDaemon(chart, launcher.CSINode, d.cfg.Binaries["csi"], pod, slices.Concat(kc, lvm, []string{
		"--endpoint", "unix://" + csiSock, "--kubelet-registration-dir", filepath.Join(d.kubeletRoot, "plugins_registry"),
		"--cgroup-driver", "cgroupfs", "--cgroup-root", d.host.CgroupRoot, "--io-limit-state-dir", d.path("node", "io-limits"),
		"--metrics-bind-address", loopback(d.ports.csiNode)})...)
	if err != nil {
		return nil, err
	}
	csiNode.name = "csi-node"
	return []daemon{agent, csiNode}, nil
}

// nodeReady says whether the node is registered and Ready.
func nodeReady(ctx context.Context, kube kubernetes.Interface, name string) (bool, string, error) {
	n, err := kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, "node " + name + " not registered yet", nil
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue, "node " + name + " Ready=" + string(c.Status) + ": " + c.Message, nil
		}
	}
	return false, "node " + name + ": no Ready condition yet", nil
}

// csiNodeRegistered says whether node's CSINode lists our driver with its
// node ID and topology key.
func csiNodeRegistered(ctx context.Context, kube kubernetes.Interface, node string) (bool, string, error) {
	cn, err := kube.StorageV1().CSINodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return false, "no CSINode yet", nil
	}
	for _, drv := range cn.Spec.Drivers {
		if drv.Name == identity.DefaultDriverName {
			return drv.NodeID == node && slices.Contains(drv.TopologyKeys, parameters.TopologyKey),
				fmt.Sprintf("driver %s: node ID %q, topology keys %v", drv.Name, drv.NodeID, drv.TopologyKeys), nil
		}
	}
	return false, "CSINode lists no " + identity.DefaultDriverName, nil
}

func (d *demo) startScheduler(chart *launcher.Chart) error {
	cfg, err := profile.Render(profile.Options{Kubeconfig: d.cluster.Kubeconfig, DisableLeaderElection: true})
	if err != nil {
		return err
	}
	path := d.path("node", "scheduler.yaml")
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		return err
	}
	dm, err := newDaemon(chart, launcher.Scheduler, d.cfg.Binaries["scheduler"], launcher.Pod{}, "--config", path,
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(d.ports.scheduler),
		"--authorization-always-allow-paths", "/healthz,/metrics")
	if err != nil {
		return err
	}
	return d.startDaemons([]daemon{dm})
}

// poll runs cond until it reports done, ctx ends or timeout passes; the
// error names who (a daemon whose death ends the wait early, or what is
// awaited) and cond's last description of the state.
func (d *demo) poll(ctx context.Context, timeout time.Duration, who string, cond func(context.Context) (bool, string, error)) error {
	var last string
	timeout = time.Duration(float64(timeout) * max(d.cfg.Slowdown, 1))
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if d.cluster != nil && d.cluster.DaemonLog(who) != "" && !d.cluster.DaemonAlive(who) {
			return false, fmt.Errorf("%s exited; last lines of %s:\n%s", who, d.cluster.DaemonLog(who), d.cluster.DaemonLogTail(who, 20))
		}
		ok, state, err := cond(ctx)
		last = state
		return ok, err
	})
	if err != nil {
		if last != "" {
			return fmt.Errorf("%s: %w (last seen: %s)", who, err, last)
		}
		return fmt.Errorf("%s: %w", who, err)
	}
	return nil
}

func (d *demo) waitFile(ctx context.Context, who, path string) error {
	return d.poll(ctx, time.Minute, who, func(context.Context) (bool, string, error) {
		_, err := os.Stat(path)
		return err == nil, path + " not there yet", nil
	})
}

func (d *demo) waitHTTP(ctx context.Context, who, url string) error {
	client := insecureLoopbackClient()
	return d.poll(ctx, 2*time.Minute, who, func(ctx context.Context) (bool, string, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err != nil {
			return false, err.Error(), nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, url + ": " + resp.Status, nil
	})
}

// insecureLoopbackClient talks to our own daemons on 127.0.0.1, whose
// serving certificates are self-signed.
func insecureLoopbackClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // loopback, our own daemons
}

// run is the demo's one exec seam: argv built here, never a shell. With
// stream set, output goes there as it comes (and is not returned).
func (d *demo) run(ctx context.Context, stdin io.Reader, env []string, stream io.Writer, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = stdin
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if stream != nil {
		cmd.Stdout, cmd.Stderr = stream, stream
	}
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// kubectl runs kubectl against the demo cluster.
func (d *demo) kubectl(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	full := append([]string{"--kubeconfig=" + d.cluster.Kubeconfig, "--cache-dir=" + d.path("kubectl-cache")}, args...)
	return d.run(ctx, stdin, nil, nil, filepath.Join(d.cfg.ToolsDir, "kubectl"), full...)
}

// show runs kubectl and prints the command (as a user would type it, with
// KUBECONFIG exported) and its output.
func (d *demo) show(ctx context.Context, args ...string) (string, error) {
	out, err := d.kubectl(ctx, nil, args...)
	d.p.command("kubectl "+strings.Join(args, " "), out)
	return out, err
}

// helmTemplate renders templates of the chart; values are helm's value
// flags as typed (--set, --set-json and their arguments).
func (d *demo) helmTemplate(ctx context.Context, values []string, templates ...string) (string, error) {
	args := slices.Clone(values)
	for _, t := range templates {
		args = append(args, "--show-only", t)
	}
	out, err := launcher.Template(ctx, filepath.Join(d.cfg.ToolsDir, "helm"), d.cfg.RepoRoot, d.path("helm"), args...)
	return string(out), err
}

// applyManifest writes a manifest into <dir>/manifests (for the user to
// read later) and applies it.
func (d *demo) applyManifest(ctx context.Context, name, manifest string) (string, error) {
	path := d.path("manifests", name)
	if err := os.WriteFile(path, []byte(manifest), 0o644); err != nil {
		return "", err
	}
	return d.kubectl(ctx, nil, "apply", "-f", path)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	default:
		return fmt.Sprintf("%d MiB", n>>20)
	}
}
