/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package registration registers the CSI node plugin with the kubelet,
// doing what node-driver-registrar does (that sidecar is not served by the
// Go module proxy, so it cannot be built here): it serves the kubelet's
// plugin registration API (k8s.io/kubelet/pkg/apis/pluginregistration/v1)
// on <kubelet-dir>/plugins_registry/<driver>-reg.sock. The kubelet's plugin
// watcher finds the socket, calls GetInfo, dials the CSI endpoint it names,
// calls NodeGetInfo, writes the CSINode entry (node ID, topology keys) and
// the node's topology labels, and reports the outcome through
// NotifyRegistrationStatus.
package registration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/open-local/open-local/csi/grpcserver"
)

// SupportedVersions are the CSI spec versions the kubelet may use with us.
var SupportedVersions = []string{"1.0.0"}

// Options say what to register and where.
type Options struct {
	// RegistryDir is the kubelet's plugin registry directory
	// (<kubelet root dir>/plugins_registry).
	RegistryDir string
	// DriverName is the CSI driver name (the socket is <DriverName>-reg.sock).
	DriverName string
	// Endpoint is the CSI node socket path as the kubelet sees it (in a
	// DaemonSet the container's path differs from the host's).
	Endpoint string
}

// SocketPath is where the registration socket of opts lives.
func (o Options) SocketPath() string {
	return filepath.Join(o.RegistryDir, o.DriverName+"-reg.sock")
}

func (o Options) validate() error {
	var errs []error
	if o.RegistryDir == "" || !filepath.IsAbs(o.RegistryDir) {
		errs = append(errs, fmt.Errorf("registry dir %q must be an absolute path", o.RegistryDir))
	}
	if o.DriverName == "" || strings.ContainsAny(o.DriverName, "/\x00") {
		errs = append(errs, fmt.Errorf("driver name %q is not usable in a socket name", o.DriverName))
	}
	if o.Endpoint == "" || !filepath.IsAbs(o.Endpoint) {
		errs = append(errs, fmt.Errorf("CSI endpoint %q must be an absolute socket path", o.Endpoint))
	}
	return errors.Join(errs...)
}

// Registrar serves the registration socket until Stop.
type Registrar struct {
	opts   Options
	server *grpc.Server
	done   chan struct{}

	mu     sync.Mutex
	status *registerapi.RegistrationStatus
	// refused receives the kubelet's error when it refuses the plugin.
	refused chan error
}

// Start listens on the registration socket (replacing a stale one left by a
// previous process) and serves it in the background.
func Start(opts Options) (*Registrar, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("kubelet registration: %w", err)
	}
	if err := os.MkdirAll(opts.RegistryDir, 0o750); err != nil {
		return nil, err
	}
	lis, err := grpcserver.Listen("unix://" + opts.SocketPath())
	if err != nil {
		return nil, fmt.Errorf("kubelet registration socket: %w", err)
	}
	r := &Registrar{opts: opts, server: grpc.NewServer(), done: make(chan struct{}), refused: make(chan error, 1)}
	registerapi.RegisterRegistrationServer(r.server, &service{r: r})
	go func() {
		defer close(r.done)
		if err := r.server.Serve(lis); err != nil {
			klog.ErrorS(err, "Kubelet registration server stopped")
		}
	}()
	klog.InfoS("Waiting for the kubelet to register the driver", "socket", opts.SocketPath(), "endpoint", opts.Endpoint)
	return r, nil
}

// Refused delivers the kubelet's error if it refuses the plugin. The
// driver should exit then, as node-driver-registrar does: the kubelet
// retries registration when the socket reappears.
func (r *Registrar) Refused() <-chan error { return r.refused }

// Status is the last registration status the kubelet reported, nil before
// it did.
func (r *Registrar) Status() *registerapi.RegistrationStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// Stop stops serving and removes the socket, which makes the kubelet
// deregister the driver.
func (r *Registrar) Stop() {
	r.server.Stop()
	<-r.done
	if err := os.Remove(r.opts.SocketPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		klog.ErrorS(err, "Removing the kubelet registration socket")
	}
}

type service struct {
	registerapi.UnimplementedRegistrationServer
	r *Registrar
}

// GetInfo tells the kubelet who we are and where our CSI endpoint is.
func (s *service) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              s.r.opts.DriverName,
		Endpoint:          s.r.opts.Endpoint,
		SupportedVersions: SupportedVersions,
	}, nil
}

// NotifyRegistrationStatus receives the kubelet's verdict.
func (s *service) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	s.r.mu.Lock()
	s.r.status = st
	s.r.mu.Unlock()
	if st.PluginRegistered {
		klog.InfoS("Registered with the kubelet", "driver", s.r.opts.DriverName)
		return &registerapi.RegistrationStatusResponse{}, nil
	}
	err := fmt.Errorf("the kubelet refused driver %s: %s", s.r.opts.DriverName, st.Error)
	klog.ErrorS(err, "Kubelet registration failed")
	select {
	case s.r.refused <- err:
	default:
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}
