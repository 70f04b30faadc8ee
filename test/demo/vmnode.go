/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/cluster"
)

// Step 4 on a kernel without device-mapper: a second node in a QEMU VM
// whose kernel has it (hack/vmrun.sh). Only a node's part runs in the
// emulated guest (kubelet + procruntime, the agent, the CSI node plugin);
// the control plane, the scheduler and the CSI controller stay here, and
// the guest reaches them over QEMU's user network.

// vmNodeName is the VM's node. As NodeName, it is the address the
// apiserver reaches its kubelet at: QEMU forwards 127.0.0.2:<kubelet port>
// on this machine to the guest's kubelet.
const vmNodeName = "127.0.0.2"

// guestHost is this machine's loopback as the guest sees it (QEMU user
// networking); the guest's view of the cluster points there.
const guestHost = "10.0.2.2"

// vmSource is the StatefulSet on the VM's node whose volume is snapshotted
// (step 2's nginx-lvm, on the VM's node).
const vmSource = "nginx-lvm-vm"

// vmDiskSize is the guest's virtio disk (sparse on the host): the 5Gi
// volume, the VolumeSnapshotClass's 4Gi copy-on-write area and the 5Gi
// restored volume fit with room to spare.
const vmDiskSize = "24G"

// vmSlowdown stretches timeouts in the guest: its CPU is emulated (TCG),
// Go runs ~7x and fork/exec 50-100x slower there.
const vmSlowdown = 8

// vmWait bounds the wait for the VM's node: vmrun.sh runs one VM at a
// time, so it may first wait for another one (make test runs the VM
// suites), then boot and start a kubelet on an emulated CPU.
const vmWait = 45 * time.Minute

// vmNode is the running VM node, as the host sees it.
type vmNode struct {
	stopFile string
	lvm      lvmReporter
}

// lvmReporter runs an lvm report command (lvs, vgs, pvs) on a node.
type lvmReporter interface {
	Report(ctx context.Context, command string, args ...string) ([]map[string]string, error)
}

// lvmOn is the lvm of the node that holds a volume.
func (d *demo) lvmOn(node string) lvmReporter {
	if d.vm != nil && node == vmNodeName {
		return d.vm.lvm
	}
	return d.lvm
}

func (d *demo) snapshotInVM(ctx context.Context, res *StepResult) (err error) {
	p := d.p
	if d.cfg.SkipVM {
		return skipped("LVM snapshots need device-mapper, which this kernel lacks, and this run skips the VM")
	}
	if ok, why := capability.Has(capability.VM); !ok {
		return fmt.Errorf("LVM snapshots need device-mapper, which this kernel lacks, and the VM cannot run here: %s", why)
	}
	p.say("LVM snapshots need device-mapper, which this kernel lacks. So this step adds a second node, %s: a throw-away", vmNodeName)
	p.say("QEMU VM (hack/vmrun.sh) whose kernel has it, running what a node runs (the kubelet with procruntime, open-local's")
	p.say("agent and CSI node plugin) from this machine's files, joined to this cluster over QEMU's user network. Its empty")
	p.say("virtio disk /dev/vda becomes %s through the NLSC. The CPU is emulated: expect a minute or more.", VG)
	if err := d.startVMNode(ctx, res); err != nil {
		return errors.Join(err, d.removeVMNode(context.WithoutCancel(ctx), res))
	}
	// Everything on the VM's node runs on an emulated CPU.
	hostSlowdown := d.cfg.Slowdown
	d.cfg.Slowdown = vmSlowdown
	defer func() {
		d.cfg.Slowdown = hostSlowdown
		err = errors.Join(err, d.removeVMNode(context.WithoutCancel(ctx), res))
	}()
	pinned := strings.Replace(statefulSet(vmSource, "open-local-lvm", false, writeOnce),
		"      schedulerName: open-local-scheduler\n",
		"      schedulerName: open-local-scheduler\n      nodeSelector: {kubernetes.io/hostname: \""+vmNodeName+"\"}\n", 1)
	p.say("step 2's nginx-lvm again, pinned to the VM's node with a nodeSelector:")
	out, err := d.applyManifest(ctx, "sts-"+vmSource+".yaml", pinned)
	p.command("kubectl apply -f manifests/sts-"+vmSource+".yaml", out)
	if err != nil {
		return err
	}
	if _, err := d.waitPodRunning(ctx, podOf(vmSource), 5*time.Minute); err != nil {
		return err
	}
	page, err := d.execIn(ctx, podOf(vmSource), "cat /data/index.html")
	if err != nil {
		return err
	}
	if !strings.Contains(page, "written by "+podOf(vmSource)) {
		return fmt.Errorf("pod %s did not write /data/index.html: %q", podOf(vmSource), page)
	}
	p.check(res, "pod %s runs on %s with its open-local-lvm volume, holding the page it wrote", podOf(vmSource), vmNodeName)
	return d.snapshotAndRestore(ctx, res, vmSource)
}

