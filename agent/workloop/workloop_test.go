/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package workloop

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/util/workqueue"
)

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name    string
		workers int
		// results per call of a key: an error, a delay, or done.
		results []result
		want    int // syncs of the key before it settles
	}{
		{name: "done at once", workers: 1, results: []result{{}}, want: 1},
		{name: "retried after errors", workers: 2, results: []result{{err: errors.New("a")}, {err: errors.New("b")}, {}}, want: 3},
		{name: "looked at again after a delay", workers: 1, results: []result{{after: 10 * time.Millisecond}, {}}, want: 2},
		{name: "zero workers means one", workers: 0, results: []result{{}}, want: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			queue := workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Millisecond, 10*time.Millisecond))
			ctx, cancel := context.WithCancel(t.Context())
			var mu sync.Mutex
			calls := 0
			settled := make(chan struct{})
			sync := func(_ context.Context, key string) (time.Duration, error) {
				mu.Lock()
				defer mu.Unlock()
				if key != "k" {
					t.Errorf("key %q", key)
				}
				r := tc.results[min(calls, len(tc.results)-1)]
				calls++
				if calls == tc.want {
					close(settled)
				}
				return r.after, r.err
			}
			stopped := make(chan struct{})
			go func() { Run(ctx, queue, tc.workers, "test", "key", sync); close(stopped) }()
			queue.Add("k")
			select {
			case <-settled:
			case <-time.After(30 * time.Second):
				t.Fatal("the key did not settle")
			}
			cancel()
			<-stopped
			if !queue.ShuttingDown() {
				t.Error("Run returned with the queue still up")
			}
			mu.Lock()
			defer mu.Unlock()
			if calls != tc.want {
				t.Errorf("%d syncs, want %d", calls, tc.want)
			}
			if queue.NumRequeues("k") != 0 {
				t.Errorf("%d requeues left: the settled key was not forgotten", queue.NumRequeues("k"))
			}
		})
	}
}

type result struct {
	after time.Duration
	err   error
}
