package cluster_test

import (
	"context"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-local/open-local/test/cluster"
)

// TestUpdateOnConflict: another writer changes an object between a test's
// Get and its Update (as kwok's node heartbeats or the agent's status
// writes do, on a loaded machine: "the object has been modified"). A plain
// Get+Update fails; cluster.Update gets the object afresh and keeps both
// writers' changes. (A ConfigMap: no one else in the cluster writes it, so
// the conflicts are exactly the ones the test makes.)
func TestUpdateOnConflict(t *testing.T) {
	c := cluster.ForTest(t)
	ctx := t.Context()
	cms := c.Client().CoreV1().ConfigMaps("default")
	name := "update-on-conflict"
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"created": "yes"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cms.Delete(context.Background(), name, metav1.DeleteOptions{}) })
	beats := 0
	otherWriter := func() {
		t.Helper()
		beats++
		cm, err := cms.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data["beat"] = strconv.Itoa(beats)
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	stale, err := cms.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	otherWriter()
	stale.Data["plain"] = "yes"
	if _, err := cms.Update(ctx, stale, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("plain Update of a stale object: %v, want a conflict (the failure cluster.Update prevents)", err)
	}

	attempts := 0
	got, err := cluster.Update(ctx, cms.Get, cms.Update, name, func(cm *corev1.ConfigMap) {
		attempts++
		cm.Data["tier"] = "a"
		if attempts == 1 {
			otherWriter() // between this attempt's Get and its Update
		}
	})
	if err != nil {
		t.Fatalf("cluster.Update: %v", err)
	}
	if attempts != 2 {
		t.Errorf("%d attempts, want 2 (one conflict)", attempts)
	}
	if got.Data["tier"] != "a" || got.Data["beat"] != "2" || got.Data["plain"] != "" {
		t.Errorf("data %v: want tier=a and the other writer's beat=2, without the failed plain write", got.Data)
	}
}
