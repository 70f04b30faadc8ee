/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package volumes_test

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/open-local/open-local/agent/volumes"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/loopvg"
)

func cloneSpec(vg, source string, size int64) v1alpha1.LocalVolumeSpec {
	s := lvmSpec(vg, size)
	s.Source = &v1alpha1.LocalVolumeSource{Volume: source}
	return s
}

func filled(size int64) func(*v1alpha1.LocalVolume) bool {
	return func(lv *v1alpha1.LocalVolume) bool {
		return ready(size)(lv) && lv.Status.Copy != nil && lv.Status.Copy.CompletionTime != nil
	}
}

// A clone of a thick volume is a new LV filled by the restore's block copy
// (no device-mapper needed: the LVs are reachable through loop devices), at
// least as large as its source; the source is left as it was.
func TestThickClone(t *testing.T) {
	n := newNode(t, "vol-clone", "olvclone", 128*mib)
	ctx := t.Context()
	n.create(t, "clone-origin", lvmSpec("olvclone", 16*mib))
	origin := n.waitFor(t, "clone-origin", "Ready", ready(16*mib))
	data := randomBytes(t, int(mib))
	loopvg.WriteAt(t, origin.Status.DevicePath, data, 8*mib)

	for _, tt := range []struct {
		name string
		size int64
	}{
		{"clone-same", 16 * mib},
		{"clone-bigger", 24 * mib},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n.create(t, tt.name, cloneSpec("olvclone", "clone-origin", tt.size))
			c := n.waitFor(t, tt.name, "filled", filled(tt.size))
			if c.Status.Copy.Source != "clone-origin" || c.Status.Copy.TotalBytes != 16*mib {
				t.Errorf("copy status %+v, want 16 MiB from clone-origin", c.Status.Copy)
			}
			if got := loopvg.ReadAt(t, c.Status.DevicePath, 8*mib, int(mib)); !bytes.Equal(got, data) {
				t.Fatal("the clone does not hold its source's data")
			}
			l, err := n.lvm.GetLV(ctx, "olvclone", tt.name)
			if err != nil {
				t.Fatal(err)
			}
			if l.HasTag("csi.aliyun.com/restoring") || !l.HasTag(lvm.OwnedTag) {
				t.Errorf("clone LV tags %v: want owned, copy finished", l.Tags)
			}
			waitEvent(t, n.c, tt.name, volumes.ReasonRestored)
		})
	}
	// The clone is a volume of its own: writing it leaves the source alone.
	loopvg.WriteAt(t, n.waitFor(t, "clone-same", "Ready", ready(16*mib)).Status.DevicePath, bytes.Repeat([]byte{7}, int(mib)), 8*mib)
	if got := loopvg.ReadAt(t, origin.Status.DevicePath, 8*mib, int(mib)); !bytes.Equal(got, data) {
		t.Fatal("writing the clone changed its source")
	}
	// The source may go once its clones are filled.
	n.delete(t, "clone-origin")
	n.waitFor(t, "clone-origin", "gone", gone)
	for _, name := range []string{"clone-same", "clone-bigger"} {
		n.delete(t, name)
		n.waitFor(t, name, "gone", gone)
	}
}

// Clones the agent cannot make fail with a code and a message saying why,
// and create no LV.
func TestCloneRefusals(t *testing.T) {
	n := newNode(t, "vol-clonebad", "olvclonebad", 128*mib)
	n.create(t, "bad-clone-origin", lvmSpec("olvclonebad", 16*mib))
	n.waitFor(t, "bad-clone-origin", "Ready", ready(16*mib))
	for _, tt := range []struct {
		name string
		spec v1alpha1.LocalVolumeSpec
		code codes.Code
		msg  string
	}{
		{"bad-clone-nosource", cloneSpec("olvclonebad", "no-such-volume", 16*mib), codes.NotFound, "no-such-volume"},
		{"bad-clone-othervg", cloneSpec("olvother", "bad-clone-origin", 16*mib), codes.InvalidArgument, "stays in its source's VG"},
		{"bad-clone-smaller", cloneSpec("olvclonebad", "bad-clone-origin", 8*mib), codes.OutOfRange, "smaller than its source volume"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n.create(t, tt.name, tt.spec)
			lv := n.waitFor(t, tt.name, "Failed "+tt.code.String(), failed(tt.code.String()))
			if !strings.Contains(lv.Status.Message, tt.msg) {
				t.Errorf("message %q, want it to mention %q", lv.Status.Message, tt.msg)
			}
			n.delete(t, tt.name)
			n.waitFor(t, tt.name, "deleted", gone)
		})
	}
	if names := n.lvNames(t); strings.Join(names, ",") != "bad-clone-origin" {
		t.Fatalf("LVs %v, want only the source", names)
	}
}

// A clone of a thin volume in the same pool is a thin snapshot of it:
// nothing is copied, and the clone keeps the data when the source goes.
func TestDeviceMapperThinClone(t *testing.T) {
	capability.Require(t, capability.DeviceMapper)
	n := newNode(t, "vol-thinclone", "olvthinclone", 512*mib)
	ctx := t.Context()
	if _, err := n.lvm.CreateThinPool(ctx, lvm.ThinPoolOptions{VG: "olvthinclone", Name: "tp", Size: uint64(128 * mib), Tags: []string{lvm.OwnedTag}}); err != nil {
		t.Fatal(err)
	}
	thin := func(s v1alpha1.LocalVolumeSpec) v1alpha1.LocalVolumeSpec { s.ThinPool = "tp"; return s }
	n.create(t, "thin-src", thin(lvmSpec("olvthinclone", 256*mib)))
	src := n.waitFor(t, "thin-src", "Ready", ready(256*mib))
	data := randomBytes(t, int(mib))
	loopvg.WriteAt(t, src.Status.DevicePath, data, 200*mib)

	n.create(t, "thin-clone", thin(cloneSpec("olvthinclone", "thin-src", 320*mib)))
	c := n.waitFor(t, "thin-clone", "Ready", ready(320*mib))
	if c.Status.Copy != nil {
		t.Errorf("a thin clone copied data: %+v", c.Status.Copy)
	}
	if l, _ := n.lvm.GetLV(ctx, "olvthinclone", "thin-clone"); l == nil || l.Origin != "thin-src" || l.Pool != "tp" {
		t.Errorf("thin clone LV %+v, want a thin snapshot of thin-src", l)
	}
	// A thick clone of the thin volume: a block copy.
	n.create(t, "thick-clone", cloneSpec("olvthinclone", "thin-src", 256*mib))
	tc := n.waitFor(t, "thick-clone", "filled", filled(256*mib))
	for _, p := range []string{c.Status.DevicePath, tc.Status.DevicePath} {
		if got := loopvg.ReadAt(t, p, 200*mib, int(mib)); !bytes.Equal(got, data) {
			t.Fatalf("clone at %s does not hold the source's data", p)
		}
	}
	n.delete(t, "thin-src")
	n.waitFor(t, "thin-src", "gone", gone)
	if got := loopvg.ReadAt(t, c.Status.DevicePath, 200*mib, int(mib)); !bytes.Equal(got, data) {
		t.Fatal("the thin clone lost its data with its source")
	}
	for _, name := range []string{"thin-clone", "thick-clone"} {
		n.delete(t, name)
		n.waitFor(t, name, "gone", gone)
	}
}
