package cluster

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
)

// The cluster of this test binary: started on first use, stopped by Main.
var shared struct {
	once  sync.Once
	c     *Cluster
	owned bool
	err   error
}

// ForTest returns a running cluster for the test. With OPEN_LOCAL_CLUSTER_DIR
// set (make test starts one for the whole run) it reuses that cluster;
// otherwise it starts one for this package, which Main stops. Tests share it,
// so each one names its objects uniquely (see Names).
func ForTest(t testing.TB) *Cluster {
	t.Helper()
	skipIfShort(t, "a local control plane (etcd, kube-apiserver, kube-controller-manager)")
	shared.once.Do(func() {
		ctx := context.Background()
		if dir := os.Getenv("OPEN_LOCAL_CLUSTER_DIR"); dir != "" {
			shared.c, shared.err = Attach(dir)
			if shared.err == nil {
				// The shared cluster may predate a CRD change in this tree.
				shared.err = InstallCRDs(ctx, shared.c.RESTConfig())
			}
			return
		}
		tools, err := ToolsDir(ctx)
		if err != nil {
			shared.err = err
			return
		}
		dir, err := os.MkdirTemp("", "open-local-cluster-")
		if err != nil {
			shared.err = err
			return
		}
		shared.c, shared.err = Start(ctx, Options{Dir: dir, ToolsDir: tools})
		shared.owned = shared.err == nil
	})
	if shared.err != nil {
		t.Fatalf("local cluster: %v", shared.err)
	}
	return shared.c
}

// ToolsForTest returns the pinned third-party binaries (see ToolsDir) for a
// test, which it skips under -short: a cold tool build takes ~15 minutes.
func ToolsForTest(t testing.TB) string {
	t.Helper()
	skipIfShort(t, "the pinned tools (hack/tools.sh)")
	dir, err := ToolsDir(t.Context())
	if err != nil {
		t.Fatalf("tools: %v", err)
	}
	return dir
}

// skipIfShort keeps `go test -short` (make test-short) a seconds-long loop:
// what needs the control plane or the tool build runs only in the full run.
func skipIfShort(t testing.TB, needs string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("-short: needs %s; run without -short (make test)", needs)
	}
}

// Main runs the package's tests and stops the cluster ForTest started.
// Call it from TestMain: func TestMain(m *testing.M) { cluster.Main(m) }.
// Logs of a failed run are kept and their directory printed.
func Main(m *testing.M) {
	code := m.Run()
	if shared.owned {
		shared.c.Stop()
		if code == 0 {
			_ = os.RemoveAll(shared.c.Dir)
		} else {
			fmt.Fprintf(os.Stderr, "local cluster logs kept in %s/logs\n", shared.c.Dir)
		}
	}
	os.Exit(code)
}
