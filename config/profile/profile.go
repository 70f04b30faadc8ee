// Package profile holds the KubeSchedulerConfiguration that runs the
// OpenLocal plugin (open-local-scheduler.yaml, shipped as is) and renders it
// for a particular cluster: kubeconfig, client rate limits, leader
// election, plugin args.
package profile

import (
	_ "embed"
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	schedv1 "k8s.io/kube-scheduler/config/v1"
	"sigs.k8s.io/yaml"

	"github.com/open-local/open-local/config"
	configv1 "github.com/open-local/open-local/config/v1"
)

// SchedulerName is the profile pods name in spec.schedulerName.
const SchedulerName = "open-local-scheduler"

// YAML is the shipped configuration.
//
//go:embed open-local-scheduler.yaml
var YAML []byte

// Options adapt the shipped configuration to a cluster. Zero values keep
// what the file says.
type Options struct {
	// Kubeconfig goes to clientConnection.kubeconfig (with --config the
	// scheduler ignores --kubeconfig).
	Kubeconfig string
	// QPS and Burst of the scheduler's client.
	QPS   float32
	Burst int32
	// DisableLeaderElection for a single scheduler in tests.
	DisableLeaderElection bool
	// Args, when set, replace the OpenLocal plugin args.
	Args *configv1.OpenLocalArgs
}

// Render returns the configuration with opts applied, as YAML.
func Render(opts Options) ([]byte, error) {
	cfg, err := Parse(YAML)
	if err != nil {
		return nil, err
	}
	if opts.Kubeconfig != "" {
		cfg.ClientConnection.Kubeconfig = opts.Kubeconfig
	}
	if opts.QPS != 0 {
		cfg.ClientConnection.QPS = opts.QPS
	}
	if opts.Burst != 0 {
		cfg.ClientConnection.Burst = opts.Burst
	}
	if opts.DisableLeaderElection {
		no := false
		cfg.LeaderElection.LeaderElect = &no
	}
	if opts.Args != nil {
		args := opts.Args.DeepCopy()
		args.APIVersion, args.Kind = configv1.SchemeGroupVersion.String(), config.PluginName+"Args"
		raw, err := json.Marshal(args)
		if err != nil {
			return nil, err
		}
		set := false
		for i := range cfg.Profiles {
			for j := range cfg.Profiles[i].PluginConfig {
				if pc := &cfg.Profiles[i].PluginConfig[j]; pc.Name == config.PluginName {
					pc.Args = runtime.RawExtension{Raw: raw}
					set = true
				}
			}
		}
		if !set {
			return nil, fmt.Errorf("the shipped configuration has no %s pluginConfig", config.PluginName)
		}
	}
	return yaml.Marshal(cfg)
}

// Parse reads a v1 KubeSchedulerConfiguration without defaulting it (the
// scheduler defaults it when it loads the file).
func Parse(data []byte) (*schedv1.KubeSchedulerConfiguration, error) {
	cfg := &schedv1.KubeSchedulerConfiguration{}
	if err := yaml.UnmarshalStrict(data, cfg); err != nil {
		return nil, fmt.Errorf("KubeSchedulerConfiguration: %w", err)
	}
	return cfg, nil
}
