/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package nlscontroller

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

func listCfg(vg string) v1alpha1.ListConfig {
	return v1alpha1.ListConfig{VGs: v1alpha1.VGList{Include: []string{vg}}}
}

func initCfg(vg string, devices ...string) v1alpha1.ResourceToBeInited {
	return v1alpha1.ResourceToBeInited{VGs: []v1alpha1.VGToBeInited{{Name: vg, Devices: devices}}}
}

func TestSpec(t *testing.T) {
	cfg := &v1alpha1.NodeLocalStorageInitConfig{Spec: v1alpha1.NodeLocalStorageInitConfigSpec{
		GlobalConfig: v1alpha1.GlobalConfig{ListConfig: listCfg("global"), ResourceToBeInited: initCfg("global", "/dev/vdb")},
		NodesConfig: []v1alpha1.NodeConfig{
			{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "a"}},
				ListConfig: listCfg("tier-a"), ResourceToBeInited: initCfg("tier-a", "/dev/sdb")},
			{Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "disk", Operator: metav1.LabelSelectorOpIn, Values: []string{"ssd"}}}},
				ListConfig: listCfg("ssd"), SpdkConfig: v1alpha1.SpdkConfig{DeviceType: "nvme"}},
			{Selector: nil, ListConfig: listCfg("never")},
		},
	}}
	tests := []struct {
		name   string
		labels map[string]string
		wantVG string
		want   v1alpha1.NodeLocalStorageSpec
	}{
		{name: "no match: global", labels: map[string]string{"tier": "b"},
			want: v1alpha1.NodeLocalStorageSpec{ListConfig: listCfg("global"), ResourceToBeInited: initCfg("global", "/dev/vdb")}},
		{name: "first entry", labels: map[string]string{"tier": "a"},
			want: v1alpha1.NodeLocalStorageSpec{ListConfig: listCfg("tier-a"), ResourceToBeInited: initCfg("tier-a", "/dev/sdb")}},
		// The last match replaces everything: no resourceToBeInited from tier-a.
		{name: "last match wins as a whole", labels: map[string]string{"tier": "a", "disk": "ssd"},
			want: v1alpha1.NodeLocalStorageSpec{ListConfig: listCfg("ssd"), SpdkConfig: v1alpha1.SpdkConfig{DeviceType: "nvme"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: tt.labels}}
			got, err := Spec(cfg, node)
			if err != nil {
				t.Fatal(err)
			}
			tt.want.NodeName = "n1"
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("spec = %+v\nwant %+v", got, tt.want)
			}
		})
	}

	// The spec is a copy: editing it must not edit the config.
	got, _ := Spec(cfg, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	got.ResourceToBeInited.VGs[0].Devices[0] = "/dev/changed"
	if cfg.Spec.GlobalConfig.ResourceToBeInited.VGs[0].Devices[0] != "/dev/vdb" {
		t.Error("Spec shares memory with the config")
	}

	all := cfg.DeepCopy()
	all.Spec.NodesConfig = append(all.Spec.NodesConfig, v1alpha1.NodeConfig{Selector: &metav1.LabelSelector{}, ListConfig: listCfg("everyone")})
	if got, _ := Spec(all, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"tier": "a"}}}); got.ListConfig.VGs.Include[0] != "everyone" {
		t.Errorf("an empty selector must match every node: %+v", got.ListConfig)
	}

	bad := cfg.DeepCopy()
	bad.Spec.NodesConfig[1].Selector.MatchExpressions[0].Operator = "Bogus"
	if _, err := Spec(bad, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"tier": "a"}}}); err == nil || !strings.Contains(err.Error(), "nodesConfig[1]") {
		t.Errorf("invalid selector: err = %v, want one naming nodesConfig[1]", err)
	}
}
