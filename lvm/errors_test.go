/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package lvm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
)

// Stderr as lvm2 2.03.16 prints it (captured on this host, metadata mode).
func TestClassify(t *testing.T) {
	const activation = "  WARNING: Activation disabled. No device-mapper interaction will be attempted.\n"
	tests := []struct {
		stderr string
		want   error
		code   codes.Code
	}{
		{activation + `  Volume group "vgt" has insufficient free space (485 extents): 1280 required.`, ErrInsufficientSpace, codes.ResourceExhausted},
		{activation + `  Insufficient free space: 1255 extents needed, but only 230 available`, ErrInsufficientSpace, codes.ResourceExhausted},
		{`  Insufficient suitable contiguous allocatable extents for logical volume x: 25 more required`, ErrInsufficientSpace, codes.ResourceExhausted},
		{`  Insufficient suitable allocatable extents for logical volume s: 26 more required`, ErrInsufficientSpace, codes.ResourceExhausted},
		{`  Number of stripes (2) must not exceed number of physical volumes (1)`, ErrInsufficientSpace, codes.ResourceExhausted},
		{activation + `  Logical Volume "a" already exists in volume group "vgt"`, ErrAlreadyExists, codes.AlreadyExists},
		{`  A volume group called vgt already exists.`, ErrAlreadyExists, codes.AlreadyExists},
		{activation + `  Failed to find logical volume "vgt/zz"`, ErrNotFound, codes.NotFound},
		{activation + "  Volume group \"novg\" not found\n  Cannot process volume group novg", ErrNotFound, codes.NotFound},
		{activation + `  Can't create snapshot without using device-mapper kernel driver.`, ErrNotSupported, codes.FailedPrecondition},
		{activation + `  Can't create thin-pool without using device-mapper kernel driver.`, ErrNotSupported, codes.FailedPrecondition},
		{`  striped: Required device-mapper target(s) not detected in your kernel.`, ErrNotSupported, codes.FailedPrecondition},
		{`  New size (25 extents) matches existing size (25 extents).`, nil, codes.Internal},
		{`  Invalid argument for --addtag: bad tag`, nil, codes.Internal},
	}
	for _, tt := range tests {
		err := newCommandError([]string{"lvm", "x"}, 5, tt.stderr, errors.New("exit status 5"))
		for _, kind := range []error{ErrNotFound, ErrInsufficientSpace, ErrAlreadyExists, ErrNotSupported} {
			if got := errors.Is(err, kind); got != (kind == tt.want) {
				t.Errorf("errors.Is(%q, %v) = %v", tt.stderr, kind, got)
			}
		}
		if got := Code(fmt.Errorf("wrapped: %w", err)); got != tt.code {
			t.Errorf("Code(%q) = %v, want %v", tt.stderr, got, tt.code)
		}
		if strings.Contains(err.Error(), "Activation disabled") {
			t.Errorf("error message keeps lvm's noise: %q", err.Error())
		}
	}
}

func TestCode(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{fmt.Errorf("x: %w", ErrInvalidArgument), codes.InvalidArgument},
		{fmt.Errorf("x: %w", ErrDeviceInUse), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", ErrInUse), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{context.Canceled, codes.Canceled},
		{errors.New("boom"), codes.Internal},
	}
	for _, tt := range tests {
		if got := Code(tt.err); got != tt.want {
			t.Errorf("Code(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestCommandErrorMessage(t *testing.T) {
	err := newCommandError([]string{"lvm", "lvcreate", "--name", "a", "vg0"}, 5,
		"  WARNING: Activation disabled. No device-mapper interaction will be attempted.\n  Logical Volume \"a\" already exists in volume group \"vg0\"\n", errors.New("exit status 5"))
	want := `lvm lvcreate --name a vg0: exit code 5: Logical Volume "a" already exists in volume group "vg0"`
	if err.Error() != want {
		t.Errorf("Error() = %q\nwant      %q", err.Error(), want)
	}
}
