/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package nlscontroller

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/open-local/open-local/apis/client/clientset/versioned"
	olscheme "github.com/open-local/open-local/apis/client/clientset/versioned/scheme"
	"github.com/open-local/open-local/apis/client/informers/externalversions"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/test/cluster"
)

func TestMain(m *testing.M) { cluster.Main(m) }

// fixture is a controller running in this process against the local real
// cluster, scoped to the test's nodes by a label and to its own config, so
// tests sharing the cluster do not see each other.
type fixture struct {
	kube   kubernetes.Interface
	ol     versioned.Interface
	run    string // unique label value of this test's nodes
	config string // NodeLocalStorageInitConfig name
}

func start(t *testing.T, opts Options) *fixture {
	t.Helper()
	c := cluster.ForTest(t)
	f := &fixture{kube: c.Client(), ol: c.OpenLocalClient(), run: rand.String(6)}
	f.config = "nlsc-" + f.run
	opts.InitConfig = f.config
	opts.NodeSelector = labels.SelectorFromSet(labels.Set{"test.open-local/run": f.run})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = olscheme.AddToScheme(scheme)
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: f.kube.CoreV1().Events("")})
	t.Cleanup(b.Shutdown)
	kf := informers.NewSharedInformerFactory(f.kube, 0)
	of := externalversions.NewSharedInformerFactory(f.ol, 0)
	ctrl, err := New(f.ol, kf.Core().V1().Nodes(), of.Csi().V1alpha1().NodeLocalStorages(), of.Csi().V1alpha1().NodeLocalStorageInitConfigs(),
		b.NewRecorder(scheme, corev1.EventSource{Component: FieldManager}), opts)
	if err != nil {
		t.Fatal(err)
	}
	kf.Start(ctx.Done())
	of.Start(ctx.Done())
	done := make(chan struct{})
	go func() { defer close(done); _ = ctrl.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; kf.Shutdown(); of.Shutdown() })
	return f
}

