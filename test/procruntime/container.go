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
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
)

// defaultPath is the PATH of a container whose spec sets none (as Docker's).
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// container is one container and, once started, its process.
type container struct {
	id, sandboxID string
	config        *runtimeapi.ContainerConfig
	imageRef      string
	logPath       string
	dir           string // state: spec.json, rootfs/

	// Guarded by mu (not the runtime's lock: stop waits on done without it).
	mu                               sync.Mutex
	state                            runtimeapi.ContainerState
	createdAt, startedAt, finishedAt int64
	exitCode                         int32
	reason, message                  string
	pid                              int
	cgroups                          []string
	env                              []string
	log                              *logWriter
	done                             chan struct{} // closed when the process exited
}

// CreateContainer records the container; nothing runs until StartContainer.
func (r *Runtime) CreateContainer(_ context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	cfg := req.GetConfig()
	r.mu.Lock()
	s := r.sandboxes[req.GetPodSandboxId()]
	r.mu.Unlock()
	if s == nil {
		return nil, notFound("sandbox", req.GetPodSandboxId())
	}
	if len(cfg.GetCommand())+len(cfg.GetArgs()) == 0 {
		return nil, status.Errorf(codes.InvalidArgument,
			"container %q has no command: %s images are the host's root filesystem without an entrypoint; set command: in the pod spec",
			cfg.GetMetadata().GetName(), Name)
	}
	if cfg.GetTty() {
		klog.InfoS("TTY requested; the container gets pipes instead", "container", cfg.GetMetadata().GetName())
	}
	c := &container{id: newID(), sandboxID: s.id, config: cfg, imageRef: cfg.GetImage().GetImage(),
		state: runtimeapi.ContainerState_CONTAINER_CREATED, createdAt: time.Now().UnixNano(), done: make(chan struct{})}
	if cfg.GetLogPath() != "" {
		c.logPath = filepath.Join(s.config.GetLogDirectory(), cfg.GetLogPath())
	}
	c.dir = filepath.Join(r.opts.StateDir, "containers", c.id)
	if err := os.MkdirAll(filepath.Join(c.dir, "rootfs"), 0o700); err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.containers[c.id] = c
	r.mu.Unlock()
	return &runtimeapi.CreateContainerResponse{ContainerId: c.id}, nil
}

// StartContainer starts the container's process and returns once its
// command was executed, or with the reason it could not be.
func (r *Runtime) StartContainer(_ context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	r.mu.Lock()
	c := r.containers[req.GetContainerId()]
	var s *sandbox
	if c != nil {
		s = r.sandboxes[c.sandboxID]
	}
	r.mu.Unlock()
	if c == nil || s == nil {
		return nil, notFound("container", req.GetContainerId())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != runtimeapi.ContainerState_CONTAINER_CREATED {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s is %s, not created", c.id, c.state)
	}
	if err := r.start(c, s); err != nil {
		c.state, c.exitCode, c.reason, c.message = runtimeapi.ContainerState_CONTAINER_EXITED, 128, "StartError", err.Error()
		c.finishedAt = time.Now().UnixNano()
		close(c.done)
		return nil, status.Errorf(codes.Unknown, "start container %s: %v", c.config.GetMetadata().GetName(), err)
	}
	return &runtimeapi.StartContainerResponse{}, nil
}

// start runs the init child in a new mount namespace; c.mu is held.
func (r *Runtime) start(c *container, s *sandbox) (err error) {
	cfg := c.config
	if c.cgroups, err = createContainerCgroups(s.cgroupParent(), c.id); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = removeCgroups(c.cgroups)
		}
	}()
	c.env = containerEnv(cfg)
	spec := initSpec{Rootfs: filepath.Join(c.dir, "rootfs"), Cgroups: c.cgroups, Args: append(append([]string{}, cfg.GetCommand()...), cfg.GetArgs()...),
		Env: c.env, WorkDir: cfg.GetWorkingDir(), Image: hostImage}
	for _, m := range cfg.GetMounts() {
		prop := "private"
		switch m.GetPropagation() {
		case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
			prop = "rslave"
		case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
			prop = "rshared"
		}
		spec.Mounts = append(spec.Mounts, mountSpec{HostPath: m.GetHostPath(), ContainerPath: m.GetContainerPath(), ReadOnly: m.GetReadonly(), Propagation: prop})
	}
	for _, d := range cfg.GetDevices() {
		spec.Devices = append(spec.Devices, deviceSpec{HostPath: d.GetHostPath(), ContainerPath: d.GetContainerPath(), Permissions: d.GetPermissions()})
	}
	specPath := filepath.Join(c.dir, "spec.json")
	data, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(specPath, data, 0o600); err != nil {
		return err
	}
	if c.log, err = openLog(c.logPath); err != nil {
		return err
	}
	stdout, err := c.log.stream("stdout")
	if err != nil {
		return err
	}
	stderr, err := c.log.stream("stderr")
	if err != nil {
		return err
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer statusR.Close()
	cmd := exec.Command(r.opts.ChildBinary, InitCommand, specPath)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.ExtraFiles = []*os.File{statusW} // fd 3 = statusFD
	cmd.Env = []string{}
	// Its own mount namespace and process group. No Pdeathsig: it is tied
	// to the forking OS thread, which the Go runtime may retire; Serve
	// stops all containers when the runtime stops.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS, Setpgid: true}
	err = cmd.Start()
	statusW.Close()
	stdout.Close()
	stderr.Close()
	if err != nil {
		c.log.close()
		return err
	}
	msg, _ := io.ReadAll(statusR) // EOF at exec (close-on-exec) or when the child died
	if len(msg) > 0 {
		_ = cmd.Wait()
		c.log.close()
		return errors.New(string(msg))
	}
	c.pid = cmd.Process.Pid
	c.state, c.startedAt = runtimeapi.ContainerState_CONTAINER_RUNNING, time.Now().UnixNano()
	go c.wait(cmd)
	klog.InfoS("Container started", "container", cfg.GetMetadata().GetName(), "id", c.id[:12], "pid", c.pid, "cgroups", len(c.cgroups))
	return nil
}

