/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package launcher

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/open-local/open-local/deploy"
	"github.com/open-local/open-local/test/cluster"
)

// KubeVersion is the Kubernetes version the chart is rendered for: the one
// the pinned tools are built from.
const KubeVersion = "1.37.2"

// Namespace is the release namespace the chart is rendered in.
const Namespace = "kube-system"

// Template runs `helm template` on the repository's chart (release
// open-local, the namespace and Kubernetes version above) with more helm
// args (--set k=v, --show-only t), helm's state under stateDir (helm keeps
// caches and config under $HOME unless told otherwise), and returns the
// manifests.
func Template(ctx context.Context, helm, repoRoot, stateDir string, args ...string) ([]byte, error) {
	args = append([]string{"template", "open-local", filepath.Join(repoRoot, "deploy", deploy.ChartDir),
		"--namespace", Namespace, "--kube-version", KubeVersion}, args...)
	cmd := exec.CommandContext(ctx, helm, args...)
	cmd.Env = append(cmd.Environ(), "HELM_CACHE_HOME="+filepath.Join(stateDir, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(stateDir, "config"), "HELM_DATA_HOME="+filepath.Join(stateDir, "data"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

var rendered struct {
	once  sync.Once
	chart *Chart
	err   error
}

// ForTest is the chart with its default values, rendered once per test
// binary with the pinned helm (hack/tools.sh).
func ForTest(t testing.TB) *Chart {
	t.Helper()
	tools := cluster.ToolsForTest(t)
	rendered.once.Do(func() {
		root, err := cluster.RepoRoot()
		if err != nil {
			rendered.err = err
			return
		}
		state, err := os.MkdirTemp("", "open-local-helm-")
		if err != nil {
			rendered.err = err
			return
		}
		defer os.RemoveAll(state)
		manifest, err := Template(context.Background(), filepath.Join(tools, "helm"), root, state)
		if err != nil {
			rendered.err = err
			return
		}
		rendered.chart, rendered.err = Parse(manifest)
	})
	if rendered.err != nil {
		t.Fatalf("render the chart: %v", rendered.err)
	}
	return rendered.chart
}

// Start runs bin as the chart's container ctr (Process), named name, on c
// until the test ends.
func (ch *Chart) Start(t testing.TB, c *cluster.Cluster, name, bin string, ctr Container, pod Pod, changes ...string) *cluster.Process {
	t.Helper()
	p, err := ch.Process(ctr, pod, changes...)
	if err != nil {
		t.Fatal(err)
	}
	return c.StartProcessEnv(t, name, bin, p.Env, p.Args...)
}
