package cluster

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
)

// Update changes the object name the way a test (playing an operator or an
// agent) means it: it gets the object afresh, applies mutate and writes it
// with update, and does all of it again on a conflict, since another writer
// may bump the object's resourceVersion in between (kwok's node
// heartbeats, the agent's NodeLocalStorage status, the apiserver's own CRD
// conditions). get and update are a typed client's methods, e.g.
//
//	cluster.Update(ctx, nodes.Get, nodes.Update, "n1", func(n *corev1.Node) { n.Labels["a"] = "b" })
//	cluster.Update(ctx, lvs.Get, lvs.UpdateStatus, "lv1", func(lv *v1alpha1.LocalVolume) { lv.Status.Phase = ... })
//
// mutate runs once per attempt, on the fresh object.
func Update[T any](ctx context.Context, get func(context.Context, string, metav1.GetOptions) (T, error),
	update func(context.Context, T, metav1.UpdateOptions) (T, error), name string, mutate func(T)) (T, error) {
	var out T
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		mutate(cur)
		out, err = update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	return out, err
}
