/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package demo

import (
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/open-local/open-local/csi/node/iolimit"
	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/loopvg"
)

// nodeEnv is what one demo's node claims on the host: its kubelet's cgroup
// tree, directories and ports, and what its lvm sees.
type nodeEnv struct {
	cgroupRoot, csiCgroupRoot string
	dirs                      map[string]string // what → path
	ports                     []int
	lvmFilter                 []string
}

// testNodeEnv sets a demo's node up on paper (no process starts) in dir,
// with disk as its loop device, and reads back the kubelet configuration
// and the node daemons' flags it would start them with.
func testNodeEnv(t *testing.T, dir, disk string) nodeEnv {
	t.Helper()
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	d := &demo{cfg: Config{Dir: dir, ToolsDir: cluster.ToolsForTest(t), RepoRoot: root, Binaries: map[string]string{"agent": "/bin/agent", "csi": "/bin/csi"}},
		cluster: &cluster.Cluster{Kubeconfig: filepath.Join(dir, "cluster", "kubeconfig")}, disk: loopvg.Device{Path: disk}, activation: "loop"}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := d.initNode(NodeName, "127.0.0.1", 0); err != nil {
		t.Fatal(err)
	}
	if d.lvm, err = loopvg.WriteConfig(d.path("node", "lvm"), false, disk); err != nil {
		t.Fatal(err)
	}
	var kc struct {
		CgroupRoot     string `json:"cgroupRoot"`
		CgroupsPerQOS  bool   `json:"cgroupsPerQOS"`
		PodLogsDir     string `json:"podLogsDir"`
		Port           int    `json:"port"`
		HealthzPort    int    `json:"healthzPort"`
		RuntimeEnpoint string `json:"containerRuntimeEndpoint"`
	}
	if err := yaml.Unmarshal([]byte(d.kubeletConfig(d.path("node", "procruntime.sock"))), &kc); err != nil {
		t.Fatal(err)
	}
	env := nodeEnv{cgroupRoot: kc.CgroupRoot, lvmFilter: d.lvm.Devices(), ports: []int{kc.Port, kc.HealthzPort},
		dirs: map[string]string{"pod logs": kc.PodLogsDir, "runtime socket": kc.RuntimeEnpoint}}
	if !kc.CgroupsPerQOS {
		t.Errorf("%s: the kubelet runs without cgroupsPerQOS: the CSI node plugin finds no pod cgroups", dir)
	}
	for _, a := range d.kubeletArgs(d.path("node", "kubelet.yaml")) {
		if v, ok := strings.CutPrefix(a, "--root-dir="); ok {
			env.dirs["kubelet root"] = v
		}
	}
	// The chart as the demo renders it.
	chart, err := d.chart(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	daemons, err := d.nodeDaemons(chart)
	if err != nil {
		t.Fatal(err)
	}
	for _, dm := range daemons {
		for _, a := range dm.args {
			k, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			switch k {
			case "cgroup-root":
				if dm.name == "csi-node" {
					env.csiCgroupRoot = v
				}
			case "kubelet-registration-dir", "lvm-system-dir", "loop-lock-file", "io-limit-state-dir", "endpoint":
				env.dirs[dm.name+" "+k] = strings.TrimPrefix(v, "unix://")
			case "healthz-bind-address", "metrics-bind-address":
				env.ports = append(env.ports, d.portOf(t, v))
			}
		}
	}
	return env
}

func (d *demo) portOf(t *testing.T, addr string) int {
	t.Helper()
	for _, p := range []int{d.ports.kubelet, d.ports.kubeletHealthz, d.ports.agent, d.ports.nlsController, d.ports.csiNode, d.ports.csiController, d.ports.scheduler} {
		if addr == loopback(p) {
			return p
		}
	}
	t.Fatalf("%s is none of the demo's ports", addr)
	return 0
}

// TestDemosCoexist: `make demo` leaves its node running, and TestDemo (or a
// second demo dir) must run beside it. Two demos in different dirs must
// claim disjoint cgroup trees, directories, ports and lvm devices, and
// each one's CSI node plugin must look for pod cgroups where its own
// kubelet puts them.
func TestDemosCoexist(t *testing.T) {
	base := t.TempDir()
	a := testNodeEnv(t, filepath.Join(base, "demo"), "/dev/loop3")
	// The running demo's daemons hold its ports while the second one starts.
	for _, p := range a.ports {
		l, err := net.Listen("tcp", loopback(p))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
	}
	b := testNodeEnv(t, filepath.Join(base, "open-local-demo-test-1"), "/dev/loop4")
	for _, tc := range []struct {
		name string
		env  nodeEnv
	}{{"demo", a}, {"test", b}} {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.env
			if e.cgroupRoot == "" || e.cgroupRoot == "/" || path.Clean(e.cgroupRoot) != e.cgroupRoot || !path.IsAbs(e.cgroupRoot) {
				t.Fatalf("kubelet cgroupRoot %q: want a clean absolute path of the demo's own (not the host's /kubepods)", e.cgroupRoot)
			}
			if e.csiCgroupRoot != e.cgroupRoot {
				t.Errorf("csi-node --cgroup-root=%q, the kubelet's cgroupRoot is %q", e.csiCgroupRoot, e.cgroupRoot)
			}
			// Where the CSI node plugin looks is where the kubelet (cgroupfs
			// driver, cgroups per QoS) makes a BestEffort pod's cgroup.
			got, err := iolimit.PodCgroup(iolimit.Layout{Driver: iolimit.DriverCgroupfs, Root: e.csiCgroupRoot}, corev1.PodQOSBestEffort, "0f5e4c3a-1111-2222-3333-444455556666")
			if err != nil {
				t.Fatal(err)
			}
			if want := e.cgroupRoot + "/kubepods/besteffort/pod0f5e4c3a-1111-2222-3333-444455556666"; got != want {
				t.Errorf("CSI node plugin looks for the pod cgroup at %s, the kubelet makes %s", got, want)
			}
		})
	}
	if a.cgroupRoot == b.cgroupRoot {
		t.Errorf("both demos' kubelets use cgroup root %s: each would count (and tear down) the other's pods", a.cgroupRoot)
	}
	for what, pa := range a.dirs {
		pb, ok := b.dirs[what]
		if !ok {
			t.Errorf("%s: only one demo has it", what)
			continue
		}
		if pa == pb || strings.HasPrefix(pa, pb+"/") || strings.HasPrefix(pb, pa+"/") {
			t.Errorf("%s: %s and %s overlap", what, pa, pb)
		}
	}
	for _, pa := range a.ports {
		for _, pb := range b.ports {
			if pa == pb {
				t.Errorf("both demos use port %d", pa)
			}
		}
	}
	for _, da := range a.lvmFilter {
		for _, db := range b.lvmFilter {
			if da == db {
				t.Errorf("both demos' lvm sees %s", da)
			}
		}
	}
}

