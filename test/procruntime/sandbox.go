/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package procruntime

import (
	"context"
	"os"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// sandbox is a pod: no process of its own (no pause container: there are no
// namespaces to hold), just its config and state.
type sandbox struct {
	id        string
	config    *runtimeapi.PodSandboxConfig
	handler   string
	state     runtimeapi.PodSandboxState
	createdAt int64
}

func (s *sandbox) cgroupParent() string {
	if s.config.GetLinux() == nil {
		return ""
	}
	return s.config.GetLinux().GetCgroupParent()
}

// RunPodSandbox records the pod and makes its log directory.
func (r *Runtime) RunPodSandbox(_ context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	cfg := req.GetConfig()
	if dir := cfg.GetLogDirectory(); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
	s := &sandbox{id: newID(), config: cfg, handler: req.GetRuntimeHandler(), state: runtimeapi.PodSandboxState_SANDBOX_READY,
		createdAt: time.Now().UnixNano()}
	r.mu.Lock()
	r.sandboxes[s.id] = s
	r.mu.Unlock()
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: s.id}, nil
}

// StopPodSandbox kills the pod's containers still running (the kubelet
// stopped them gracefully before) and marks the sandbox not ready.
func (r *Runtime) StopPodSandbox(_ context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	r.mu.Lock()
	s := r.sandboxes[req.GetPodSandboxId()]
	cs := r.containersOf(req.GetPodSandboxId())
	r.mu.Unlock()
	if s == nil {
		return &runtimeapi.StopPodSandboxResponse{}, nil // idempotent
	}
	for _, c := range cs {
		c.stop(0)
	}
	r.mu.Lock()
	s.state = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	r.mu.Unlock()
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

// RemovePodSandbox removes the pod and its containers.
func (r *Runtime) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	r.mu.Lock()
	cs := r.containersOf(req.GetPodSandboxId())
	r.mu.Unlock()
	for _, c := range cs {
		if _, err := r.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: c.id}); err != nil {
			return nil, err
		}
	}
	r.mu.Lock()
	delete(r.sandboxes, req.GetPodSandboxId())
	r.mu.Unlock()
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

// containersOf lists the containers of a sandbox; r.mu must be held.
func (r *Runtime) containersOf(sandboxID string) []*container {
	var cs []*container
	for _, c := range r.containers {
		if c.sandboxID == sandboxID {
			cs = append(cs, c)
		}
	}
	return cs
}

// PodSandboxStatus reports the sandbox with --pod-ip as its address.
func (r *Runtime) PodSandboxStatus(_ context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.sandboxes[req.GetPodSandboxId()]
	if s == nil {
		return nil, notFound("sandbox", req.GetPodSandboxId())
	}
	return &runtimeapi.PodSandboxStatusResponse{Status: r.sandboxStatus(s)}, nil
}

func (r *Runtime) sandboxStatus(s *sandbox) *runtimeapi.PodSandboxStatus {
	st := &runtimeapi.PodSandboxStatus{
		Id: s.id, Metadata: s.config.GetMetadata(), State: s.state, CreatedAt: s.createdAt,
		Network:        &runtimeapi.PodSandboxNetworkStatus{Ip: r.opts.PodIP},
		Labels:         s.config.GetLabels(),
		Annotations:    s.config.GetAnnotations(),
		RuntimeHandler: s.handler,
	}
	if opts := s.config.GetLinux().GetSecurityContext().GetNamespaceOptions(); opts != nil {
		st.Linux = &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: opts}}
	}
	return st
}

// ListPodSandbox lists sandboxes matching the filter.
func (r *Runtime) ListPodSandbox(_ context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f := req.GetFilter()
	r.mu.Lock()
	defer r.mu.Unlock()
	var items []*runtimeapi.PodSandbox
	for _, s := range r.sandboxes {
		if f != nil {
			if f.GetId() != "" && f.GetId() != s.id {
				continue
			}
			if f.GetState() != nil && f.GetState().GetState() != s.state {
				continue
			}
			if !labelsMatch(s.config.GetLabels(), f.GetLabelSelector()) {
				continue
			}
		}
		items = append(items, &runtimeapi.PodSandbox{Id: s.id, Metadata: s.config.GetMetadata(), State: s.state,
			CreatedAt: s.createdAt, Labels: s.config.GetLabels(), Annotations: s.config.GetAnnotations(), RuntimeHandler: s.handler})
	}
	return &runtimeapi.ListPodSandboxResponse{Items: items}, nil
}

// ListPodSandboxStats: no stats (the kubelet takes CPU and memory from
// cAdvisor, which reads the pod cgroups).
func (r *Runtime) ListPodSandboxStats(context.Context, *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	return &runtimeapi.ListPodSandboxStatsResponse{}, nil
}

func labelsMatch(labels, selector map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}