// wait records the exit, and kills whatever the command left behind in its
// cgroups: without a PID namespace, that is what a container's end means.
func (c *container) wait(cmd *exec.Cmd) {
	err := cmd.Wait()
	code := int32(0)
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		ws := exitErr.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			code = 128 + int32(ws.Signal())
		} else {
			code = int32(ws.ExitStatus())
		}
	} else if err != nil {
		code = 128
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	signalCgroups(c.cgroups, syscall.SIGKILL)
	c.mu.Lock()
	c.state, c.exitCode, c.finishedAt = runtimeapi.ContainerState_CONTAINER_EXITED, code, time.Now().UnixNano()
	c.reason = "Completed"
	if code != 0 {
		c.reason = "Error"
	}
	log := c.log
	c.mu.Unlock()
	close(c.done)
	// Returns once every process holding the log pipes is gone.
	log.close()
	klog.InfoS("Container exited", "container", c.config.GetMetadata().GetName(), "id", c.id[:12], "exitCode", code)
}

func containerEnv(cfg *runtimeapi.ContainerConfig) []string {
	env := []string{}
	hasPath := false
	for _, kv := range cfg.GetEnvs() {
		env = append(env, kv.GetKey()+"="+string(kv.GetValue()))
		hasPath = hasPath || kv.GetKey() == "PATH"
	}
	if !hasPath {
		env = append(env, defaultPath)
	}
	return env
}

// stop sends SIGTERM to every process of the container, and SIGKILL after
// timeout (at once for 0); it returns when the command exited.
func (c *container) stop(timeout time.Duration) {
	c.mu.Lock()
	running := c.state == runtimeapi.ContainerState_CONTAINER_RUNNING
	cgroups, pid := c.cgroups, c.pid
	c.mu.Unlock()
	if !running {
		return
	}
	kill := func(sig syscall.Signal) {
		_ = syscall.Kill(-pid, sig) // its process group, also when it has no cgroups
		signalCgroups(cgroups, sig)
	}
	if timeout > 0 {
		kill(syscall.SIGTERM)
		select {
		case <-c.done:
			return
		case <-time.After(timeout):
		}
	}
	for {
		kill(syscall.SIGKILL)
		select {
		case <-c.done:
			return
		case <-time.After(time.Second):
		}
	}
}

