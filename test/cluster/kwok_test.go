package cluster_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/open-local/open-local/test/cluster"
)

// With KwokNodeSelector, kwok keeps only the matching Nodes Ready; any other
// Node (in the demo: the one a real kubelet runs) is left alone.
func TestKwokManagesOnlySelectedNodes(t *testing.T) {
	ctx := t.Context()
	tools := cluster.ToolsForTest(t)
	c, err := cluster.Start(ctx, cluster.Options{Dir: t.TempDir(), ToolsDir: tools, NoControllerManager: true,
		KwokNodeSelector: "type=kwok"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	kube := c.Client()
	for _, n := range []*corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "simulated", Labels: map[string]string{"type": "kwok"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "real"}},
	} {
		if _, err := kube.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ready := func(name string) bool {
		n, err := kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue
			}
		}
		return false
	}
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return ready("simulated"), nil
	}); err != nil {
		t.Fatalf("kwok did not make the selected node Ready: %v", err)
	}
	// kwok handles both nodes in the same informer pass; give it a moment more.
	time.Sleep(2 * time.Second)
	if ready("real") {
		t.Fatal("kwok made a node Ready that its selector does not match")
	}
}

func TestKwokNodeSelectorValidated(t *testing.T) {
	_, err := cluster.Start(t.Context(), cluster.Options{Dir: t.TempDir(), ToolsDir: "/nonexistent", KwokNodeSelector: "a in (b"})
	if err == nil || !strings.Contains(err.Error(), "KwokNodeSelector") {
		t.Fatalf("an invalid selector must be refused before anything starts, got %v", err)
	}
}
