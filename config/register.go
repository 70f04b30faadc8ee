package config

import (
	"k8s.io/apimachinery/pkg/runtime"
	schedconfig "k8s.io/kubernetes/pkg/scheduler/apis/config"
)

// SchemeGroupVersion is the kube-scheduler config group's internal version.
var SchemeGroupVersion = schedconfig.SchemeGroupVersion

// AddToScheme registers the internal OpenLocalArgs.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion, &OpenLocalArgs{})
	return nil
}

func init() {
	// The scheduler converts and defaults plugin args with a scheme it builds
	// lazily from the kube-scheduler config SchemeBuilders: register there too.
	schedconfig.SchemeBuilder.Register(AddToScheme)
}
