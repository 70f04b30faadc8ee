package v1

import (
	"k8s.io/apimachinery/pkg/conversion"
	"k8s.io/apimachinery/pkg/runtime"
	schedv1 "k8s.io/kube-scheduler/config/v1"

	"github.com/open-local/open-local/config"
)

// SchemeGroupVersion is kubescheduler.config.k8s.io/v1, where the
// scheduler looks up <PluginName>Args kinds.
var SchemeGroupVersion = schedv1.SchemeGroupVersion

// AddToScheme registers OpenLocalArgs with its defaults and conversions.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion, &OpenLocalArgs{})
	s.AddTypeDefaultingFunc(&OpenLocalArgs{}, func(obj any) { SetDefaults_OpenLocalArgs(obj.(*OpenLocalArgs)) })
	if err := s.AddConversionFunc((*OpenLocalArgs)(nil), (*config.OpenLocalArgs)(nil), func(a, b any, scope conversion.Scope) error {
		return Convert_v1_OpenLocalArgs_To_config_OpenLocalArgs(a.(*OpenLocalArgs), b.(*config.OpenLocalArgs), scope)
	}); err != nil {
		return err
	}
	return s.AddConversionFunc((*config.OpenLocalArgs)(nil), (*OpenLocalArgs)(nil), func(a, b any, scope conversion.Scope) error {
		return Convert_config_OpenLocalArgs_To_v1_OpenLocalArgs(a.(*config.OpenLocalArgs), b.(*OpenLocalArgs), scope)
	})
}

func init() {
	// See config.init: the scheduler's lazily built plugin-args scheme reads
	// the kube-scheduler v1 SchemeBuilder.
	schedv1.SchemeBuilder.Register(AddToScheme)
}
