/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package nodestorage

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	"golang.org/x/sys/unix"

	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
)

// Event reasons of VG initialisation.
const (
	ReasonVGCreated            = "VGCreated"
	ReasonVGExtended           = "VGExtended"
	ReasonCreateVGFailed       = "CreateVGFailed"
	ReasonExtendVGFailed       = "ExtendVGFailed"
	ReasonThinPoolCreated      = "ThinPoolCreated"
	ReasonCreateThinPoolFailed = "CreateThinPoolFailed"
)

// vgAction is one step of spec.resourceToBeInited.vgs still to do: create
// or extend a VG, or create the thin pool its entry configures.
type vgAction struct {
	vg      string
	devices []string
	create  bool // else extend
	// pool, when set, makes this the creation of that thin pool in vg, of
	// poolSize bytes; poolErr says why it cannot be (it fails with that).
	pool     string
	poolSize uint64
	poolErr  error
	extent   uint64 // of vg, for counting the pool in whole extents
}

func (a vgAction) key() string {
	if a.pool != "" {
		return "pool\x00" + a.vg + "\x00" + a.pool
	}
	return a.vg + "\x00" + strings.Join(a.devices, "\x00")
}

// planInit compares resourceToBeInited.vgs with the inventory: a VG that
// does not exist is to be created from its devices; an existing VG that
// lacks some of its listed devices is to be extended (open-local never did,
// alibaba/open-local#256). Devices are compared by device number, so /dev/disk/by-id
// links and kernel names are the same device. A listed path that does not
// exist keeps the step in the plan: it fails with a reason the user sees.
func planInit(spec []v1alpha1.VGToBeInited, inv inventory, rdev func(string) (uint32, uint32, error)) []vgAction {
	var plan []vgAction
	for _, want := range spec {
		var exists *lvm.VG
		for i := range inv.vgs {
			if inv.vgs[i].Name == want.Name {
				exists = &inv.vgs[i]
			}
		}
		if exists != nil {
			// The VG is one this node's configuration manages: the only
			// kind of VG the agent creates a thin pool in.
			if a, ok := planThinPool(want, exists, inv.lvs); ok {
				plan = append(plan, a)
			}
		}
		if len(want.Devices) == 0 {
			continue
		}
		if exists == nil {
			plan = append(plan, vgAction{vg: want.Name, devices: want.Devices, create: true})
			continue
		}
		for _, d := range want.Devices {
			if !isPVOf(d, want.Name, inv.pvs, rdev) {
				plan = append(plan, vgAction{vg: want.Name, devices: want.Devices})
				break
			}
		}
	}
	return plan
}

// planThinPool returns the creation of want's thin pool when it has a
// size and vg has no LV of that name yet. An LV of that name that is not a
// thin pool is left alone: the step then fails, saying so.
func planThinPool(want v1alpha1.VGToBeInited, vg *lvm.VG, lvs []lvm.LV) (vgAction, bool) {
	tp := want.ThinPool
	if tp == nil || tp.Size == "" {
		return vgAction{}, false
	}
	a := vgAction{vg: vg.Name, pool: tp.Name, extent: vg.ExtentSize}
	for _, lv := range lvs {
		if lv.VG == vg.Name && lv.Name == tp.Name {
			if lv.IsThinPool() {
				return vgAction{}, false
			}
			a.poolErr = fmt.Errorf("LV %s/%s exists and is not a thin pool; not touching it: %w", vg.Name, tp.Name, lvm.ErrAlreadyExists)
			return a, true
		}
	}
	a.poolSize, a.poolErr = ThinPoolSize(tp.Size, vg.Size)
	return a, true
}

