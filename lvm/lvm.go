/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package lvm is open-local's LVM layer, shared by the node agent and the CSI
// node plugin. It builds lvm2 command lines in Go, runs them through one exec
// seam (Runner), parses lvm's JSON reports into typed VG/LV/PV values with
// sizes in bytes, and turns failures into typed errors (ErrNotFound,
// ErrInsufficientSpace, ...; Code maps them to gRPC codes).
//
// Safety rules, enforced here rather than left to callers:
//   - names and tags are validated against lvm's rules before any command;
//   - pvcreate/vgcreate never get --force or --yes, and a device is refused
//     if it belongs to another VG, carries a filesystem or partition-table
//     signature (blkid -p) or is held by another device;
//   - RemoveLV removes exactly vg/lv, and refuses LVs that have snapshots or
//     thin volumes, or are tagged protected.
//
// An Activator turns an LV into a block device path: /dev/<vg>/<lv> where the
// kernel has device-mapper, a loop device over the LV's extents where it does
// not (see LoopActivator).
package lvm

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// OwnedTag marks LVs created by open-local. Discovery does not count LVs
// carrying it against a VG's allocatable space (they are already accounted
// for by LocalVolume objects); the LocalVolume reconciler sets it on every LV
// it creates.
const OwnedTag = "csi.aliyun.com/open-local"

// ProtectedTag marks LVs RemoveLV refuses to remove (open-local's "protected").
const ProtectedTag = "protected"

// Alloc is lvm's allocation policy (--alloc).
type Alloc string

// Allocation policies; empty means lvm's default (normal).
const (
	AllocDefault    Alloc = ""
	AllocContiguous Alloc = "contiguous"
	AllocCling      Alloc = "cling"
	AllocNormal     Alloc = "normal"
	AllocAnywhere   Alloc = "anywhere"
)

// Client runs LVM operations through a Runner. It holds no state between
// calls and is safe for concurrent use.
type Client struct {
	run   Runner
	alloc Alloc
}

// Option configures a Client.
type Option func(*Client)

// WithAlloc sets the allocation policy CreateLV and ExtendLV use when the
// caller does not choose one. Nodes served by a LoopActivator need
// AllocContiguous: only single-segment LVs can be exposed as loop devices.
func WithAlloc(a Alloc) Option { return func(c *Client) { c.alloc = a } }

