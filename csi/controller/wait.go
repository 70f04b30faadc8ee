/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package controller

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

	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// condition looks at the LocalVolume (nil once it is gone) and says whether
// the wait is over; an error ends the wait with that error.
type condition func(lv *v1alpha1.LocalVolume) (bool, error)

// waitFor watches LocalVolume name until cond is satisfied. When ctx ends
// first, the error is DeadlineExceeded (or Canceled) and names the last
// status seen, so the sidecar's log says what the node is doing.
func (s *Server) waitFor(ctx context.Context, name string, cond condition) (*v1alpha1.LocalVolume, error) {
	lw := cache.NewListWatchFromClient(s.client.CsiV1alpha1().RESTClient(), "localvolumes", "",
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
		return last, status.Errorf(code, "timed out waiting for LocalVolume %s%s", name, describe(last))
	}
	return last, status.Errorf(codes.Internal, "waiting for LocalVolume %s: %v", name, err)
}

// describe summarises the node's progress on a LocalVolume for error messages.
func describe(lv *v1alpha1.LocalVolume) string {
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
