/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package deploy_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/open-local/open-local/test/cluster"
)

// scrapeClient talks to our self-signed endpoints (Prometheus' ServiceMonitor
// skips verification too, as for kube-scheduler).
var scrapeClient = &http.Client{Timeout: 10 * time.Second,
	Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the test's own self-signed endpoints

// get requests url with the bearer token (none when empty).
func get(url, token string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := scrapeClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// metricsTokens returns the tokens of two ServiceAccounts: one a monitoring
// role allows `get` on /metrics (as kube-prometheus grants Prometheus), one
// with no role.
func metricsTokens(t *testing.T, c *cluster.Cluster) (reader, stranger string) {
	t.Helper()
	ctx, admin := t.Context(), c.Client()
	run := rand.String(5)
	readerSA, strangerSA := "metrics-reader-"+run, "stranger-"+run
	for _, sa := range []string{readerSA, strangerSA} {
		if _, err := admin.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}},
			metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: readerSA},
		Rules: []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}}
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: readerSA},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: readerSA},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: readerSA, Namespace: namespace}}}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_ = admin.RbacV1().ClusterRoleBindings().Delete(ctx, readerSA, metav1.DeleteOptions{})
		_ = admin.RbacV1().ClusterRoles().Delete(ctx, readerSA, metav1.DeleteOptions{})
		for _, sa := range []string{readerSA, strangerSA} {
			_ = admin.CoreV1().ServiceAccounts(namespace).Delete(ctx, sa, metav1.DeleteOptions{})
		}
	})
	return requestToken(t, admin, readerSA, nil), requestToken(t, admin, strangerSA, nil)
}

// checkEndpoints: each data endpoint refuses a request without a token
// (401) and a token the API server does not allow /metrics (403), and
// serves the reader; health endpoints answer anyone and say only "ok".
func checkEndpoints(t *testing.T, reader, stranger string, metricsURLs, healthURLs []string) {
	t.Helper()
	for _, url := range metricsURLs {
		for _, tc := range []struct {
			who, token string
			want       int
		}{{"anonymous", "", http.StatusUnauthorized}, {"a forged token", "not-a-token", http.StatusUnauthorized},
			{"a ServiceAccount without the role", stranger, http.StatusForbidden}, {"the metrics reader", reader, http.StatusOK}} {
			code, body, err := get(url, tc.token)
			if err != nil {
				t.Errorf("%s by %s: %v", url, tc.who, err)
				continue
			}
			if code != tc.want {
				t.Errorf("%s by %s: %d, want %d", url, tc.who, code, tc.want)
			}
			if leaks := strings.Contains(body, "# HELP") || strings.Contains(body, "# TYPE"); leaks != (tc.want == http.StatusOK) {
				t.Errorf("%s by %s: metrics in the answer %v, want %v:\n%.300s", url, tc.who, leaks, tc.want == http.StatusOK, body)
			}
		}
	}
	for _, url := range healthURLs {
		if code, body, err := get(url, ""); err != nil || code != http.StatusOK || body != "ok" {
			t.Errorf("%s anonymously: %d %q %v, want 200 \"ok\" and nothing else", url, code, body, err)
		}
	}
}

// TestChartServesMetricsAuthenticated: our containers keep the binaries'
// --metrics-auth=delegated, probe their health over HTTPS, and the
// ServiceMonitors scrape our ports with a token over HTTPS.
func TestChartServesMetricsAuthenticated(t *testing.T) {
	m := render(t, "monitoring.serviceMonitor.enabled=true")
	for _, w := range []struct{ kind, name string }{{"DaemonSet", "open-local-agent"}, {"Deployment", "open-local-controller"}} {
		spec := podSpec(t, m, w.kind, w.name)
		for _, c := range spec.Containers {
			args := strings.Join(append(c.Command, c.Args...), " ")
			if strings.Contains(args, "--metrics-auth") {
				t.Errorf("%s: %s sets %s", w.name, c.Name, args)
			}
			if p := c.LivenessProbe; p != nil && p.HTTPGet != nil && (p.HTTPGet.Port.String() == "metrics") != (p.HTTPGet.Scheme == corev1.URISchemeHTTPS) {
				t.Errorf("%s: %s probes port %s over %s", w.name, c.Name, p.HTTPGet.Port.String(), p.HTTPGet.Scheme)
			}
		}
	}
	for _, name := range []string{"open-local-agent", "open-local-controller"} {
		sm := m.get(t, "ServiceMonitor", name)
		eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		ours := 0
		for _, e := range eps {
			ep := e.(map[string]any)
			if port := ep["port"]; port == "metrics" || port == "csi-metrics" {
				ours++
				if ep["scheme"] != "https" || ep["bearerTokenFile"] == nil {
					t.Errorf("ServiceMonitor %s scrapes %v without a token over HTTPS: %v", name, port, ep)
				}
			}
		}
		if ours != 2 {
			t.Errorf("ServiceMonitor %s: %d of our ports, want 2", name, ours)
		}
	}
}

func podSpec(t *testing.T, m *manifests, kind, name string) corev1.PodSpec {
	t.Helper()
	if kind == "DaemonSet" {
		return typed[appsv1.DaemonSet](t, m.get(t, kind, name)).Spec.Template.Spec
	}
	return typed[appsv1.Deployment](t, m.get(t, kind, name)).Spec.Template.Spec
}
