/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package vm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/open-local/open-local/test/capability"
)

// Files in the shared directory.
const (
	planFile       = "plan.json"
	resultsFile    = "results.json"
	guestDriverBin = "vm-guest"
)

// Plan is what the guest driver runs, written by the host as plan.json.
type Plan struct {
	Entries []PlanEntry `json:"entries"`
	// Binaries are the prebuilt main packages the entries use.
	Binaries []string `json:"binaries,omitempty"`
	// Cluster: some entries use the local cluster, with the tool binaries
	// in ToolsDir. Run starts one on the host for all of them and writes
	// the guest's view of it (cluster.ExportForGuest) to ClusterDir, which
	// the driver gives the entries as OPEN_LOCAL_CLUSTER_DIR: a control
	// plane in the emulated guest takes minutes to start and crawls.
	Cluster    bool   `json:"cluster,omitempty"`
	ToolsDir   string `json:"toolsDir,omitempty"`
	ClusterDir string `json:"clusterDir,omitempty"`
}

// PlanEntry is one test binary to run in the guest.
type PlanEntry struct {
	Name   string `json:"name"`
	Binary string `json:"binary"`
	// Dir is the working directory, the package's source directory, as
	// under go test (testdata/ is found relative to it).
	Dir  string   `json:"dir"`
	Args []string `json:"args"`
	// Env is added to the guest's environment.
	Env []string `json:"env"`
}

// Result is the outcome of one test binary in the guest.
type Result struct {
	Name     string        `json:"name"`
	ExitCode int           `json:"exitCode"`
	Duration time.Duration `json:"duration"`
	// Skipped counts "--- SKIP" lines, so the host log shows skips in the VM.
	Skipped int `json:"skipped"`
	// Error explains a failure that is not a test failure (no tests matched,
	// the binary could not start).
	Error string `json:"error,omitempty"`
}

// Passed reports whether the binary ran tests and they passed.
func (r Result) Passed() bool { return r.ExitCode == 0 && r.Error == "" }

func (r Result) String() string {
	s := fmt.Sprintf("%s: exit %d in %v", r.Name, r.ExitCode, r.Duration.Round(time.Millisecond))
	if r.Skipped > 0 {
		s += fmt.Sprintf(", %d skipped", r.Skipped)
	}
	if r.Error != "" {
		s += ": " + r.Error
	}
	return s
}

// guestReport is results.json.
type guestReport struct {
	// Uptime is the guest's uptime when the driver started: the boot time.
	Uptime  time.Duration `json:"uptime"`
	Results []Result      `json:"results"`
}

// GuestMain is the guest driver's main (test/vm/guest): it runs the plan at
// args[0], streams output to out, writes results.json beside the plan and
// returns the exit status (0 only if every binary passed).
func GuestMain(ctx context.Context, args []string, out io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(out, "usage: vm-guest PLAN.json")
		return 2
	}
	planPath := args[0]
	// This process is in the VM too (cluster start timeouts depend on it).
	_ = os.Setenv(capability.EnvInVM, "1")
	var plan Plan
	if err := readJSON(planPath, &plan); err != nil {
		fmt.Fprintln(out, "vm-guest:", err)
		return 1
	}
	rep := guestReport{Uptime: uptime()}
	fmt.Fprintf(out, "=== vm: guest up after %v; capabilities:\n%s", rep.Uptime.Round(100*time.Millisecond), capability.Report())
	if plan.Cluster {
		if plan.ClusterDir == "" {
			fmt.Fprintln(out, "vm-guest: the plan uses the local cluster but names no cluster dir")
			return 1
		}
		for i := range plan.Entries {
			plan.Entries[i].Env = append(plan.Entries[i].Env, "OPEN_LOCAL_CLUSTER_DIR="+plan.ClusterDir)
		}
	}
	rep.Results = RunPlan(ctx, &plan, out)
	status := 0
	for _, r := range rep.Results {
		fmt.Fprintf(out, "=== vm: %s\n", r)
		if !r.Passed() {
			status = 1
		}
	}
	if err := writeJSON(filepath.Join(filepath.Dir(planPath), resultsFile), rep); err != nil {
		fmt.Fprintln(out, "vm-guest:", err)
		return 1
	}
	return status
}

// RunPlan runs each entry in order (they share the machine: loop devices,
// device-mapper names) and returns one Result per entry.
func RunPlan(ctx context.Context, plan *Plan, out io.Writer) []Result {
	var results []Result
	for _, e := range plan.Entries {
		results = append(results, runEntry(ctx, e, out))
	}
	return results
}

// noTests is what package testing prints when -test.run matched nothing. A
// renamed test must not turn the VM suite into a silent no-op.
const noTests = "testing: warning: no tests to run"

func runEntry(ctx context.Context, e PlanEntry, out io.Writer) Result {
	fmt.Fprintf(out, "=== vm: %s %s\n", e.Binary, strings.Join(e.Args, " "))
	res := Result{Name: e.Name}
	start := time.Now()
	cmd := exec.CommandContext(ctx, e.Binary, e.Args...)
	cmd.Dir = e.Dir
	cmd.Env = append(os.Environ(), e.Env...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var scan sync.WaitGroup
	var sawNoTests bool
	scan.Add(1)
	go func() {
		defer scan.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Text()
			// Prefixed: it names the binary, and keeps go test -json from
			// taking the guest's "--- FAIL" lines for this package's results.
			fmt.Fprintf(out, "%s| %s\n", e.Name, line)
			if strings.Contains(line, noTests) {
				sawNoTests = true
			}
			if strings.HasPrefix(strings.TrimSpace(line), "--- SKIP") {
				res.Skipped++
			}
		}
		io.Copy(io.Discard, pr) // a line too long for the scanner: keep draining
	}()
	err := cmd.Run()
	pw.Close()
	scan.Wait()
	res.Duration = time.Since(start)
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		res.ExitCode = exit.ExitCode()
	case err != nil:
		res.ExitCode, res.Error = -1, err.Error()
	case sawNoTests:
		res.Error = fmt.Sprintf("-test.run %q matched no tests", runPattern(e.Args))
	}
	return res
}

func runPattern(args []string) string {
	for i, a := range args {
		if a == "-test.run" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// uptime reads /proc/uptime; in a fresh VM it is the boot time.
func uptime() time.Duration {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	s, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0
	}
	return time.Duration(s * float64(time.Second))
}
