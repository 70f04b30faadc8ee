/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package deploy_test

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/launcher"
)

func TestControllerDeployment(t *testing.T) {
	for _, tc := range []struct {
		name       string
		set        []string
		containers []string
	}{
		{"default", nil, []string{"csi-controller", "nls-controller", "csi-provisioner", "csi-resizer", "csi-snapshotter", "snapshot-controller"}},
		{"ha", []string{"controller.replicas=2"}, []string{"csi-controller", "nls-controller", "csi-provisioner", "csi-resizer", "csi-snapshotter", "snapshot-controller"}},
		{"no snapshots", []string{"snapshot.enabled=false", "snapshotController.enabled=false"}, []string{"csi-controller", "nls-controller", "csi-provisioner", "csi-resizer"}},
		{"node-loss cleanup", []string{"controller.nodeLoss.cleanup=true", "controller.nodeLoss.grace=30s"}, []string{"csi-controller", "nls-controller", "csi-provisioner", "csi-resizer", "csi-snapshotter", "snapshot-controller"}},
		{"adoption off", []string{"controller.adoptOpenLocal=false"}, []string{"csi-controller", "nls-controller", "csi-provisioner", "csi-resizer", "csi-snapshotter", "snapshot-controller"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := render(t, tc.set...)
			d := typed[appsv1.Deployment](t, m.get(t, "Deployment", "open-local-controller"))
			spec := d.Spec.Template.Spec
			var names []string
			for _, c := range spec.Containers {
				names = append(names, c.Name)
			}
			if !slices.Equal(names, tc.containers) {
				t.Errorf("containers %v, want %v", names, tc.containers)
			}
			// Every controller elects a leader whatever the replica count: a
			// Deployment does not promise at most one pod (a partitioned
			// node's pod keeps running while its replacement starts), so
			// the Lease is what keeps two from acting at once.
			const le = "true"
			want := map[string][]string{
				"csi-controller": {"--mode=controller", "--endpoint=unix:///csi/csi.sock", "--driver-name=local.csi.aliyun.com", "--metrics-bind-address=:10266"},
				"nls-controller": {"--mode=controller", "--initconfig=open-local", "--leader-elect=" + le, "--healthz-bind-address=:10265",
					"--node-loss-grace=2m", "--node-loss-cleanup=false", "--adopt-open-local=true"},
				"csi-provisioner": {"--csi-address=/csi/csi.sock", "--feature-gates=Topology=true", "--strict-topology",
					"--extra-create-metadata", "--enable-capacity", "--capacity-ownerref-level=2", "--leader-election=" + le},
				"csi-resizer":         {"--csi-address=/csi/csi.sock", "--handle-volume-inuse-error=false", "--leader-election=" + le},
				"csi-snapshotter":     {"--csi-address=/csi/csi.sock", "--feature-gates=CSIVolumeGroupSnapshot=false", "--leader-election=" + le},
				"snapshot-controller": {"--feature-gates=CSIVolumeGroupSnapshot=false", "--leader-election=" + le},
			}
			if tc.name == "node-loss cleanup" {
				want["nls-controller"] = []string{"--node-loss-grace=30s", "--node-loss-cleanup=true"}
			}
			if tc.name == "adoption off" {
				want["nls-controller"] = []string{"--adopt-open-local=false"}
			}
			for _, c := range spec.Containers {
				args := slices.Concat(c.Command, c.Args)
				for _, f := range want[c.Name] {
					if !slices.Contains(args, f) {
						t.Errorf("%s lacks %s: %v", c.Name, f, args)
					}
				}
				if c.Name != "csi-controller" {
					ns := "--leader-election-namespace=" + namespace
					if c.Name == "nls-controller" {
						ns = "--leader-elect-namespace=" + namespace
					}
					if !slices.Contains(args, ns) {
						t.Errorf("%s lacks %s", c.Name, ns)
					}
				}
				// Only API clients here: non-root, read-only, no capabilities.
				sc := c.SecurityContext
				if sc == nil || sc.Privileged != nil && *sc.Privileged || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
					sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil ||
					!slices.Contains(sc.Capabilities.Drop, "ALL") {
					t.Errorf("%s: security context %+v", c.Name, sc)
				}
			}
			if psc := spec.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
				t.Errorf("controller pod may run as root: %+v", psc)
			}
			prov := container(t, spec, "csi-provisioner")
			for _, env := range []string{"NAMESPACE", "POD_NAME"} { // --enable-capacity, ownerref
				if !slices.ContainsFunc(prov.Env, func(e corev1.EnvVar) bool { return e.Name == env && e.ValueFrom != nil }) {
					t.Errorf("csi-provisioner lacks env %s", env)
				}
			}
		})
	}
}

