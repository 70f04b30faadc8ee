// Package config is the typed API of the OpenLocal scheduler plugin's
// arguments, in the internal version the scheduler framework hands to the
// plugin, and the KubeSchedulerConfiguration that runs the plugin as the
// secondary scheduler "open-local-scheduler".
//
// The layout follows the in-tree plugins and sigs.k8s.io/scheduler-plugins:
// the versioned type users write (config/v1, kind OpenLocalArgs in
// kubescheduler.config.k8s.io/v1) with its defaults and conversion,
// validation (config/validation), and config/scheme, which registers both
// into the kube-scheduler's own scheme so a --config file decodes, defaults
// and converts our args like any in-tree plugin's.
//
// +k8s:deepcopy-gen=package
package config
