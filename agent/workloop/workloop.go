/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package workloop is the worker loop every agent and controller loop
// shares: take a key off the work queue, sync it, retry it rate-limited on
// error or look again after a delay, until the context ends. One copy, so
// a fix to retries or shutdown reaches all seven loops.
package workloop

import (
	"context"
	"time"

	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/workqueue"
)

// Sync handles one key. An error retries it rate-limited; a positive
// duration (with no error) looks at it again after that long.
type Sync func(ctx context.Context, key string) (time.Duration, error)

// Run runs workers over queue until ctx ends, then shuts the queue down
// and returns once no worker is in a sync. what and keyName label the
// error log of a failed sync ("reconcile LocalVolume", "name"); errors of
// a sync cut short by the shutdown are not logged.
func Run(ctx context.Context, queue workqueue.TypedRateLimitingInterface[string], workers int, what, keyName string, sync Sync) {
	if workers < 1 {
		workers = 1
	}
	done := make(chan struct{}, workers)
	for range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			wait.UntilWithContext(ctx, func(ctx context.Context) {
				for next(ctx, queue, what, keyName, sync) {
				}
			}, time.Second)
		}()
	}
	<-ctx.Done()
	queue.ShutDown()
	for range workers {
		<-done
	}
}

func next(ctx context.Context, queue workqueue.TypedRateLimitingInterface[string], what, keyName string, sync Sync) bool {
	key, quit := queue.Get()
	if quit {
		return false
	}
	defer queue.Done(key)
	after, err := sync(ctx, key)
	switch {
	case err != nil:
		if ctx.Err() == nil {
			utilruntime.HandleErrorWithContext(ctx, err, what, keyName, key)
		}
		queue.AddRateLimited(key)
	case after > 0:
		queue.Forget(key)
		queue.AddAfter(key, after)
	default:
		queue.Forget(key)
	}
	return true
}
