/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package nlscontroller

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// Spec is the NodeLocalStorage spec of node under cfg, with open-local's
// precedence: globalConfig, replaced as a whole (spdkConfig, listConfig and
// resourceToBeInited together, no merging) by the LAST nodesConfig entry
// whose selector matches the node's labels. A nil selector matches no node;
// an empty one ({}) matches every node.
//
// Any invalid selector is an error, even one that would not match this node:
// applying the rest would hand a node the global config (and maybe its
// resourceToBeInited devices) when the broken entry was meant to override it.
func Spec(cfg *v1alpha1.NodeLocalStorageInitConfig, node *corev1.Node) (v1alpha1.NodeLocalStorageSpec, error) {
	g := cfg.Spec.GlobalConfig
	spec := v1alpha1.NodeLocalStorageSpec{
		NodeName:           node.Name,
		SpdkConfig:         g.SpdkConfig,
		ListConfig:         g.ListConfig,
		ResourceToBeInited: g.ResourceToBeInited,
	}
	selectors, err := Selectors(cfg)
	if err != nil {
		return v1alpha1.NodeLocalStorageSpec{}, err
	}
	set := labels.Set(node.Labels)
	for i, nc := range cfg.Spec.NodesConfig {
		if selectors[i].Matches(set) {
			spec.SpdkConfig = nc.SpdkConfig
			spec.ListConfig = nc.ListConfig
			spec.ResourceToBeInited = nc.ResourceToBeInited
		}
	}
	return *spec.DeepCopy(), nil
}

// Selectors converts every nodesConfig selector, or says which are invalid.
func Selectors(cfg *v1alpha1.NodeLocalStorageInitConfig) ([]labels.Selector, error) {
	sels := make([]labels.Selector, len(cfg.Spec.NodesConfig))
	var errs []error
	for i, nc := range cfg.Spec.NodesConfig {
		s, err := metav1.LabelSelectorAsSelector(nc.Selector)
		if err != nil {
			errs = append(errs, fmt.Errorf("nodesConfig[%d].selector: %w", i, err))
			continue
		}
		sels[i] = s
	}
	return sels, errors.Join(errs...)
}
