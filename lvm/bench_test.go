/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package lvm_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/open-local/open-local/lvm"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/loopvg"
)

// benchEnv is a VG on one loop device with n LVs, for measuring what each
// lvm command costs on this machine (go test -bench . ./lvm/).
func benchEnv(b *testing.B, lvs int) *lvm.Client {
	b.Helper()
	capability.Require(b, capability.Root, capability.LoopDevices, capability.LVM)
	devs := loopvg.NewDevices(b, 4<<30)
	cfg := loopvg.NewConfig(b, devs[0].Path)
	c := lvm.New(&lvm.ExecRunner{SystemDir: cfg.Dir, Env: cfg.Env()})
	ctx := context.Background()
	if err := c.CreateVG(ctx, "olbench", []string{devs[0].Path}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _, _ = cfg.Run(context.Background(), "vgremove", "--force", "--force", "--yes", "olbench") })
	for i := range lvs {
		if _, err := cfg.Run(ctx, "lvcreate", "--name", fmt.Sprintf("lv%d", i), "--size", "4m", "olbench"); err != nil {
			b.Fatal(err)
		}
	}
	return c
}

func BenchmarkReports(b *testing.B) {
	c := benchEnv(b, 20)
	ctx := context.Background()
	b.Run("ListVGs", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.ListVGs(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ListLVs-20", func(b *testing.B) {
		for b.Loop() {
			if lvs, err := c.ListLVs(ctx, ""); err != nil || len(lvs) != 20 {
				b.Fatal(len(lvs), err)
			}
		}
	})
	b.Run("ListPVs", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.ListPVs(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCreateRemoveLV is one CreateLV (lvcreate + lvs) and one RemoveLV
// (lvs + lvremove) per iteration.
func BenchmarkCreateRemoveLV(b *testing.B) {
	c := benchEnv(b, 0)
	ctx := context.Background()
	for b.Loop() {
		if _, err := c.CreateLV(ctx, lvm.CreateLVOptions{VG: "olbench", Name: "pvc-bench", Size: 64 << 20, Tags: []string{lvm.OwnedTag}}); err != nil {
			b.Fatal(err)
		}
		if err := c.RemoveLV(ctx, "olbench", "pvc-bench"); err != nil {
			b.Fatal(err)
		}
	}
}
