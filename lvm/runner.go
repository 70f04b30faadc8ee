/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package lvm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// Runner is the one exec seam of this package: every lvm, blkid and losetup
// command goes through it as an argv built in Go (never a shell string).
// Tests substitute a recorder to check argv without running anything.
type Runner interface {
	// Run executes argv[0] with argv[1:] and returns its stdout. A command
	// that fails returns a *CommandError.
	Run(ctx context.Context, argv ...string) ([]byte, error)
}

// killDelay is how long a cancelled command may take to stop after SIGTERM
// before it is killed.
const killDelay = 30 * time.Second

// ExecRunner runs commands with exec.CommandContext. It is safe for
// concurrent use (lvm serialises its own metadata updates with locks).
type ExecRunner struct {
	// SystemDir, when set, is exported as LVM_SYSTEM_DIR: lvm then reads its
	// lvm.conf (filters, backup dirs, activation mode) from there.
	SystemDir string
	// Env is added to the environment of every command (e.g.
	// DM_DISABLE_UDEV=1 where no udevd runs).
	Env []string
	// Observe, when set, is called after every command with its duration;
	// it is the hook for latency metrics.
	Observe func(argv []string, took time.Duration, err error)
}

var _ Runner = (*ExecRunner)(nil)

// Run implements Runner.
func (r *ExecRunner) Run(ctx context.Context, argv ...string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("lvm: empty command")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), r.env()...)
	// On cancellation ask politely: lvm finishes or rolls back a metadata
	// update on SIGTERM, whereas SIGKILL (the default) could cut one short.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = killDelay
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// stdin stays /dev/null: an lvm prompt ("Wipe it? [y/n]") reads EOF and
	// answers no, so nothing is ever confirmed behind our back.
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if r.Observe != nil {
		r.Observe(argv, took, err)
	}
	klog.V(4).InfoS("exec", "argv", argv, "took", took, "err", err)
	if err != nil {
		code := -1
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = fmt.Errorf("%w: %w", ctxErr, err)
		}
		return stdout.Bytes(), newCommandError(argv, code, stderr.String(), err)
	}
	return stdout.Bytes(), nil
}

func (r *ExecRunner) env() []string {
	// lvm warns about every fd the parent left open (informers, sockets).
	env := []string{"LVM_SUPPRESS_FD_WARNINGS=1"}
	if r.SystemDir != "" {
		env = append(env, "LVM_SYSTEM_DIR="+r.SystemDir)
	}
	return append(env, r.Env...)
}

// CommandError is a command that failed: what ran, how it ended and what it
// said. errors.Is(err, ErrNotFound) etc. work on it when lvm's message tells
// the kind of failure.
type CommandError struct {
	Argv     []string
	ExitCode int // -1 when the command did not run or was killed
	Stderr   string
	Err      error // the exec error
	kind     error // ErrNotFound, ErrInsufficientSpace, ErrAlreadyExists or nil
}

func newCommandError(argv []string, code int, stderr string, err error) *CommandError {
	e := &CommandError{Argv: append([]string(nil), argv...), ExitCode: code, Stderr: stderr, Err: err}
	e.kind = classify(stderr)
	return e
}

func (e *CommandError) Error() string {
	msg := e.Message()
	if msg == "" {
		msg = e.Err.Error()
	}
	return fmt.Sprintf("%s: exit code %d: %s", strings.Join(e.Argv, " "), e.ExitCode, msg)
}

// Message is stderr without lvm's routine warnings, on one line: what a
// human needs to read in an Event or a gRPC status.
func (e *CommandError) Message() string {
	var lines []string
	for _, l := range strings.Split(e.Stderr, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || isNoise(l) {
			continue
		}
		lines = append(lines, l)
	}
	return strings.Join(lines, "; ")
}

// noise are stderr lines lvm prints on every command in some setups; they
// never explain a failure.
var noise = []string{
	"WARNING: Activation disabled.",
	"leaked on lvm invocation",
	"TEST MODE: Metadata will NOT be updated",
	"Run `",
}

func isNoise(line string) bool {
	for _, n := range noise {
		if strings.Contains(line, n) {
			return true
		}
	}
	return false
}

// Unwrap exposes the exec error (e.g. context.DeadlineExceeded).
func (e *CommandError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrNotFound) and friends true when lvm said so.
func (e *CommandError) Is(target error) bool { return e.kind != nil && target == e.kind }