// TestPreflightCgroups: another kubelet's pods (the host's /kubepods, or a
// running demo's tree) do not stop a demo; a leftover of its own tree does.
func TestPreflightCgroups(t *testing.T) {
	own := cgroupRootFor("/tmp/open-local/demo")
	other := cgroupRootFor("/tmp/open-local-demo-test-1")
	for _, tc := range []struct {
		name    string
		present []string
		wantErr bool
	}{
		{"clean host", nil, false},
		{"a kubelet with the default cgroup root", []string{"/kubepods/besteffort"}, false},
		{"another demo runs", []string{other + "/kubepods/burstable"}, false},
		{"this demo's tree is left over", []string{own + "/kubepods"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hierarchies := []string{filepath.Join(t.TempDir(), "cpu"), filepath.Join(t.TempDir(), "memory")}
			for _, h := range hierarchies {
				for _, p := range tc.present {
					if err := os.MkdirAll(filepath.Join(h, p), 0o755); err != nil {
						t.Fatal(err)
					}
				}
			}
			err := preflightCgroups(hierarchies, own)
			if (err != nil) != tc.wantErr {
				t.Fatalf("preflightCgroups = %v, want error: %v", err, tc.wantErr)
			}
		})
	}
}

// TestRemoveKubeletVarLib: the device-plugin socket every kubelet takes
// over is removed (with the dirs the demo made) only when no kubelet serves it.
func TestRemoveKubeletVarLib(t *testing.T) {
	for _, tc := range []struct {
		name        string
		served      bool
		created     bool
		wantSock    bool
		wantDirGone bool
	}{
		{"the demo's own, stale", false, true, false, true},
		{"another kubelet serves it", true, true, true, false},
		{"stale, dirs not the demo's", false, false, false, false},
		{"served, dirs not the demo's", true, false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := varLibKubelet
			t.Cleanup(func() { varLibKubelet = old })
			varLibKubelet = filepath.Join(t.TempDir(), "kubelet")
			plugins := filepath.Join(varLibKubelet, "device-plugins")
			if err := os.MkdirAll(plugins, 0o755); err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(plugins, "kubelet.sock")
			l, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			if tc.served {
				defer l.Close()
			} else {
				l.(*net.UnixListener).SetUnlinkOnClose(false)
				l.Close() // the file stays, no one listens: a stopped kubelet's
			}
			var created []string
			if tc.created {
				created = []string{varLibKubelet, plugins}
			}
			if _, err := removeKubeletVarLib(created); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(sock); (err == nil) != tc.wantSock {
				t.Errorf("socket there: %v, want %v", err == nil, tc.wantSock)
			}
			if _, err := os.Stat(varLibKubelet); os.IsNotExist(err) != tc.wantDirGone {
				t.Errorf("%s removed: %v, want %v", varLibKubelet, os.IsNotExist(err), tc.wantDirGone)
			}
		})
	}
}
