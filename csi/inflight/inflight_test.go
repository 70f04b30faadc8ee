/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package inflight

import (
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestGuard(t *testing.T) {
	g := New()
	release, err := g.Acquire("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Acquire("a"); status.Code(err) != codes.Aborted {
		t.Fatalf("second Acquire of a busy key: %v, want Aborted", err)
	}
	other, err := g.Acquire("b")
	if err != nil {
		t.Fatalf("another key must not be blocked: %v", err)
	}
	other()
	release()
	again, err := g.Acquire("a")
	if err != nil {
		t.Fatalf("Acquire after release: %v", err)
	}
	again()
}

func TestGuardConcurrent(t *testing.T) {
	g := New()
	var wg sync.WaitGroup
	var mu sync.Mutex
	won, aborted := 0, 0
	start := make(chan struct{})
	releases := make(chan func(), 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r, err := g.Acquire("vol")
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				won++
				releases <- r
			} else {
				aborted++
			}
		}()
	}
	close(start)
	wg.Wait()
	close(releases)
	for r := range releases {
		r()
	}
	if won != 1 || aborted != 49 {
		t.Fatalf("won %d, aborted %d; want exactly one winner", won, aborted)
	}
}

func BenchmarkAcquireRelease(b *testing.B) {
	g := New()
	for b.Loop() {
		r, _ := g.Acquire("vol")
		r()
	}
}