// ThinPoolSize is the data size of a pool configured as size: a quantity
// (100Gi) or a percentage of the VG's size (90%).
func ThinPoolSize(size string, vgSize uint64) (uint64, error) {
	if p, ok := strings.CutSuffix(size, "%"); ok {
		pct, err := strconv.ParseFloat(p, 64)
		if err != nil || !(pct > 0 && pct <= 100) { // NaN fails both
			return 0, fmt.Errorf("thin pool size %q: want a percentage in (0, 100]: %w", size, lvm.ErrInvalidArgument)
		}
		return uint64(float64(vgSize) * pct / 100), nil
	}
	n, err := parameters.ParseSizeString(size)
	if err != nil {
		return 0, fmt.Errorf("thin pool size %q: %v (want a quantity such as 100Gi, or a percentage of the VG): %w", size, err, lvm.ErrInvalidArgument)
	}
	return uint64(n), nil
}

func isPVOf(device, vg string, pvs []lvm.PV, rdev func(string) (uint32, uint32, error)) bool {
	maj, minor, err := rdev(device)
	if err != nil {
		return false
	}
	for _, pv := range pvs {
		if pv.VG == vg && pv.Major == int(maj) && pv.Minor == int(minor) {
			return true
		}
	}
	return false
}

func statRdev(path string) (uint32, uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, 0, err
	}
	return unix.Major(st.Rdev), unix.Minor(st.Rdev), nil
}

// backoff spaces out retries of a failing step: interval × 2^failures, at
// most maxBackoff. A spec change (new generation) starts afresh.
type backoff struct {
	failures   int
	next       time.Time
	generation int64
}

// initVGs carries out the plan for nls and reports whether it changed
// anything (then the inventory must be read again). Every failure is a
// Warning Event on the NLS with lvm's own words; nothing outside the listed
// devices is ever touched (lvm.Client.CreateVG/ExtendVG check each device).
func (c *Controller) initVGs(ctx context.Context, nls *v1alpha1.NodeLocalStorage, inv inventory) bool {
	plan := planInit(nls.Spec.ResourceToBeInited.VGs, inv, statRdev)
	now := c.now()
	changed := false
	live := map[string]bool{}
	for _, a := range plan {
		key := a.key()
		live[key] = true
		b := c.backoffs[key]
		if b != nil && b.generation == nls.Generation && now.Before(b.next) {
			continue
		}
		err := c.runAction(ctx, nls, a)
		if err == nil {
			delete(c.backoffs, key)
			changed = true
			continue
		}
		if b == nil || b.generation != nls.Generation {
			b = &backoff{generation: nls.Generation}
			c.backoffs[key] = b
		}
		b.failures++
		delay := c.opts.Interval << min(b.failures-1, 16)
		if delay > c.opts.MaxInitBackoff || delay <= 0 {
			delay = c.opts.MaxInitBackoff
		}
		b.next = now.Add(delay)
		reason, verb := ReasonExtendVGFailed, "extend"
		if a.create {
			reason, verb = ReasonCreateVGFailed, "create"
		}
		msg := fmt.Sprintf("%s VG %s with devices %s: %v (attempt %d, next in %s)", verb, a.vg, strings.Join(a.devices, ", "), err, b.failures, delay)
		if a.pool != "" {
			reason = ReasonCreateThinPoolFailed
			msg = fmt.Sprintf("create thin pool %s/%s of %s: %v (attempt %d, next in %s)", a.vg, a.pool, quantity(a.poolSize), err, b.failures, delay)
		}
		klog.ErrorS(err, "VG initialisation failed", "vg", a.vg, "devices", a.devices, "pool", a.pool, "attempt", b.failures, "retryIn", delay)
		c.recorder.Event(nls, corev1.EventTypeWarning, reason, msg)
		// A step that created PVs but failed later changed the inventory.
		changed = true
	}
	for key := range c.backoffs {
		if !live[key] {
			delete(c.backoffs, key)
		}
	}
	return changed
}

