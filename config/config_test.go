package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/kubernetes/cmd/kube-scheduler/app/options"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
	"k8s.io/utils/ptr"

	"github.com/open-local/open-local/config"
	"github.com/open-local/open-local/config/profile"
	_ "github.com/open-local/open-local/config/scheme"
	configv1 "github.com/open-local/open-local/config/v1"
	"github.com/open-local/open-local/config/validation"
)

// load decodes a KubeSchedulerConfiguration the way the scheduler binary
// does (--config), and returns the OpenLocal args of its first profile.
func load(t *testing.T, yaml string) (*config.OpenLocalArgs, error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := options.LoadConfigFromFile(ktesting.NewLogger(t, ktesting.DefaultConfig), file)
	if err != nil {
		return nil, err
	}
	return findArgs(t, cfg), nil
}

func findArgs(t *testing.T, cfg *schedconfig.KubeSchedulerConfiguration) *config.OpenLocalArgs {
	t.Helper()
	for _, pc := range cfg.Profiles[0].PluginConfig {
		if pc.Name == config.PluginName {
			args, ok := pc.Args.(*config.OpenLocalArgs)
			if !ok {
				t.Fatalf("args decoded as %T, want *config.OpenLocalArgs", pc.Args)
			}
			return args
		}
	}
	t.Fatal("no OpenLocal pluginConfig after defaulting")
	return nil
}

const header = `apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: s
  plugins:
    multiPoint:
      enabled: [{name: OpenLocal}]
`

func defaults() *config.OpenLocalArgs {
	return &config.OpenLocalArgs{
		Strategy:                config.StrategyBinpack,
		ScoreWeights:            config.ScoreWeights{LVM: 1, Device: 1},
		Provisioners:            []string{config.ProvisionerName, config.LegacyProvisionerName},
		DefaultInlineVolumeSize: resource.MustParse("1Gi"),
		ThinPoolFillThresholds:  config.ThinPoolFillThresholds{DataPercent: 90, MetadataPercent: 80},
	}
}

func TestDecodeArgs(t *testing.T) {
	for _, tc := range []struct {
		name    string
		yaml    string
		want    func(*config.OpenLocalArgs)
		wantErr string
	}{
		{name: "no pluginConfig gets defaults", yaml: header},
		{name: "empty args get defaults", yaml: header + "  pluginConfig:\n  - name: OpenLocal\n    args: {}\n"},
		{
			name: "every field",
			yaml: header + `  pluginConfig:
  - name: OpenLocal
    args:
      strategy: spread
      scoreWeights: {lvm: 3, device: 0}
      storageFreePodAntiAffinityWeight: 50
      provisioners: [local.csi.aliyun.com]
      defaultInlineVolumeSize: 2Gi
      thinPoolFillThresholds: {dataPercent: 95, metadataPercent: 70}
`,
			want: func(a *config.OpenLocalArgs) {
				a.Strategy = config.StrategySpread
				a.ScoreWeights = config.ScoreWeights{LVM: 3, Device: 0}
				a.StorageFreePodAntiAffinityWeight = 50
				a.Provisioners = []string{config.ProvisionerName}
				a.DefaultInlineVolumeSize = resource.MustParse("2Gi")
				a.ThinPoolFillThresholds = config.ThinPoolFillThresholds{DataPercent: 95, MetadataPercent: 70}
			},
		},
		{
			name: "one threshold set, the other defaulted",
			yaml: header + "  pluginConfig:\n  - name: OpenLocal\n    args: {thinPoolFillThresholds: {metadataPercent: 60}}\n",
			want: func(a *config.OpenLocalArgs) { a.ThinPoolFillThresholds.MetadataPercent = 60 },
		},
		{
			name: "explicit apiVersion and kind",
			yaml: header + "  pluginConfig:\n  - name: OpenLocal\n    args:\n      apiVersion: kubescheduler.config.k8s.io/v1\n      kind: OpenLocalArgs\n      strategy: spread\n",
			want: func(a *config.OpenLocalArgs) { a.Strategy = config.StrategySpread },
		},
		{
			name:    "unknown field is refused (strict decoding)",
			yaml:    header + "  pluginConfig:\n  - name: OpenLocal\n    args: {strategi: spread}\n",
			wantErr: `unknown field "strategi"`,
		},
		{
			name:    "wrong type",
			yaml:    header + "  pluginConfig:\n  - name: OpenLocal\n    args: {scoreWeights: {lvm: high}}\n",
			wantErr: "lvm",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := load(t, tc.yaml)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := defaults()
			if tc.want != nil {
				tc.want(want)
			}
			assertArgs(t, got, want)
		})
	}
}

func assertArgs(t *testing.T, got, want *config.OpenLocalArgs) {
	t.Helper()
	got, want = got.DeepCopy(), want.DeepCopy()
	if got.DefaultInlineVolumeSize.Cmp(want.DefaultInlineVolumeSize) != 0 {
		t.Errorf("defaultInlineVolumeSize = %s, want %s", got.DefaultInlineVolumeSize.String(), want.DefaultInlineVolumeSize.String())
	}
	got.DefaultInlineVolumeSize, want.DefaultInlineVolumeSize = resource.Quantity{}, resource.Quantity{}
	got.TypeMeta = want.TypeMeta
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
}

