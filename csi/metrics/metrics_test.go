/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package metrics_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-local/open-local/csi/grpcserver"
	"github.com/open-local/open-local/csi/identity"
	"github.com/open-local/open-local/csi/metrics"
	"github.com/open-local/open-local/test/csitest"
)

// panicky is the Identity service with a Probe that panics, to see that the
// metrics record the code the caller gets (Internal), not nothing.
type panicky struct{ *identity.Server }

func (panicky) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	panic("bug")
}

// TestGRPCMetrics serves the real Identity service through grpcserver with
// the metrics interceptor, calls it over a unix socket, and scrapes /metrics
// over HTTP.
func TestGRPCMetrics(t *testing.T) {
	m := metrics.New()
	srv := grpcserver.New(m.UnaryServerInterceptor())
	csi.RegisterIdentityServer(srv, panicky{identity.New("local.csi.aliyun.com", "test")})
	m.Initialize(srv)
	endpoint := "unix://" + filepath.Join(t.TempDir(), "csi.sock")
	lis, err := grpcserver.Listen(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	client := csi.NewIdentityClient(csitest.Dial(t, endpoint))
	ctx := t.Context()
	for range 2 {
		if _, err := client.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := client.Probe(ctx, &csi.ProbeRequest{}); status.Code(err) != codes.Internal {
		t.Fatalf("Probe: %v, want Internal", err)
	}

	hs := httptest.NewServer(m.Handler())
	defer hs.Close()
	resp, err := http.Get(hs.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`grpc_server_handled_total{grpc_code="OK",grpc_method="GetPluginInfo",grpc_service="csi.v1.Identity",grpc_type="unary"} 2`,
		`grpc_server_handled_total{grpc_code="Internal",grpc_method="Probe",grpc_service="csi.v1.Identity",grpc_type="unary"} 1`,
		// Initialize: a method never called is there with 0.
		`grpc_server_started_total{grpc_method="GetPluginCapabilities",grpc_service="csi.v1.Identity",grpc_type="unary"} 0`,
		`grpc_server_handling_seconds_count{grpc_method="GetPluginInfo",grpc_service="csi.v1.Identity",grpc_type="unary"} 2`,
		`go_goroutines `,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if problems, err := testutil.GatherAndLint(m.Registry); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestCommandsRegisteredOnce(t *testing.T) {
	m := metrics.New()
	if m.Commands() != m.Commands() {
		t.Error("Commands() returned a second histogram")
	}
	m.Commands().Observe([]string{"lvm", "lvs"}, 0, nil)
	if n := testutil.CollectAndCount(m.Registry, "open_local_lvm_command_duration_seconds"); n != 1 {
		t.Errorf("%d lvm command series, want 1", n)
	}
}
