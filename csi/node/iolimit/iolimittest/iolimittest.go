/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package iolimittest measures IO limits for real: it makes pod cgroups the
// way kubelet lays them out, and runs an IO worker process inside one that
// reads or writes with O_DIRECT and reports its throughput.
//
// The worker is the test binary itself, re-executed: call WorkerMain first
// thing in the package's TestMain. It waits for a line on stdin before any
// IO, so the test can move it into the cgroup first (cgroup v1 cannot start
// a process inside a cgroup).
package iolimittest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"

	"github.com/open-local/open-local/csi/node/iolimit"
)

// Pod is a pod cgroup laid out as kubelet would.
type Pod struct {
	UID       types.UID
	Dir       string
	Hierarchy iolimit.Hierarchy
}

// NewPod creates the cgroup of a new pod UID with the given QoS class under
// layout in h — every missing directory from the hierarchy's root down; on
// cgroup v2 with the io controller enabled in each parent, as kubelet does
// — and removes the directories it created when the test ends.
func NewPod(t testing.TB, h iolimit.Hierarchy, l iolimit.Layout, qos corev1.PodQOSClass) *Pod {
	t.Helper()
	return PodFor(t, h, l, qos, uuid.NewUUID())
}

// PodFor is NewPod for a given pod UID (a Pod object's).
func PodFor(t testing.TB, h iolimit.Hierarchy, l iolimit.Layout, qos corev1.PodQOSClass, uid types.UID) *Pod {
	t.Helper()
	rel, err := iolimit.PodCgroup(l, qos, uid)
	if err != nil {
		t.Fatal(err)
	}
	p := &Pod{UID: uid, Dir: filepath.Join(h.Dir, rel), Hierarchy: h}
	mkdirCgroups(t, h, p.Dir)
	return p
}

// Child creates a cgroup below the pod, as a container runtime does for
// each container.
func (p *Pod) Child(t testing.TB, name string) string {
	t.Helper()
	dir := filepath.Join(p.Dir, name)
	mkdirCgroups(t, p.Hierarchy, dir)
	return dir
}

// mkdirCgroups creates dir and its missing parents below h.Dir; cleanup
// removes them deepest first (a cgroup is removed with rmdir).
func mkdirCgroups(t testing.TB, h iolimit.Hierarchy, dir string) {
	t.Helper()
	rel, err := filepath.Rel(h.Dir, dir)
	if err != nil || strings.HasPrefix(rel, "..") {
		t.Fatalf("%s is not below %s", dir, h.Dir)
	}
	cur := h.Dir
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		if h.Version == iolimit.V2 {
			enableIO(t, cur)
		}
		cur = filepath.Join(cur, part)
		err := os.Mkdir(cur, 0o755)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		created := cur
		t.Cleanup(func() { rmdirCgroup(t, created) })
	}
}

// enableIO turns the io controller on for the children of dir (kubelet's
// cgroup manager enables every available controller on its cgroups).
func enableIO(t testing.TB, dir string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(strings.Fields(string(b)), "io") {
		return
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+io"), 0); err != nil {
		t.Fatalf("enable io in %s: %v", dir, err)
	}
}

