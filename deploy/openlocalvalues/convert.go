/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package openlocalvalues turns a values file of alibaba/open-local's Helm
// chart (the keys of its v0.8.0 chart, helm/values.yaml) into a values file
// of ours, so an operator switching keeps the choices made there: driver
// name, classes (names, parameters, binding mode, reclaim, expansion),
// spread/binpack, the device the VG is made from, the kubelet directory,
// the volume limit, labels, dashboard. Keys that have no meaning here (the
// extender, its init job, open-local's images) are reported, not guessed;
// unknown keys and values we would run differently (SPDK) are refused.
package openlocalvalues

import (
	"bytes"
	"fmt"
	"slices"
	"sort"

	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/deploy"
)

// openLocal is open-local v0.8.0's values.yaml, key for key.
type openLocal struct {
	Name         string            `json:"name"`
	Namespace    string            `json:"namespace"`
	Driver       string            `json:"driver"`
	CustomLabels map[string]string `json:"customLabels"`
	Images       map[string]struct {
		Image string `json:"image"`
		Tag   string `json:"tag"`
	} `json:"images"`
	Agent struct {
		Name              string `json:"name"`
		Device            string `json:"device"`
		KubeletDir        string `json:"kubelet_dir"`
		VolumeNamePrefix  string `json:"volume_name_prefix"`
		SPDK              bool   `json:"spdk"`
		DriverMode        string `json:"driverMode"`
		MaxVolumesPerNode *int64 `json:"max_volumes_per_node"`
	} `json:"agent"`
	Extender struct {
		Name     string `json:"name"`
		Strategy string `json:"strategy"`
		Port     int    `json:"port"`
		InitJob  *bool  `json:"init_job"`
	} `json:"extender"`
	Controller struct {
		UpdateNLS string `json:"update_nls"`
	} `json:"controller"`
	StorageClass map[string]*openLocalClass `json:"storageclass"`
	Monitor      struct {
		Enabled   bool   `json:"enabled"`
		Namespace string `json:"namespace"`
	} `json:"monitor"`
	Global struct {
		RegistryURL     string `json:"RegistryURL"`
		ImagePullPolicy string `json:"ImagePullPolicy"`
	} `json:"global"`
}

type openLocalClass struct {
	Enabled              *bool             `json:"enabled"`
	Name                 string            `json:"name"`
	Parameters           map[string]string `json:"parameters"`
	ReclaimPolicy        string            `json:"reclaimPolicy"`
	VolumeBindingMode    string            `json:"volumeBindingMode"`
	AllowVolumeExpansion *bool             `json:"allowVolumeExpansion"`
}

// openLocalClassNames are the names open-local's chart gives its class keys:
// a class keeps its place in our list (and our defaults) by that name.
var openLocalClassNames = map[string]string{
	"lvm":          "open-local-lvm",
	"lvm_xfs":      "open-local-lvm-xfs",
	"lvm_throttle": "open-local-lvm-io-throttle",
	"device_ssd":   "open-local-device-ssd",
	"device_hdd":   "open-local-device-hdd",
}

// ourClass is one entry of our chart's storageClasses.
type ourClass struct {
	Name                 string            `json:"name"`
	Enabled              bool              `json:"enabled"`
	Default              bool              `json:"default,omitempty"`
	AllowVolumeExpansion bool              `json:"allowVolumeExpansion"`
	ReclaimPolicy        string            `json:"reclaimPolicy,omitempty"`
	VolumeBindingMode    string            `json:"volumeBindingMode,omitempty"`
	Parameters           map[string]string `json:"parameters"`
}

