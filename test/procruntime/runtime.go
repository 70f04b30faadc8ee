/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package procruntime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/klog/v2"
)

// Name and Version are what Version reports (kubectl get node -o wide shows them).
const (
	Name    = "procruntime"
	Version = "0.1.0"
)

// Options configure the runtime.
type Options struct {
	// Endpoint is the CRI socket: unix:///path or /path.
	Endpoint string
	// StateDir holds per-container specs and root mount points.
	StateDir string
	// PodIP is reported as every sandbox's address: containers share the
	// host's network namespace (default 127.0.0.1).
	PodIP string
	// ChildBinary is run with InitCommand/EnterCommand for the process
	// side (default: this executable, whose main must call ChildMain).
	ChildBinary string
}

// Runtime is the CRI runtime and image service.
type Runtime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	opts      Options
	nsenter   string
	grpc      *grpc.Server
	streaming streaming.Server
	streamURL string

	mu         sync.Mutex
	sandboxes  map[string]*sandbox
	containers map[string]*container
	images     map[string]*runtimeapi.Image
}

// New prepares a runtime; Serve runs it.
func New(opts Options) (*Runtime, error) {
	if opts.Endpoint == "" || opts.StateDir == "" {
		return nil, errors.New("procruntime: Endpoint and StateDir are required")
	}
	if opts.PodIP == "" {
		opts.PodIP = "127.0.0.1"
	}
	if net.ParseIP(opts.PodIP) == nil {
		return nil, fmt.Errorf("procruntime: pod IP %q is not an IP address", opts.PodIP)
	}
	if opts.ChildBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		opts.ChildBinary = exe
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return nil, fmt.Errorf("procruntime needs util-linux's nsenter for exec: %w", err)
	}
	abs, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, err
	}
	opts.StateDir = abs
	r := &Runtime{opts: opts, nsenter: nsenter, sandboxes: map[string]*sandbox{}, containers: map[string]*container{},
		images: map[string]*runtimeapi.Image{}}
	// The streaming server (kubectl exec) needs its URL before it serves,
	// so its port is chosen here.
	port, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	cfg := streaming.DefaultConfig
	cfg.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if r.streaming, err = streaming.NewServer(cfg, &execRuntime{r: r}); err != nil {
		return nil, err
	}
	r.streamURL = cfg.Addr
	return r, nil
}

// Serve serves CRI on the endpoint until ctx is done, then stops every
// container (their processes must not outlive the runtime that reports them).
func (r *Runtime) Serve(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Join(r.opts.StateDir, "containers"), 0o700); err != nil {
		return err
	}
	path := socketPath(r.opts.Endpoint)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	r.grpc = grpc.NewServer(grpc.UnaryInterceptor(logCalls))
	runtimeapi.RegisterRuntimeServiceServer(r.grpc, r)
	runtimeapi.RegisterImageServiceServer(r.grpc, r)
	errc := make(chan error, 2)
	go func() { errc <- r.grpc.Serve(lis) }()
	go func() {
		if err := r.streaming.Start(true); err != nil && !errors.Is(err, net.ErrClosed) && err.Error() != "http: Server closed" {
			errc <- fmt.Errorf("streaming server: %w", err)
		}
	}()
	klog.InfoS("Serving CRI", "endpoint", path, "streaming", r.streamURL, "stateDir", r.opts.StateDir)
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	r.grpc.Stop()
	_ = r.streaming.Stop()
	r.stopAll()
	return err
}

func socketPath(endpoint string) string {
	if p, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		return p
	}
	return endpoint
}

// logCalls logs every CRI call at -v=4 and every failure at -v=2.
func logCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	if err != nil && status.Code(err) != codes.NotFound && status.Code(err) != codes.Unimplemented {
		klog.V(2).InfoS("CRI call failed", "method", info.FullMethod, "err", err)
	} else {
		klog.V(4).InfoS("CRI call", "method", info.FullMethod, "took", time.Since(start), "err", err)
	}
	return resp, err
}

func (r *Runtime) stopAll() {
	r.mu.Lock()
	var cs []*container
	for _, c := range r.containers {
		cs = append(cs, c)
	}
	r.mu.Unlock()
	for _, c := range cs {
		c.stop(0)
		if err := removeCgroups(c.cgroups); err != nil {
			klog.ErrorS(err, "Container cgroups left", "container", c.id)
		}
	}
}

// Version implements the CRI.
func (r *Runtime) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: Name, RuntimeVersion: Version, RuntimeApiVersion: "v1"}, nil
}

// Status reports the runtime and the (host) network ready.
func (r *Runtime) Status(context.Context, *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	return &runtimeapi.StatusResponse{Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
		{Type: runtimeapi.RuntimeReady, Status: true},
		{Type: runtimeapi.NetworkReady, Status: true},
	}}}, nil
}

// RuntimeConfig tells the kubelet to use the cgroupfs driver, the layout
// this runtime creates container cgroups in.
func (r *Runtime) RuntimeConfig(context.Context, *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	return &runtimeapi.RuntimeConfigResponse{Linux: &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: runtimeapi.CgroupDriver_CGROUPFS}}, nil
}

// UpdateRuntimeConfig accepts the pod CIDR (there is no pod network).
func (r *Runtime) UpdateRuntimeConfig(context.Context, *runtimeapi.UpdateRuntimeConfigRequest) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
}

func newID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func notFound(kind, id string) error {
	return status.Errorf(codes.NotFound, "%s %q not found", kind, id)
}
