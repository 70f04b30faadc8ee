/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package vm runs the tests that need device-mapper (LV activation,
// snapshots, thin pools, online resize, cgroup v2 io.max) inside one
// throw-away QEMU VM, because the CI host's kernel has no device-mapper.
//
// The host builds each package's tests into a static binary (CGO_ENABLED=0,
// so nothing from the host's libc is needed, although the guest root is the
// host root anyway), plus a small guest driver (test/vm/guest). hack/vmrun.sh
// boots the VM with the build directory shared at the same path; the driver
// runs every binary in turn with OPEN_LOCAL_IN_VM=1 and
// OPEN_LOCAL_REQUIRE_CAPS listing device-mapper, root, loop and lvm, so those
// tests cannot skip silently in the VM. Output is streamed to the test log and
// any failing binary fails the host test.
//
// A VM boot costs ~15 s under TCG emulation, so all suites share ONE boot per
// `go test` run of this package: add packages to Suites instead of booting
// more VMs.
package vm

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/cluster"
)

// Suite is one package's tests to run in the VM.
type Suite struct {
	// Package is the package directory relative to the repository root,
	// e.g. "./test/loopvg".
	Package string
	// Run is the -test.run pattern; it must match at least one test.
	Run string
	// Require lists capabilities the guest must have for this suite beyond
	// GuestRequire (e.g. capability.CgroupV2IO for IO throttling tests).
	Require []capability.Capability
	// Cluster: the tests use the local cluster (test/cluster); Run starts
	// one on the host that all such suites share, reached by the guest over
	// QEMU's user network, and the VM gets more memory.
	Cluster bool
	// Binaries are main packages (e.g. "./agent") the tests run through
	// cluster.Binary: built statically on the host, since compiling in the
	// emulated guest takes minutes.
	Binaries []string
}

// Suites is the one list of device-mapper tests run in the VM. Later issues
// append their packages here.
var Suites = []Suite{
	// The smoke test, plus the teardown of a VG with an active LV: the
	// deactivation path of loopvg.Down exists only in full mode.
	{Package: "./test/loopvg", Run: "^(TestDeviceMapperSmoke|TestTeardownAfterFailedTest)$"},
	// The LVM layer: DM activation, classic and thin snapshots, thin pools, striping.
	{Package: "./lvm", Run: "^TestDeviceMapper"},
	// The CSI node service on real /dev/<vg>/<lv>: stage, publish, raw block,
	// online ext4 and xfs growth (CAP_SYS_RESOURCE), Aborted, bad input, and
	// IO limits measured under cgroup v2 io.max (TestNodeIOLimits*).
	{Package: "./csi/node", Run: "^TestNode", Require: []capability.Capability{capability.Ext4, capability.XFS, capability.CapSysResource, capability.CgroupV2IO}},
	// The LocalVolume reconciler with real activation: lvcreate, lvextend of an
	// active LV, deactivate + lvremove; classic and thin snapshots, their
	// growth and overflow, read-only, thin and block-copy restores, the
	// deletion order, thin clones (thin snapshots of the source) (against the
	// local cluster on the host).
	{Package: "./agent/volumes", Run: "^(TestDeviceMapper|TestSnapshotRefusals$)", Cluster: true},
	// The agent binary creates the thin pool its configuration names and
	// reports it with its overprovision ratio.
	{Package: "./agent", Run: "^TestAgentThinPool$", Cluster: true, Binaries: []string{"./agent"}},
	// csi-sanity's snapshot specs (thick and thin), which need device-mapper.
	{Package: "./csi/sanity/snapshots", Run: "^TestSanitySnapshots$", Cluster: true,
		Require: []capability.Capability{capability.XFS}},
	// VolumeSnapshots end to end: snapshot-controller, csi-snapshotter,
	// csi-provisioner, our scheduler, controller, node plugin and agent.
	{Package: "./csi/snapshot", Run: "^TestSnapshotAndRestore$", Cluster: true,
		Binaries: []string{"./agent", "./csi", "./scheduler"}, Require: []capability.Capability{capability.Ext4}},
}

// EnvSuites, when set, is a regular expression: TestDeviceMapperSuiteInVM
// runs only the suites whose package matches (a developer's shortcut).
const EnvSuites = "OPEN_LOCAL_VM_SUITES"