func (c *Controller) runAction(ctx context.Context, nls *v1alpha1.NodeLocalStorage, a vgAction) error {
	if a.pool != "" {
		if a.poolErr != nil {
			return a.poolErr
		}
		if err := c.admitThinPool(nls, a); err != nil {
			return err
		}
		// Tagged like our volumes, but discovery never counts a pool as
		// VG space for thick volumes, tagged or not.
		if _, err := c.lvm.CreateThinPool(ctx, lvm.ThinPoolOptions{VG: a.vg, Name: a.pool, Size: a.poolSize, Tags: []string{lvm.OwnedTag}}); err != nil {
			return err
		}
		klog.InfoS("created thin pool", "vg", a.vg, "pool", a.pool, "size", a.poolSize)
		c.recorder.Eventf(nls, corev1.EventTypeNormal, ReasonThinPoolCreated, "created thin pool %s/%s of %s", a.vg, a.pool, quantity(a.poolSize))
		return nil
	}
	if a.create {
		if err := c.lvm.CreateVG(ctx, a.vg, a.devices); err != nil {
			return err
		}
		klog.InfoS("created VG", "vg", a.vg, "devices", a.devices)
		c.recorder.Eventf(nls, corev1.EventTypeNormal, ReasonVGCreated, "created VG %s from %s", a.vg, strings.Join(a.devices, ", "))
		return nil
	}
	added, err := c.lvm.ExtendVG(ctx, a.vg, a.devices)
	if err != nil {
		return err
	}
	if len(added) > 0 {
		klog.InfoS("extended VG", "vg", a.vg, "added", added)
		c.recorder.Eventf(nls, corev1.EventTypeNormal, ReasonVGExtended, "extended VG %s with %s", a.vg, strings.Join(added, ", "))
	}
	return nil
}

func quantity(n uint64) string {
	return resource.NewQuantity(int64(min(n, 1<<62)), resource.BinarySI).String()
}

// admitThinPool is the capacity authority's check for a thin pool the
// NodeLocalStorage configures: its data, metadata and the metadata spare
// (thinPoolTake) must fit the VG's allocatable beside every LocalVolume
// counted there, as for any new LV (ledger.Admit, the check the volumes
// reconciler makes before an lvcreate). Otherwise a pool created after the
// scheduler granted thick volumes on the VG would take their space: the
// pool's LVs are not volumes, so once made they count as foreign and
// allocatable falls under what was granted. Checked against the status
// this agent wrote last; a VG that status does not list yet (made in this
// very pass) holds no LocalVolume's space, and LVM decides.
func (c *Controller) admitThinPool(nls *v1alpha1.NodeLocalStorage, a vgAction) error {
	vols, err := c.volumes.List(labels.Everything())
	if err != nil {
		return err
	}
	data, metadata := thinPoolTake(a.poolSize, a.extent)
	want := ledger.Volume{Name: a.pool, Desc: fmt.Sprintf("thin pool %s/%s (data %s, metadata and its spare %s)", a.vg, a.pool, quantity(data), quantity(2*metadata)),
		Type: v1alpha1.VolumeTypeLVM, VG: a.vg, Size: int64(min(data+2*metadata, 1<<62))}
	if sf := ledger.ForNode(c.node, nls, vols).Admit(c.node, want); sf != nil {
		return fmt.Errorf("%s, counting every LocalVolume of the VG (NodeLocalStorage allocatable, not LVM's free space): not created; free the space or lower the pool's size", sf.Detail())
	}
	return nil
}

// thinPoolTake is what lvcreate --type thin-pool takes of a VG for a pool
// of data bytes, in whole extents: the data LV and a metadata LV, and as
// much again for the pool metadata spare. lvm sizes the metadata by the
// chunk size it picks (64 bytes a chunk, at least 2 MiB; its chunk size
// grows to keep the metadata near 128 MiB); data/1024 bounded to
// [4 MiB, 128 MiB] is at or above what it picks by default (64 KiB chunks)
// for every pool size, so the estimate errs on the safe side.
func thinPoolTake(data, extent uint64) (dataTake, metadataTake uint64) {
	const mib = 1 << 20
	metadata := min(max(data/1024, 4*mib), 128*mib)
	return roundUp(data, extent), roundUp(metadata, extent)
}

func roundUp(n, extent uint64) uint64 {
	if extent == 0 || n%extent == 0 {
		return n
	}
	return n + extent - n%extent
}
