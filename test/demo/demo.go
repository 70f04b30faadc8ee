/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package demo is `make demo`: the walkthrough of the open-local article
// (docs: ../shared/seed/open-local-article.md), its eight steps run end to end
// on one machine with real components:
//
//   - the control plane built from source (etcd, kube-apiserver,
//     kube-controller-manager; test/cluster);
//   - one real node, 127.0.0.1: the kubelet with procruntime, a CRI runtime
//     whose images are the host's root filesystem (test/procruntime);
//   - open-local as the chart runs it: the NLS controller, the agent, the CSI
//     driver (controller with csi-provisioner, csi-resizer, csi-snapshotter and
//     snapshot-controller; node plugin registered with the kubelet), the
//     scheduler; the chart's StorageClasses, VolumeSnapshotClass and
//     NodeLocalStorageInitConfig, rendered by helm;
//   - lvm2 on a loop device (metadata mode on kernels without
//     device-mapper, LVs reached through loop devices);
//   - for what this kernel cannot do (step 4 without device-mapper), a
//     second node in a QEMU VM whose kernel can (vmnode.go).
//
// Up prints a step-by-step report and leaves everything running for the
// user; Down removes exactly what Up made (recorded in the demo dir). The
// test in this package runs the same Up and Down, so the demo cannot rot.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/open-local/open-local/test/cluster"
)

// Config says where the demo runs and with which binaries.
type Config struct {
	// Dir holds everything the demo makes (default /tmp/open-local/demo).
	Dir string
	// RepoRoot is the open-local checkout (the chart, hack/vmrun.sh).
	RepoRoot string
	// Binaries are our programs by name: agent, csi, scheduler, procruntime
	// (make build puts them in bin/).
	Binaries map[string]string
	// ToolsDir holds the pinned third-party binaries (hack/tools.sh).
	ToolsDir string
	// Out receives the progress report.
	Out io.Writer
	// DiskSize is the size of the loop device the NLSC turns into a VG
	// (a sparse file: it costs what is written).
	DiskSize int64
	// Disk, when set, is an existing empty block device to use instead of
	// a loop device (the VM's virtio disk).
	Disk string
	// Slowdown multiplies every timeout (the VM emulates its CPU).
	Slowdown float64
	// SkipVM reports a step that would run in the VM (step 4 on kernels
	// without device-mapper) SKIPPED instead of running it. make demo never
	// sets it; TestDemo only where no VM can run or OPEN_LOCAL_DEMO_VM=0.
	SkipVM bool
}

// Programs the demo needs from Config.Binaries ("demo" runs step 4's node
// in the VM on kernels without device-mapper).
var Programs = []string{"agent", "csi", "scheduler", "procruntime", "demo"}

