/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package vm

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-local/open-local/test/capability"
)

// TestDeviceMapperSuiteInVM is the one test that boots a VM: it runs every
// entry of Suites inside it. CI requires capabilities vm and root, so on the
// CI host it cannot skip.
func TestDeviceMapperSuiteInVM(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: boots the QEMU VM; run without -short (make test)")
	}
	capability.Require(t, capability.VM, capability.Root)
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// t.Context() has no deadline; give the VM one that ends before go
	// test's -timeout panic, so a slow VM fails with its own message and
	// QEMU is shut down cleanly.
	ctx := t.Context()
	if dl, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-15*time.Second))
		defer cancel()
	}
	suites := Suites
	if re := os.Getenv(EnvSuites); re != "" {
		// A developer's shortcut; CI runs them all.
		if suites, err = selectSuites(Suites, re); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s=%s: %d of %d suites", EnvSuites, re, len(suites), len(Suites))
	}
	rep, err := Run(ctx, Options{RepoRoot: root, Dir: t.TempDir(), Suites: suites, Output: t.Output()})
	t.Logf("build %v, VM %v (guest booted in %v)", rep.Build.Round(time.Millisecond), rep.VM.Round(time.Millisecond), rep.GuestBoot.Round(100*time.Millisecond))
	for _, r := range rep.Results {
		t.Logf("in VM: %s", r)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestBinaryName(t *testing.T) {
	tests := []struct {
		pkg, want string
		wantErr   bool
	}{
		{pkg: "./test/loopvg", want: "test_loopvg"},
		{pkg: "./agent/lvm/", want: "agent_lvm"},
		{pkg: "./csi", want: "csi"},
		{pkg: "test/loopvg", wantErr: true}, // an import path, not a directory
		{pkg: "./", wantErr: true},
		{pkg: "./../x", wantErr: true},
		{pkg: "/abs/pkg", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			got, err := binaryName(tt.pkg)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("binaryName(%q) = %q, %v; want %q, err=%v", tt.pkg, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestSuitesAreValid(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range Suites {
		name, err := binaryName(s.Package)
		if err != nil {
			t.Error(err)
		}
		if seen[name] {
			t.Errorf("package %s listed twice: merge the patterns", s.Package)
		}
		seen[name] = true
		if s.Run == "" {
			t.Errorf("suite %s has no -test.run pattern", s.Package)
		}
	}
}

func TestJoinCaps(t *testing.T) {
	got := joinCaps(append(append([]capability.Capability{}, GuestRequire...), capability.Root, capability.CgroupV2IO))
	if want := "device-mapper,root,loop,lvm,cgroup-v2-io"; got != want {
		t.Fatalf("joinCaps = %q, want %q", got, want)
	}
}

func TestModulePathOf(t *testing.T) {
	tests := []struct{ gomod, want string }{
		{"module github.com/open-local/open-local\n\ngo 1.26.0\n", ModulePath},
		{"// comment\nmodule \"example.com/x\"\n", "example.com/x"},
		{"go 1.26\n", ""},
	}
	for _, tt := range tests {
		if got := modulePathOf([]byte(tt.gomod)); got != tt.want {
			t.Errorf("modulePathOf(%q) = %q, want %q", tt.gomod, got, tt.want)
		}
	}
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "hack", "vmrun.sh")); err != nil {
		t.Fatalf("RepoRoot %s has no hack/vmrun.sh: %v", root, err)
	}
}

func TestCheckStatic(t *testing.T) {
	// A distribution binary is dynamically linked.
	ls, err := exec.LookPath("ls")
	if err != nil {
		t.Skip("no ls")
	}
	if err := checkStatic(ls); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("checkStatic(%s) = %v, want dynamically linked", ls, err)
	}
}

// TestRunPlanOnHost runs the whole host+guest flow with the guest command run
// directly on this machine instead of in a VM: build, plan, driver, results,
// and the driver's failure detection.
func TestRunPlanOnHost(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three test binaries")
	}
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dmHere, _ := capability.Has(capability.DeviceMapper)
	suites := []Suite{
		{Package: "./test/capability", Run: "^TestParseRequired$"},
		// On a host without device-mapper the smoke test must FAIL here, not
		// skip: the plan's environment requires device-mapper.
		{Package: "./test/loopvg", Run: "^TestDeviceMapperSmoke$"},
		{Package: "./hack/loopvg", Run: "^TestNoSuchTest$"},
	}
	dir := t.TempDir()
	rep, err := Run(t.Context(), Options{
		RepoRoot: root, Dir: dir, Suites: suites, Output: t.Output(),
		boot: func(ctx context.Context, argv []string, out io.Writer) error {
			cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
			cmd.Stdout, cmd.Stderr = out, out
			return cmd.Run()
		},
	})
	if err == nil {
		t.Fatal("Run succeeded although a suite matched no tests")
	}
	t.Logf("expected error: %v", err)
	if len(rep.Results) != 3 {
		t.Fatalf("results: %v", rep.Results)
	}
	if !rep.Results[0].Passed() {
		t.Errorf("capability suite: %s", rep.Results[0])
	}
	if smoke := rep.Results[1]; smoke.Passed() == !dmHere {
		t.Errorf("smoke suite with device-mapper=%v: %s", dmHere, smoke)
	}
	if r := rep.Results[2]; r.Passed() || !strings.Contains(r.Error, "matched no tests") {
		t.Errorf("empty suite: %s", r)
	}
	for _, r := range rep.Results {
		if !strings.Contains(err.Error(), r.Name) && !r.Passed() {
			t.Errorf("error does not name failed binary %s: %v", r.Name, err)
		}
	}
	for _, bin := range []string{"test_capability.test", "test_loopvg.test", "hack_loopvg.test", guestDriverBin} {
		if err := checkStatic(filepath.Join(dir, bin)); err != nil {
			t.Error(err)
		}
	}
}

func TestRunRejectsDuplicatePackages(t *testing.T) {
	_, err := Build(t.Context(), ".", t.TempDir(), []Suite{{Package: "./a", Run: "x"}, {Package: "./a/", Run: "y"}}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "twice") {
		t.Fatalf("err = %v", err)
	}
}

// Suites that use the local cluster get the host's tools (Run starts the
// cluster on the host), statically built binaries of ours (compiling in the
// emulated guest takes minutes), and the VM more memory.
func TestBuildForClusterSuites(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a test binary and a command")
	}
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("OPEN_LOCAL_TOOLS_DIR", "/opt/tools-of-this-test")
	dir := t.TempDir()
	plan, err := Build(t.Context(), root, dir, []Suite{{Package: "./test/capability", Run: "^TestRequire", Cluster: true,
		Binaries: []string{"./hack/loopvg"}}}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin", "hack-loopvg")
	if !plan.Cluster || plan.ToolsDir != "/opt/tools-of-this-test" || len(plan.Binaries) != 1 || plan.Binaries[0] != bin {
		t.Fatalf("plan = %+v, want the cluster and %s", plan, bin)
	}
	if err := checkStatic(bin); err != nil {
		t.Error(err)
	}
	env := strings.Join(plan.Entries[0].Env, " ")
	for _, want := range []string{"OPEN_LOCAL_BIN_DIR=" + filepath.Join(dir, "bin"), "OPEN_LOCAL_TOOLS_DIR=/opt/tools-of-this-test"} {
		if !strings.Contains(env, want) {
			t.Errorf("guest env %q lacks %s", env, want)
		}
	}
}
