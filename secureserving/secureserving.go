/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package secureserving serves the agent's and the CSI plugin's HTTP
// endpoints as kube-scheduler serves its own: HTTPS, each request's bearer
// token checked by the API server (TokenReview) and its path authorized
// there (SubjectAccessReview, non-resource URL, verb from the method), so
// Prometheus scrapes with its ServiceAccount token and a role granting
// `get` on /metrics, and nobody else reads every tenant's pod and PVC names
// off a node port. Paths in AlwaysAllow (the kubelet's probes) answer
// without a token and must carry no data.
package secureserving

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/authorization/authorizerfactory"
	"k8s.io/client-go/kubernetes"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/klog/v2"
)

// Options of a secured endpoint.
type Options struct {
	// Address is host:port to listen on.
	Address string
	// AlwaysAllow are paths served without authentication (health probes).
	AlwaysAllow []string
	// CertFile and KeyFile: the serving certificate; a self-signed one for
	// the host name when empty (Prometheus and the kubelet then skip
	// verification, as with kube-scheduler's).
	CertFile, KeyFile string
}

// Guard authenticates and authorizes requests against the API server.
type Guard struct {
	authn       authenticator.Request
	authz       authorizer.Authorizer
	alwaysAllow []string
}

// NewGuard checks tokens and permissions through kube's API server.
func NewGuard(kube kubernetes.Interface, alwaysAllow []string) (*Guard, error) {
	authn, _, err := authenticatorfactory.DelegatingAuthenticatorConfig{
		// No Anonymous: a request without a valid token is refused.
		TokenAccessReviewClient:  kube.AuthenticationV1(),
		TokenAccessReviewTimeout: 10 * time.Second,
		WebhookRetryBackoff:      webhookBackoff(),
		CacheTTL:                 10 * time.Second,
	}.New()
	if err != nil {
		return nil, err
	}
	authz, err := authorizerfactory.DelegatingAuthorizerConfig{
		SubjectAccessReviewClient: kube.AuthorizationV1(),
		AllowCacheTTL:             10 * time.Second,
		DenyCacheTTL:              10 * time.Second,
		WebhookRetryBackoff:       webhookBackoff(),
	}.New()
	if err != nil {
		return nil, err
	}
	return &Guard{authn: authn, authz: authz, alwaysAllow: alwaysAllow}, nil
}

// Wrap returns next behind the guard: 401 without a valid token, 403 when
// the API server does not allow the user the verb on the path.
func (g *Guard) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slices.Contains(g.alwaysAllow, r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		resp, ok, err := g.authn.AuthenticateRequest(r)
		if err != nil || !ok {
			if err != nil {
				klog.V(4).InfoS("Unauthenticated request", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
			}
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		attrs := authorizer.AttributesRecord{User: resp.User, Verb: strings.ToLower(r.Method), Path: r.URL.Path}
		decision, reason, err := g.authz.Authorize(r.Context(), attrs)
		if decision != authorizer.DecisionAllow {
			klog.V(4).InfoS("Forbidden request", "user", resp.User.GetName(), "path", r.URL.Path, "reason", reason, "err", err)
			http.Error(w, fmt.Sprintf("Forbidden: user %q may not %s %s", resp.User.GetName(), attrs.Verb, r.URL.Path), http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Serve serves handler on o.Address with TLS behind g until ctx is done,
// and returns the address it listens on.
func Serve(ctx context.Context, o Options, g *Guard, handler http.Handler) (net.Addr, error) {
	cert, err := serverCert(o)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", o.Address)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: g.Wrap(handler), ReadHeaderTimeout: 5 * time.Second,
		TLSConfig:   &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}},
		BaseContext: func(net.Listener) context.Context { return ctx }}
	run(ctx, srv, lis, true)
	return lis.Addr(), nil
}

func serverCert(o Options) (tls.Certificate, error) {
	if o.CertFile != "" || o.KeyFile != "" {
		return tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
	}
	host, _, err := net.SplitHostPort(o.Address)
	if err != nil {
		return tls.Certificate{}, err
	}
	if host == "" {
		host = "localhost"
	}
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey(host, nil, nil)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("self-signed serving certificate: %w", err)
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// The values of --metrics-auth.
const (
	// AuthDelegated: HTTPS, tokens and permissions checked by the API server.
	AuthDelegated = "delegated"
	// AuthNone: plain HTTP, only on a loopback address (tests; a proxy in
	// the pod that authenticates).
	AuthNone = "none"
)

// StringFlags is a flag.FlagSet or a pflag.FlagSet.
type StringFlags interface {
	StringVar(p *string, name, value, usage string)
}

// AddFlag defines --metrics-auth, the same in every binary.
func AddFlag(fs StringFlags, auth *string) {
	fs.StringVar(auth, "metrics-auth", AuthDelegated, "who may read the HTTP endpoints' data (/metrics): "+AuthDelegated+
		" (HTTPS; the bearer token must be allowed `get` on the path by the API server, as with kube-scheduler) or "+AuthNone+
		" (plain HTTP, loopback addresses only); /healthz answers without a token and carries no data")
}

// ServeHTTP serves handler on addr as auth says until ctx is done; paths in
// alwaysAllow are served to anyone.
func ServeHTTP(ctx context.Context, addr, auth string, kube kubernetes.Interface, alwaysAllow []string, handler http.Handler) (net.Addr, error) {
	switch auth {
	case AuthDelegated:
		g, err := NewGuard(kube, alwaysAllow)
		if err != nil {
			return nil, err
		}
		return Serve(ctx, Options{Address: addr, AlwaysAllow: alwaysAllow}, g, handler)
	case AuthNone:
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("--metrics-auth=%s serves anyone: only on a loopback address, not %q", AuthNone, addr)
		}
		return servePlain(ctx, addr, handler)
	default:
		return nil, fmt.Errorf("--metrics-auth=%q: want %s or %s", auth, AuthDelegated, AuthNone)
	}
}

func servePlain(ctx context.Context, addr string, handler http.Handler) (net.Addr, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	run(ctx, &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}, lis, false)
	return lis.Addr(), nil
}

// run serves until ctx is done.
func run(ctx context.Context, srv *http.Server, lis net.Listener, withTLS bool) {
	go func() {
		var err error
		if withTLS {
			err = srv.ServeTLS(lis, "", "")
		} else {
			err = srv.Serve(lis)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "HTTP server failed", "address", lis.Addr().String())
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
}

// webhookBackoff is k8s.io/apiserver/pkg/server/options' default, copied: that
// package's imports set client-go's process-wide workqueue metrics provider
// in init, before the agent's own (agent/metrics.NewWorkqueues).
func webhookBackoff() *wait.Backoff {
	return &wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Jitter: 0.2, Steps: 5}
}
