/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/loopvg"
)

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"no command", nil},
		{"unknown command", []string{"sideways"}},
		{"up without dir", []string{"up", "--vg", "x", "--size", "1G"}},
		{"up without vg", []string{"up", "--dir", "/tmp/x", "--size", "1G"}},
		{"up without size", []string{"up", "--dir", "/tmp/x", "--vg", "x"}},
		{"up bad size", []string{"up", "--dir", "/tmp/x", "--vg", "x", "--size", "lots"}},
		{"up bad mode", []string{"up", "--dir", "/tmp/x", "--vg", "x", "--size", "1G", "--mode", "fast"}},
		{"up stray arg", []string{"up", "--dir", "/tmp/x", "--vg", "x", "--size", "1G", "extra"}},
		{"down without dir", []string{"down"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(t.Context(), tt.args, &bytes.Buffer{})
			var u usageError
			if !errors.As(err, &u) {
				t.Fatalf("err = %v, want a usage error", err)
			}
		})
	}
}

func TestUpDown(t *testing.T) {
	capability.Require(t, capability.Root, capability.LoopDevices, capability.LVM)
	dir := filepath.Join(t.TempDir(), "env")
	t.Cleanup(func() { loopvg.Down(context.Background(), dir) }) // only if the test failed half-way

	var out bytes.Buffer
	if err := run(t.Context(), []string{"up", "--dir", dir, "--vg", "demo", "--size", "64M", "--size", "64M", "--mode", "metadata"}, &out); err != nil {
		t.Fatal(err)
	}
	t.Logf("up printed:\n%s", out.String())
	for _, want := range []string{"LVM_SYSTEM_DIR=" + filepath.Join(dir, "lvm") + "\n", "LOOPVG_VG=demo\n", "LOOPVG_DEVICES='/dev/loop", "LOOPVG_FULL_MODE=false\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if err := run(t.Context(), []string{"up", "--dir", dir, "--vg", "demo", "--size", "64M"}, &bytes.Buffer{}); err == nil {
		t.Error("second up into the same dir succeeded")
	}
	if err := run(t.Context(), []string{"down", "--dir", dir}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"state.json", "disk0.img", "disk1.img", "lvm"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after down (%v)", f, err)
		}
	}
	if err := run(t.Context(), []string{"down", "--dir", dir}, &bytes.Buffer{}); err != nil {
		t.Errorf("down twice: %v", err)
	}
}
