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