// selectSuites returns the suites whose package matches re.
func selectSuites(suites []Suite, re string) ([]Suite, error) {
	r, err := regexp.Compile(re)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvSuites, err)
	}
	var out []Suite
	for _, s := range suites {
		if r.MatchString(s.Package) {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s=%q matches no suite", EnvSuites, re)
	}
	return out, nil
}

// GuestRequire is what every test binary in the VM may rely on: a missing
// one fails the test instead of skipping it.
var GuestRequire = []capability.Capability{
	capability.DeviceMapper, capability.Root, capability.LoopDevices, capability.LVM,
}

// clusterVMMemory is the guest memory (MiB) when suites use the local
// cluster (unless VM_MEM says otherwise).
const clusterVMMemory = "4096"

// ModulePath is this repository's module; RepoRoot looks for its go.mod.
const ModulePath = "github.com/open-local/open-local"

// guestDriverPkg is the package of the program that runs the plan in the VM.
const guestDriverPkg = "./test/vm/guest"

// Options configure Run.
type Options struct {
	// RepoRoot is the repository root (see RepoRoot).
	RepoRoot string
	// Dir receives the binaries, the plan and the results, and is shared
	// read-write with the guest at the same path. It must be empty.
	Dir string
	// Suites to run; see Suites.
	Suites []Suite
	// Output receives build errors, vmrun.sh messages and the guest's
	// streamed test output.
	Output io.Writer

	// boot replaces hack/vmrun.sh in unit tests: it gets the guest command.
	boot func(ctx context.Context, guestArgv []string, out io.Writer) error
}

// Report is what one Run did.
type Report struct {
	Results []Result
	// Build is the time spent compiling test binaries on the host.
	Build time.Duration
	// VM is the wall time of the VM run: boot, all binaries, shutdown.
	VM time.Duration
	// GuestBoot is the guest's uptime when the driver started, i.e. the boot.
	GuestBoot time.Duration
}

// Run builds the suites' test binaries, boots one VM, runs them all inside,
// and returns their results. The error is non-nil if a build failed, the VM
// failed, or any binary failed.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if opts.Output == nil {
		opts.Output = io.Discard
	}
	rep := &Report{}
	start := time.Now()
	plan, err := Build(ctx, opts.RepoRoot, opts.Dir, opts.Suites, opts.Output)
	if err != nil {
		return rep, err
	}
	rep.Build = time.Since(start)
	if plan.Cluster {
		stop, err := hostCluster(ctx, plan, opts.Dir, opts.Output)
		if err != nil {
			return rep, fmt.Errorf("local cluster for the guest: %w", err)
		}
		defer stop()
	}
	planPath := filepath.Join(opts.Dir, planFile)
	if err := writeJSON(planPath, plan); err != nil {
		return rep, err
	}

	guestArgv := []string{filepath.Join(opts.Dir, guestDriverBin), planPath}
	boot := opts.boot
	if boot == nil {
		memory := ""
		if plan.Cluster {
			// CSI sidecars and our daemons, beside the guest's tmpfs root
			// overlay and loop files.
			memory = clusterVMMemory
		}
		boot = func(ctx context.Context, argv []string, out io.Writer) error {
			return bootVM(ctx, opts.RepoRoot, opts.Dir, memory, plan.Cluster, argv, out)
		}
	}
	start = time.Now()
	bootErr := boot(ctx, guestArgv, opts.Output)
	rep.VM = time.Since(start)

	var gr guestReport
	readErr := readJSON(filepath.Join(opts.Dir, resultsFile), &gr)
	rep.Results, rep.GuestBoot = gr.Results, gr.Uptime
	switch {
	case readErr != nil && bootErr != nil:
		return rep, fmt.Errorf("VM run failed without results: %w (results: %v)", bootErr, readErr)
	case readErr != nil:
		return rep, fmt.Errorf("VM run left no results: %w", readErr)
	}
	var failed []string
	for _, r := range rep.Results {
		if !r.Passed() {
			failed = append(failed, r.String())
		}
	}
	if len(rep.Results) != len(plan.Entries) {
		failed = append(failed, fmt.Sprintf("%d of %d binaries reported", len(rep.Results), len(plan.Entries)))
	}
	if len(failed) > 0 {
		return rep, errors.Join(bootErr, errors.New("in VM: "+strings.Join(failed, "; ")))
	}
	return rep, bootErr
}

