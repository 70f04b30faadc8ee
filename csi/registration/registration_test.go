/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package registration

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// dial connects to a registration socket as the kubelet's plugin watcher does.
func dial(t *testing.T, socket string) registerapi.RegistrationClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return registerapi.NewRegistrationClient(conn)
}

// The kubelet's side of the handshake, played by the test; the real kubelet
// does the same in the demo (test/demo) and its e2e test.
func TestRegistrationHandshake(t *testing.T) {
	dir := t.TempDir()
	registry := filepath.Join(dir, "plugins_registry")
	// A stale socket of a crashed previous process must not stop us.
	if err := os.MkdirAll(registry, 0o750); err != nil {
		t.Fatal(err)
	}
	opts := Options{RegistryDir: registry, DriverName: "local.csi.aliyun.com", Endpoint: "/var/lib/kubelet/plugins/local.csi.aliyun.com/csi.sock"}
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: opts.SocketPath(), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	r, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := opts.SocketPath(), filepath.Join(registry, "local.csi.aliyun.com-reg.sock"); got != want {
		t.Fatalf("socket %s, want %s (the name the kubelet's watcher expects)", got, want)
	}
	c := dial(t, opts.SocketPath())
	info, err := c.GetInfo(t.Context(), &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != registerapi.CSIPlugin || info.Name != opts.DriverName || info.Endpoint != opts.Endpoint || len(info.SupportedVersions) == 0 {
		t.Fatalf("GetInfo = %+v", info)
	}
	if r.Status() != nil {
		t.Fatal("status before the kubelet reported one")
	}
	if _, err := c.NotifyRegistrationStatus(t.Context(), &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	if st := r.Status(); st == nil || !st.PluginRegistered {
		t.Fatalf("status = %+v", st)
	}
	select {
	case err := <-r.Refused():
		t.Fatalf("refused after a successful registration: %v", err)
	default:
	}

	// A refusal is delivered, so the driver can exit as the registrar does.
	if _, err := c.NotifyRegistrationStatus(t.Context(), &registerapi.RegistrationStatus{Error: "version 0.9 unsupported"}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.Refused():
		if !strings.Contains(err.Error(), "version 0.9 unsupported") {
			t.Fatalf("refusal = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("refusal not delivered")
	}

	// Stop removes the socket: that is how the kubelet learns we are gone.
	r.Stop()
	if _, err := os.Stat(opts.SocketPath()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after Stop: %v", err)
	}
}

func TestOptionsValidated(t *testing.T) {
	for _, o := range []Options{
		{RegistryDir: "relative", DriverName: "d", Endpoint: "/csi.sock"},
		{RegistryDir: "/r", DriverName: "a/b", Endpoint: "/csi.sock"},
		{RegistryDir: "/r", DriverName: "d", Endpoint: "unix:///csi.sock"},
		{RegistryDir: "/r", DriverName: "d"},
	} {
		if _, err := Start(o); err == nil {
			t.Errorf("Start(%+v) accepted", o)
		}
	}
}
