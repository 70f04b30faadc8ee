/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package grpcserver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestSocketPath(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "unix:///csi/csi.sock", want: "/csi/csi.sock"},
		{in: "/csi/csi.sock", want: "/csi/csi.sock"},
		{in: "tcp://127.0.0.1:10000", wantErr: true},
		{in: "unix://relative.sock", wantErr: true},
		{in: "csi.sock", wantErr: true},
	}
	for _, tt := range tests {
		got, err := SocketPath(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("SocketPath(%q) = %q, %v; want %q, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestListenReplacesStaleSocketOnly(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "sub", "csi.sock")
	l, err := Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	l.Close() // leaves the socket file behind, as a crashed process would
	l, err = Listen("unix://" + sock)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l.Close()
	file := filepath.Join(dir, "not-a-socket")
	if err := os.WriteFile(file, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file); err == nil {
		t.Fatal("Listen removed a regular file")
	}
	if b, _ := os.ReadFile(file); string(b) != "data" {
		t.Fatal("regular file changed")
	}
}

func TestInterceptor(t *testing.T) {
	info := &grpc.UnaryServerInfo{FullMethod: "/csi.v1.Node/NodeStageVolume"}
	tests := []struct {
		name    string
		handler grpc.UnaryHandler
		want    codes.Code
	}{
		{"ok", func(context.Context, any) (any, error) { return "r", nil }, codes.OK},
		{"status kept", func(context.Context, any) (any, error) { return nil, status.Error(codes.NotFound, "x") }, codes.NotFound},
		{"plain error is Internal", func(context.Context, any) (any, error) { return nil, errors.New("boom") }, codes.Internal},
		{"panic is Internal", func(context.Context, any) (any, error) { panic("bug") }, codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := intercept(t.Context(), nil, info, tt.handler)
			if status.Code(err) != tt.want {
				t.Fatalf("got %v, want %s", err, tt.want)
			}
		})
	}
}