// StopContainer stops the container's processes.
func (r *Runtime) StopContainer(_ context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	c := r.container(req.GetContainerId())
	if c == nil {
		return nil, notFound("container", req.GetContainerId())
	}
	c.stop(time.Duration(req.GetTimeout()) * time.Second)
	return &runtimeapi.StopContainerResponse{}, nil
}

// RemoveContainer kills what still runs and removes the container's
// cgroups and state (the kubelet owns the log file).
func (r *Runtime) RemoveContainer(_ context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	c := r.container(req.GetContainerId())
	if c == nil {
		return &runtimeapi.RemoveContainerResponse{}, nil // idempotent
	}
	c.stop(0)
	c.mu.Lock()
	cgroups := c.cgroups
	c.mu.Unlock()
	if err := removeCgroups(cgroups); err != nil {
		return nil, err
	}
	// The rootfs directory is only a mount point in the container's
	// (now gone) namespace: on the host it is empty.
	if err := os.RemoveAll(c.dir); err != nil {
		return nil, err
	}
	r.mu.Lock()
	delete(r.containers, c.id)
	r.mu.Unlock()
	return &runtimeapi.RemoveContainerResponse{}, nil
}

func (r *Runtime) container(id string) *container {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.containers[id]
}

// ListContainers lists containers matching the filter.
func (r *Runtime) ListContainers(_ context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f := req.GetFilter()
	r.mu.Lock()
	all := make([]*container, 0, len(r.containers))
	for _, c := range r.containers {
		all = append(all, c)
	}
	r.mu.Unlock()
	var out []*runtimeapi.Container
	for _, c := range all {
		c.mu.Lock()
		state := c.state
		c.mu.Unlock()
		if f != nil {
			if f.GetId() != "" && f.GetId() != c.id {
				continue
			}
			if f.GetPodSandboxId() != "" && f.GetPodSandboxId() != c.sandboxID {
				continue
			}
			if f.GetState() != nil && f.GetState().GetState() != state {
				continue
			}
			if !labelsMatch(c.config.GetLabels(), f.GetLabelSelector()) {
				continue
			}
		}
		out = append(out, &runtimeapi.Container{Id: c.id, PodSandboxId: c.sandboxID, Metadata: c.config.GetMetadata(),
			Image: c.config.GetImage(), ImageRef: c.imageRef, State: state, CreatedAt: c.createdAt,
			Labels: c.config.GetLabels(), Annotations: c.config.GetAnnotations()})
	}
	return &runtimeapi.ListContainersResponse{Containers: out}, nil
}

// ContainerStatus reports the container's state and exit code.
func (r *Runtime) ContainerStatus(_ context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	c := r.container(req.GetContainerId())
	if c == nil {
		return nil, notFound("container", req.GetContainerId())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st := &runtimeapi.ContainerStatus{
		Id: c.id, Metadata: c.config.GetMetadata(), State: c.state,
		CreatedAt: c.createdAt, StartedAt: c.startedAt, FinishedAt: c.finishedAt, ExitCode: c.exitCode,
		Image: c.config.GetImage(), ImageRef: c.imageRef, Reason: c.reason, Message: c.message,
		Labels: c.config.GetLabels(), Annotations: c.config.GetAnnotations(), Mounts: c.config.GetMounts(), LogPath: c.logPath,
	}
	return &runtimeapi.ContainerStatusResponse{Status: st}, nil
}

// UpdateContainerResources: accepted, not applied (the demo sets no limits).
func (r *Runtime) UpdateContainerResources(context.Context, *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	return &runtimeapi.UpdateContainerResourcesResponse{}, nil
}

// ReopenContainerLog reopens the log file after the kubelet rotated it.
func (r *Runtime) ReopenContainerLog(_ context.Context, req *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	c := r.container(req.GetContainerId())
	if c == nil {
		return nil, notFound("container", req.GetContainerId())
	}
	c.mu.Lock()
	log := c.log
	c.mu.Unlock()
	if log == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s is not running", c.id)
	}
	return &runtimeapi.ReopenContainerLogResponse{}, log.reopen()
}

