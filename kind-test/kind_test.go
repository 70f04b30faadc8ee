/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package kindtest keeps the kind e2e (e2e.sh, kind-config.yaml, testdata)
// correct on machines that cannot run kind: it checks the scripts with
// shellcheck and the chart output e2e.sh relies on, rendered with the values
// e2e.sh generates.
package kindtest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/test/cluster"
)

func TestShellcheck(t *testing.T) {
	path, err := exec.LookPath("shellcheck")
	if err != nil {
		t.Fatal("shellcheck is not installed (apt-get install shellcheck; .ci/run installs it)")
	}
	for _, script := range []string{"e2e.sh", "../deploy/images/build.sh"} {
		if out, err := exec.CommandContext(t.Context(), path, script).CombinedOutput(); err != nil {
			t.Errorf("shellcheck %s: %v\n%s", script, err, out)
		}
	}
}

// kindConfig is the part of kind's Cluster config the test reads.
type kindConfig struct {
	Nodes []struct {
		Role        string            `json:"role"`
		Labels      map[string]string `json:"labels"`
		ExtraMounts []struct {
			ContainerPath string `json:"containerPath"`
			HostPath      string `json:"hostPath"`
			Propagation   string `json:"propagation"`
		} `json:"extraMounts"`
	} `json:"nodes"`
}

func TestChartWithE2EValues(t *testing.T) {
	tools := cluster.ToolsForTest(t)
	values, err := exec.CommandContext(t.Context(), "./e2e.sh", "values", "/dev/loop7", "/dev/loop8").Output()
	if err != nil {
		t.Fatal(err)
	}
	vf := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(vf, values, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(t.Context(), filepath.Join(tools, "helm"), "template", "open-local", "../deploy/helm/open-local",
		"-n", "kube-system", "--kube-version", "1.37.2", "-f", vf).CombinedOutput()
	if err != nil {
		t.Fatalf("helm template with e2e.sh's values: %v\n%s", err, out)
	}
	objs := map[string][]byte{} // kind/name -> document
	for _, doc := range bytes.Split(out, []byte("\n---")) {
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &meta); err == nil && meta.Kind != "" {
			objs[meta.Kind+"/"+meta.Metadata.Name] = doc
		}
	}
	decode := func(key string, into any) {
		t.Helper()
		doc, ok := objs[key]
		if !ok {
			t.Fatalf("no %s rendered", key)
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			t.Fatal(err)
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(m, into, true); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
	}

	var cfg kindConfig
	data, err := os.ReadFile("kind-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// kind's config has more fields than read here.
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}

	// Every worker's disk label is selected by one nodesConfig entry that
	// creates a VG from the disk e2e.sh passes, matching the include list.
	var nlsc v1alpha1.NodeLocalStorageInitConfig
	decode("NodeLocalStorageInitConfig/open-local", &nlsc)
	if len(nlsc.Spec.GlobalConfig.ResourceToBeInited.VGs) != 0 {
		t.Errorf("the global config inits %v: no host device may be touched on kind", nlsc.Spec.GlobalConfig.ResourceToBeInited.VGs)
	}
	var ds appsv1.DaemonSet
	decode("DaemonSet/open-local-agent", &ds)
	kubeletMount := ""
	for _, vm := range containerOf(t, ds.Spec.Template.Spec, "csi-plugin").VolumeMounts {
		if vm.MountPropagation != nil && *vm.MountPropagation == corev1.MountPropagationBidirectional {
			kubeletMount = vm.MountPath
		}
	}
	workers := 0
	for _, n := range cfg.Nodes {
		if n.Role != "worker" {
			continue
		}
		workers++
		disk := n.Labels["open-local.io/e2e-disk"]
		dev := map[string]string{"1": "/dev/loop7", "2": "/dev/loop8"}[disk]
		i := slices.IndexFunc(nlsc.Spec.NodesConfig, func(c v1alpha1.NodeConfig) bool {
			return c.Selector != nil && c.Selector.MatchLabels["open-local.io/e2e-disk"] == disk
		})
		if dev == "" || i < 0 {
			t.Errorf("worker with disk label %q: no nodesConfig entry selects it", disk)
			continue
		}
		nc := nlsc.Spec.NodesConfig[i]
		if vgs := nc.ResourceToBeInited.VGs; len(vgs) != 1 || !slices.Equal(vgs[0].Devices, []string{dev}) ||
			!strings.HasPrefix(vgs[0].Name, "open-local-pool-") {
			t.Errorf("worker %s: resourceToBeInited %+v, want one open-local-pool-N VG on %s", disk, vgs, dev)
		}
		mounts := map[string]string{}
		for _, m := range n.ExtraMounts {
			mounts[m.ContainerPath] = m.Propagation
		}
		if _, ok := mounts["/dev"]; !ok {
			t.Errorf("worker %s does not mount the host's /dev (its disk is a host loop device)", disk)
		}
		if _, ok := mounts["/etc/lvm"]; !ok {
			t.Errorf("worker %s has no own /etc/lvm (its lvm.conf filter)", disk)
		}
		if mounts[kubeletMount] != "Bidirectional" {
			t.Errorf("worker %s: the kubelet dir %s the chart mounts is not a Bidirectional kind mount", disk, kubeletMount)
		}
	}
	if workers != 2 {
		t.Errorf("%d workers, want 2", workers)
	}
	// The chart keeps the node's /etc/lvm (where e2e.sh puts the filter).
	if !slices.ContainsFunc(ds.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.HostPath != nil && v.HostPath.Path == "/etc/lvm"
	}) {
		t.Error("the agent does not use the node's /etc/lvm")
	}
	// The images e2e.sh loads are those the chart runs, never pulled.
	for _, c := range ds.Spec.Template.Spec.Containers[:2] {
		if c.Image != "open-local/open-local-node:e2e" || c.ImagePullPolicy != corev1.PullNever {
			t.Errorf("%s: image %s (%s), want open-local/open-local-node:e2e, Never", c.Name, c.Image, c.ImagePullPolicy)
		}
	}

	// The workload uses a StorageClass and the scheduler the chart installs.
	wl, err := os.ReadFile("testdata/pvc-pod.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range bytes.Split(wl, []byte("\n---")) {
		var obj struct {
			Kind string `json:"kind"`
			Spec struct {
				StorageClassName string `json:"storageClassName"`
				SchedulerName    string `json:"schedulerName"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			t.Fatal(err)
		}
		if sc := obj.Spec.StorageClassName; sc != "" {
			if _, ok := objs["StorageClass/"+sc]; !ok {
				t.Errorf("testdata uses StorageClass %s, which the chart does not install", sc)
			}
		}
		if s := obj.Spec.SchedulerName; obj.Kind == "Pod" && !bytes.Contains(objs["ConfigMap/open-local-scheduler-config"], []byte("schedulerName: "+s)) {
			t.Errorf("testdata's pod uses scheduler %q, which the chart's scheduler does not serve", s)
		}
	}
}

func containerOf(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return corev1.Container{}
}
