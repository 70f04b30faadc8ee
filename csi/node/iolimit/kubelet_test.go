/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package iolimit_test

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/pkg/kubelet/cm"

	"github.com/open-local/open-local/csi/node/iolimit"
)

// TestPodCgroupIsKubelets compares our names with kubelet's own code at the
// pinned Kubernetes version: the cgroup root parsed in cgroupfs form, plus
// "kubepods" (--cgroups-per-qos), the QoS class except Guaranteed, and
// pod<uid> (qos_container_manager_linux.go, pod_container_manager_linux.go),
// converted by the driver's CgroupName.ToCgroupfs / ToSystemd.
func TestPodCgroupIsKubelets(t *testing.T) {
	for _, root := range []string{"/", "/kubelet", "/a/b"} {
		for _, qos := range []corev1.PodQOSClass{corev1.PodQOSGuaranteed, corev1.PodQOSBurstable, corev1.PodQOSBestEffort} {
			name := cm.NewCgroupName(cm.ParseCgroupfsToCgroupName(root), "kubepods")
			if qos != corev1.PodQOSGuaranteed {
				name = cm.NewCgroupName(name, strings.ToLower(string(qos)))
			}
			name = cm.NewCgroupName(name, cm.GetPodCgroupNameSuffix(uid))
			for driver, want := range map[iolimit.Driver]string{iolimit.DriverCgroupfs: name.ToCgroupfs(), iolimit.DriverSystemd: name.ToSystemd()} {
				got, err := iolimit.PodCgroup(iolimit.Layout{Driver: driver, Root: root}, qos, uid)
				if err != nil || got != want {
					t.Errorf("%s, root %s, %s: got %q, %v; kubelet: %q", driver, root, qos, got, err, want)
				}
			}
		}
	}
}