// Build compiles a static test binary per suite and the guest driver into
// dir, and returns the plan that runs them.
func Build(ctx context.Context, repoRoot, dir string, suites []Suite, out io.Writer) (*Plan, error) {
	if len(suites) == 0 {
		return nil, errors.New("vm: no suites")
	}
	// Validate everything before spending minutes compiling.
	names := make([]string, len(suites))
	for i, s := range suites {
		name, err := binaryName(s.Package)
		if err != nil {
			return nil, err
		}
		if slices.Contains(names, name) {
			// One binary per package: merge patterns into one Suite instead.
			return nil, fmt.Errorf("vm: package %s listed twice in suites", s.Package)
		}
		if s.Run == "" {
			return nil, fmt.Errorf("vm: suite %s has no -test.run pattern", s.Package)
		}
		names[i] = name
	}
	plan := &Plan{}
	binDir := filepath.Join(dir, "bin")
	for i, s := range suites {
		name := names[i]
		bin := filepath.Join(dir, name+".test")
		if err := goBuild(ctx, repoRoot, out, "test", "-c", "-o", bin, s.Package); err != nil {
			return nil, err
		}
		entry := PlanEntry{
			Name:   name,
			Binary: bin,
			Dir:    filepath.Join(repoRoot, filepath.FromSlash(s.Package)),
			Args:   []string{"-test.v", "-test.run", s.Run},
			Env: []string{
				capability.EnvInVM + "=1",
				capability.EnvRequire + "=" + joinCaps(append(append([]capability.Capability{}, GuestRequire...), s.Require...)),
			},
		}
		for _, pkg := range s.Binaries {
			p := filepath.Join(binDir, cluster.BinaryName(pkg))
			if _, err := os.Stat(p); err != nil {
				if err := goBuild(ctx, repoRoot, out, "build", "-o", p, pkg); err != nil {
					return nil, err
				}
				plan.Binaries = append(plan.Binaries, p)
			}
		}
		if len(s.Binaries) > 0 {
			entry.Env = append(entry.Env, cluster.EnvBinDir+"="+binDir)
		}
		if s.Cluster && !plan.Cluster {
			tools, err := cluster.ToolsDir(ctx)
			if err != nil {
				return nil, err
			}
			plan.Cluster, plan.ToolsDir = true, tools
		}
		if s.Cluster {
			entry.Env = append(entry.Env, "OPEN_LOCAL_TOOLS_DIR="+plan.ToolsDir)
		}
		plan.Entries = append(plan.Entries, entry)
	}
	if err := goBuild(ctx, repoRoot, out, "build", "-o", filepath.Join(dir, guestDriverBin), guestDriverPkg); err != nil {
		return nil, err
	}
	for _, p := range append(append([]string{filepath.Join(dir, guestDriverBin)}, entryBinaries(plan)...), plan.Binaries...) {
		if err := checkStatic(p); err != nil {
			return nil, err
		}
	}
	return plan, nil
}

// binaryName turns "./test/loopvg" into "test_loopvg": unique per package,
// unlike the package's base name.
func binaryName(pkg string) (string, error) {
	rel := strings.TrimPrefix(filepath.ToSlash(filepath.Clean(pkg)), "./")
	if rel == "." || rel == "" || strings.HasPrefix(rel, "../") || filepath.IsAbs(pkg) || !strings.HasPrefix(pkg, "./") {
		return "", fmt.Errorf("vm: package %q must be a directory below the repository root, like ./test/loopvg", pkg)
	}
	return strings.ReplaceAll(rel, "/", "_"), nil
}

func entryBinaries(p *Plan) []string {
	var bins []string
	for _, e := range p.Entries {
		bins = append(bins, e.Binary)
	}
	return bins
}

func joinCaps(cs []capability.Capability) string {
	var s []string
	for _, c := range cs {
		if !slices.Contains(s, string(c)) {
			s = append(s, string(c))
		}
	}
	return strings.Join(s, ",")
}

// goBuild runs the go command with CGO_ENABLED=0 in the repository root.
// Static binaries are what the guest needs: it has the host's root
// filesystem, but nothing guarantees the host's libc matches a cgo build.
func goBuild(ctx context.Context, repoRoot string, out io.Writer, args ...string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = out, io.MultiWriter(out, &stderr)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// checkStatic refuses a dynamically linked binary (one with an ELF
// interpreter), which a cgo-enabled build or an external linker would produce.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("vm: %s is dynamically linked; the guest needs static binaries", path)
		}
	}
	return nil
}

