/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestQuarantinedDevices(t *testing.T) {
	tests := []struct {
		name string
		sets []int
		want float64
	}{
		{name: "none", sets: []int{0}, want: 0},
		{name: "two released", sets: []int{2}, want: 2},
		{name: "one wiped since", sets: []int{2, 1}, want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			q := NewQuarantinedDevices(reg)
			for _, n := range tt.sets {
				q.Set("n1", n)
			}
			if n, err := testutil.GatherAndCount(reg, "open_local_quarantined_devices"); err != nil || n != 1 {
				t.Fatalf("series %d, %v; want 1", n, err)
			}
			if v := testutil.ToFloat64(q.g.WithLabelValues("n1")); v != tt.want {
				t.Errorf("value %v, want %v", v, tt.want)
			}
			if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
				t.Errorf("lint: %v %v", problems, err)
			}
		})
	}
	var none *QuarantinedDevices
	none.Set("n1", 3) // metrics off: a no-op, not a panic
}
