/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package iolimit_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/open-local/open-local/csi/node/iolimit"
)

const uid = types.UID("0b7bd7b1-6d2a-4b8e-9a4c-3f1e2d5c6b7a")

// TestPodCgroup: kubelet's names of pod cgroups for both drivers, the three
// QoS classes and custom --cgroup-root values (kind uses /kubelet).
func TestPodCgroup(t *testing.T) {
	const u = "0b7bd7b1_6d2a_4b8e_9a4c_3f1e2d5c6b7a"
	tests := []struct {
		driver iolimit.Driver
		root   string
		qos    corev1.PodQOSClass
		want   string
	}{
		{iolimit.DriverCgroupfs, "/", corev1.PodQOSGuaranteed, "/kubepods/pod" + string(uid)},
		{iolimit.DriverCgroupfs, "/", corev1.PodQOSBurstable, "/kubepods/burstable/pod" + string(uid)},
		{iolimit.DriverCgroupfs, "/", corev1.PodQOSBestEffort, "/kubepods/besteffort/pod" + string(uid)},
		{iolimit.DriverCgroupfs, "", corev1.PodQOSBestEffort, "/kubepods/besteffort/pod" + string(uid)},
		{iolimit.DriverCgroupfs, "/kubelet", corev1.PodQOSBurstable, "/kubelet/kubepods/burstable/pod" + string(uid)},
		{iolimit.DriverCgroupfs, "/a/b/", corev1.PodQOSGuaranteed, "/a/b/kubepods/pod" + string(uid)},
		{iolimit.DriverSystemd, "/", corev1.PodQOSGuaranteed, "/kubepods.slice/kubepods-pod" + u + ".slice"},
		{iolimit.DriverSystemd, "/", corev1.PodQOSBurstable, "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u + ".slice"},
		{iolimit.DriverSystemd, "/", corev1.PodQOSBestEffort, "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + u + ".slice"},
		{iolimit.DriverSystemd, "/kubelet", corev1.PodQOSBestEffort,
			"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod" + u + ".slice"},
		{iolimit.DriverSystemd, "/kubelet", corev1.PodQOSGuaranteed, "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod" + u + ".slice"},
	}
	for _, tt := range tests {
		t.Run(string(tt.driver)+tt.root+string(tt.qos), func(t *testing.T) {
			got, err := iolimit.PodCgroup(iolimit.Layout{Driver: tt.driver, Root: tt.root}, tt.qos, uid)
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestPodCgroupRejects(t *testing.T) {
	for _, tt := range []struct {
		name string
		l    iolimit.Layout
		qos  corev1.PodQOSClass
		uid  types.UID
	}{
		{"path in the UID", iolimit.Layout{Driver: iolimit.DriverCgroupfs}, corev1.PodQOSBestEffort, "../../etc"},
		{"empty UID", iolimit.Layout{Driver: iolimit.DriverCgroupfs}, corev1.PodQOSBestEffort, ""},
		{"unknown QoS", iolimit.Layout{Driver: iolimit.DriverCgroupfs}, "Platinum", uid},
		{"auto is no layout", iolimit.Layout{Driver: iolimit.DriverAuto}, corev1.PodQOSBestEffort, uid},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := iolimit.PodCgroup(tt.l, tt.qos, tt.uid); err == nil {
				t.Fatalf("got %q, want an error", got)
			}
		})
	}
}

// TestFindPod: the pod cgroup is found in a directory tree shaped like
// cgroupfs for every driver × QoS × cgroup version, with the driver given
// or detected; a driver that does not match finds nothing, and says what
// it looked for.
func TestFindPod(t *testing.T) {
	for _, v := range []iolimit.Version{iolimit.V1, iolimit.V2} {
		for _, driver := range []iolimit.Driver{iolimit.DriverCgroupfs, iolimit.DriverSystemd} {
			for _, qos := range []corev1.PodQOSClass{corev1.PodQOSGuaranteed, corev1.PodQOSBurstable, corev1.PodQOSBestEffort} {
				for _, root := range []string{"/", "/kubelet"} {
					name := filepath.Join("v"+string(rune('0'+v)), string(driver), string(qos), root)
					t.Run(name, func(t *testing.T) {
						mount := t.TempDir()
						h := iolimit.Hierarchy{Version: v, Dir: mount}
						if v == iolimit.V1 {
							h.Dir = filepath.Join(mount, "blkio")
						}
						l := iolimit.Layout{Driver: driver, Root: root}
						rel, err := iolimit.PodCgroup(l, qos, uid)
						if err != nil {
							t.Fatal(err)
						}
						want := filepath.Join(h.Dir, rel)
						if err := os.MkdirAll(want, 0o755); err != nil {
							t.Fatal(err)
						}
						// Another pod's cgroup next to it must not be picked.
						other, _ := iolimit.PodCgroup(l, qos, "ffffffff-0000-0000-0000-000000000000")
						_ = os.MkdirAll(filepath.Join(h.Dir, other), 0o755)
						for _, d := range []iolimit.Driver{driver, iolimit.DriverAuto} {
							got, err := h.FindPod(iolimit.Layout{Driver: d, Root: root}, uid)
							if err != nil || got != want {
								t.Errorf("driver %s: got %q, %v; want %q", d, got, err, want)
							}
						}
						wrong := map[iolimit.Driver]iolimit.Driver{iolimit.DriverCgroupfs: iolimit.DriverSystemd, iolimit.DriverSystemd: iolimit.DriverCgroupfs}[driver]
						_, err = h.FindPod(iolimit.Layout{Driver: wrong, Root: root}, uid)
						if !errors.Is(err, iolimit.ErrPodCgroupNotFound) {
							t.Errorf("driver %s found the pod of a %s layout: %v", wrong, driver, err)
						}
					})
				}
			}
		}
	}
}

func TestParseDriver(t *testing.T) {
	for in, ok := range map[string]bool{"auto": true, "cgroupfs": true, "systemd": true, "": false, "Systemd": false} {
		if _, err := iolimit.ParseDriver(in); (err == nil) != ok {
			t.Errorf("ParseDriver(%q): %v", in, err)
		}
	}
}