// startVMNode points the NLSC at the VM's disk, boots the VM and waits
// until its node is Ready with open-local's node plugins and the VG.
func (d *demo) startVMNode(ctx context.Context, res *StepResult) error {
	p := d.p
	vmDir := d.path("vm")
	if err := os.MkdirAll(vmDir, 0o755); err != nil {
		return err
	}
	ports, err := cluster.FreePorts(2)
	if err != nil {
		return err
	}
	kubeletPort, reportPort := ports[0], ports[1]
	guestCluster := filepath.Join(vmDir, "cluster")
	if err := d.cluster.ExportForGuest(guestCluster, guestHost); err != nil {
		return err
	}
	nodesConfig := fmt.Sprintf(`[{"selector":{"matchLabels":{"kubernetes.io/hostname":%q}},`+
		`"listConfig":{"vgs":{"include":["open-local-pool-[0-9]+"]}},"resourceToBeInited":{"vgs":[{"name":%q,"devices":["/dev/vda"]}]}}]`,
		vmNodeName, VG)
	values := []string{"--set", "initConfig.device=" + d.disk.Path, "--set-json", "initConfig.nodesConfig=" + nodesConfig}
	manifest, err := d.helmTemplate(ctx, values, "templates/nlsc.yaml")
	if err != nil {
		return err
	}
	p.say("the NLSC gets a nodesConfig entry for the VM's node (its disk is /dev/vda):")
	p.command(fmt.Sprintf("helm template deploy/helm/open-local --show-only templates/nlsc.yaml --set initConfig.device=%s --set-json 'initConfig.nodesConfig=%s' > manifests/nlsc-vm.yaml",
		d.disk.Path, nodesConfig), "")
	out, err := d.applyManifest(ctx, "nlsc-vm.yaml", manifest)
	p.command("kubectl apply -f manifests/nlsc-vm.yaml", out)
	if err != nil {
		return err
	}

	d.vm = &vmNode{stopFile: filepath.Join(vmDir, "stop"),
		lvm: remoteLVM{url: "http://" + loopback(reportPort) + "/report"}}
	bash, err := exec.LookPath("bash")
	if err != nil {
		return err
	}
	if bash, err = filepath.EvalSymlinks(bash); err != nil {
		return err
	}
	shares := []string{vmDir, d.cfg.RepoRoot, d.cfg.ToolsDir}
	for _, prog := range Programs {
		shares = append(shares, filepath.Dir(d.cfg.Binaries[prog]))
	}
	args := []string{filepath.Join(d.cfg.RepoRoot, "hack", "vmrun.sh")}
	for _, s := range uniqueDirs(shares) {
		args = append(args, "-s", s)
	}
	args = append(args, "-d", vmDiskSize, "-w", d.cfg.RepoRoot, "--", d.cfg.Binaries["demo"], "vm-node",
		"--dir=/tmp/open-local/demo-vm", "--cluster="+guestCluster, "--disk=/dev/vda", "--node-name="+vmNodeName,
		"--kubelet-port="+strconv.Itoa(kubeletPort), "--report-port="+strconv.Itoa(reportPort), "--stop-file="+d.vm.stopFile)
	for _, prog := range Programs {
		args = append(args, "--binary="+prog+"="+d.cfg.Binaries[prog])
	}
	env := []string{"VM_NET=1", "VM_MEM=4096", "VM_TIMEOUT=" + strconv.Itoa(int(vmWait.Seconds()*2)),
		"VM_HOSTFWD=" + vmNodeName + ":" + strconv.Itoa(kubeletPort) + " " + loopback(reportPort),
		"VM_CONSOLE=" + filepath.Join(vmDir, "console.log"),
		"VM_ENV=OPEN_LOCAL_TOOLS_DIR=" + d.cfg.ToolsDir + " " + capability.EnvInVM + "=1"}
	// A daemon of the cluster: Down stops it (vmrun.sh then stops QEMU).
	if err := d.cluster.StartDaemon("vm", bash, env, args...); err != nil {
		return err
	}
	p.say("the VM's output follows (vmrun.sh; the guest's daemons log to %s/logs):", guestCluster)
	stopTail := tailLines(d.cluster.DaemonLog("vm"), &prefixWriter{w: p.w, prefix: "   vm│ "})
	defer stopTail()
	start := time.Now()
	err = d.poll(ctx, vmWait, "vm", func(ctx context.Context) (bool, string, error) {
		ok, state, err := nodeReady(ctx, d.kube, vmNodeName)
		if !ok || err != nil {
			return ok, state, err
		}
		if ok, state, err = csiNodeRegistered(ctx, d.kube, vmNodeName); !ok || err != nil {
			return ok, state, err
		}
		nls, err := d.ol.CsiV1alpha1().NodeLocalStorages().Get(ctx, vmNodeName, metav1.GetOptions{})
		if err != nil {
			return false, "no NodeLocalStorage " + vmNodeName + " yet", nil
		}
		vg := findVG(nls, VG)
		return vg != nil && slices.Contains(nls.Status.FilteredStorageInfo.VolumeGroups, VG) && vg.Allocatable > 0,
			fmt.Sprintf("NodeLocalStorage %s: status VGs %v", vmNodeName, vgNames(nls)), nil
	})
	stopTail()
	if err != nil {
		return fmt.Errorf("the VM's node: %w (the VM's output: %s; its daemons' logs: %s/logs)", err, d.cluster.DaemonLog("vm"), guestCluster)
	}
	for _, args := range [][]string{{"get", "nodes", "-o", "wide"}, {"get", "nls", vmNodeName}} {
		if _, err := d.show(ctx, args...); err != nil {
			return err
		}
	}
	rows, err := d.vm.lvm.Report(ctx, "pvs", "-o", "pv_name,vg_name,pv_size")
	if err != nil {
		return fmt.Errorf("lvm in the VM: %w", err)
	}
	p.check(res, "node %s (the VM, device-mapper) Ready after %s: its kubelet registered our CSI node plugin; its agent made %s; lvm in the VM: PV %s in VG %s, %s",
		vmNodeName, time.Since(start).Round(time.Second), VG, rows[0]["pv_name"], rows[0]["vg_name"], humanBytes(atoi64(rows[0]["pv_size"])))
	return nil
}

