/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package deploy_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/open-local/open-local/test/cluster"
)

func TestMain(m *testing.M) { cluster.Main(m) }

// These kinds are really applied to the local cluster; the workloads only
// get a server-side dry run (no kubelet runs there, and no images exist).
var appliedKinds = []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "CSIDriver",
	"StorageClass", "VolumeSnapshotClass", "NodeLocalStorageInitConfig", "ConfigMap", "Service",
	"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"}

// installer applies rendered objects with server-side apply.
type installer struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapper
}

func newInstaller(t *testing.T, cfg *rest.Config) *installer {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &installer{dyn: dynamic.NewForConfigOrDie(cfg), mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}
}

func (in *installer) resource(u *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := u.GroupVersionKind()
	mapping, err := in.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", gvk, err)
	}
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := u.GetNamespace()
		if ns == "" {
			ns = namespace
		}
		return in.dyn.Resource(mapping.Resource).Namespace(ns), nil
	}
	return in.dyn.Resource(mapping.Resource), nil
}

func (in *installer) apply(ctx context.Context, u *unstructured.Unstructured, dryRun bool) error {
	r, err := in.resource(u)
	if err != nil {
		return err
	}
	data, err := u.MarshalJSON()
	if err != nil {
		return err
	}
	opts := metav1.PatchOptions{FieldManager: "open-local-deploy-test", Force: new(true)}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = r.Patch(ctx, u.GetName(), types.ApplyPatchType, data, opts)
	return err
}

// TestInstall applies the rendered chart to the local real cluster: a
// server-side dry run of everything (the API server validates every object
// against its schema, the CRDs' included), then a real apply of the RBAC,
// CSIDriver, classes, init config, ConfigMaps and Services; then each
// component's ServiceAccount (impersonated) is shown to be allowed exactly
// what TestRBAC expects and no Secret.
func TestInstall(t *testing.T) {
	c := cluster.ForTest(t)
	ctx := t.Context()
	in := newInstaller(t, c.RESTConfig())
	for _, set := range [][]string{nil, {"controller.replicas=2", "agent.lvm.useHostConfig=false", "monitoring.grafanaDashboard.enabled=true",
		"admission.schedulerNamePolicy.enabled=true"}} {
		m := render(t, set...)
		for _, u := range m.objs {
			if err := in.apply(ctx, u, true); err != nil {
				t.Errorf("%v: server-side dry run of %s %s: %v", set, u.GetKind(), u.GetName(), err)
			}
		}
	}
	if t.Failed() {
		return
	}
	applyChart(t, c)

	sa := func(name string) string { return "system:serviceaccount:" + namespace + ":open-local-" + name }
	clusterWide := func(as ...access) access { return merge(as...) }
	for _, tc := range []struct {
		user      string
		cluster   access // cluster-wide
		namespace access // in the release namespace
		denied    []string
	}{
		// The agent pod reads Pods (inline volume collection) and creates
		// and deletes LocalVolumes (inline volumes), but never writes Pods.
		{sa("agent"), agentRules, nil,
			[]string{"secrets", "csi.aliyun.com/nodelocalstorages:create", "csi.aliyun.com/nodelocalstorages:delete", "nodes",
				"pods:create", "pods:update", "pods:patch", "pods:delete", "persistentvolumes"}},
		{sa("controller"),
			clusterWide(csiControllerRules, nlsControllerRules, provisionerRules, resizerRules, snapshotterRules, snapshotControllerRules),
			merge(controllerNamespaceRules, leaseRules),
			[]string{"secrets", "coordination.k8s.io/leases:create@cluster", "pods:list", "storage.k8s.io/csistoragecapacities:create@cluster"}},
		{sa("scheduler"), schedulerRules, schedulerLeaseRules,
			[]string{"secrets", "csi.aliyun.com/localvolumes:update", "csi.aliyun.com/nodelocalstorages:update"}},
	} {
		t.Run(tc.user, func(t *testing.T) {
			client := kubernetes.NewForConfigOrDie(impersonate(c.RESTConfig(), tc.user))
			check := func(ns, key, verb string, want bool) {
				t.Helper()
				attrs := resourceAttributes(key, verb)
				attrs.Namespace = ns
				r, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
					&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: attrs}},
					metav1.CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if r.Status.Allowed != want {
					t.Errorf("%s %s %s in %q: allowed=%v, want %v (%s)", tc.user, verb, key, ns, r.Status.Allowed, want, r.Status.Reason)
				}
			}
			for key, verbs := range tc.cluster {
				for _, v := range verbs {
					check("", key, v, true)
					check("default", key, v, true) // namespaced resources in any namespace
				}
			}
			for key, verbs := range tc.namespace {
				for _, v := range verbs {
					check(namespace, key, v, true)
				}
			}
			for _, d := range tc.denied {
				key, verb, _ := strings.Cut(d, ":")
				ns := namespace
				if v, ok := strings.CutSuffix(verb, "@cluster"); ok {
					verb, ns = v, "default"
				}
				verbs := []string{verb}
				if verb == "" {
					verbs = []string{"get", "list", "watch", "create", "update", "delete"}
				}
				for _, v := range verbs {
					check(ns, key, v, false)
					check("", key, v, false)
				}
			}
			// And for real: reading Secrets is forbidden.
			if _, err := client.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
				t.Errorf("%s lists Secrets: %v, want Forbidden", tc.user, err)
			}
		})
	}

	// The scheduler's built-in roles give kube-scheduler what it needs.
	t.Run("scheduler built-in roles", func(t *testing.T) {
		client := kubernetes.NewForConfigOrDie(impersonate(c.RESTConfig(), sa("scheduler")))
		for _, tc := range []struct{ ns, key, verb, name string }{
			{"", "pods", "list", ""}, {"", "nodes", "watch", ""}, {"default", "pods/binding", "create", ""},
			{"default", "persistentvolumeclaims", "update", ""}, {"", "storage.k8s.io/csinodes", "list", ""},
			{"", "storage.k8s.io/csistoragecapacities", "list", ""}, {"default", "events", "create", ""},
			{namespace, "coordination.k8s.io/leases", "create", ""},
			{"kube-system", "configmaps", "get", "extension-apiserver-authentication"},
			{"", "authentication.k8s.io/tokenreviews", "create", ""},
		} {
			attrs := resourceAttributes(tc.key, tc.verb)
			attrs.Namespace, attrs.Name = tc.ns, tc.name
			r, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
				&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: attrs}},
				metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !r.Status.Allowed {
				t.Errorf("scheduler may not %s %s %s in %q", tc.verb, tc.key, tc.name, tc.ns)
			}
		}
	})
}