// New returns a Client that runs commands with r.
func New(r Runner, opts ...Option) *Client {
	c := &Client{run: r}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Runner returns the exec seam the client uses (for blkid, losetup, ... in
// the same environment).
func (c *Client) Runner() Runner { return c.run }

// DefaultAlloc is the allocation policy used when an operation names none.
func (c *Client) DefaultAlloc() Alloc { return c.alloc }

func (c *Client) lvm(ctx context.Context, args ...string) ([]byte, error) {
	return c.run.Run(ctx, append([]string{"lvm"}, args...)...)
}

func (c *Client) report(ctx context.Context, command string, fields []string, args ...string) ([]byte, error) {
	argv := append([]string{command}, reportArgs...)
	argv = append(argv, "-o", strings.Join(fields, ","))
	return c.lvm(ctx, append(argv, args...)...)
}

// ListVGs returns every VG lvm sees.
func (c *Client) ListVGs(ctx context.Context) ([]VG, error) {
	out, err := c.report(ctx, "vgs", vgFields)
	if err != nil {
		return nil, err
	}
	return parseVGs(out)
}

// GetVG returns the VG name, or an error matching ErrNotFound.
func (c *Client) GetVG(ctx context.Context, name string) (*VG, error) {
	if err := ValidateVGName(name); err != nil {
		return nil, err
	}
	out, err := c.report(ctx, "vgs", vgFields, name)
	if err != nil {
		return nil, err
	}
	vgs, err := parseVGs(out)
	if err != nil {
		return nil, err
	}
	if len(vgs) != 1 {
		return nil, fmt.Errorf("VG %s: %w", name, ErrNotFound)
	}
	return &vgs[0], nil
}

// ListLVs returns the LVs of vg, or of every VG when vg is empty.
func (c *Client) ListLVs(ctx context.Context, vg string) ([]LV, error) {
	var args []string
	if vg != "" {
		if err := ValidateVGName(vg); err != nil {
			return nil, err
		}
		args = append(args, vg)
	}
	out, err := c.report(ctx, "lvs", lvFields, args...)
	if err != nil {
		return nil, err
	}
	return parseLVs(out)
}

// GetLV returns vg/name, or an error matching ErrNotFound.
func (c *Client) GetLV(ctx context.Context, vg, name string) (*LV, error) {
	if err := validateVGLV(vg, name); err != nil {
		return nil, err
	}
	out, err := c.report(ctx, "lvs", lvFields, vg+"/"+name)
	if err != nil {
		return nil, err
	}
	lvs, err := parseLVs(out)
	if err != nil {
		return nil, err
	}
	if len(lvs) != 1 {
		return nil, fmt.Errorf("LV %s/%s: %w", vg, name, ErrNotFound)
	}
	return &lvs[0], nil
}

// ListPVs returns every PV lvm sees, including PVs in no VG.
func (c *Client) ListPVs(ctx context.Context) ([]PV, error) {
	out, err := c.report(ctx, "pvs", pvFields)
	if err != nil {
		return nil, err
	}
	return parsePVs(out)
}

func validateVGLV(vg, lv string) error {
	if err := ValidateVGName(vg); err != nil {
		return err
	}
	return ValidateLVName(lv)
}

// bytesArg is a size argument in bytes, rounded up to whole 512-byte
// sectors (lvm refuses other byte counts; it rounds up to extents anyway).
func bytesArg(n uint64) string { return strconv.FormatUint((n+511)/512*512, 10) + "b" }

func tagArgs(tags []string) []string {
	var a []string
	for _, t := range tags {
		a = append(a, "--addtag", t)
	}
	return a
}

// CreateLVOptions describe a new (thick) LV.
type CreateLVOptions struct {
	VG   string
	Name string
	// Size in bytes; lvm rounds it up to whole extents (and stripes).
	Size uint64
	// Stripes > 1 stripes the LV over that many PVs (lvcreate -i).
	Stripes int
	// Striped asks for open-local's "striping" layout: Stripes is computed
	// with RequiredStripes over the VG's PVs (when Stripes is 0).
	Striped bool
	Tags    []string
	// Alloc overrides the client's default allocation policy.
	Alloc Alloc
}

// CreateLV creates a linear (or striped) LV and returns it. An LV of that
// name already existing is ErrAlreadyExists; not enough space is
// ErrInsufficientSpace.
func (c *Client) CreateLV(ctx context.Context, o CreateLVOptions) (*LV, error) {
	if err := validateVGLV(o.VG, o.Name); err != nil {
		return nil, err
	}
	if err := validateTags(o.Tags); err != nil {
		return nil, err
	}
	if o.Size == 0 {
		return nil, fmt.Errorf("%w: LV %s/%s: size must be positive", ErrInvalidArgument, o.VG, o.Name)
	}
	if o.Stripes < 0 {
		return nil, fmt.Errorf("%w: LV %s/%s: %d stripes", ErrInvalidArgument, o.VG, o.Name, o.Stripes)
	}
	if o.Striped && o.Stripes == 0 {
		n, err := c.stripesFor(ctx, o.VG, o.Size)
		if err != nil {
			return nil, err
		}
		o.Stripes = n
	}
	argv := []string{"lvcreate", "--yes", "--wipesignatures", "y", "--name", o.Name, "--size", bytesArg(o.Size)}
	if o.Stripes > 1 {
		argv = append(argv, "--stripes", strconv.Itoa(o.Stripes))
	}
	argv = append(argv, c.allocArgs(o.Alloc)...)
	argv = append(argv, tagArgs(o.Tags)...)
	argv = append(argv, o.VG)
	if _, err := c.lvm(ctx, argv...); err != nil {
		return nil, err
	}
	return c.GetLV(ctx, o.VG, o.Name)
}

// stripesFor is RequiredStripes over the PVs of vg; none fitting is
// ErrInsufficientSpace.
func (c *Client) stripesFor(ctx context.Context, vg string, size uint64) (int, error) {
	v, err := c.GetVG(ctx, vg)
	if err != nil {
		return 0, err
	}
	all, err := c.ListPVs(ctx)
	if err != nil {
		return 0, err
	}
	var pvs []PV
	for _, pv := range all {
		if pv.VG == vg {
			pvs = append(pvs, pv)
		}
	}
	n := RequiredStripes(pvs, size, v.ExtentSize)
	if n == 0 {
		return 0, fmt.Errorf("striped LV of %d bytes in VG %s: no PV can hold its share: %w", size, vg, ErrInsufficientSpace)
	}
	return n, nil
}

func (c *Client) allocArgs(a Alloc) []string {
	if a == AllocDefault {
		a = c.alloc
	}
	if a == AllocDefault {
		return nil
	}
	return []string{"--alloc", string(a)}
}

// ExtendLV grows vg/name to at least size bytes (with the client's
// allocation policy) and returns it. It never shrinks: an LV already as large
// is returned unchanged without running lvextend, so retries are free.
func (c *Client) ExtendLV(ctx context.Context, vg, name string, size uint64) (*LV, error) {
	lv, err := c.GetLV(ctx, vg, name)
	if err != nil {
		return nil, err
	}
	if lv.Size >= size {
		return lv, nil
	}
	argv := append([]string{"lvextend", "--size", bytesArg(size)}, c.allocArgs(AllocDefault)...)
	if _, err := c.lvm(ctx, append(argv, vg+"/"+name)...); err != nil {
		return nil, err
	}
	return c.GetLV(ctx, vg, name)
}

// RemoveLV removes exactly vg/name. It refuses (ErrInUse) an LV that has
// classic snapshots (their copy-on-write space needs the origin), a thin
// pool that still holds thin volumes, and an LV tagged protected, as
// open-local did; a missing LV is ErrNotFound. A thin LV with thin
// snapshots may go: thin snapshots are independent volumes of the pool.
func (c *Client) RemoveLV(ctx context.Context, vg, name string) error {
	if err := validateVGLV(vg, name); err != nil {
		return err
	}
	lvs, err := c.ListLVs(ctx, vg)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(lvs, func(lv LV) bool { return lv.Name == name })
	if i < 0 {
		return fmt.Errorf("LV %s/%s: %w", vg, name, ErrNotFound)
	}
	if lvs[i].HasTag(ProtectedTag) {
		return fmt.Errorf("LV %s/%s is tagged %q: %w", vg, name, ProtectedTag, ErrInUse)
	}
	var dependents []string
	for _, lv := range lvs {
		if (lv.Origin == name && lv.IsClassicSnapshot()) || lv.Pool == name {
			dependents = append(dependents, lv.Name)
		}
	}
	if len(dependents) > 0 {
		return fmt.Errorf("LV %s/%s has snapshots or thin volumes %v; remove them first: %w", vg, name, dependents, ErrInUse)
	}
	_, err = c.lvm(ctx, "lvremove", "--yes", vg+"/"+name)
	return err
}

// SnapshotOptions describe a classic (copy-on-write) snapshot.
type SnapshotOptions struct {
	VG     string
	Origin string
	Name   string
	// Size is the COW space in bytes.
	Size uint64
	Tags []string
}

// CreateSnapshot creates a classic copy-on-write snapshot of vg/origin
// (lvcreate -s -L size -n name vg/origin). It needs device-mapper.
func (c *Client) CreateSnapshot(ctx context.Context, o SnapshotOptions) (*LV, error) {
	if err := validateVGLV(o.VG, o.Name); err != nil {
		return nil, err
	}
	if err := ValidateLVName(o.Origin); err != nil {
		return nil, err
	}
	if err := validateTags(o.Tags); err != nil {
		return nil, err
	}
	if o.Size == 0 {
		return nil, fmt.Errorf("%w: snapshot %s/%s: COW size must be positive", ErrInvalidArgument, o.VG, o.Name)
	}
	argv := []string{"lvcreate", "--yes", "--snapshot", "--name", o.Name, "--size", bytesArg(o.Size)}
	argv = append(argv, tagArgs(o.Tags)...)
	if _, err := c.lvm(ctx, append(argv, o.VG+"/"+o.Origin)...); err != nil {
		return nil, err
	}
	return c.GetLV(ctx, o.VG, o.Name)
}

// ThinPoolOptions describe a thin pool.
type ThinPoolOptions struct {
	VG   string
	Name string
	// Size of the pool's data in bytes (lvm adds metadata space).
	Size uint64
	Tags []string
}

// CreateThinPool creates a thin pool (lvcreate --type thin-pool). It needs
// device-mapper.
func (c *Client) CreateThinPool(ctx context.Context, o ThinPoolOptions) (*LV, error) {
	if err := validateVGLV(o.VG, o.Name); err != nil {
		return nil, err
	}
	if err := validateTags(o.Tags); err != nil {
		return nil, err
	}
	if o.Size == 0 {
		return nil, fmt.Errorf("%w: thin pool %s/%s: size must be positive", ErrInvalidArgument, o.VG, o.Name)
	}
	argv := []string{"lvcreate", "--yes", "--type", "thin-pool", "--name", o.Name, "--size", bytesArg(o.Size)}
	argv = append(argv, tagArgs(o.Tags)...)
	if _, err := c.lvm(ctx, append(argv, o.VG)...); err != nil {
		return nil, err
	}
	return c.GetLV(ctx, o.VG, o.Name)
}

// ThinLVOptions describe a thin LV in a pool.
type ThinLVOptions struct {
	VG   string
	Pool string
	Name string
	// VirtualSize in bytes; a thin LV takes pool space only as it is written.
	VirtualSize uint64
	Tags        []string
}

// CreateThinLV creates a thin LV in vg/pool (lvcreate --type thin -V size
// --thinpool pool). It needs device-mapper.
func (c *Client) CreateThinLV(ctx context.Context, o ThinLVOptions) (*LV, error) {
	if err := validateVGLV(o.VG, o.Name); err != nil {
		return nil, err
	}
	if err := ValidateLVName(o.Pool); err != nil {
		return nil, err
	}
	if err := validateTags(o.Tags); err != nil {
		return nil, err
	}
	if o.VirtualSize == 0 {
		return nil, fmt.Errorf("%w: thin LV %s/%s: size must be positive", ErrInvalidArgument, o.VG, o.Name)
	}
	argv := []string{"lvcreate", "--yes", "--type", "thin", "--name", o.Name, "--virtualsize", bytesArg(o.VirtualSize), "--thinpool", o.Pool}
	argv = append(argv, tagArgs(o.Tags)...)
	if _, err := c.lvm(ctx, append(argv, o.VG)...); err != nil {
		return nil, err
	}
	return c.GetLV(ctx, o.VG, o.Name)
}

// CreateThinSnapshot snapshots the thin LV vg/origin into a new thin LV in the
// same pool. lvm marks thin snapshots "skip activation" by default; this
// clears the flag so the snapshot activates like any other LV.
func (c *Client) CreateThinSnapshot(ctx context.Context, vg, origin, name string, tags ...string) (*LV, error) {
	if err := validateVGLV(vg, name); err != nil {
		return nil, err
	}
	if err := ValidateLVName(origin); err != nil {
		return nil, err
	}
	if err := validateTags(tags); err != nil {
		return nil, err
	}
	argv := []string{"lvcreate", "--yes", "--snapshot", "--setactivationskip", "n", "--name", name}
	argv = append(argv, tagArgs(tags)...)
	if _, err := c.lvm(ctx, append(argv, vg+"/"+origin)...); err != nil {
		return nil, err
	}
	return c.GetLV(ctx, vg, name)
}

// AddTags adds tags to vg/lv (adding a tag it has is a no-op for lvm).
func (c *Client) AddTags(ctx context.Context, vg, lv string, tags ...string) error {
	return c.changeTags(ctx, "--addtag", vg, lv, tags)
}

// RemoveTags removes tags from vg/lv.
func (c *Client) RemoveTags(ctx context.Context, vg, lv string, tags ...string) error {
	return c.changeTags(ctx, "--deltag", vg, lv, tags)
}

func (c *Client) changeTags(ctx context.Context, flag, vg, lv string, tags []string) error {
	if err := validateVGLV(vg, lv); err != nil {
		return err
	}
	if len(tags) == 0 {
		return nil
	}
	if err := validateTags(tags); err != nil {
		return err
	}
	argv := []string{"lvchange"}
	for _, t := range tags {
		argv = append(argv, flag, t)
	}
	_, err := c.lvm(ctx, append(argv, vg+"/"+lv)...)
	return err
}
