/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package cluster

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestPruneBinaryDirs: checkouts' binary directories unused for a day go;
// the current one, recent ones and plain files stay.
func TestPruneBinaryDirs(t *testing.T) {
	parent := t.TempDir()
	now := time.Now()
	cases := []struct {
		name  string
		age   time.Duration
		dir   bool
		stays bool
	}{
		{"current", 48 * time.Hour, true, true},
		{"recent", time.Hour, true, true},
		{"stale", 48 * time.Hour, true, false},
		{"a file", 48 * time.Hour, false, true},
	}
	for _, tc := range cases {
		path := filepath.Join(parent, tc.name)
		var err error
		if tc.dir {
			err = os.MkdirAll(filepath.Join(path, "bin"), 0o755)
		} else {
			err = os.WriteFile(path, nil, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, now.Add(-tc.age), now.Add(-tc.age)); err != nil {
			t.Fatal(err)
		}
	}
	pruneBinaryDirs(parent, filepath.Join(parent, "current"), now.Add(-staleBinaryDir))
	for _, tc := range cases {
		if _, err := os.Stat(filepath.Join(parent, tc.name)); (err == nil) != tc.stays {
			t.Errorf("%s: stat err %v, want it kept=%t", tc.name, err, tc.stays)
		}
	}
}
