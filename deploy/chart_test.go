/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package deploy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
	schedvalidation "k8s.io/kubernetes/pkg/scheduler/apis/config/validation"
	"sigs.k8s.io/yaml"

	"github.com/open-local/open-local/agent/discovery"
	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/blockdev"
	olconfig "github.com/open-local/open-local/config"
	"github.com/open-local/open-local/config/profile"
	_ "github.com/open-local/open-local/config/scheme"
	"github.com/open-local/open-local/config/validation"
	"github.com/open-local/open-local/csi/identity"
	"github.com/open-local/open-local/deploy"
	"github.com/open-local/open-local/test/cluster"
)

// valueSets are the non-default installations the tests render besides the
// default one.
var valueSets = map[string][]string{
	"default": nil,
	"ha":      {"controller.replicas=2", "scheduler.replicas=2"},
	"minimal": {"snapshot.enabled=false", "snapshotController.enabled=false", "scheduler.enabled=false",
		"initConfig.device=", "storageClasses[0].default=true"},
	"monitoring": {"monitoring.serviceMonitor.enabled=true", "monitoring.grafanaDashboard.enabled=true",
		"monitoring.grafanaDashboard.namespace=monitoring"},
	"custom": {"driverName=local.csi.example.com", "fullnameOverride=ol", "kubeletDir=/var/lib/k0s/kubelet",
		"agent.lvm.useHostConfig=false", "agent.activation=loop", "images.registry=registry.example.com:5000",
		"images.pullSecrets[0].name=regcred", "scheduler.args.strategy=spread", "scheduler.schedulerName=local-storage"},
}

func TestHelmLint(t *testing.T) {
	for name, set := range valueSets {
		t.Run(name, func(t *testing.T) {
			args := []string{"lint", "--strict", deploy.ChartDir, "--namespace", namespace, "--kube-version", kubeVersion}
			for _, s := range set {
				args = append(args, "--set", s)
			}
			out := helm(t, args...)
			if !strings.Contains(string(out), "0 chart(s) failed") {
				t.Errorf("helm lint:\n%s", out)
			}
			// Every rendered object decodes into its typed API object
			// without unknown fields.
			m := render(t, set...)
			for _, u := range m.objs {
				switch u.GetKind() {
				case "DaemonSet":
					typed[appsv1.DaemonSet](t, u)
				case "Deployment":
					typed[appsv1.Deployment](t, u)
				case "ConfigMap":
					typed[corev1.ConfigMap](t, u)
				case "Service":
					typed[corev1.Service](t, u)
				case "StorageClass":
					typed[storagev1.StorageClass](t, u)
				case "CSIDriver":
					typed[storagev1.CSIDriver](t, u)
				case "NodeLocalStorageInitConfig":
					typed[v1alpha1.NodeLocalStorageInitConfig](t, u)
				}
				if ns := u.GetNamespace(); ns != "" && ns != namespace && !(name == "monitoring" && ns == "monitoring") &&
					!(u.GetKind() == "RoleBinding" && ns == "kube-system") {
					t.Errorf("%s %s in namespace %s", u.GetKind(), u.GetName(), ns)
				}
			}
		})
	}
}

// TestCSIDriver: the chart ships exactly csi/identity/csidriver.yaml, with
// the driver name of the values.
func TestCSIDriver(t *testing.T) {
	for _, driver := range []string{identity.DefaultDriverName, "local.csi.example.com"} {
		m := render(t, "driverName="+driver)
		got := typed[storagev1.CSIDriver](t, m.get(t, "CSIDriver", driver))
		want, err := identity.CSIDriver(driver)
		if err != nil {
			t.Fatal(err)
		}
		if !equality.Semantic.DeepEqual(got.Spec, want.Spec) || got.Name != want.Name {
			t.Errorf("chart CSIDriver differs from csi/identity/csidriver.yaml:\n%s", cmp.Diff(want.Spec, got.Spec))
		}
	}
}