func (c *Config) validate() error {
	if c.Dir == "" || !filepath.IsAbs(c.Dir) || filepath.Clean(c.Dir) != c.Dir || c.Dir == "/" {
		return fmt.Errorf("demo dir %q: want a clean absolute path other than /", c.Dir)
	}
	if c.RepoRoot == "" || c.ToolsDir == "" {
		return errors.New("demo: RepoRoot and ToolsDir are required")
	}
	for _, p := range Programs {
		if _, err := os.Stat(c.Binaries[p]); err != nil {
			return fmt.Errorf("demo: binary %s: %w (make build builds it)", p, err)
		}
	}
	for _, tool := range []string{"kubelet", "kubectl", "helm", "csi-provisioner", "csi-resizer", "csi-snapshotter", "snapshot-controller"} {
		if _, err := os.Stat(filepath.Join(c.ToolsDir, tool)); err != nil {
			return fmt.Errorf("demo: %s missing from %s (hack/tools.sh builds it): %w", tool, c.ToolsDir, err)
		}
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.DiskSize == 0 {
		c.DiskSize = 64 << 30
	}
	if c.Slowdown < 1 {
		c.Slowdown = 1
	}
	return nil
}

// Up removes a previous demo in cfg.Dir, brings the environment up, runs
// the eight steps and prints the report. It returns the report, and an
// error if the environment could not be set up; a failed step is in the
// report (Report.Passed). Everything stays running for the user.
func Up(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p := &printer{w: cfg.Out, start: time.Now()}
	p.printf("open-local demo: the eight steps of the open-local article, on this machine (%s)\n", cfg.Dir)
	if _, err := os.Stat(cfg.Dir); err == nil {
		p.say("removing the previous demo in %s first", cfg.Dir)
		if err := Down(ctx, cfg.Dir, cfg.Out); err != nil {
			return nil, fmt.Errorf("remove the previous demo: %w", err)
		}
	}
	rep := &Report{}
	d := &demo{cfg: cfg, p: p}
	start := time.Now()
	err := d.setUp(ctx)
	rep.Setup = time.Since(start)
	if d.cluster != nil {
		rep.Kubeconfig = d.cluster.Kubeconfig
	}
	if err != nil {
		rep.SetupError = err.Error()
		p.printf("   FAIL setting up: %v\n", err)
	} else {
		for _, s := range d.steps() {
			rep.Steps = append(rep.Steps, d.runStep(ctx, s))
		}
	}
	rep.Total = time.Since(start)
	p.summary(rep)
	if data, jerr := json.MarshalIndent(rep, "", "  "); jerr == nil {
		_ = os.WriteFile(filepath.Join(cfg.Dir, "report.json"), data, 0o644)
	}
	if d.cluster != nil {
		p.printf("\nThe cluster keeps running for you to explore:\n")
		p.printf("   export KUBECONFIG=%s\n", d.cluster.Kubeconfig)
		p.printf("   %s get nodes,pods,pvc,pv,nlsc,nls,lvol,volumesnapshot -o wide\n", filepath.Join(cfg.ToolsDir, "kubectl"))
		p.printf("   logs of every component: %s/cluster/logs; the applied manifests: %s/manifests\n", cfg.Dir, cfg.Dir)
		p.printf("make demo-down removes everything the demo made.\n")
	}
	if err != nil {
		return rep, err
	}
	return rep, nil
}

// step is one of the eight steps.
type step struct {
	number int
	title  string
	run    func(ctx context.Context, res *StepResult) error
}

func (d *demo) runStep(ctx context.Context, s step) StepResult {
	res := StepResult{Number: s.number, Title: s.title}
	d.p.section(fmt.Sprintf("%d. %s", s.number, s.title))
	start := time.Now()
	err := s.run(ctx, &res)
	res.Took = time.Since(start)
	res.Status = stepStatus(err)
	if err != nil {
		res.Reason = err.Error()
	}
	d.p.result(&res)
	return res
}

// Down removes the demo in dir: its workloads (so the kubelet and the CSI
// driver unmount and the agent removes the LVs), every process, mount,
// loop device, cgroup and kubelet path it made, and dir itself. Safe to
// repeat; it removes only what the demo's records name.
func Down(ctx context.Context, dir string, out io.Writer) error {
	if out == nil {
		out = io.Discard
	}
	dir = filepath.Clean(dir)
	report := func(msg string) { fmt.Fprintf(out, "   %s\n", msg) }
	var errs []error
	clusterDir := filepath.Join(dir, "cluster")
	if c, err := cluster.Attach(clusterDir); err == nil {
		if err := removeWorkloads(ctx, c, report); err != nil {
			// Not fatal: what is left is unmounted and detached below.
			report(fmt.Sprintf("workloads not removed cleanly (%v); cleaning up underneath", err))
		}
		c.Stop()
		report("stopped the control plane, the kubelet and open-local")
	} else if c, err := cluster.LoadState(clusterDir); err == nil {
		c.Stop()
		report("stopped what was left of the demo's processes")
	}
	host, err := loadHostState(dir)
	switch {
	case err == nil:
		if err := host.teardown(ctx, report); err != nil {
			errs = append(errs, err)
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("demo teardown incomplete (%s kept for another try): %w", dir, errors.Join(errs...))
	}
	if mps, _ := mountsBelow(dir); len(mps) > 0 {
		return fmt.Errorf("%s still has mounts %v: not removing it", dir, mps)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	report("removed " + dir)
	return nil
}
