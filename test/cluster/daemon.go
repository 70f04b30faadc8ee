package cluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var binaries struct {
	mu    sync.Mutex
	built map[string]string
	dir   string
}

// Binary builds a main package of this repository (e.g. "./scheduler") once
// per test binary and returns its path. go build's cache makes it cheap when
// nothing changed.
func Binary(t testing.TB, pkg string) string {
	t.Helper()
	binaries.mu.Lock()
	defer binaries.mu.Unlock()
	if path, ok := binaries.built[pkg]; ok {
		return path
	}
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if binaries.dir == "" {
		// Not t.TempDir: the binary outlives this test (other tests reuse it).
		if binaries.dir, err = os.MkdirTemp("", "open-local-bin-"); err != nil {
			t.Fatal(err)
		}
		binaries.built = map[string]string{}
	}
	out := filepath.Join(binaries.dir, strings.NewReplacer("./", "", "/", "-").Replace(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	binaries.built[pkg] = out
	return out
}

// Process is one of our daemons (scheduler, agent, CSI driver) run by a test
// against the local cluster. It dies with the test process.
type Process struct {
	Name string
	Log  string
	comp *component
}

// StartProcess runs bin with args; output goes to <cluster dir>/logs/<name>.log.
// It is stopped (SIGTERM, then SIGKILL) when the test ends.
func (c *Cluster) StartProcess(t testing.TB, name, bin string, args ...string) *Process {
	t.Helper()
	logDir := filepath.Join(c.Dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	comp, err := startProcess(name, bin, args, logDir, false)
	if err != nil {
		t.Fatal(err)
	}
	p := &Process{Name: name, Log: comp.Log, comp: comp}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s log (%s), last lines:\n%s", name, p.Log, comp.logTail(40))
		}
	})
	return p
}

// Stop sends SIGTERM and waits up to 10 s before SIGKILL.
func (p *Process) Stop() { stopAll([]*component{p.comp}, 10*time.Second) }

// Kill sends SIGKILL (crash tests) and waits until the process is gone.
func (p *Process) Kill() {
	p.comp.signal(syscall.SIGKILL)
	p.waitGone()
}

// Pid is the process id (benchmarks read its /proc/<pid>/status).
func (p *Process) Pid() int { return p.comp.Pid }

// Alive reports whether the process still runs.
func (p *Process) Alive() bool { return p.comp.alive() }

// LogTail returns the last n lines of the process's output.
func (p *Process) LogTail(n int) string { return p.comp.logTail(n) }

// WaitHealthy polls an HTTP(S) health URL of the process (TLS unverified: our own self-signed endpoints).
func (p *Process) WaitHealthy(ctx context.Context, url string, timeout time.Duration) error {
	return waitHealthy(ctx, p.comp, url, insecureLoopbackTLS(), timeout)
}

func (p *Process) waitGone() {
	for i := 0; i < 100 && p.comp.alive(); i++ {
		time.Sleep(20 * time.Millisecond)
	}
}
