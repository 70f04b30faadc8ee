package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/open-local/open-local/test/capability"
)

// component is one daemon of the control plane.
type component struct {
	Name string `json:"name"`
	Pid  int    `json:"pid"`
	// Exe is the binary's path, checked before a signal so a recycled pid is never killed.
	Exe string `json:"exe"`
	Log string `json:"log"`
}

// startProcess runs bin with args (and env added to ours), output to logDir/<name>.log. Detached
// daemons get their own session and outlive the caller (make cluster-up);
// attached ones die with the caller (Pdeathsig), so a crashed test leaves no
// orphaned apiserver behind.
func startProcess(name, bin string, args, env []string, logDir string, detached bool) (*component, error) {
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin, args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	// Reap the child when it exits so alive() sees it gone (no zombie), and
	// say how it ended in its log (a process killed before it wrote a line,
	// e.g. by the OOM killer, would otherwise leave an empty log).
	go func() {
		err := cmd.Wait()
		if f, ferr := os.OpenFile(logPath, os.O_APPEND|os.O_WRONLY, 0); ferr == nil {
			fmt.Fprintf(f, "\n[test/cluster] %s (pid %d) ended: %v\n", name, cmd.Process.Pid, cmd.ProcessState)
			f.Close()
		}
		_ = err
	}()
	comp := &component{Name: name, Pid: cmd.Process.Pid, Exe: bin, Log: logPath}
	// Start returns once the child's exec is past the point of no return,
	// but /proc/<pid>/exe may still name this binary for a moment (long
	// enough, in the emulated VM, for alive() to call the new process gone).
	for deadline := time.Now().Add(slowdown(10 * time.Second)); !comp.alive() && time.Now().Before(deadline); {
		if exe, err := os.Readlink("/proc/" + strconv.Itoa(comp.Pid) + "/exe"); err != nil || exe == bin {
			break // gone, or running bin (then alive's other checks decide)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return comp, nil
}

// alive reports whether the component's process still runs the same binary.
func (c *component) alive() bool {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(c.Pid) + "/exe")
	if err != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(c.Pid) + "/stat")
	if err == nil {
		// A zombie still has /proc entries; field 3 is the state.
		if f := strings.Fields(string(stat)); len(f) > 2 && f[2] == "Z" {
			return false
		}
	}
	return strings.TrimSuffix(exe, " (deleted)") == c.Exe
}

// gone says why alive is false: what /proc shows for the pid.
func (c *component) gone() string {
	pid := strconv.Itoa(c.Pid)
	exe, err := os.Readlink("/proc/" + pid + "/exe")
	if err != nil {
		return fmt.Sprintf("pid %d: %v", c.Pid, err)
	}
	stat, _ := os.ReadFile("/proc/" + pid + "/stat")
	return fmt.Sprintf("pid %d runs %s, not %s; stat %.60s", c.Pid, exe, c.Exe, stat)
}

func (c *component) signal(sig syscall.Signal) {
	if c.alive() {
		_ = syscall.Kill(c.Pid, sig)
	}
}

func (c *component) logTail(n int) string {
	data, err := os.ReadFile(c.Log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stopAll sends SIGTERM to every component at once, waits up to grace, then SIGKILLs.
func stopAll(comps []*component, grace time.Duration) {
	for _, c := range comps {
		c.signal(syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		running := false
		for _, c := range comps {
			if c.alive() {
				running = true
			}
		}
		if !running {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range comps {
		c.signal(syscall.SIGKILL)
	}
}

// waitHealthy polls url until it answers 200, failing early if the process dies.
func waitHealthy(ctx context.Context, c *component, url string, tlsConfig *tls.Config, timeout time.Duration) error {
	timeout = slowdown(timeout)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if !c.alive() {
			return fmt.Errorf("%s exited (%s); last log lines:\n%s", c.Name, c.gone(), c.logTail(30))
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not healthy at %s after %s; last log lines:\n%s", c.Name, url, timeout, c.logTail(30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// slowdown stretches a timeout inside the emulated test VM (test/vm), where
// everything runs several times slower than on a host, more so while the
// host is busy.
func slowdown(d time.Duration) time.Duration {
	if capability.InVM() {
		return 4 * d
	}
	return d
}

// FreePorts asks the kernel for n unused loopback ports (held together
// while they are picked, so they differ). Every test that starts a server
// on a fixed port takes it from here.
func FreePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

var errNotRunning = errors.New("cluster is not running")

// waitReady polls url until it answers 200 (an apiserver this process did
// not start, e.g. the host's seen from a VM guest).
func waitReady(ctx context.Context, url string, tlsConfig *tls.Config, timeout time.Duration) error {
	timeout = slowdown(timeout)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("apiserver not ready at %s after %s: %w", url, timeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
