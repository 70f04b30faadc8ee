// Package v1 is the versioned OpenLocalArgs (kind OpenLocalArgs in
// kubescheduler.config.k8s.io/v1) that users write in a
// KubeSchedulerConfiguration, with its defaults and conversion to the
// internal version in package config.
//
// +k8s:deepcopy-gen=package
package v1
