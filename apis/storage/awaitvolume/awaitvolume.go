/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package awaitvolume waits, by a watch on one object, for the node agent
// to act on a LocalVolume, and holds the one rule of when a LocalVolume is
// made (Ready) or cannot be (Failed, deleted): the CSI controller
// (CreateVolume, ControllerExpandVolume, CreateSnapshot, DeleteVolume) and
// the CSI node (inline volumes) call it. A watch, not polling: one LIST and
// one WATCH per wait instead of a GET every interval.
package awaitvolume

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/open-local/open-local/apis/client/clientset/versioned"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// Condition looks at the LocalVolume (nil once it is gone) and says whether
// the wait is over; an error ends the wait with that error.
type Condition func(lv *v1alpha1.LocalVolume) (bool, error)

// Until watches LocalVolume name until cond is satisfied, and returns the
// last version seen. When ctx ends first the error is
// DeadlineExceeded (or Canceled) and says where the node is with the
// volume (Describe), so a sidecar's log or a kubelet Event says what the
// node is doing; an error of cond is returned as it is. The LocalVolume
// returned is the last cond saw (nil: gone).
func Until(ctx context.Context, client versioned.Interface, name string, cond Condition) (*v1alpha1.LocalVolume, error) {
	lw := cache.NewListWatchFromClient(client.CsiV1alpha1().RESTClient(), "localvolumes", "",
		fields.OneTermEqualSelector("metadata.name", name))
	var last *v1alpha1.LocalVolume
	check := func(lv *v1alpha1.LocalVolume) (bool, error) {
		last = lv
		return cond(lv)
	}
	_, err := watchtools.UntilWithSync(ctx, lw, &v1alpha1.LocalVolume{}, func(store cache.Store) (bool, error) {
		obj, exists, err := store.GetByKey(name)
		if err != nil {
			return false, err
		}
		if !exists {
			return check(nil)
		}
		return check(obj.(*v1alpha1.LocalVolume))
	}, func(ev watch.Event) (bool, error) {
		switch ev.Type {
		case watch.Deleted:
			return check(nil)
		case watch.Added, watch.Modified:
			lv, ok := ev.Object.(*v1alpha1.LocalVolume)
			if !ok {
				return false, nil
			}
			return check(lv)
		}
		return false, nil
	})
	if err == nil {
		return last, nil
	}
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
		return last, err
	}
	if ctx.Err() != nil || errors.Is(err, watchtools.ErrWatchClosed) {
		code := codes.DeadlineExceeded
		if errors.Is(ctx.Err(), context.Canceled) {
			code = codes.Canceled
		}
		return last, status.Errorf(code, "timed out waiting for LocalVolume %s%s", name, Describe(last))
	}
	return last, status.Errorf(codes.Internal, "waiting for LocalVolume %s: %v", name, err)
}

// Ready waits until the agent has made LocalVolume name as its spec says
// (see Made).
func Ready(ctx context.Context, client versioned.Interface, name string) (*v1alpha1.LocalVolume, error) {
	return Until(ctx, client, name, Made(name))
}

// Made is the one rule of a LocalVolume made: Ready for its current spec
// (status.observedGeneration ≥ generation, phase Ready, currentSize ≥
// spec.size); Failed for its current spec ends the wait with the gRPC code
// the agent wrote (Failure); a record deleted or being deleted ends it with
// Aborted (the caller's retry finds out what happened). A status of an
// older generation is no answer yet: it may be of the size before an
// expansion, or a failure the new spec cured.
func Made(name string) Condition {
	return func(lv *v1alpha1.LocalVolume) (bool, error) {
		switch {
		case lv == nil:
			return false, status.Errorf(codes.Aborted, "LocalVolume %s was deleted while waiting for its node to make it", name)
		case lv.DeletionTimestamp != nil:
			return false, status.Errorf(codes.Aborted, "LocalVolume %s is being deleted", name)
		case lv.Status.ObservedGeneration < lv.Generation:
			return false, nil
		case lv.Status.Phase == v1alpha1.PhaseReady:
			return lv.Status.CurrentSize != nil && lv.Status.CurrentSize.Cmp(lv.Spec.Size) >= 0, nil
		case lv.Status.Phase == v1alpha1.PhaseFailed:
			return false, Failure(lv)
		}
		return false, nil
	}
}

// Failure is the gRPC error of a Failed LocalVolume: the code its agent
// wrote (FailureCode) and its message, naming the node.
func Failure(lv *v1alpha1.LocalVolume) error {
	return status.Errorf(lv.Status.FailureCode(), "node %s: %s", lv.Spec.NodeName, lv.Status.Message)
}

// Describe summarises the node's progress on a LocalVolume for error
// messages ("" for nil).
func Describe(lv *v1alpha1.LocalVolume) string {
	switch {
	case lv == nil:
		return ""
	case lv.Status.Phase == "":
		return fmt.Sprintf(" (node %s has not reported yet: is its agent running?)", lv.Spec.NodeName)
	case lv.Status.Message != "":
		return fmt.Sprintf(" (node %s: %s %s: %s)", lv.Spec.NodeName, lv.Status.Phase, lv.Status.Code, lv.Status.Message)
	default:
		return fmt.Sprintf(" (node %s: %s)", lv.Spec.NodeName, lv.Status.Phase)
	}
}