func (f *fixture) node(t *testing.T, name string, lbls map[string]string) string {
	t.Helper()
	name = name + "-" + f.run
	l := map[string]string{"test.open-local/run": f.run}
	for k, v := range lbls {
		l[k] = v
	}
	_, err := f.kube.CoreV1().Nodes().Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = f.kube.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
		_ = f.ol.CsiV1alpha1().NodeLocalStorages().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

func (f *fixture) setLabels(t *testing.T, node string, set map[string]string, remove ...string) {
	t.Helper()
	nodes := f.kube.CoreV1().Nodes()
	_, err := cluster.Update(t.Context(), nodes.Get, nodes.Update, node, func(n *corev1.Node) {
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		for k, v := range set {
			n.Labels[k] = v
		}
		for _, k := range remove {
			delete(n.Labels, k)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) createConfig(t *testing.T, spec v1alpha1.NodeLocalStorageInitConfigSpec) {
	t.Helper()
	_, err := f.ol.CsiV1alpha1().NodeLocalStorageInitConfigs().Create(t.Context(),
		&v1alpha1.NodeLocalStorageInitConfig{ObjectMeta: metav1.ObjectMeta{Name: f.config}, Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = f.ol.CsiV1alpha1().NodeLocalStorageInitConfigs().Delete(context.Background(), f.config, metav1.DeleteOptions{})
	})
}

func (f *fixture) updateConfig(t *testing.T, edit func(*v1alpha1.NodeLocalStorageInitConfigSpec)) {
	t.Helper()
	api := f.ol.CsiV1alpha1().NodeLocalStorageInitConfigs()
	_, err := cluster.Update(t.Context(), api.Get, api.Update, f.config, func(cfg *v1alpha1.NodeLocalStorageInitConfig) { edit(&cfg.Spec) })
	if err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond until it returns "" or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// wantVG waits until node's NLS exists and includes exactly vg (the marker
// of which config it got).
func (f *fixture) wantVG(t *testing.T, node, vg string) {
	t.Helper()
	eventually(t, 20*time.Second, func() string {
		nls, err := f.ol.CsiV1alpha1().NodeLocalStorages().Get(t.Context(), node, metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		if got := nls.Spec.ListConfig.VGs.Include; !reflect.DeepEqual(got, []string{vg}) || nls.Spec.NodeName != node {
			return fmt.Sprintf("NLS %s: nodeName %q, vgs.include %v, want [%s]", node, nls.Spec.NodeName, got, vg)
		}
		if nls.Labels[InitConfigLabel] != f.config {
			return fmt.Sprintf("NLS %s labels %v", node, nls.Labels)
		}
		return ""
	})
}

func (f *fixture) wantNoNLS(t *testing.T, node string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() string {
		_, err := f.ol.CsiV1alpha1().NodeLocalStorages().Get(t.Context(), node, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return ""
		}
		return fmt.Sprintf("NLS %s still exists (%v)", node, err)
	})
}

func (f *fixture) events(t *testing.T, reason string) []corev1.Event {
	t.Helper()
	l, err := f.kube.CoreV1().Events("").List(t.Context(), metav1.ListOptions{
		FieldSelector: "involvedObject.name=" + f.config + ",reason=" + reason})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func selectorCfg() v1alpha1.NodeLocalStorageInitConfigSpec {
	return v1alpha1.NodeLocalStorageInitConfigSpec{
		GlobalConfig: v1alpha1.GlobalConfig{ListConfig: listCfg("global"), ResourceToBeInited: initCfg("global", "/dev/vdb")},
		NodesConfig: []v1alpha1.NodeConfig{
			{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "a"}}, ListConfig: listCfg("tier-a")},
			{Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "disk", Operator: metav1.LabelSelectorOpExists}}}, ListConfig: listCfg("disk")},
		},
	}
}

func TestSpecsFollowConfigAndLabels(t *testing.T) {
	f := start(t, Options{UpdateSpecs: true})
	plain := f.node(t, "plain", nil)
	tierA := f.node(t, "tier-a", map[string]string{"tier": "a"})
	both := f.node(t, "both", map[string]string{"tier": "a", "disk": "ssd"})
	moving := f.node(t, "moving", map[string]string{"tier": "b"})
	outside := "outside-" + f.run // not selected by the controller's node selector
	if _, err := f.kube.CoreV1().Nodes().Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: outside}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.kube.CoreV1().Nodes().Delete(context.Background(), outside, metav1.DeleteOptions{}) })

	// Nodes exist before the config: nothing happens until it appears.
	time.Sleep(500 * time.Millisecond)
	if l, _ := f.ol.CsiV1alpha1().NodeLocalStorages().Get(t.Context(), plain, metav1.GetOptions{}); l != nil && l.Name != "" {
		t.Fatalf("NLS created without a config: %+v", l)
	}
	f.createConfig(t, selectorCfg())
	f.wantVG(t, plain, "global")
	f.wantVG(t, tierA, "tier-a")
	f.wantVG(t, both, "disk") // the last matching entry wins
	f.wantVG(t, moving, "global")
	if nls, _ := f.ol.CsiV1alpha1().NodeLocalStorages().Get(t.Context(), plain, metav1.GetOptions{}); !reflect.DeepEqual(nls.Spec.ResourceToBeInited, initCfg("global", "/dev/vdb")) {
		t.Errorf("global resourceToBeInited not copied: %+v", nls.Spec.ResourceToBeInited)
	}
	if nls, _ := f.ol.CsiV1alpha1().NodeLocalStorages().Get(t.Context(), tierA, metav1.GetOptions{}); len(nls.Spec.ResourceToBeInited.VGs) != 0 {
		t.Errorf("a nodesConfig replaces resourceToBeInited as a whole, got %+v", nls.Spec.ResourceToBeInited)
	}

	// Labels move nodes between configs.
	f.setLabels(t, moving, map[string]string{"tier": "a"})
	f.wantVG(t, moving, "tier-a")
	f.setLabels(t, both, nil, "disk")
	f.wantVG(t, both, "tier-a")
	f.setLabels(t, moving, map[string]string{"disk": "hdd"})
	f.wantVG(t, moving, "disk")

	// The config changes: every affected node follows.
	f.updateConfig(t, func(s *v1alpha1.NodeLocalStorageInitConfigSpec) { s.GlobalConfig.ListConfig = listCfg("global-2") })
	f.wantVG(t, plain, "global-2")
	f.wantVG(t, tierA, "tier-a")

	// Drift is repaired: a hand-edited spec is rewritten, a deleted NLS comes back.
	nlsAPI := f.ol.CsiV1alpha1().NodeLocalStorages()
	_, err := cluster.Update(t.Context(), nlsAPI.Get, nlsAPI.Update, plain, func(nls *v1alpha1.NodeLocalStorage) { nls.Spec.ListConfig = listCfg("hand-edited") })
	if err != nil {
		t.Fatal(err)
	}
	f.wantVG(t, plain, "global-2")
	if err := f.ol.CsiV1alpha1().NodeLocalStorages().Delete(t.Context(), tierA, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.wantVG(t, tierA, "tier-a")

	// A deleted node loses its NLS.
	if err := f.kube.CoreV1().Nodes().Delete(t.Context(), plain, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.wantNoNLS(t, plain, 20*time.Second)

	// Nodes outside the selector are left alone.
	if _, err := f.ol.CsiV1alpha1().NodeLocalStorages().Get(t.Context(), outside, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("NLS of a node outside --node-selector: %v", err)
	}
	eventually(t, 10*time.Second, func() string {
		if n := len(f.events(t, ReasonSynced)); n < 5 {
			return fmt.Sprintf("%d Synced events on the config", n)
		}
		return ""
	})
}

// TestUnlabelledNLSIsAdoptedAndForeignOnesSurvive: an NLS written by someone
// else for a served node is adopted; one of another config (or none) whose
// node is gone is not deleted.
func TestUnlabelledNLSIsAdoptedAndForeignOnesSurvive(t *testing.T) {
	f := start(t, Options{UpdateSpecs: true})
	node := "adopt-" + f.run
	if _, err := f.ol.CsiV1alpha1().NodeLocalStorages().Create(t.Context(), &v1alpha1.NodeLocalStorage{
		ObjectMeta: metav1.ObjectMeta{Name: node}, Spec: v1alpha1.NodeLocalStorageSpec{NodeName: node, ListConfig: listCfg("old")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	orphan := "orphan-" + f.run
	if _, err := f.ol.CsiV1alpha1().NodeLocalStorages().Create(t.Context(), &v1alpha1.NodeLocalStorage{
		ObjectMeta: metav1.ObjectMeta{Name: orphan}, Spec: v1alpha1.NodeLocalStorageSpec{NodeName: orphan}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = f.ol.CsiV1alpha1().NodeLocalStorages().Delete(context.Background(), orphan, metav1.DeleteOptions{})
	})
	f.createConfig(t, selectorCfg())
	f.node(t, "adopt", nil)
	f.wantVG(t, node, "global")
	time.Sleep(time.Second)
	if _, err := f.ol.CsiV1alpha1().NodeLocalStorages().Get(t.Context(), orphan, metav1.GetOptions{}); err != nil {
		t.Errorf("an NLS the controller does not manage was touched: %v", err)
	}
}

func TestUpdateSpecsOffOnlyCreates(t *testing.T) {
	f := start(t, Options{UpdateSpecs: false})
	f.createConfig(t, selectorCfg())
	n := f.node(t, "frozen", nil)
	f.wantVG(t, n, "global")
	f.setLabels(t, n, map[string]string{"tier": "a"})
	time.Sleep(time.Second)
	if nls, _ := f.ol.CsiV1alpha1().NodeLocalStorages().Get(t.Context(), n, metav1.GetOptions{}); nls.Spec.ListConfig.VGs.Include[0] != "global" {
		t.Errorf("UpdateSpecs off, yet the spec changed to %v", nls.Spec.ListConfig.VGs.Include)
	}
}

// TestInvalidSelectorStopsChanges: a broken selector is reported once as a
// Warning on the config, and no NLS is created or changed until it is fixed.
func TestInvalidSelectorStopsChanges(t *testing.T) {
	f := start(t, Options{UpdateSpecs: true})
	f.createConfig(t, selectorCfg())
	a := f.node(t, "sel-a", map[string]string{"tier": "a"})
	f.wantVG(t, a, "tier-a")

	f.updateConfig(t, func(s *v1alpha1.NodeLocalStorageInitConfigSpec) {
		s.NodesConfig[1].Selector.MatchExpressions[0].Operator = "Bogus"
		s.NodesConfig[0].ListConfig = listCfg("tier-a-2")
	})
	eventually(t, 10*time.Second, func() string {
		ev := f.events(t, ReasonInvalidSelector)
		if len(ev) != 1 || ev[0].Type != corev1.EventTypeWarning || !strings.Contains(ev[0].Message, "nodesConfig[1]") {
			return fmt.Sprintf("InvalidSelector events: %+v", ev)
		}
		return ""
	})
	late := f.node(t, "sel-late", nil)
	time.Sleep(time.Second)
	if _, err := f.ol.CsiV1alpha1().NodeLocalStorages().Get(t.Context(), late, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("NLS created under an invalid config: %v", err)
	}
	f.wantVG(t, a, "tier-a") // unchanged
	if ev := f.events(t, ReasonInvalidSelector); len(ev) != 1 || ev[0].Count > 1 {
		t.Errorf("the warning repeats: %+v", ev)
	}

	f.updateConfig(t, func(s *v1alpha1.NodeLocalStorageInitConfigSpec) {
		s.NodesConfig[1].Selector.MatchExpressions[0].Operator = metav1.LabelSelectorOpExists
	})
	f.wantVG(t, late, "global")
	f.wantVG(t, a, "tier-a-2")
}
