/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package lvm

import (
	"context"
	"errors"
	"regexp"

	"google.golang.org/grpc/codes"
)

// Kinds of failure callers act on. Test with errors.Is; Code maps them to
// gRPC codes.
var (
	// ErrNotFound: the VG, LV or PV does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInsufficientSpace: the VG (or the PVs a layout needs) cannot hold
	// the request. CSI returns it as ResourceExhausted, which makes
	// csi-provisioner reschedule the pod.
	ErrInsufficientSpace = errors.New("insufficient space")
	// ErrAlreadyExists: a VG or LV of that name exists already.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalidArgument: a name, tag, size or device path lvm would refuse
	// (or that would be unsafe to pass to it).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrDeviceInUse: a device to be turned into a PV belongs to another VG,
	// carries a filesystem or partition table, or is held by another device.
	ErrDeviceInUse = errors.New("device in use")
	// ErrInUse: the LV cannot be removed: it has snapshots or thin volumes,
	// or is tagged protected.
	ErrInUse = errors.New("logical volume in use")
	// ErrNotSupported: the kernel lacks the device-mapper target the
	// operation needs (snapshots and thin pools in metadata mode).
	ErrNotSupported = errors.New("not supported by this node's kernel (device-mapper)")
)

// Message patterns of lvm2 (2.03) that tell the kind of a failure.
var kinds = []struct {
	re   *regexp.Regexp
	kind error
}{
	{regexp.MustCompile(`(?i)insufficient (free space|suitable|allocatable)|not enough free space|must not exceed number of physical volumes`), ErrInsufficientSpace},
	{regexp.MustCompile(`already exists in volume group|A volume group called \S+ already exists`), ErrAlreadyExists},
	{regexp.MustCompile(`Volume group "[^"]*" not found|Failed to find (logical|physical) volume|not found in volume group|No PV found on device`), ErrNotFound},
	{regexp.MustCompile(`without using device-mapper kernel driver|Required device-mapper target\(s\) not detected`), ErrNotSupported},
}

func classify(stderr string) error {
	for _, k := range kinds {
		if k.re.MatchString(stderr) {
			return k.kind
		}
	}
	return nil
}

// Code is the gRPC code for err, so the CSI driver and the LocalVolume
// status say the same thing for the same failure.
func Code(err error) codes.Code {
	switch {
	case err == nil:
		return codes.OK
	case errors.Is(err, ErrInsufficientSpace):
		return codes.ResourceExhausted
	case errors.Is(err, ErrNotFound):
		return codes.NotFound
	case errors.Is(err, ErrAlreadyExists):
		return codes.AlreadyExists
	case errors.Is(err, ErrInvalidArgument):
		return codes.InvalidArgument
	case errors.Is(err, ErrDeviceInUse), errors.Is(err, ErrInUse), errors.Is(err, ErrNotSupported):
		return codes.FailedPrecondition
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	default:
		return codes.Internal
	}
}