// TestChartDefaultsMatchCode: chart defaults that restate a code default or
// a version this repository builds say the same thing.
func TestChartDefaultsMatchCode(t *testing.T) {
	m := render(t)
	ds := typed[appsv1.DaemonSet](t, m.get(t, "DaemonSet", "open-local-agent"))
	agent := container(t, ds.Spec.Template.Spec, "agent")
	if got := flagValue(agent.Command, "--regexp"); got != discovery.DefaultDeviceRegexp {
		t.Errorf("chart --regexp %q, agent default %q", got, discovery.DefaultDeviceRegexp)
	}
	if got := flagValue(agent.Command, "--device-wipe"); got != string(blockdev.WipeSignatures) {
		t.Errorf("chart --device-wipe %q, agent default %q", got, blockdev.WipeSignatures)
	}
	if got := flagValue(agent.Command, "--lvname"); got != discovery.DefaultLegacyLVPrefix {
		t.Errorf("chart --lvname %q, agent default %q", got, discovery.DefaultLegacyLVPrefix)
	}

	// Sidecar images: the versions hack/tools builds and the tests run.
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dep := typed[appsv1.Deployment](t, m.get(t, "Deployment", "open-local-controller"))
	for _, tc := range []struct{ container, module, dir string }{
		{"csi-provisioner", "github.com/kubernetes-csi/external-provisioner/v6", "external-provisioner"},
		{"csi-resizer", "github.com/kubernetes-csi/external-resizer/v2", "external-resizer"},
		{"csi-snapshotter", "github.com/kubernetes-csi/external-snapshotter/v8", "external-snapshotter"},
		{"snapshot-controller", "github.com/kubernetes-csi/external-snapshotter/v8", "external-snapshotter"},
	} {
		gomod, err := os.ReadFile(filepath.Join(root, "hack", "tools", tc.dir, "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		v := regexp.MustCompile(regexp.QuoteMeta(tc.module) + ` (v[0-9.]+)`).FindSubmatch(gomod)
		if v == nil {
			t.Fatalf("hack/tools/%s/go.mod does not require %s", tc.dir, tc.module)
		}
		img := container(t, dep.Spec.Template.Spec, tc.container).Image
		if !strings.HasSuffix(img, ":"+string(v[1])) {
			t.Errorf("%s image %s, but hack/tools builds and tests %s %s", tc.container, img, tc.module, v[1])
		}
	}
}

func TestStorageClasses(t *testing.T) {
	m := render(t)
	want := map[string]map[string]string{
		"open-local-lvm":               {"volumeType": "LVM", "csi.storage.k8s.io/fstype": "ext4"},
		"open-local-lvm-xfs":           {"volumeType": "LVM", "csi.storage.k8s.io/fstype": "xfs"},
		"open-local-lvm-io-throttling": {"volumeType": "LVM", "csi.storage.k8s.io/fstype": "ext4", "bps": "1048576", "iops": "1024"},
		// open-local's chart name for it, with its limits commented out:
		// manifests written for that chart keep their (unthrottled) class.
		"open-local-lvm-io-throttle": {"volumeType": "LVM", "csi.storage.k8s.io/fstype": "ext4"},
		"open-local-device-ssd":      {"volumeType": "Device", "mediaType": "ssd", "csi.storage.k8s.io/fstype": "ext4"},
		"open-local-device-hdd":      {"volumeType": "Device", "mediaType": "hdd", "csi.storage.k8s.io/fstype": "ext4"},
	}
	scs := m.ofKind("StorageClass")
	if len(scs) != len(want) {
		t.Errorf("%d StorageClasses, want %d", len(scs), len(want))
	}
	for name, params := range want {
		sc := typed[storagev1.StorageClass](t, m.get(t, "StorageClass", name))
		if sc.Provisioner != identity.DefaultDriverName || *sc.VolumeBindingMode != storagev1.VolumeBindingWaitForFirstConsumer ||
			*sc.ReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
			t.Errorf("%s: provisioner %s, binding %s, reclaim %s", name, sc.Provisioner, *sc.VolumeBindingMode, *sc.ReclaimPolicy)
		}
		if !cmp.Equal(sc.Parameters, params) {
			t.Errorf("%s parameters: %s", name, cmp.Diff(params, sc.Parameters))
		}
		// The driver accepts them.
		if _, err := parameters.Parse(sc.Parameters); err != nil {
			t.Errorf("%s: the CSI driver refuses its parameters: %v", name, err)
		}
		if wantExpand := params["volumeType"] == "LVM"; sc.AllowVolumeExpansion == nil || *sc.AllowVolumeExpansion != wantExpand {
			t.Errorf("%s: allowVolumeExpansion %v, want %v", name, sc.AllowVolumeExpansion, wantExpand)
		}
	}
	// volumeBindingMode is a value per class (the CSI controller places
	// Immediate volumes itself). --set on a list replaces the list.
	imm := render(t, "storageClasses[0].name=fast", "storageClasses[0].enabled=true",
		"storageClasses[0].parameters.volumeType=LVM", "storageClasses[0].volumeBindingMode=Immediate")
	if sc := typed[storagev1.StorageClass](t, imm.get(t, "StorageClass", "fast")); *sc.VolumeBindingMode != storagev1.VolumeBindingImmediate {
		t.Errorf("volumeBindingMode=Immediate: class has %s", *sc.VolumeBindingMode)
	}
	vsc := m.get(t, "VolumeSnapshotClass", "open-local-lvm")
	if vsc.Object["driver"] != identity.DefaultDriverName || vsc.Object["deletionPolicy"] != "Delete" {
		t.Errorf("VolumeSnapshotClass: %v", vsc.Object)
	}
}

func TestInitConfig(t *testing.T) {
	for _, tc := range []struct {
		set      []string
		wantInit []v1alpha1.VGToBeInited
	}{
		{nil, []v1alpha1.VGToBeInited{{Name: "open-local-pool-0", Devices: []string{"/dev/vdb"}}}},
		{[]string{"initConfig.device=/dev/nvme1n1"}, []v1alpha1.VGToBeInited{{Name: "open-local-pool-0", Devices: []string{"/dev/nvme1n1"}}}},
		{[]string{"initConfig.device="}, nil},
	} {
		m := render(t, tc.set...)
		nlsc := typed[v1alpha1.NodeLocalStorageInitConfig](t, m.get(t, "NodeLocalStorageInitConfig", "open-local"))
		g := nlsc.Spec.GlobalConfig
		if want := []string{"open-local-pool-[0-9]+", "yoda-pool[0-9]+", "ackdistro-pool"}; !slices.Equal(g.ListConfig.VGs.Include, want) {
			t.Errorf("%v: vgs.include %v, want %v", tc.set, g.ListConfig.VGs.Include, want)
		}
		if !cmp.Equal(g.ResourceToBeInited.VGs, tc.wantInit) {
			t.Errorf("%v: resourceToBeInited.vgs: %s", tc.set, cmp.Diff(tc.wantInit, g.ResourceToBeInited.VGs))
		}
	}
}

// TestSchedulerConfig loads the rendered KubeSchedulerConfiguration as the
// scheduler binary does (--config) and checks it against config/profile.
func TestSchedulerConfig(t *testing.T) {
	shipped := loadSchedulerConfig(t, profile.YAML)
	for _, tc := range []struct {
		name string
		set  []string
		args olconfig.OpenLocalArgs
	}{
		{name: "default", args: *findOpenLocalArgs(t, shipped)},
		{name: "custom", set: []string{"scheduler.args.strategy=spread", "scheduler.args.scoreWeights.lvm=3",
			"scheduler.args.storageFreePodAntiAffinityWeight=20", "scheduler.args.defaultInlineVolumeSize=2Gi", "scheduler.args.thinPoolFillThresholds.dataPercent=95",
			"driverName=local.csi.example.com", "scheduler.schedulerName=local-storage", "scheduler.scoreWeight=5"},
			args: olconfig.OpenLocalArgs{Strategy: olconfig.StrategySpread, ScoreWeights: olconfig.ScoreWeights{LVM: 3, Device: 1},
				StorageFreePodAntiAffinityWeight: 20, Provisioners: []string{"local.csi.example.com", olconfig.LegacyProvisionerName},
				DefaultInlineVolumeSize: resource.MustParse("2Gi"), ThinPoolFillThresholds: olconfig.ThinPoolFillThresholds{DataPercent: 95, MetadataPercent: 80}}},
		// open-local's own driver name (kept by clusters that switch in
		// place) is already the legacy provisioner: listed once, or the
		// scheduler refuses its configuration.
		{name: "yodaplugin", set: []string{"driverName=" + olconfig.LegacyProvisionerName},
			args: func() olconfig.OpenLocalArgs {
				a := *findOpenLocalArgs(t, shipped)
				a.Provisioners = []string{olconfig.LegacyProvisionerName}
				return a
			}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := render(t, tc.set...)
			cm := typed[corev1.ConfigMap](t, m.get(t, "ConfigMap", "open-local-scheduler-config"))
			cfg := loadSchedulerConfig(t, []byte(cm.Data["scheduler-config.yaml"]))
			if err := schedvalidation.ValidateKubeSchedulerConfiguration(cfg); err != nil {
				t.Fatalf("kube-scheduler refuses the configuration: %v", err)
			}
			if len(cfg.Profiles) != 1 {
				t.Fatalf("%d profiles, want 1", len(cfg.Profiles))
			}
			wantName := profile.SchedulerName
			if i := slices.IndexFunc(tc.set, func(s string) bool { return strings.HasPrefix(s, "scheduler.schedulerName=") }); i >= 0 {
				wantName = strings.TrimPrefix(tc.set[i], "scheduler.schedulerName=")
			}
			if cfg.Profiles[0].SchedulerName != wantName {
				t.Errorf("profile %q, want %q", cfg.Profiles[0].SchedulerName, wantName)
			}
			// The plugin set (and so PreBind's order: OpenLocal before
			// VolumeBinding) is the shipped profile's; only the score
			// weight is a value.
			got, want := cfg.Profiles[0].Plugins.DeepCopy(), shipped.Profiles[0].Plugins.DeepCopy()
			setScoreWeight(got, 0)
			setScoreWeight(want, 0)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("plugins differ from config/profile:\n%s", diff)
			}
			pre := cfg.Profiles[0].Plugins.PreBind.Enabled
			if i, j := pluginIndex(pre, olconfig.PluginName), pluginIndex(pre, "VolumeBinding"); i < 0 || j < 0 || i > j {
				t.Errorf("PreBind order %v: OpenLocal must come before VolumeBinding", pre)
			}
			args := findOpenLocalArgs(t, cfg)
			if diff := cmp.Diff(&tc.args, args); diff != "" {
				t.Errorf("OpenLocal args:\n%s", diff)
			}
			// The CSI controller places by the same thin pool fill thresholds.
			dep := typed[appsv1.Deployment](t, m.get(t, "Deployment", "open-local-controller"))
			for _, c := range dep.Spec.Template.Spec.Containers {
				if c.Name != "csi-controller" {
					continue
				}
				for _, flag := range []string{fmt.Sprintf("--thin-pool-data-fill-percent=%d", args.ThinPoolFillThresholds.DataPercent),
					fmt.Sprintf("--thin-pool-metadata-fill-percent=%d", args.ThinPoolFillThresholds.MetadataPercent)} {
					if !slices.Contains(c.Command, flag) {
						t.Errorf("csi-controller command %v lacks %s (the scheduler's threshold)", c.Command, flag)
					}
				}
			}
			// The CSI node plugin creates inline volumes the scheduler counted
			// from the pod (it writes no record for them): it must choose
			// the VG and the default size by the scheduler's rules, or a pod
			// gets another size than the operator configured and the VG the
			// scheduler counted differs from the one spent.
			ds := typed[appsv1.DaemonSet](t, m.get(t, "DaemonSet", "open-local-agent"))
			plugin := container(t, ds.Spec.Template.Spec, "csi-plugin")
			for _, flag := range []string{"--inline-strategy=" + string(args.Strategy),
				"--default-inline-volume-size=" + args.DefaultInlineVolumeSize.String()} {
				if !slices.Contains(plugin.Command, flag) {
					t.Errorf("csi-plugin command %v lacks %s (the scheduler's rule)", plugin.Command, flag)
				}
			}
			if err := validation.ValidateOpenLocalArgs(field.NewPath("args"), args); err != nil {
				t.Error(err)
			}
			le := cfg.LeaderElection
			if !le.LeaderElect || le.ResourceNamespace != namespace || le.ResourceName != wantName {
				t.Errorf("leader election %+v: want on, Lease %s/%s", le, namespace, wantName)
			}
			// The Role lets the scheduler renew exactly that Lease.
			role := m.get(t, "Role", "open-local-scheduler-leader-election")
			if !strings.Contains(mustYAML(t, role.Object["rules"]), "- "+wantName) {
				t.Errorf("leader-election Role does not name Lease %s: %v", wantName, role.Object["rules"])
			}
		})
	}
}