func TestAgentDaemonSet(t *testing.T) {
	for _, tc := range []struct {
		name, kubeletDir, lvmDir string
		set                      []string
		zero                     string // --zero-new-lvs
	}{
		{"default", "/var/lib/kubelet", "", nil, "true"},
		{"own lvm config, other kubelet dir, no zeroing", "/var/lib/k0s/kubelet", "/etc/open-local/lvm",
			[]string{"kubeletDir=/var/lib/k0s/kubelet/", "agent.lvm.useHostConfig=false", "agent.zeroNewLVs=false"}, "false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := render(t, tc.set...)
			ds := typed[appsv1.DaemonSet](t, m.get(t, "DaemonSet", "open-local-agent"))
			spec := ds.Spec.Template.Spec
			if spec.HostNetwork || spec.HostPID || spec.HostIPC {
				t.Errorf("host namespaces: network %v pid %v ipc %v", spec.HostNetwork, spec.HostPID, spec.HostIPC)
			}
			hostPaths := map[string]string{}
			for _, v := range spec.Volumes {
				if v.HostPath != nil {
					hostPaths[v.Name] = v.HostPath.Path
				}
			}
			mounts := func(c corev1.Container) map[string]corev1.VolumeMount {
				out := map[string]corev1.VolumeMount{}
				for _, vm := range c.VolumeMounts {
					out[vm.MountPath] = vm
				}
				return out
			}
			if got := flagValue(slices.Concat(container(t, spec, "agent").Command, container(t, spec, "agent").Args), "--zero-new-lvs"); got != tc.zero {
				t.Errorf("agent --zero-new-lvs=%q, want %q", got, tc.zero)
			}
			for _, name := range []string{"agent", "csi-plugin"} {
				c := container(t, spec, name)
				if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
					t.Errorf("%s is not privileged (it opens loop and device-mapper devices)", name)
				}
				args := slices.Concat(c.Command, c.Args)
				for _, f := range []string{"--loop-lock-file=/run/lock/open-local/loop-activator.lock", "--activation=auto"} {
					if !slices.Contains(args, f) {
						t.Errorf("%s lacks %s", name, f)
					}
				}
				if got := flagValue(args, "--lvm-system-dir"); got != tc.lvmDir {
					t.Errorf("%s --lvm-system-dir=%q, want %q", name, got, tc.lvmDir)
				}
				ms := mounts(c)
				for path, hostPath := range map[string]string{"/dev": "/dev", "/sys": "/sys", "/run/lock": "/run/lock", "/run/lvm": "/run/lvm", "/etc/lvm": "/etc/lvm"} {
					if vm, ok := ms[path]; !ok || hostPaths[vm.Name] != hostPath {
						t.Errorf("%s: %s is not the node's %s", name, path, hostPath)
					}
				}
				if tc.lvmDir != "" {
					if _, ok := ms[tc.lvmDir]; !ok {
						t.Errorf("%s: lvm config %s not mounted", name, tc.lvmDir)
					}
				}
				if env := slices.Concat(c.Env); name == "agent" && !slices.ContainsFunc(env, func(e corev1.EnvVar) bool { return e.Name == "DM_DISABLE_UDEV" }) {
					t.Errorf("agent lacks DM_DISABLE_UDEV")
				}
			}
			csiPlugin := container(t, spec, "csi-plugin")
			if !slices.Contains(csiPlugin.Command, "--lvm-env=DM_DISABLE_UDEV=1") {
				t.Errorf("csi-plugin lacks --lvm-env=DM_DISABLE_UDEV=1: %v", csiPlugin.Command)
			}
			// IO limits: the node's cgroup hierarchies, and a state
			// directory that survives restarts (the plugin directory).
			if vm, ok := mounts(csiPlugin)["/sys/fs/cgroup"]; !ok || hostPaths[vm.Name] != "/sys/fs/cgroup" {
				t.Error("csi-plugin: /sys/fs/cgroup is not the node's")
			}
			if dir := flagValue(csiPlugin.Command, "--io-limit-state-dir"); !strings.HasPrefix(dir, "/csi/") {
				t.Errorf("csi-plugin --io-limit-state-dir=%q is not in the plugin directory (/csi, a hostPath)", dir)
			}
			kubelet := mounts(csiPlugin)[tc.kubeletDir]
			if hostPaths[kubelet.Name] != tc.kubeletDir || kubelet.MountPropagation == nil ||
				*kubelet.MountPropagation != corev1.MountPropagationBidirectional {
				t.Errorf("csi-plugin: kubelet dir %s mount %+v, want the node's with Bidirectional propagation", tc.kubeletDir, kubelet)
			}
			if _, ok := mounts(container(t, spec, "agent"))[tc.kubeletDir]; ok {
				t.Error("the agent mounts the kubelet directory; only the CSI plugin needs it")
			}
			reg := container(t, spec, "node-driver-registrar")
			if reg.SecurityContext != nil && reg.SecurityContext.Privileged != nil && *reg.SecurityContext.Privileged {
				t.Error("node-driver-registrar is privileged")
			}
			// Its --http-endpoint (kubernetes-csi/node-driver-registrar
			// cmd/csi-node-driver-registrar/node_register.go) serves /healthz
			// only, which says "ok" or why the socket check failed; pprof,
			// which would expose the process, only with --enable-pprof.
			if slices.ContainsFunc(reg.Args, func(a string) bool { return strings.HasPrefix(a, "--enable-pprof") }) {
				t.Error("node-driver-registrar serves pprof on its pod-IP port")
			}
			if got, want := flagValue(reg.Args, "--kubelet-registration-path"), tc.kubeletDir+"/plugins/local.csi.aliyun.com/csi.sock"; got != want {
				t.Errorf("registration path %s, want %s", got, want)
			}
			if hostPaths["registration-dir"] != tc.kubeletDir+"/plugins_registry" || hostPaths["plugin-dir"] != tc.kubeletDir+"/plugins/local.csi.aliyun.com" {
				t.Errorf("plugin dirs %v", hostPaths)
			}
		})
	}
}

