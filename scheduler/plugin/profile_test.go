package plugin

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"
	"k8s.io/kubernetes/pkg/scheduler/apis/config"
	internalcache "k8s.io/kubernetes/pkg/scheduler/backend/cache"
	"k8s.io/kubernetes/pkg/scheduler/framework/plugins"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"
	schedmetrics "k8s.io/kubernetes/pkg/scheduler/metrics"

	olfake "github.com/open-local/open-local/apis/client/clientset/versioned/fake"
	"github.com/open-local/open-local/config/profile"
)

// The shipped profile, built into a framework the way the scheduler binary
// builds it (defaults merged, multiPoint expanded), runs our PreBind before
// VolumeBinding's: the LocalVolumes exist before selected-node is set. The
// e2e test shows the same order on the real cluster by resourceVersion.
func TestShippedProfilePluginOrder(t *testing.T) {
	logger, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, profile.YAML, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := options.LoadConfigFromFile(logger, file)
	if err != nil {
		t.Fatal(err)
	}
	registry := plugins.NewInTreeRegistry()
	if err := registry.Register(Name, func(ctx context.Context, obj runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
		return newPlugin(ctx, obj, h, olfake.NewSimpleClientset(), snapfake.NewSimpleClientset())
	}); err != nil {
		t.Fatal(err)
	}
	schedmetrics.Register() // the framework instruments plugins with them
	client := fake.NewClientset()
	fw, err := frameworkruntime.NewFramework(ctx, registry, &cfg.Profiles[0],
		frameworkruntime.WithClientSet(client),
		frameworkruntime.WithInformerFactory(informers.NewSharedInformerFactory(client, 0)),
		frameworkruntime.WithSnapshotSharedLister(internalcache.NewEmptySnapshot()))
	if err != nil {
		t.Fatal(err)
	}
	if fw.ProfileName() != profile.SchedulerName {
		t.Errorf("profile %q", fw.ProfileName())
	}
	got := fw.ListPlugins()
	names := func(ps []config.Plugin) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Name)
		}
		return out
	}
	preBind := names(got.PreBind.Enabled)
	ours, vb := slices.Index(preBind, Name), slices.Index(preBind, "VolumeBinding")
	if ours < 0 || vb < 0 || ours > vb {
		t.Errorf("PreBind order %v: want %s before VolumeBinding", preBind, Name)
	}
	postFilter := names(got.PostFilter.Enabled)
	if i, dp := slices.Index(postFilter, Name), slices.Index(postFilter, "DefaultPreemption"); i < 0 || dp < 0 || i < dp {
		t.Errorf("PostFilter order %v: want %s after DefaultPreemption", postFilter, Name)
	}
	for point, list := range map[string][]config.Plugin{
		"PreFilter": got.PreFilter.Enabled, "Filter": got.Filter.Enabled, "PreScore": got.PreScore.Enabled,
		"Score": got.Score.Enabled, "Reserve": got.Reserve.Enabled,
	} {
		if !slices.Contains(names(list), Name) {
			t.Errorf("%s lacks %s: %v", point, Name, names(list))
		}
	}
	for _, p := range got.Score.Enabled {
		if p.Name == Name && p.Weight != 10 {
			t.Errorf("score weight %d, want 10", p.Weight)
		}
	}
	t.Logf("PreBind: %v; PostFilter: %v", preBind, postFilter)
}