// Convert reads open-local's values and returns ours (YAML, only the keys
// that carry a choice) and notes on what was not carried over and why.
func Convert(in []byte) ([]byte, []string, error) {
	var ol openLocal
	if err := yaml.UnmarshalStrict(in, &ol); err != nil {
		return nil, nil, fmt.Errorf("not a values file of open-local's chart (v0.8.0 keys): %w", err)
	}
	var notes []string
	note := func(format string, a ...any) { notes = append(notes, fmt.Sprintf(format, a...)) }
	out := map[string]any{}
	set := func(v any, path ...string) {
		m := out
		for _, k := range path[:len(path)-1] {
			next, ok := m[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[k] = next
			}
			m = next
		}
		m[path[len(path)-1]] = v
	}

	if ol.Agent.SPDK {
		return nil, nil, fmt.Errorf("agent.spdk: SPDK volumes are not supported; switch only nodes without them")
	}
	if ol.Driver != "" {
		if errs := validation.IsDNS1123Subdomain(ol.Driver); len(errs) > 0 {
			return nil, nil, fmt.Errorf("driver %q: %v", ol.Driver, errs)
		}
		set(ol.Driver, "driverName")
	}
	if ol.Name != "" && ol.Name != "open-local" {
		if errs := validation.IsDNS1123Label(ol.Name); len(errs) > 0 || len(ol.Name) > 40 {
			return nil, nil, fmt.Errorf("name %q: not a DNS label of at most 40 characters", ol.Name)
		}
		set(ol.Name, "fullnameOverride")
	}
	if ol.Namespace != "" {
		note("namespace %q: install with helm --namespace %s", ol.Namespace, ol.Namespace)
	}
	if len(ol.CustomLabels) > 0 {
		for k, v := range ol.CustomLabels {
			if errs := validation.IsQualifiedName(k); len(errs) > 0 {
				return nil, nil, fmt.Errorf("customLabels key %q: %v", k, errs)
			}
			if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
				return nil, nil, fmt.Errorf("customLabels[%s] %q: %v", k, v, errs)
			}
		}
		set(ol.CustomLabels, "customLabels")
	}
	if len(ol.Images) > 0 || ol.Global.RegistryURL != "" {
		note("images, global.RegistryURL: open-local's images are not ours (images.node/controller/scheduler); set images.registry to your mirror")
	}
	if p := ol.Global.ImagePullPolicy; p != "" {
		if !slices.Contains([]string{"Always", "IfNotPresent", "Never"}, p) {
			return nil, nil, fmt.Errorf("global.ImagePullPolicy %q: Always, IfNotPresent or Never", p)
		}
		set(p, "images", "pullPolicy")
	}

	if ol.Agent.Device != "" {
		set(ol.Agent.Device, "initConfig", "device")
	}
	if ol.Agent.KubeletDir != "" {
		set(ol.Agent.KubeletDir, "kubeletDir")
	}
	if n := ol.Agent.MaxVolumesPerNode; n != nil {
		if *n < 0 || *n > 1<<31-1 {
			return nil, nil, fmt.Errorf("agent.max_volumes_per_node %d: 0 to 2^31-1", *n)
		}
		set(*n, "agent", "maxVolumesPerNode")
	}
	if p := ol.Agent.VolumeNamePrefix; p != "" && p != "local" {
		note("agent.volume_name_prefix %q: existing volumes keep their names; new PVs are named by csi-provisioner (pvc-<uid>)", p)
	}
	if m := ol.Agent.DriverMode; m != "" && m != "node" {
		note("agent.driverMode %q: our CSI controller always runs in the controller Deployment", m)
	}

	switch ol.Extender.Strategy {
	case "":
	case "binpack", "spread":
		set(ol.Extender.Strategy, "scheduler", "args", "strategy")
	default:
		return nil, nil, fmt.Errorf("extender.strategy %q: binpack or spread", ol.Extender.Strategy)
	}
	if ol.Extender.Port != 0 || ol.Extender.InitJob != nil || ol.Extender.Name != "" {
		note("extender: there is no extender; our scheduler is its own Deployment and pods opt in with schedulerName (see admission.schedulerNamePolicy); remove open-local's extender from the default scheduler's configuration")
	}
	if u := ol.Controller.UpdateNLS; u != "" && u != "true" {
		note("controller.update_nls %q: our controller always keeps NodeLocalStorage specs in line with the init config", u)
	}

	if len(ol.StorageClass) > 0 {
		classes, err := convertClasses(ol.StorageClass)
		if err != nil {
			return nil, nil, err
		}
		set(classes, "storageClasses")
	}

	if ol.Monitor.Enabled {
		set(true, "monitoring", "grafanaDashboard", "enabled")
		if ns := ol.Monitor.Namespace; ns != "" {
			if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
				return nil, nil, fmt.Errorf("monitor.namespace %q: %v", ns, errs)
			}
			set(ns, "monitoring", "grafanaDashboard", "namespace")
		}
	}

	y, err := yaml.Marshal(out)
	if err != nil {
		return nil, nil, err
	}
	var b bytes.Buffer
	b.WriteString("# Values for open-local's chart (deploy/helm/open-local), converted from alibaba/open-local's.\n")
	for _, n := range notes {
		fmt.Fprintf(&b, "# note: %s\n", n)
	}
	b.Write(y)
	return b.Bytes(), notes, nil
}