// TestFlagsExist runs every binary the chart starts with the command line
// the chart gives it (test/launcher, the one the suites start it with) plus
// --help: a flag the binary does not know makes it fail
// ("flag provided but not defined", "unknown flag"). The sidecars are the
// binaries hack/tools builds at the versions of the images; ours are built
// from this tree. node-driver-registrar and the scheduler are not checked
// here (the registrar is not built here; the scheduler's only flags are
// --config, --secure-port and -v, and its configuration is TestSchedulerConfig's).
func TestFlagsExist(t *testing.T) {
	tools := cluster.ToolsForTest(t)
	agent, csiBin := cluster.Binary(t, "./agent"), cluster.Binary(t, "./csi")
	chart, err := launcher.Parse(render(t, "controller.replicas=2", "agent.lvm.useHostConfig=false").raw)
	if err != nil {
		t.Fatal(err)
	}
	pod := launcher.Pod{Name: "p", Namespace: namespace, NodeName: "node-1"}
	for ctr, bin := range map[launcher.Container]string{
		launcher.Provisioner:        filepath.Join(tools, "csi-provisioner"),
		launcher.Resizer:            filepath.Join(tools, "csi-resizer"),
		launcher.Snapshotter:        filepath.Join(tools, "csi-snapshotter"),
		launcher.SnapshotController: filepath.Join(tools, "snapshot-controller"),
		launcher.CSIController:      csiBin,
		launcher.NLSController:      agent,
		launcher.Agent:              agent,
		launcher.CSINode:            csiBin,
	} {
		p, err := chart.Process(ctr, pod)
		if err != nil {
			t.Error(err)
			continue
		}
		cmd := exec.CommandContext(t.Context(), bin, append(p.Args, "--help")...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err = cmd.Run()
		if s := out.String(); strings.Contains(s, "flag provided but not defined") || strings.Contains(s, "unknown flag") ||
			strings.Contains(s, "invalid argument") || strings.Contains(s, "invalid value") {
			t.Errorf("%s refuses its flags %v: %v\n%s", ctr, p.Args, err, lastLines(s, 5))
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
