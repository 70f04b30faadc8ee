/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package lvm

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

func TestExecRunner(t *testing.T) {
	var observed [][]string
	r := &ExecRunner{SystemDir: "/etc/open-local-lvm", Env: []string{"DM_DISABLE_UDEV=1"},
		Observe: func(argv []string, _ time.Duration, _ error) { observed = append(observed, argv) }}
	out, err := r.Run(t.Context(), "env")
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Split(strings.TrimSpace(string(out)), "\n")
	for _, want := range []string{"LVM_SYSTEM_DIR=/etc/open-local-lvm", "LVM_SUPPRESS_FD_WARNINGS=1", "DM_DISABLE_UDEV=1"} {
		if !slices.Contains(env, want) {
			t.Errorf("environment lacks %s", want)
		}
	}
	if !slices.Contains(env, "PATH="+lookupEnv(env, "PATH")) || lookupEnv(env, "PATH") == "" {
		t.Error("the parent's environment is not passed on")
	}

	_, err = r.Run(t.Context(), "ls", "/nonexistent-open-local")
	var ce *CommandError
	if !errors.As(err, &ce) || ce.ExitCode != 2 || !slices.Equal(ce.Argv, []string{"ls", "/nonexistent-open-local"}) || !strings.Contains(ce.Stderr, "No such file") {
		t.Fatalf("CommandError = %+v", err)
	}
	if !strings.Contains(err.Error(), "ls /nonexistent-open-local: exit code 2: ") {
		t.Errorf("message %q", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	_, err = r.Run(ctx, "sleep", "30")
	if !errors.Is(err, context.DeadlineExceeded) || Code(err) != codes.DeadlineExceeded {
		t.Errorf("cancelled command: %v (code %v)", err, Code(err))
	}
	if _, err := r.Run(t.Context()); err == nil {
		t.Error("empty argv accepted")
	}
	if len(observed) != 3 {
		t.Errorf("Observe saw %d commands, want 3", len(observed))
	}
}

func lookupEnv(env []string, key string) string {
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, key+"="); ok {
			return v
		}
	}
	return ""
}
