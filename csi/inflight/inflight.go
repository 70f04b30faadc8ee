/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package inflight refuses a second concurrent operation on the same volume.
// kubelet and the sidecars retry every CSI call, so a call that overlaps a
// running one on the same volume is answered with Aborted (the CSI spec's
// "operation pending for volume") instead of racing it.
package inflight

import (
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Guard holds the keys with an operation in progress.
type Guard struct {
	mu   sync.Mutex
	keys map[string]struct{}
}

// New returns an empty guard.
func New() *Guard { return &Guard{keys: map[string]struct{}{}} }

// Acquire marks key busy and returns its release function, or an Aborted
// status error if an operation on key is already running.
func (g *Guard) Acquire(key string) (release func(), err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, busy := g.keys[key]; busy {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %q is already in progress", key)
	}
	g.keys[key] = struct{}{}
	return func() {
		g.mu.Lock()
		delete(g.keys, key)
		g.mu.Unlock()
	}, nil
}
