/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package procruntime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// runInContainer runs args in the running container c (its mount namespace,
// root, working directory, cgroups and environment) with the given streams,
// and returns the command's exit code.
func (r *Runtime) runInContainer(ctx context.Context, c *container, args []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if len(args) == 0 {
		return 0, status.Error(codes.InvalidArgument, "no command")
	}
	c.mu.Lock()
	running := c.state == runtimeapi.ContainerState_CONTAINER_RUNNING
	spec := enterSpec{Nsenter: r.nsenter, Pid: c.pid, Cgroups: c.cgroups, Args: args, Env: c.env}
	c.mu.Unlock()
	if !running {
		return 0, status.Errorf(codes.FailedPrecondition, "container %s is not running", c.id)
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return 0, err
	}
	specPath := filepath.Join(c.dir, "exec-"+newID()[:16]+".json")
	if err := os.WriteFile(specPath, data, 0o600); err != nil {
		return 0, err
	}
	defer os.Remove(specPath)
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer statusR.Close()
	cmd := exec.CommandContext(ctx, r.opts.ChildBinary, EnterCommand, specPath)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.ExtraFiles = []*os.File{statusW}
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = time.Second // stdin from a client that never closes it must not block Wait
	err = cmd.Start()
	statusW.Close()
	if err != nil {
		return 0, err
	}
	msg, _ := io.ReadAll(statusR)
	err = cmd.Wait()
	if len(msg) > 0 {
		return 0, status.Errorf(codes.Unknown, "exec in container %s: %s", c.id[:12], msg)
	}
	if ctx.Err() != nil {
		return 0, status.Errorf(codes.DeadlineExceeded, "exec %v in container %s: %v", args, c.id[:12], ctx.Err())
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		ws := exitErr.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ws.ExitStatus(), nil
	}
	return 0, err
}

// ExecSync runs a command to completion (exec probes).
func (r *Runtime) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	c := r.container(req.GetContainerId())
	if c == nil {
		return nil, notFound("container", req.GetContainerId())
	}
	if t := req.GetTimeout(); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(t)*time.Second)
		defer cancel()
	}
	var stdout, stderr bytes.Buffer
	code, err := r.runInContainer(ctx, c, req.GetCmd(), nil, &stdout, &stderr)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ExecSyncResponse{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), ExitCode: int32(code)}, nil
}

// Exec returns the streaming URL the kubelet proxies kubectl exec to.
func (r *Runtime) Exec(_ context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if r.container(req.GetContainerId()) == nil {
		return nil, notFound("container", req.GetContainerId())
	}
	if req.GetTty() {
		return nil, status.Errorf(codes.InvalidArgument, "%s has no terminals: use kubectl exec without -t", Name)
	}
	return r.streaming.GetExec(req)
}

// execRuntime is what the streaming server calls.
type execRuntime struct{ r *Runtime }

func (e *execRuntime) Exec(ctx context.Context, containerID string, cmd []string, in io.Reader, out, errw io.WriteCloser, _ bool, _ <-chan remotecommandserver.TerminalSize) error {
	c := e.r.container(containerID)
	if c == nil {
		return notFound("container", containerID)
	}
	var stdin io.Reader
	if in != nil {
		stdin = in
	}
	var stdout, stderr io.Writer
	if out != nil {
		stdout = out
	}
	if errw != nil {
		stderr = errw
	}
	code, err := e.r.runInContainer(ctx, c, cmd, stdin, stdout, stderr)
	if err != nil {
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", code), Code: code}
	}
	return nil
}

func (e *execRuntime) Attach(context.Context, string, io.Reader, io.WriteCloser, io.WriteCloser, bool, <-chan remotecommandserver.TerminalSize) error {
	return fmt.Errorf("%s does not support attach: read the container's output with kubectl logs", Name)
}

func (e *execRuntime) PortForward(context.Context, string, int32, io.ReadWriteCloser) error {
	return fmt.Errorf("%s does not support port-forward: containers share the host's network", Name)
}
