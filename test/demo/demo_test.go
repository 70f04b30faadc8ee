/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package demo

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/cluster"
)

// TestDemo runs `make demo` and `make demo-down` as the README's first
// command does (same Up and Down, with freshly built binaries), so the
// walkthrough cannot rot: every step must pass, and Down must leave no
// mount, loop device or directory behind.
//
// On a kernel without device-mapper, step 4 adds the QEMU VM as a second
// node; where no VM can run, it is skipped with the reason. A developer
// may skip it with OPEN_LOCAL_DEMO_VM=0 (CI never does).
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo starts a control plane, a kubelet and open-local")
	}
	capability.Require(t, capability.Root, capability.LoopDevices, capability.LVM, capability.Ext4, capability.XFS)
	skipVM := false
	if ok, why := capability.Has(capability.DeviceMapper); !ok {
		vm, whyNoVM := capability.Has(capability.VM)
		switch {
		case os.Getenv("OPEN_LOCAL_DEMO_VM") == "0":
			skipVM = true
			t.Logf("no device-mapper (%s): step 4 (snapshot and restore) is SKIPPED as OPEN_LOCAL_DEMO_VM=0 asks", why)
		case !vm:
			skipVM = true
			t.Logf("no device-mapper (%s) and no VM (%s): step 4 (snapshot and restore) is SKIPPED", why, whyNoVM)
			// Where the VM is a required capability (CI), its absence fails.
			t.Run("vm-for-step-4", func(t *testing.T) { capability.Require(t, capability.VM) })
		default:
			t.Logf("no device-mapper (%s): step 4 runs on a second node in the VM", why)
		}
	}
	ctx := t.Context()
	if dl, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-3*time.Minute)) // room for Down
		defer cancel()
	}
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	tools, err := cluster.ToolsDir(ctx)
	if err != nil {
		t.Fatal(err)
	}
	packages := map[string]string{"agent": "./agent", "csi": "./csi", "scheduler": "./scheduler",
		"procruntime": "./hack/procruntime", "demo": "./hack/demo"}
	bins := map[string]string{}
	for _, prog := range Programs {
		pkg, ok := packages[prog]
		if !ok {
			t.Fatalf("no package for the demo's program %s", prog)
		}
		bins[prog] = cluster.Binary(t, pkg)
	}
	// Not t.TempDir: the VM shares the dir by path, and Down removes it.
	dir, err := os.MkdirTemp("", "open-local-demo-test-")
	if err != nil {
		t.Fatal(err)
	}
	down := func() {
		if err := Down(context.WithoutCancel(ctx), dir, t.Output()); err != nil {
			t.Errorf("demo down: %v", err)
		}
	}
	rep, err := Up(ctx, Config{Dir: dir, RepoRoot: root, ToolsDir: tools, Binaries: bins, Out: t.Output(), SkipVM: skipVM})
	if err != nil {
		down()
		t.Fatalf("demo up: %v", err)
	}
	for _, s := range rep.Steps {
		if s.Status == Skipped && skipVM && s.Number == 4 {
			continue
		}
		if s.Status != Pass {
			t.Errorf("step %d (%s): %s: %s", s.Number, s.Title, s.Status, s.Reason)
		}
	}
	if len(rep.Steps) != 8 {
		t.Errorf("%d steps ran, want the article's 8", len(rep.Steps))
	}
	down()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("demo down left %s: %v", dir, err)
	}
	if mps, _ := mountsBelow(dir); len(mps) > 0 {
		t.Errorf("demo down left mounts %v", mps)
	}
	loops, err := attachedLoops()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range loops {
		if strings.HasPrefix(l.backing, dir+string(filepath.Separator)) {
			t.Errorf("demo down left loop device %s on %s", l.dev.Path, l.backing)
		}
	}
}