// applyChart really applies the chart's appliedKinds, rendered with the
// dashboard on and the extra --set values (idempotent: server-side apply),
// and removes at the end what did not exist before.
func applyChart(t *testing.T, c *cluster.Cluster, set ...string) {
	t.Helper()
	ctx := t.Context()
	in := newInstaller(t, c.RESTConfig())
	m := render(t, append([]string{"monitoring.grafanaDashboard.enabled=true"}, set...)...)
	for _, u := range m.objs {
		if !slices.Contains(appliedKinds, u.GetKind()) {
			continue
		}
		r, err := in.resource(u)
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.Get(ctx, u.GetName(), metav1.GetOptions{})
		existed := err == nil
		if err := in.apply(ctx, u, false); err != nil {
			t.Fatalf("apply %s %s: %v", u.GetKind(), u.GetName(), err)
		}
		if !existed {
			t.Cleanup(func() { _ = r.Delete(context.Background(), u.GetName(), metav1.DeleteOptions{}) })
		}
		if _, err := r.Get(ctx, u.GetName(), metav1.GetOptions{}); err != nil {
			t.Errorf("%s %s not there after apply: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// impersonate returns cfg acting as a ServiceAccount, with the groups the
// API server gives ServiceAccount tokens.
func impersonate(cfg *rest.Config, user string) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	ns := strings.Split(user, ":")[2]
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}}
	return cfg
}

// impersonatingKubeconfig writes a kubeconfig that acts as user, for our
// binaries and the sidecars (they honour kubeconfig impersonation). node,
// when not empty, is the node the user's token would be bound to (the
// agent's: the chart's policy refuses its writes without it).
func impersonatingKubeconfig(t *testing.T, c *cluster.Cluster, user, node string) string {
	t.Helper()
	kc, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	ns := strings.Split(user, ":")[2]
	for _, ai := range kc.AuthInfos {
		ai.Impersonate = user
		ai.ImpersonateGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}
		if node != "" {
			ai.ImpersonateUserExtra = map[string][]string{nodeNameExtra: {node}}
		}
	}
	path := filepath.Join(t.TempDir(), strings.ReplaceAll(user, ":", "_")+".kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// resourceAttributes turns "group/resource/subresource[name]" (core group:
// "resource[/subresource]") into an access review's attributes.
func resourceAttributes(key, verb string) *authorizationv1.ResourceAttributes {
	a := &authorizationv1.ResourceAttributes{Verb: verb}
	if i := strings.Index(key, "["); i >= 0 {
		a.Name = strings.TrimSuffix(key[i+1:], "]")
		key = key[:i]
	}
	parts := strings.Split(key, "/")
	if strings.Contains(parts[0], ".") || parts[0] == "apps" {
		a.Group, parts = parts[0], parts[1:]
	}
	a.Resource = parts[0]
	if len(parts) > 1 {
		a.Subresource = parts[1]
	}
	return a
}

// noForbidden fails the test when a component's log shows an API request
// its ServiceAccount was refused.
func noForbidden(t *testing.T, p *cluster.Process) {
	t.Helper()
	data, err := os.ReadFile(p.Log)
	if err != nil {
		t.Error(err)
		return
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "forbidden") || strings.Contains(line, "Forbidden") {
			t.Errorf("%s was refused an API request: %s", p.Name, line)
		}
	}
}

// waitFor polls cond every 200 ms until it returns true, an error, or the
// timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s (last error: %v)", what, lastErr)
}

// contextWithTimeout is a context for cleanups too (t.Context is done by then).
func contextWithTimeout(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	t.Helper()
	return context.WithTimeout(context.Background(), d)
}