// ListContainerStats reports the containers' CPU and memory use from their
// cgroups. The kubelet's summary (and with it its volume statistics, which
// it reports per pod) lists only pods with container stats.
func (r *Runtime) ListContainerStats(_ context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	f := req.GetFilter()
	r.mu.Lock()
	all := make([]*container, 0, len(r.containers))
	for _, c := range r.containers {
		if f != nil && ((f.GetId() != "" && f.GetId() != c.id) || (f.GetPodSandboxId() != "" && f.GetPodSandboxId() != c.sandboxID) ||
			!labelsMatch(c.config.GetLabels(), f.GetLabelSelector())) {
			continue
		}
		all = append(all, c)
	}
	r.mu.Unlock()
	var out []*runtimeapi.ContainerStats
	for _, c := range all {
		out = append(out, r.stats(c))
	}
	return &runtimeapi.ListContainerStatsResponse{Stats: out}, nil
}

// ContainerStats reports one container's CPU and memory use.
func (r *Runtime) ContainerStats(_ context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	c := r.container(req.GetContainerId())
	if c == nil {
		return nil, notFound("container", req.GetContainerId())
	}
	return &runtimeapi.ContainerStatsResponse{Stats: r.stats(c)}, nil
}

func (r *Runtime) stats(c *container) *runtimeapi.ContainerStats {
	c.mu.Lock()
	cgroups := c.cgroups
	c.mu.Unlock()
	now := time.Now().UnixNano()
	st := &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{Id: c.id, Metadata: c.config.GetMetadata(),
			Labels: c.config.GetLabels(), Annotations: c.config.GetAnnotations()},
		// No image layers: the container's writes outside its volumes go to
		// tmpfs, so its writable layer takes no disk.
		WritableLayer: &runtimeapi.FilesystemUsage{Timestamp: now, FsId: &runtimeapi.FilesystemIdentifier{Mountpoint: r.opts.StateDir},
			UsedBytes: &runtimeapi.UInt64Value{}, InodesUsed: &runtimeapi.UInt64Value{}},
	}
	if v, ok := readCgroupUint(cgroups, "cpuacct.usage"); ok {
		st.Cpu = &runtimeapi.CpuUsage{Timestamp: now, UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: v}}
	}
	if v, ok := readCgroupUint(cgroups, "memory.usage_in_bytes"); ok {
		st.Memory = &runtimeapi.MemoryUsage{Timestamp: now, WorkingSetBytes: &runtimeapi.UInt64Value{Value: v},
			UsageBytes: &runtimeapi.UInt64Value{Value: v}}
	}
	return st
}

// logWriter writes a container's stdout and stderr to its log file in the
// CRI format the kubelet reads for kubectl logs:
// "<RFC3339Nano time> <stream> <F|P> <text>\n" (P: a partial line).
type logWriter struct {
	mu   sync.Mutex
	path string
	f    *os.File
	wg   sync.WaitGroup
}

// maxLogLine splits longer lines into partial ones, as containerd does.
const maxLogLine = 16 * 1024

func openLog(path string) (*logWriter, error) {
	w := &logWriter{path: path}
	if path == "" {
		return w, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	var err error
	w.f, err = os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	return w, err
}

// stream returns the write end of a pipe whose lines go to the log as name
// ("stdout" or "stderr"); the caller passes it to the child and closes it.
func (w *logWriter) stream(name string) (*os.File, error) {
	r, wr, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer r.Close()
		buf := make([]byte, 0, maxLogLine)
		chunk := make([]byte, 4096)
		for {
			n, err := r.Read(chunk)
			buf = append(buf, chunk[:n]...)
			for {
				i := bytes.IndexByte(buf, '\n')
				if i < 0 {
					break
				}
				w.write(name, "F", buf[:i])
				buf = buf[i+1:]
			}
			for len(buf) >= maxLogLine {
				w.write(name, "P", buf[:maxLogLine])
				buf = buf[maxLogLine:]
			}
			buf = append(make([]byte, 0, maxLogLine), buf...)
			if err != nil {
				if len(buf) > 0 {
					w.write(name, "F", buf)
				}
				return
			}
		}
	}()
	return wr, nil
}

func (w *logWriter) write(stream, tag string, text []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return
	}
	fmt.Fprintf(w.f, "%s %s %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), stream, tag, text)
}

// close waits until both streams reached EOF (every process holding them
// exited) and closes the file.
func (w *logWriter) close() {
	if w == nil {
		return
	}
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
}

func (w *logWriter) reopen() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	w.f.Close()
	w.f = f
	return nil
}
