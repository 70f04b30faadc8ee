/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package procruntime

import (
	"os"
	"path/filepath"
	"testing"
)

// TestEnableControllers: a v2 parent enables for its children the
// controllers it has and has not enabled yet (the kubelet refuses a
// cgroupRoot lacking one); a v1 cgroup is left alone. (Files in a temp dir
// stand in for cgroupfs: a write to cgroup.subtree_control shows as its content.)
func TestEnableControllers(t *testing.T) {
	for _, tc := range []struct {
		name              string
		controllers       *string // nil: a v1 cgroup
		subtree, wantFile string
	}{
		{"v1", nil, "", ""},
		{"v2, none enabled", ptr("cpuset cpu io memory hugetlb pids"), "", "+cpuset +cpu +io +memory +hugetlb +pids"},
		{"v2, some enabled", ptr("cpu io memory pids"), "cpu memory", "+io +pids"},
		{"v2, all enabled", ptr("cpu memory"), "memory cpu", "memory cpu"},
		{"hybrid host's unified hierarchy: no controllers", ptr(""), "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.controllers != nil {
				write(t, filepath.Join(dir, "cgroup.controllers"), *tc.controllers+"\n")
				write(t, filepath.Join(dir, "cgroup.subtree_control"), tc.subtree+"\n")
			}
			if err := enableControllers(dir); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
			if tc.controllers == nil {
				if err == nil {
					t.Fatalf("wrote cgroup.subtree_control in a v1 cgroup: %q", got)
				}
				return
			}
			if want := tc.wantFile; string(got) != want && string(got) != want+"\n" {
				t.Errorf("cgroup.subtree_control = %q, want %q", got, want)
			}
		})
	}
}

func ptr(s string) *string { return &s }

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestMakeCgroupCpuset: a v1 cpuset child gets its parent's CPUs and
// memory nodes (it starts with none); a v2 child is left to inherit them,
// also below the v2 root, which has no cpuset.cpus to copy. (mkdir in a
// temp dir makes no files, so the test writes the ones cgroupfs would.)
func TestMakeCgroupCpuset(t *testing.T) {
	for _, tc := range []struct {
		name     string
		v2       bool
		wantCPUs string
	}{
		{"v1", false, "0-1\n"},
		{"v2 below the root", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "open-local-demo-x")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			write(t, filepath.Join(dir, "cpuset.cpus"), "")
			write(t, filepath.Join(dir, "cpuset.mems"), "")
			if tc.v2 {
				write(t, filepath.Join(dir, "cgroup.controllers"), "cpuset cpu\n")
			} else {
				write(t, filepath.Join(parent, "cpuset.cpus"), "0-1\n")
				write(t, filepath.Join(parent, "cpuset.mems"), "0\n")
			}
			if err := MakeCgroup(parent, dir); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(filepath.Join(dir, "cpuset.cpus")); string(got) != tc.wantCPUs {
				t.Errorf("cpuset.cpus = %q, want %q", got, tc.wantCPUs)
			}
		})
	}
}
