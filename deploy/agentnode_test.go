/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package deploy_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	olclient "github.com/open-local/open-local/apis/client/clientset/versioned"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/test/cluster"
)

const nodeNameExtra = "authentication.kubernetes.io/node-name"

// TestAgentWritesOnlyItsNode acts as the agent's ServiceAccount with the
// tokens the kubelet would give the agent pods of two nodes (TokenRequests
// bound to pods whose spec.nodeName is node A or node B), on the local
// cluster's API server with the chart's RBAC and policies applied: the
// agent of A writes A's LocalVolumes, NodeLocalStorage and Events and is
// refused B's, with a message naming the node; a token of the same
// ServiceAccount bound to no pod writes nothing; the controller's
// ServiceAccount still writes any node's LocalVolumes.
func TestAgentWritesOnlyItsNode(t *testing.T) {
	c := cluster.ForTest(t)
	ctx := t.Context()
	applyChart(t, c)
	admin, ol := c.Client(), c.OpenLocalClient().CsiV1alpha1()
	run := rand.String(5)
	nodeA, nodeB := "agent-a-"+run, "agent-b-"+run
	const sa = "open-local-agent"

	// The agent pods of both nodes (no kubelet: bound by spec.nodeName).
	tokenFor := func(node string) string {
		t.Helper()
		pod, err := admin.CoreV1().Pods(namespace).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "agent-" + node},
			Spec: corev1.PodSpec{ServiceAccountName: sa, NodeName: node, AutomountServiceAccountToken: new(false),
				Containers: []corev1.Container{{Name: "agent", Image: "open-local/open-local-node"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = admin.CoreV1().Pods(namespace).Delete(context.Background(), pod.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		})
		return requestToken(t, admin, sa, &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID})
	}
	tokA, tokB := tokenFor(nodeA), tokenFor(nodeB)
	unbound := requestToken(t, admin, sa, nil)

	// The API server we run puts the pod's node in the token's user.
	for tok, want := range map[string][]string{tokA: {nodeA}, tokB: {nodeB}, unbound: nil} {
		r, err := kubernetes.NewForConfigOrDie(withToken(c.RESTConfig(), tok)).AuthenticationV1().SelfSubjectReviews().
			Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		u := r.Status.UserInfo
		if u.Username != "system:serviceaccount:"+namespace+":"+sa || !slices.Equal([]string(u.Extra[nodeNameExtra]), want) {
			t.Fatalf("token user %s, %s=%v, want %v", u.Username, nodeNameExtra, u.Extra[nodeNameExtra], want)
		}
	}

	agentA := olclient.NewForConfigOrDie(withToken(c.RESTConfig(), tokA)).CsiV1alpha1()
	eventsA := kubernetes.NewForConfigOrDie(withToken(c.RESTConfig(), tokA)).CoreV1().Events("default")
	agentUnbound := olclient.NewForConfigOrDie(withToken(c.RESTConfig(), unbound)).CsiV1alpha1()
	controller := olclient.NewForConfigOrDie(impersonate(c.RESTConfig(),
		"system:serviceaccount:"+namespace+":open-local-controller")).CsiV1alpha1()

	lv := func(name, node string) *v1alpha1.LocalVolume {
		return &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: name + "-" + run},
			Spec: v1alpha1.LocalVolumeSpec{NodeName: node, VolumeType: v1alpha1.VolumeTypeLVM, VGName: "vg",
				Size: resource.MustParse("1Gi")}}
	}
	// Objects of both nodes, written by the cluster admin.
	for _, o := range []*v1alpha1.LocalVolume{lv("lv-a", nodeA), lv("lv-b", nodeB)} {
		if _, err := ol.LocalVolumes().Create(ctx, o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, node := range []string{nodeA, nodeB} {
		nls := &v1alpha1.NodeLocalStorage{ObjectMeta: metav1.ObjectMeta{Name: node}, Spec: v1alpha1.NodeLocalStorageSpec{NodeName: node}}
		if _, err := ol.NodeLocalStorages().Create(ctx, nls, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx := context.Background()
		for _, n := range []string{"lv-a", "lv-b", "own", "other", "by-controller"} {
			_ = ol.LocalVolumes().Delete(ctx, n+"-"+run, metav1.DeleteOptions{})
		}
		for _, n := range []string{nodeA, nodeB} {
			_ = ol.NodeLocalStorages().Delete(ctx, n, metav1.DeleteOptions{})
		}
	})

	// The API server enforces a new policy once its informer has it.
	var probe error
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := agentA.LocalVolumes().Create(ctx, lv("probe", nodeB), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if fmt.Sprint(err) != fmt.Sprint(probe) {
			t.Logf("probe: %v", err)
		}
		probe = err
		return probe != nil && strings.Contains(probe.Error(), `of node "`+nodeB+`"`), nil
	}); err != nil {
		t.Fatalf("the agent of %s creates a LocalVolume of %s after a minute (%v): the chart ties no write to its node", nodeA, nodeB, probe)
	}

	// label returns an update that only adds a label: the smallest write.
	label := func(o metav1.Object) { o.SetLabels(map[string]string{"test.open-local/touched": "yes"}) }
	updateLV := func(api func() (*v1alpha1.LocalVolume, error), write func(*v1alpha1.LocalVolume) error, change func(*v1alpha1.LocalVolume)) error {
		got, err := api()
		if err != nil {
			return err
		}
		change(got)
		return write(got)
	}
	get := func(name string) func() (*v1alpha1.LocalVolume, error) {
		return func() (*v1alpha1.LocalVolume, error) {
			return ol.LocalVolumes().Get(ctx, name+"-"+run, metav1.GetOptions{})
		}
	}
	update := func(o *v1alpha1.LocalVolume) error {
		_, err := agentA.LocalVolumes().Update(ctx, o, metav1.UpdateOptions{})
		return err
	}
	updateStatus := func(o *v1alpha1.LocalVolume) error {
		_, err := agentA.LocalVolumes().UpdateStatus(ctx, o, metav1.UpdateOptions{})
		return err
	}
	nlsStatus := func(node string) error {
		got, err := ol.NodeLocalStorages().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		got.Status.NodeStorageInfo.VolumeGroups = []v1alpha1.VolumeGroup{{Name: "vg", PhysicalVolumes: []string{"/dev/vdb"}, Total: 1 << 40, Allocatable: 1 << 40}}
		_, err = agentA.NodeLocalStorages().UpdateStatus(ctx, got, metav1.UpdateOptions{})
		return err
	}
	event := func(host string) error {
		_, err := eventsA.Create(ctx, &corev1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: "agent-node-"},
			InvolvedObject: corev1.ObjectReference{Kind: "LocalVolume", APIVersion: "csi.aliyun.com/v1alpha1", Name: "lv-a-" + run},
			Reason:         "Test", Message: "m", Type: corev1.EventTypeNormal,
			Source: corev1.EventSource{Component: "open-local-agent", Host: host}}, metav1.CreateOptions{})
		return err
	}
	ofB := `of node "` + nodeB + `"`
	const noNode = "only with a token bound to its pod"

	for _, tc := range []struct {
		name  string
		write func() error
		want  string // "" allowed, else a part of the refusal
	}{
		{"create own LocalVolume", func() error {
			_, err := agentA.LocalVolumes().Create(ctx, lv("own", nodeA), metav1.CreateOptions{})
			return err
		}, ""},
		{"create LocalVolume of another node", func() error {
			_, err := agentA.LocalVolumes().Create(ctx, lv("other", nodeB), metav1.CreateOptions{})
			return err
		}, ofB},
		{"update own LocalVolume", func() error { return updateLV(get("lv-a"), update, func(o *v1alpha1.LocalVolume) { label(o) }) }, ""},
		{"update LocalVolume of another node", func() error { return updateLV(get("lv-b"), update, func(o *v1alpha1.LocalVolume) { label(o) }) }, ofB},
		{"move own LocalVolume to another node", func() error {
			return updateLV(get("lv-a"), update, func(o *v1alpha1.LocalVolume) { o.Spec.NodeName = nodeB })
		}, "nodeName is immutable"}, // the CRD's own rule answers first; the policy checks oldObject too
		{"status of own LocalVolume", func() error {
			return updateLV(get("lv-a"), updateStatus, func(o *v1alpha1.LocalVolume) { o.Status.Phase = v1alpha1.PhaseReady })
		}, ""},
		{"status of another node's LocalVolume", func() error {
			return updateLV(get("lv-b"), updateStatus, func(o *v1alpha1.LocalVolume) { o.Status.Phase = v1alpha1.PhaseFailed })
		}, ofB},
		{"delete LocalVolume of another node", func() error {
			return agentA.LocalVolumes().Delete(ctx, "lv-b-"+run, metav1.DeleteOptions{})
		}, ofB},
		{"delete own LocalVolume", func() error { return agentA.LocalVolumes().Delete(ctx, "own-"+run, metav1.DeleteOptions{}) }, ""},
		{"status of own NodeLocalStorage", func() error { return nlsStatus(nodeA) }, ""},
		{"status of another node's NodeLocalStorage", func() error { return nlsStatus(nodeB) }, ofB},
		{"event from own node", func() error { return event(nodeA) }, ""},
		{"event claiming another node", func() error { return event(nodeB) }, ofB},
		{"event naming no node", func() error { return event("") }, `of node ""`},
		{"token bound to no pod: own node's LocalVolume", func() error {
			_, err := agentUnbound.LocalVolumes().Create(ctx, lv("own", nodeA), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}, noNode},
		{"token bound to no pod: delete", func() error {
			return agentUnbound.LocalVolumes().Delete(ctx, "lv-a-"+run, metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		}, noNode},
		{"controller: LocalVolume of any node", func() error {
			if _, err := controller.LocalVolumes().Create(ctx, lv("by-controller", nodeB), metav1.CreateOptions{}); err != nil {
				return err
			}
			return controller.LocalVolumes().Delete(ctx, "lv-b-"+run, metav1.DeleteOptions{})
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.write()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Errorf("allowed, want refused with %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("refused with %v, want %q", err, tc.want)
			}
		})
	}
}

// requestToken requests a token of the ServiceAccount, bound to ref when not nil.
func requestToken(t *testing.T, kube kubernetes.Interface, sa string, ref *authenticationv1.BoundObjectReference) string {
	t.Helper()
	tr, err := kube.CoreV1().ServiceAccounts(namespace).CreateToken(t.Context(), sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{BoundObjectRef: ref, ExpirationSeconds: new(int64(600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// withToken is cfg authenticating with a bearer token instead of the
// admin's client certificate (same server and CA).
func withToken(cfg *rest.Config, tok string) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.TLSClientConfig.CertFile, cfg.TLSClientConfig.KeyFile = "", ""
	cfg.TLSClientConfig.CertData, cfg.TLSClientConfig.KeyData = nil, nil
	cfg.BearerToken, cfg.BearerTokenFile = tok, ""
	cfg.Username, cfg.Password = "", ""
	return cfg
}