// rmdirCgroup removes a cgroup, retrying while the kernel still releases a
// process that just exited.
func rmdirCgroup(t testing.TB, dir string) {
	var err error
	for range 50 {
		if err = unix.Rmdir(dir); err == nil || errors.Is(err, fs.ErrNotExist) {
			return
		}
		if !errors.Is(err, syscall.EBUSY) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("remove test cgroup %s: %v", dir, err)
}

// Workload is what the worker does: Count reads or writes of BlockSize
// bytes with O_DIRECT, at consecutive offsets of Path wrapping at Span.
type Workload struct {
	Path      string `json:"path"`
	Write     bool   `json:"write"`
	BlockSize int    `json:"blockSize"`
	Count     int    `json:"count"`
	Span      int64  `json:"span"`
}

func (w Workload) String() string {
	op := "read"
	if w.Write {
		op = "write"
	}
	return fmt.Sprintf("%s %d × %s", op, w.Count, size(int64(w.BlockSize)))
}

// Result is what a worker measured.
type Result struct {
	Bytes   int64   `json:"bytes"`
	Ops     int     `json:"ops"`
	Seconds float64 `json:"seconds"`
}

// MiBps is the throughput in MiB/s.
func (r Result) MiBps() float64 { return float64(r.Bytes) / (1 << 20) / r.Seconds }

// IOPS is the rate of operations per second.
func (r Result) IOPS() float64 { return float64(r.Ops) / r.Seconds }

func (r Result) String() string {
	return fmt.Sprintf("%.2f MiB/s, %.0f IOPS (%s in %.2fs)", r.MiBps(), r.IOPS(), size(r.Bytes), r.Seconds)
}

func size(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return strconv.FormatInt(n>>20, 10) + " MiB"
	}
	return strconv.FormatInt(n>>10, 10) + " KiB"
}

const workerEnv = "OPEN_LOCAL_IO_WORKER"

// WorkerMain runs the IO worker and exits when this process was started as
// one; otherwise it returns at once.
func WorkerMain() {
	spec := os.Getenv(workerEnv)
	if spec == "" {
		return
	}
	var w Workload
	if err := json.Unmarshal([]byte(spec), &w); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(2)
	}
	// Wait until the parent moved us into the cgroup.
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fmt.Fprintln(os.Stderr, "worker: waiting for start:", err)
		os.Exit(2)
	}
	r, err := run(w)
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(r)
	os.Exit(0)
}

func run(w Workload) (Result, error) {
	if w.BlockSize <= 0 || w.Count <= 0 || w.Span < int64(w.BlockSize) {
		return Result{}, fmt.Errorf("bad workload %+v", w)
	}
	flags := os.O_RDONLY
	if w.Write {
		flags = os.O_WRONLY
	}
	f, err := os.OpenFile(w.Path, flags|syscall.O_DIRECT, 0)
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	// O_DIRECT needs an aligned buffer: an anonymous mapping is page aligned.
	buf, err := unix.Mmap(-1, 0, w.BlockSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return Result{}, err
	}
	defer unix.Munmap(buf)
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	blocks := w.Span / int64(w.BlockSize)
	start := time.Now()
	var total int64
	for i := range w.Count {
		off := (int64(i) % blocks) * int64(w.BlockSize)
		var n int
		if w.Write {
			n, err = f.WriteAt(buf, off)
		} else {
			n, err = f.ReadAt(buf, off)
		}
		if err != nil {
			return Result{}, err
		}
		total += int64(n)
	}
	return Result{Bytes: total, Ops: w.Count, Seconds: time.Since(start).Seconds()}, nil
}

// Measure runs w in a worker process placed in the cgroup dir (its
// cgroup.procs) and returns what it measured.
func Measure(t testing.TB, cgroupDir string, w Workload) Result {
	t.Helper()
	spec, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), workerEnv+"="+string(spec))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cgroupDir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("move worker into %s: %v", cgroupDir, err)
	}
	if _, err := stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	_ = stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("IO worker (%s): %v\n%s", w, err, stderr.String())
	}
	var r Result
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("IO worker output %q: %v", stdout.String(), err)
	}
	return r
}

// Fill writes n bytes of data to path and syncs, so that reads hit real
// blocks (reading never-written extents may do no IO at all).
func Fill(t testing.TB, path string, n int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte{0xa5}, 1<<20)
	for off := int64(0); off < n; off += int64(len(chunk)) {
		if _, err := f.WriteAt(chunk[:min(int64(len(chunk)), n-off)], off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// Within reports whether got is within tolerance (a fraction, e.g. 0.3)
// of want.
func Within(got, want, tolerance float64) bool {
	return math.Abs(got-want) <= tolerance*want
}
