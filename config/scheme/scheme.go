// Package scheme registers the OpenLocal plugin args with the
// kube-scheduler's config scheme. Import it (for its side effect) in any
// binary or test that decodes a KubeSchedulerConfiguration naming OpenLocalArgs.
package scheme

import (
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	kubeschedulerscheme "k8s.io/kubernetes/pkg/scheduler/apis/config/scheme"

	"github.com/open-local/open-local/config"
	configv1 "github.com/open-local/open-local/config/v1"
)

func init() {
	// kubeschedulerscheme.Scheme was built in its own init, before ours ran
	// (we import it), so add our types to it explicitly.
	utilruntime.Must(config.AddToScheme(kubeschedulerscheme.Scheme))
	utilruntime.Must(configv1.AddToScheme(kubeschedulerscheme.Scheme))
}