// convertClasses lays open-local's classes over our default list: a class
// of ours that open-local's chart also has takes its settings; ours stay
// (io-throttling: open-local's throttle class has its limits commented out).
func convertClasses(in map[string]*openLocalClass) ([]ourClass, error) {
	var defaults struct {
		StorageClasses []ourClass `json:"storageClasses"`
	}
	if err := yaml.Unmarshal(deploy.Values, &defaults); err != nil {
		return nil, fmt.Errorf("the chart's values.yaml: %w", err)
	}
	classes := defaults.StorageClasses
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	names := map[string]string{}
	for _, key := range keys {
		c := in[key]
		if c == nil {
			continue
		}
		defaultName, known := openLocalClassNames[key]
		if !known {
			return nil, fmt.Errorf("storageclass.%s: open-local's chart has no such class (lvm, lvm_xfs, lvm_throttle, device_ssd, device_hdd)", key)
		}
		name := c.Name
		if name == "" {
			name = defaultName
		}
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			return nil, fmt.Errorf("storageclass.%s.name %q: %v", key, name, errs)
		}
		if other, dup := names[name]; dup {
			return nil, fmt.Errorf("storageclass.%s.name %q: also the name of storageclass.%s", key, name, other)
		}
		names[name] = key
		if _, err := parameters.Parse(c.Parameters); err != nil {
			return nil, fmt.Errorf("storageclass.%s.parameters: %w", key, err)
		}
		if m := c.VolumeBindingMode; m != "" && m != "WaitForFirstConsumer" && m != "Immediate" {
			return nil, fmt.Errorf("storageclass.%s.volumeBindingMode %q: WaitForFirstConsumer or Immediate", key, m)
		}
		if r := c.ReclaimPolicy; r != "" && r != "Delete" && r != "Retain" {
			return nil, fmt.Errorf("storageclass.%s.reclaimPolicy %q: Delete or Retain", key, r)
		}
		i := slices.IndexFunc(classes, func(o ourClass) bool { return o.Name == defaultName })
		if i < 0 {
			classes = append(classes, ourClass{Name: defaultName})
			i = len(classes) - 1
		}
		o := &classes[i]
		o.Name = name
		o.Enabled = c.Enabled == nil || *c.Enabled
		o.Parameters = c.Parameters
		o.ReclaimPolicy = c.ReclaimPolicy
		o.VolumeBindingMode = c.VolumeBindingMode
		o.AllowVolumeExpansion = c.AllowVolumeExpansion != nil && *c.AllowVolumeExpansion
	}
	// A renamed class of open-local must not collide with one of ours.
	seen := map[string]bool{}
	for _, c := range classes {
		if seen[c.Name] {
			return nil, fmt.Errorf("storage class %q: named twice after conversion", c.Name)
		}
		seen[c.Name] = true
	}
	return classes, nil
}