// removeVMNode deletes the workloads of the VM's node (the agent removes
// their LVs while the VM still runs), stops the VM and deletes its Node,
// so the cluster left to the user has no dead node.
func (d *demo) removeVMNode(ctx context.Context, res *StepResult) error {
	if d.vm == nil {
		return nil
	}
	p := d.p
	var errs []error
	if d.cluster.DaemonAlive("vm") {
		for _, args := range [][]string{
			{"delete", "statefulset,service", snapRestored, vmSource, "--ignore-not-found", "--wait=false"},
			{"delete", "pvc", pvcOf(snapRestored), pvcOf(vmSource), "--ignore-not-found", "--wait=false"},
			{"delete", "volumesnapshot", snapshotName, "--ignore-not-found", "--wait=false"},
		} {
			if _, err := d.show(ctx, args...); err != nil {
				errs = append(errs, err)
			}
		}
		err := d.poll(ctx, 3*time.Minute, "vm", func(ctx context.Context) (bool, string, error) {
			var left []string
			lvs, err := d.ol.CsiV1alpha1().LocalVolumes().List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err.Error(), nil
			}
			for _, lv := range lvs.Items {
				if lv.Spec.NodeName == vmNodeName {
					left = append(left, lv.Name+" "+string(lv.Status.Phase))
				}
			}
			pods, err := d.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + vmNodeName})
			if err != nil {
				return false, err.Error(), nil
			}
			for _, pod := range pods.Items {
				left = append(left, "pod "+pod.Name)
			}
			return len(left) == 0, fmt.Sprintf("left on %s: %v", vmNodeName, left), nil
		})
		if err != nil {
			errs = append(errs, err)
		} else {
			p.check(res, "the VM's workloads deleted: the kubelet unmounted them, the agent removed their LVs and the snapshot")
		}
	}
	// The guest stops its daemons when the stop file appears, then powers off.
	if err := os.WriteFile(d.vm.stopFile, nil, 0o644); err != nil {
		errs = append(errs, err)
	}
	stopped := wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(context.Context) (bool, error) {
		return !d.cluster.DaemonAlive("vm"), nil
	})
	if stopped != nil {
		p.say("the VM did not power off by itself: stopping it")
	}
	if err := d.cluster.StopDaemon("vm", 30*time.Second); err != nil {
		errs = append(errs, err)
	}
	err := d.kube.CoreV1().Nodes().Delete(ctx, vmNodeName, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, err)
	}
	// Back to step 1's NLSC, without the VM's entry.
	if _, err := d.show(ctx, "apply", "-f", d.path("manifests", "nlsc.yaml")); err != nil {
		errs = append(errs, err)
	}
	d.vm = nil
	if len(errs) == 0 {
		p.check(res, "the VM shut down, node %s was deleted (the NLS controller deletes its NodeLocalStorage) and the NLSC is step 1's again", vmNodeName)
	}
	return errors.Join(errs...)
}

// VMNodeOptions say what node VMNode runs.
type VMNodeOptions struct {
	// ClusterDir is the guest's view of the host's cluster (ExportForGuest).
	ClusterDir string
	NodeName   string
	// KubeletPort is the port the kubelet listens on in the guest, the
	// one QEMU forwards from the host.
	KubeletPort int
	// ReportPort serves lvm reports to the host (forwarded the same way).
	ReportPort int
	// StopFile: the node stops once it exists (written by the host).
	StopFile string
}

