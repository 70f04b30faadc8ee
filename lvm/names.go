/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package lvm

import (
	"fmt"
	"strings"
)

// maxNameLen is lvm's NAME_LEN (128) minus the terminating NUL.
const maxNameLen = 127

// reservedLVPrefixes and reservedLVSubstrings are the names lvm keeps for
// its internal LVs (lvm(8) "VALID NAMES", lib/misc/lvm-string.c). The list is
// lvm2 2.03's; refusing a few more than an older lvm would is harmless.
var (
	reservedLVPrefixes   = []string{"snapshot", "pvmove"}
	reservedLVSubstrings = []string{
		"_cdata", "_cmeta", "_corig", "_cpool", "_cvol", "_imeta", "_iorig", "_mimage", "_mlog",
		"_pmspare", "_rimage", "_rmeta", "_tdata", "_tmeta", "_vdata", "_vorigin", "_wcorig",
	}
)

// validateName applies the rules VG and LV names share: characters
// [a-zA-Z0-9+_.-], not starting with '-', not "." or "..", at most 127 bytes.
func validateName(kind, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty %s name", ErrInvalidArgument, kind)
	case len(name) > maxNameLen:
		return fmt.Errorf("%w: %s name %q is %d characters long, lvm allows %d", ErrInvalidArgument, kind, name, len(name), maxNameLen)
	case name[0] == '-':
		return fmt.Errorf("%w: %s name %q starts with '-'", ErrInvalidArgument, kind, name)
	case name == "." || name == "..":
		return fmt.Errorf("%w: %s name %q is reserved", ErrInvalidArgument, kind, name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("+_.-", c)) {
			return fmt.Errorf("%w: %s name %q contains %q; lvm allows only a-z A-Z 0-9 + _ . -", ErrInvalidArgument, kind, name, c)
		}
	}
	return nil
}

// ValidateVGName checks name against lvm's rules for VG names. lvm also
// refuses a new VG named like an entry of /dev (e.g. "mapper", "sda"):
// CreateVG checks that on the machine.
func ValidateVGName(name string) error { return validateName("VG", name) }

// ValidateLVName checks name against lvm's rules for LV names, including the
// reserved prefixes ("snapshot", "pvmove") and infixes ("_tmeta", "_rimage",
// ...) of lvm's internal LVs.
func ValidateLVName(name string) error {
	if err := validateName("LV", name); err != nil {
		return err
	}
	for _, p := range reservedLVPrefixes {
		if strings.HasPrefix(name, p) {
			return fmt.Errorf("%w: LV name %q: names starting %q are reserved by lvm", ErrInvalidArgument, name, p)
		}
	}
	for _, s := range reservedLVSubstrings {
		if strings.Contains(name, s) {
			return fmt.Errorf("%w: LV name %q: names containing %q are reserved by lvm", ErrInvalidArgument, name, s)
		}
	}
	return nil
}

// maxTagLen is lvm's limit on a tag's length.
const maxTagLen = 1024

// ValidateTag checks a tag against lvm's rules: [a-zA-Z0-9_+.-/=!:&#],
// not starting with '-', at most 1024 bytes.
func ValidateTag(tag string) error {
	switch {
	case tag == "":
		return fmt.Errorf("%w: empty tag", ErrInvalidArgument)
	case len(tag) > maxTagLen:
		return fmt.Errorf("%w: tag %q is longer than %d characters", ErrInvalidArgument, tag, maxTagLen)
	case tag[0] == '-':
		return fmt.Errorf("%w: tag %q starts with '-'", ErrInvalidArgument, tag)
	}
	for _, c := range tag {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("_+.-/=!:&#", c)) {
			return fmt.Errorf("%w: tag %q contains %q; lvm allows only a-z A-Z 0-9 _ + . - / = ! : & #", ErrInvalidArgument, tag, c)
		}
	}
	return nil
}

func validateTags(tags []string) error {
	for _, t := range tags {
		if err := ValidateTag(t); err != nil {
			return err
		}
	}
	return nil
}
