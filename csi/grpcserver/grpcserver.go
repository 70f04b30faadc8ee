/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package grpcserver serves CSI services on a unix socket, with one log line
// per call and panics turned into Internal errors (a bug in one call must not
// take the node's volumes down with the process).
package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
)

// SocketPath turns an endpoint ("unix:///csi/csi.sock" or "/csi/csi.sock")
// into a path. Only unix sockets are served: there is no network port.
func SocketPath(endpoint string) (string, error) {
	path := endpoint
	if after, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		path = after
	} else if strings.Contains(endpoint, "://") {
		return "", fmt.Errorf("endpoint %q: only unix:// sockets are supported", endpoint)
	}
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("endpoint %q: want an absolute socket path", endpoint)
	}
	return path, nil
}

// Listen removes a stale socket left by a previous process and listens on
// endpoint.
func Listen(endpoint string) (net.Listener, error) {
	path, err := SocketPath(endpoint)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	return net.Listen("unix", path)
}

// New returns a gRPC server with the logging and recovery interceptor.
// outer interceptors (e.g. metrics) run around it, so they see every call's
// final code, panics turned into Internal included.
func New(outer ...grpc.UnaryServerInterceptor) *grpc.Server {
	return grpc.NewServer(grpc.ChainUnaryInterceptor(append(outer, intercept)...))
}

func intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			klog.ErrorS(nil, "panic in CSI call", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
			resp, err = nil, status.Errorf(codes.Internal, "internal error in %s: %v", info.FullMethod, r)
		}
		code := status.Code(err)
		if err != nil && code == codes.Unknown {
			// Every error leaves with a deliberate code; an unclassified
			// one is a bug of ours, but still better reported than lost.
			var se interface{ GRPCStatus() *status.Status }
			if !errors.As(err, &se) {
				err = status.Error(codes.Internal, err.Error())
				code = codes.Internal
			}
		}
		logger := klog.FromContext(ctx)
		if err != nil {
			logger.Info("CSI call failed", "method", info.FullMethod, "code", code.String(), "err", status.Convert(err).Message(), "duration", time.Since(start))
		} else {
			logger.V(2).Info("CSI call", "method", info.FullMethod, "duration", time.Since(start))
		}
	}()
	return handler(ctx, req)
}