func loadSchedulerConfig(t *testing.T, data []byte) *schedconfig.KubeSchedulerConfiguration {
	t.Helper()
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := options.LoadConfigFromFile(ktesting.NewLogger(t, ktesting.DefaultConfig), file)
	if err != nil {
		t.Fatalf("kube-scheduler cannot load the configuration: %v\n%s", err, data)
	}
	return cfg
}

func findOpenLocalArgs(t *testing.T, cfg *schedconfig.KubeSchedulerConfiguration) *olconfig.OpenLocalArgs {
	t.Helper()
	for _, pc := range cfg.Profiles[0].PluginConfig {
		if pc.Name == olconfig.PluginName {
			args, ok := pc.Args.(*olconfig.OpenLocalArgs)
			if !ok {
				t.Fatalf("args decoded as %T", pc.Args)
			}
			return args
		}
	}
	t.Fatal("no OpenLocal pluginConfig")
	return nil
}

func setScoreWeight(p *schedconfig.Plugins, w int32) {
	for i := range p.Score.Enabled {
		if p.Score.Enabled[i].Name == olconfig.PluginName {
			p.Score.Enabled[i].Weight = w
		}
	}
}

func pluginIndex(ps []schedconfig.Plugin, name string) int {
	return slices.IndexFunc(ps, func(p schedconfig.Plugin) bool { return p.Name == name })
}

func mustYAML(t *testing.T, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func container(t testing.TB, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return corev1.Container{}
}

// flagValue returns the value of --name=value in args ("" when absent).
func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}
