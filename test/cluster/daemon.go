package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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

// EnvBinDir names a directory of prebuilt binaries of this repository
// ("agent", "csi", "scheduler": the package path with / as -). The VM
// runner sets it: compiling in the emulated guest would take minutes.
const EnvBinDir = "OPEN_LOCAL_BIN_DIR"

// BinaryName is the file name Binary gives a main package ("./csi" → "csi").
func BinaryName(pkg string) string { return strings.NewReplacer("./", "", "/", "-").Replace(pkg) }

// Binary builds a main package of this repository (e.g. "./scheduler") once
// per test binary and returns its path. go build's cache makes it cheap when
// nothing changed. With $OPEN_LOCAL_BIN_DIR set, the binary found there is
// used instead.
func Binary(t testing.TB, pkg string) string {
	t.Helper()
	if dir := os.Getenv(EnvBinDir); dir != "" {
		path := filepath.Join(dir, BinaryName(pkg))
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("prebuilt %s: %v (%s=%s)", pkg, err, EnvBinDir, dir)
		}
		return path
	}
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
		// One directory per checkout, reused by every test binary and run
		// (a temp dir per test binary would leak: the binaries outlive it).
		sum := sha256.Sum256([]byte(root))
		parent := filepath.Join(os.TempDir(), "open-local-testbin")
		binaries.dir = filepath.Join(parent, hex.EncodeToString(sum[:6]))
		if err := os.MkdirAll(binaries.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		_ = os.Chtimes(binaries.dir, now, now)
		pruneBinaryDirs(parent, binaries.dir, now.Add(-staleBinaryDir))
		binaries.built = map[string]string{}
	}
	out := filepath.Join(binaries.dir, BinaryName(pkg))
	// Build beside and rename: test packages run in parallel, and a daemon
	// another package runs keeps its (old, identical) inode.
	tmp, err := os.CreateTemp(binaries.dir, BinaryName(pkg)+".tmp-")
	if err != nil {
		t.Fatal(err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command("go", "build", "-o", tmp.Name(), pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		t.Fatal(err)
	}
	binaries.built[pkg] = out
	return out
}

// staleBinaryDir: a checkout's binary directory unused this long is
// removed (~300 MB each; CI clones to a fresh path every run).
const staleBinaryDir = 24 * time.Hour

// pruneBinaryDirs removes the directories in parent, other than keep, last
// used before cutoff. A daemon still running from one keeps its inode.
func pruneBinaryDirs(parent, keep string, cutoff time.Time) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range entries {
		path := filepath.Join(parent, e.Name())
		info, err := e.Info()
		if err != nil || !e.IsDir() || path == keep || info.ModTime().After(cutoff) {
			continue
		}
		_ = os.RemoveAll(path)
	}
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
	return c.StartProcessEnv(t, name, bin, nil, args...)
}

// StartProcessEnv is StartProcess with env (KEY=VALUE) added to the test's.
func (c *Cluster) StartProcessEnv(t testing.TB, name, bin string, env []string, args ...string) *Process {
	t.Helper()
	logDir := filepath.Join(c.Dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	comp, err := startProcess(name, bin, args, env, logDir, false)
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