func TestValidateArgs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(*config.OpenLocalArgs)
		want   []string // substrings of the aggregate error, none = valid
	}{
		{name: "defaults are valid"},
		{name: "spread", modify: func(a *config.OpenLocalArgs) { a.Strategy = config.StrategySpread }},
		{name: "fill thresholds of 100 turn the rule off", modify: func(a *config.OpenLocalArgs) {
			a.ThinPoolFillThresholds = config.ThinPoolFillThresholds{DataPercent: 100, MetadataPercent: 100}
		}},
		{name: "fill thresholds out of range", modify: func(a *config.OpenLocalArgs) {
			a.ThinPoolFillThresholds = config.ThinPoolFillThresholds{DataPercent: 0, MetadataPercent: 101}
		}, want: []string{"args.thinPoolFillThresholds.dataPercent: Invalid value: 0: must be in the range [1, 100]",
			"args.thinPoolFillThresholds.metadataPercent: Invalid value: 101: must be in the range [1, 100]"}},
		{name: "unknown strategy", modify: func(a *config.OpenLocalArgs) { a.Strategy = "roundrobin" },
			want: []string{`args.strategy: Unsupported value: "roundrobin"`}},
		{name: "negative weight", modify: func(a *config.OpenLocalArgs) { a.ScoreWeights.LVM = -1 },
			want: []string{"args.scoreWeights.lvm: Invalid value: -1: must be in the range [0, 100]"}},
		{name: "all weights zero", modify: func(a *config.OpenLocalArgs) { a.ScoreWeights = config.ScoreWeights{} },
			want: []string{"at least one weight must be positive"}},
		{name: "anti-affinity above 100", modify: func(a *config.OpenLocalArgs) { a.StorageFreePodAntiAffinityWeight = 101 },
			want: []string{"args.storageFreePodAntiAffinityWeight"}},
		{name: "no provisioners", modify: func(a *config.OpenLocalArgs) { a.Provisioners = nil },
			want: []string{"args.provisioners: Required value"}},
		{name: "bad and duplicate provisioner", modify: func(a *config.OpenLocalArgs) {
			a.Provisioners = []string{"Local_CSI", config.ProvisionerName, config.ProvisionerName}
		}, want: []string{`args.provisioners[0]: Invalid value: "Local_CSI"`, `args.provisioners[2]: Duplicate value`}},
		{name: "zero inline size", modify: func(a *config.OpenLocalArgs) { a.DefaultInlineVolumeSize = resource.Quantity{} },
			want: []string{"args.defaultInlineVolumeSize: Invalid value"}},
		{name: "inline size past 1Ei", modify: func(a *config.OpenLocalArgs) { a.DefaultInlineVolumeSize = resource.MustParse("18446743858961186816") },
			want: []string{"args.defaultInlineVolumeSize: Invalid value", "more than 1Ei"}},
		{name: "inline size in milli-bytes", modify: func(a *config.OpenLocalArgs) { a.DefaultInlineVolumeSize = resource.MustParse("1m") },
			want: []string{"less than one byte"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := defaults()
			if tc.modify != nil {
				tc.modify(args)
			}
			err := validation.ValidateOpenLocalArgs(field.NewPath("args"), args)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// The shipped profile loads through the scheduler's own loader with valid
// args, and Render keeps it loadable while applying options.
func TestShippedProfile(t *testing.T) {
	args, err := load(t, string(profile.YAML))
	if err != nil {
		t.Fatal(err)
	}
	assertArgs(t, args, defaults())
	if err := validation.ValidateOpenLocalArgs(field.NewPath("args"), args); err != nil {
		t.Fatal(err)
	}

	out, err := profile.Render(profile.Options{
		Kubeconfig: "/tmp/kc", QPS: 1000, Burst: 2000, DisableLeaderElection: true,
		Args: &configv1.OpenLocalArgs{Strategy: ptr.To("spread")},
	})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "rendered.yaml")
	if err := os.WriteFile(file, out, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := options.LoadConfigFromFile(ktesting.NewLogger(t, ktesting.DefaultConfig), file)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if cfg.ClientConnection.Kubeconfig != "/tmp/kc" || cfg.ClientConnection.QPS != 1000 || cfg.ClientConnection.Burst != 2000 || cfg.LeaderElection.LeaderElect {
		t.Errorf("options not applied: %+v %+v", cfg.ClientConnection, cfg.LeaderElection)
	}
	if cfg.Profiles[0].SchedulerName != profile.SchedulerName {
		t.Errorf("schedulerName = %q", cfg.Profiles[0].SchedulerName)
	}
	want := defaults()
	want.Strategy = config.StrategySpread
	assertArgs(t, findArgs(t, cfg), want)
}
