/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package mountinfo reads /proc/self/mountinfo for the test harness
// (capability probes, the demo's teardown, procruntime's cgroups), with
// mount points unescaped; k8s.io/mount-utils' ParseMountInfo leaves the
// kernel's octal escapes (\040) in place.
package mountinfo

import (
	"os"
	"strconv"
	"strings"
)

// Mount is one line of mountinfo, reduced to what the harness needs.
type Mount struct {
	Point, FSType string
	SuperOptions  []string
}

// Parse parses mountinfo content (see proc(5)): the mount point is field 5,
// and fstype, source and super options follow the " - " separator.
func Parse(content string) []Mount {
	var ms []Mount
	for _, l := range strings.Split(content, "\n") {
		pre, post, ok := strings.Cut(l, " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 {
			continue
		}
		ms = append(ms, Mount{Point: unescape(pf[4]), FSType: qf[0], SuperOptions: strings.Split(qf[2], ",")})
	}
	return ms
}

// Read parses /proc/self/mountinfo.
func Read() ([]Mount, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return Parse(string(b)), nil
}

// CgroupRoots are the mount points of the cgroup hierarchies: the v1 ones
// and the unified one, or the only, unified, one of a cgroup v2 host.
func CgroupRoots() ([]string, error) {
	ms, err := Read()
	if err != nil {
		return nil, err
	}
	var roots []string
	for _, m := range ms {
		if m.FSType == "cgroup" || m.FSType == "cgroup2" {
			roots = append(roots, m.Point)
		}
	}
	return roots, nil
}

// unescape undoes the kernel's octal escaping of space, tab, newline and
// backslash in mountinfo paths.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