// VMNode is the guest's side of step 4 (demo vm-node): it runs a node of
// the host's cluster on cfg.Disk (kubelet + procruntime, the agent, the
// CSI node plugin) until o.StopFile exists or ctx ends.
func VMNode(ctx context.Context, cfg Config, o VMNodeOptions) error {
	if cfg.Slowdown == 0 {
		cfg.Slowdown = vmSlowdown
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	c, err := cluster.Attach(o.ClusterDir)
	if err != nil {
		return fmt.Errorf("the host's cluster: %w", err)
	}
	d := &demo{cfg: cfg, p: &printer{w: cfg.Out, start: time.Now()}, cluster: c, kube: c.Client(), ol: c.OpenLocalClient()}
	defer c.Stop()
	if err := os.MkdirAll(d.path("manifests"), 0o755); err != nil {
		return err
	}
	// The forwarded ports are taken first, so that the daemons' own free
	// ports cannot be them.
	reports, err := net.Listen("tcp", ":"+strconv.Itoa(o.ReportPort))
	if err != nil {
		return err
	}
	defer reports.Close()
	kubelet, err := net.Listen("tcp", ":"+strconv.Itoa(o.KubeletPort))
	if err != nil {
		return err
	}
	err = d.initNode(o.NodeName, "0.0.0.0", o.KubeletPort)
	kubelet.Close()
	if err != nil {
		return err
	}
	err = d.setUpParts(ctx, []setUpPart{
		{"node disk", d.setUpDisk},
		{"node", d.setUpNode},
		{"open-local", d.setUpNodePlugins},
	})
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: lvmReportHandler(d.lvm), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(reports) }()
	defer srv.Close()
	d.p.say("node %s is up; it stops when %s appears", o.NodeName, o.StopFile)
	err = wait.PollUntilContextCancel(ctx, time.Second, true, func(context.Context) (bool, error) {
		_, err := os.Stat(o.StopFile)
		return err == nil, nil
	})
	d.p.say("stopping node %s", o.NodeName)
	if err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// lvmReportRequest asks the VM's node for an lvm report.
type lvmReportRequest struct {
	Command string   `json:"command"`
	Args    []string `json:"args"`
}

// lvmReportHandler serves lvm reports (only lvs, vgs and pvs: they change
// nothing) so the host can show what the agent did on the VM's disk.
func lvmReportHandler(lvm lvmReporter) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req lvmReportRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if !slices.Contains([]string{"lvs", "vgs", "pvs"}, req.Command) {
			http.Error(w, fmt.Sprintf("%q is not an lvm report command", req.Command), http.StatusForbidden)
			return
		}
		rows, err := lvm.Report(r.Context(), req.Command, req.Args...)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		_ = json.NewEncoder(w).Encode(rows)
	})
}

// remoteLVM reads lvm reports from the VM's node.
type remoteLVM struct{ url string }

func (r remoteLVM) Report(ctx context.Context, command string, args ...string) ([]map[string]string, error) {
	body, err := json.Marshal(lvmReportRequest{Command: command, Args: args})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("lvm %s in the VM: %s: %s", command, resp.Status, strings.TrimSpace(string(data)))
	}
	var rows []map[string]string
	if err := json.Unmarshal(data, &rows); err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("lvm %s %v in the VM: no rows", command, args)
	}
	return rows, nil
}

// tailLines copies the lines appended to file to w until the returned
// stop is called (safe to call twice); stop copies what is left first.
func tailLines(file string, w *prefixWriter) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		var off int64
		copyNew := func() {
			f, err := os.Open(file)
			if err != nil {
				return
			}
			defer f.Close()
			if _, err := f.Seek(off, io.SeekStart); err == nil {
				n, _ := io.Copy(w, f)
				off += n
			}
		}
		for {
			select {
			case <-ctx.Done():
				copyNew()
				w.flush()
				return
			case <-time.After(time.Second):
				copyNew()
			}
		}
	}()
	return func() { cancel(); <-done }
}

func uniqueDirs(dirs []string) []string {
	var out []string
	for _, d := range dirs {
		if d != "" && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// prefixWriter indents streamed output line by line.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    bytes.Buffer
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf.Write(b)
	for {
		line, err := p.buf.ReadString('\n')
		if err != nil {
			p.buf.WriteString(line) // incomplete: keep for later
			return len(b), nil
		}
		fmt.Fprint(p.w, p.prefix+line)
	}
}

func (p *prefixWriter) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.buf.Len() > 0 {
		fmt.Fprintln(p.w, p.prefix+p.buf.String())
		p.buf.Reset()
	}
}
