/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package deploy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"sigs.k8s.io/yaml"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
	olconfig "github.com/open-local/open-local/config"
	"github.com/open-local/open-local/deploy"
	"github.com/open-local/open-local/deploy/openlocalvalues"
	"github.com/open-local/open-local/test/cluster"
)

// TestOpenLocalValues renders our chart with open-local v0.8.0's default
// values converted (kubectl open-local convert-values): every class its
// chart creates exists under the same name with the same provisioner,
// parameters, binding mode, reclaim policy and expansion; the scheduler
// spreads as its extender did; the VG is made from the same device; the
// volume limit and kubelet directory are kept. The install is then checked
// by the API server (server-side dry run) like TestInstall's.
func TestOpenLocalValues(t *testing.T) {
	in, err := os.ReadFile("openlocalvalues/testdata/open-local-v0.8.0-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var theirs struct {
		Driver string `json:"driver"`
		Agent  struct {
			Device            string `json:"device"`
			KubeletDir        string `json:"kubelet_dir"`
			MaxVolumesPerNode int    `json:"max_volumes_per_node"`
		} `json:"agent"`
		StorageClass map[string]struct {
			Enabled              bool              `json:"enabled"`
			Name                 string            `json:"name"`
			Parameters           map[string]string `json:"parameters"`
			ReclaimPolicy        string            `json:"reclaimPolicy"`
			VolumeBindingMode    string            `json:"volumeBindingMode"`
			AllowVolumeExpansion bool              `json:"allowVolumeExpansion"`
		} `json:"storageclass"`
	}
	if err := yaml.Unmarshal(in, &theirs); err != nil {
		t.Fatal(err)
	}
	out, _, err := openlocalvalues.Convert(in)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(file, out, 0o600); err != nil {
		t.Fatal(err)
	}
	m := parseManifests(t, helm(t, "template", "open-local", deploy.ChartDir, "--namespace", namespace, "--kube-version", kubeVersion, "-f", file))

	if len(theirs.StorageClass) != 5 {
		t.Fatalf("open-local's values have %d classes, want its 5", len(theirs.StorageClass))
	}
	for key, c := range theirs.StorageClass {
		sc := typed[storagev1.StorageClass](t, m.get(t, "StorageClass", c.Name))
		if sc.Provisioner != theirs.Driver {
			t.Errorf("%s: provisioner %s, want %s", key, sc.Provisioner, theirs.Driver)
		}
		if diff := cmp.Diff(c.Parameters, sc.Parameters); diff != "" {
			t.Errorf("%s: parameters differ (-theirs +ours):\n%s", key, diff)
		}
		if string(*sc.ReclaimPolicy) != c.ReclaimPolicy || string(*sc.VolumeBindingMode) != c.VolumeBindingMode ||
			*sc.AllowVolumeExpansion != c.AllowVolumeExpansion {
			t.Errorf("%s: reclaim %s binding %s expansion %v, want %s %s %v", key, *sc.ReclaimPolicy, *sc.VolumeBindingMode,
				*sc.AllowVolumeExpansion, c.ReclaimPolicy, c.VolumeBindingMode, c.AllowVolumeExpansion)
		}
	}
	cm := typed[corev1.ConfigMap](t, m.get(t, "ConfigMap", "open-local-scheduler-config"))
	if args := findOpenLocalArgs(t, loadSchedulerConfig(t, []byte(cm.Data["scheduler-config.yaml"]))); args.Strategy != olconfig.StrategySpread {
		t.Errorf("strategy %s, want spread (open-local's chart default)", args.Strategy)
	}
	nlsc := typed[v1alpha1.NodeLocalStorageInitConfig](t, m.get(t, "NodeLocalStorageInitConfig", "open-local"))
	if vgs := nlsc.Spec.GlobalConfig.ResourceToBeInited.VGs; len(vgs) != 1 || len(vgs[0].Devices) != 1 || vgs[0].Devices[0] != theirs.Agent.Device {
		t.Errorf("resourceToBeInited.vgs %+v, want one VG of %s", vgs, theirs.Agent.Device)
	}
	ds := typed[appsv1.DaemonSet](t, m.get(t, "DaemonSet", "open-local-agent"))
	var args []string
	for _, c := range ds.Spec.Template.Spec.Containers {
		args = append(append(args, c.Command...), c.Args...)
	}
	if all := strings.Join(args, " "); !strings.Contains(all, "--max-volumes-per-node=256") {
		t.Errorf("agent args %s: no --max-volumes-per-node=256", all)
	}
	var hostPaths []string
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.HostPath != nil {
			hostPaths = append(hostPaths, v.HostPath.Path)
		}
	}
	if !strings.Contains(strings.Join(hostPaths, " "), theirs.Agent.KubeletDir+"/plugins_registry") {
		t.Errorf("hostPaths %v: not under %s", hostPaths, theirs.Agent.KubeletDir)
	}

	in2 := newInstaller(t, cluster.ForTest(t).RESTConfig())
	for _, u := range m.objs {
		if err := in2.apply(t.Context(), u, true); err != nil {
			t.Errorf("server-side dry run of %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}