// bootVM runs hack/vmrun.sh, sharing dir with the guest, and streams the
// guest's output. vmrun.sh's exit status is the guest command's.
func bootVM(ctx context.Context, repoRoot, dir, memory string, network bool, guestArgv []string, out io.Writer) error {
	script := filepath.Join(repoRoot, "hack", "vmrun.sh")
	// The guest sees the host root, but with fresh /tmp and /run: a checkout
	// there (CI clones anywhere) would be invisible, so share it explicitly.
	argv := append([]string{"-s", dir, "-s", repoRoot, "-w", repoRoot, "--"}, guestArgv...)
	cmd := exec.CommandContext(ctx, script, argv...)
	cmd.Env = append(os.Environ(), "VM_CONSOLE="+filepath.Join(dir, "console.log"))
	if memory != "" && os.Getenv("VM_MEM") == "" {
		cmd.Env = append(cmd.Env, "VM_MEM="+memory)
	}
	if network {
		cmd.Env = append(cmd.Env, "VM_NET=1")
	}
	if dl, ok := ctx.Deadline(); ok {
		// Let vmrun.sh's own timeout fire first: it kills QEMU and says so.
		secs := int(time.Until(dl).Seconds()) - 20
		if secs < 60 {
			secs = 60
		}
		cmd.Env = append(cmd.Env, "VM_TIMEOUT="+strconv.Itoa(secs))
	}
	cmd.Stdout, cmd.Stderr = out, out
	// vmrun.sh traps TERM and kills QEMU; SIGKILL (the default on cancel)
	// would orphan QEMU until its own timeout.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	// If this test process dies (go test -timeout panics), take vmrun.sh and
	// hence QEMU with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	err := cmd.Run()
	if ctx.Err() != nil {
		return fmt.Errorf("%s stopped (%v): %w%s", script, err, ctx.Err(), consoleTail(filepath.Join(dir, "console.log")))
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() != 124 && exit.ExitCode() != 125 {
		// The guest command's own status: its output already explains it.
		return fmt.Errorf("%s: guest command: %w", script, err)
	}
	if err != nil {
		// 124 = timeout, 125 = the VM died without a result: the kernel
		// console says why.
		return fmt.Errorf("%s: %w%s", script, err, consoleTail(filepath.Join(dir, "console.log")))
	}
	return nil
}

// consoleTail returns the end of the VM's kernel console log, which explains
// a VM that died.
func consoleTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 20 {
			lines = lines[1:]
		}
	}
	return "\nconsole (" + path + "):\n" + strings.Join(lines, "\n")
}

// RepoRoot finds the repository root: the nearest directory at or above the
// working directory whose go.mod declares ModulePath. go test runs a test in
// its package directory, so this works from any package.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && modulePathOf(b) == ModulePath {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("vm: no go.mod of %s above the working directory", ModulePath)
		}
		dir = parent
	}
}

func modulePathOf(gomod []byte) string {
	for _, l := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// guestHostAddress is where a QEMU user-network guest reaches the host's
// 127.0.0.1 (hack/vmrun.sh VM_NET=1).
const guestHostAddress = "10.0.2.2"

// hostCluster starts the local cluster the plan's entries share, here on the
// host, and writes the guest's view of it into dir (shared with the guest).
// stop ends it, keeping its logs in dir.
func hostCluster(ctx context.Context, plan *Plan, dir string, out io.Writer) (stop func(), err error) {
	cdir, err := os.MkdirTemp("", "open-local-vm-cluster-")
	if err != nil {
		return nil, err
	}
	start := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{Dir: cdir, ToolsDir: plan.ToolsDir})
	if err != nil {
		return nil, err
	}
	plan.ClusterDir = filepath.Join(dir, "cluster")
	if err := c.ExportForGuest(plan.ClusterDir, guestHostAddress); err != nil {
		c.Stop()
		return nil, err
	}
	fmt.Fprintf(out, "=== vm: local cluster up on the host in %v; the guest reaches it at %s\n", time.Since(start).Round(100*time.Millisecond), c.Server())
	return func() {
		c.Stop()
		logs := filepath.Join(dir, "cluster-logs")
		if err := os.Rename(filepath.Join(cdir, "logs"), logs); err == nil {
			fmt.Fprintf(out, "=== vm: local cluster logs in %s\n", logs)
		}
		_ = os.RemoveAll(cdir)
	}, nil
}
