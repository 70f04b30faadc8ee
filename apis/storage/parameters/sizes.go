/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package parameters

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// MaxVolumeSize (1 EiB) bounds every size open-local parses: PVC requests,
// CSI capacity ranges, inline sizes, snapshot sizes, thin pools. It is far
// past any VG yet leaves sums of thousands of volumes inside int64, where
// resource.Quantity.Value() would wrap at 2^63 (2^64 − 200Gi becomes −200Gi,
// negative space in the ledger). LocalVolume.spec.size has the same bound
// in its CRD.
const MaxVolumeSize = v1alpha1.MaxSize

// MaxBPS (1 PiB/s) and MaxIOPS (10^9) bound the IO limits: beyond any
// device, and cgroup io.max takes them as they are.
const (
	MaxBPS  int64 = 1 << 50
	MaxIOPS int64 = 1_000_000_000
)

var oneByte = resource.MustParse("1")

// ParseSize is the one rule for a size in bytes: positive, at least one
// byte, at most MaxVolumeSize. A fraction of a byte above one rounds up
// (as Kubernetes does: 1.1Gi is 1181116007 bytes); below one byte it is an
// error, because "1m" is milli-bytes, a typo for 1Mi, not a volume.
func ParseSize(q resource.Quantity) (int64, error) {
	return boundedBytes(q, MaxVolumeSize)
}

// ParseSizeString parses s as a Kubernetes quantity and applies ParseSize.
func ParseSizeString(s string) (int64, error) {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("want a quantity such as 10Gi")
	}
	return ParseSize(q)
}

// CheckSize applies ParseSize's bounds to a count of bytes (a CSI
// capacity range).
func CheckSize(n int64) error {
	switch {
	case n <= 0:
		return fmt.Errorf("%d bytes is not positive", n)
	case n > MaxVolumeSize:
		return fmt.Errorf("%d bytes is more than 1Ei, the largest size open-local accepts", n)
	}
	return nil
}

func boundedBytes(q resource.Quantity, limit int64) (int64, error) {
	switch {
	case q.Sign() <= 0:
		return 0, fmt.Errorf("%s is not positive", q.String())
	case q.Cmp(oneByte) < 0:
		return 0, fmt.Errorf("%s is less than one byte (m is milli: did you mean Mi?)", q.String())
	case q.Cmp(*resource.NewQuantity(limit, resource.BinarySI)) > 0:
		return 0, fmt.Errorf("%s is more than %s, the largest open-local accepts", q.String(), resource.NewQuantity(limit, resource.BinarySI).String())
	}
	// Value rounds up; within the bound it cannot wrap.
	return q.Value(), nil
}
