/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package demo

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/loopvg"
)

// TestLVMReportsOverHTTP: the host reads the VM node's lvm reports through
// remoteLVM and lvmReportHandler, here against a real VG on a loop device;
// only report commands pass.
func TestLVMReportsOverHTTP(t *testing.T) {
	capability.Require(t, capability.Root, capability.LoopDevices, capability.LVM)
	vg := loopvg.New(t, "demo-report-vg", 64<<20)
	cfg := vg.Config
	srv := httptest.NewServer(lvmReportHandler(cfg))
	defer srv.Close()
	remote := remoteLVM{url: srv.URL + "/report"}
	for _, tc := range []struct {
		name    string
		command string
		args    []string
		want    string // in a row (ok) or in the error
		ok      bool
	}{
		{"vgs", "vgs", []string{"-o", "vg_name,pv_count", vg.Name}, vg.Name, true},
		{"pvs", "pvs", []string{"-o", "pv_name,vg_name"}, vg.Devices[0].Path, true},
		{"no such VG", "vgs", []string{"no-such-vg"}, "500", false},
		{"a command that changes something", "lvremove", []string{"-y", vg.Name}, "not an lvm report command", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := remote.Report(context.Background(), tc.command, tc.args...)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(strings.Join(mapValues(rows[0]), " "), tc.want) {
					t.Fatalf("rows %v lack %q", rows, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := cfg.Report(context.Background(), "vgs", vg.Name); err != nil {
		t.Errorf("the VG must still be there: %v", err)
	}
}

func mapValues(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// TestTailLines: the VM's log is streamed line by line as it grows, and
// an unfinished last line is flushed at stop.
func TestTailLines(t *testing.T) {
	file := filepath.Join(t.TempDir(), "vm.log")
	if err := os.WriteFile(file, []byte("one\ntw"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	w := &prefixWriter{w: &out, prefix: "vm| "}
	stop := tailLines(file, w)
	f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("o\nthree"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	stop() // reads what is left, whenever the tailer last looked

	stop() // twice is fine
	if got, want := out.String(), "vm| one\nvm| two\nvm| three\n"; got != want {
		t.Fatalf("streamed %q, want %q", got, want)
	}
}
