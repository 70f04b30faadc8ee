/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package snapshots_test runs csi-sanity's snapshot and restore specs
// (CreateSnapshot, DeleteSnapshot, ListSnapshots, GetSnapshot, volumes from
// snapshots) against the driver backed by the local cluster, the real
// LocalVolume reconciler and real lvm2 with device-mapper: lvm refuses
// snapshots without it, so this runs in the VM suite (test/vm), with a
// control plane started inside the guest. csi/sanity runs every other spec.
package snapshots_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	. "github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	. "github.com/onsi/gomega"

	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/test/capability"
	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/csitest"
)

func TestMain(m *testing.M) { cluster.Main(m) }

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// TestSanitySnapshots runs the snapshot specs twice: classic copy-on-write
// snapshots of thick xfs volumes (restores are block copies), and thin
// snapshots of thin volumes in an overprovisioned pool (restores are thin
// snapshots of the snapshot).
func TestSanitySnapshots(t *testing.T) {
	capability.Require(t, capability.DeviceMapper, capability.Root, capability.LoopDevices, capability.LVM, capability.XFS)
	c := cluster.ForTest(t)
	n := csitest.NewNode(t, c, "sanity-snap-node", "olsanitysnap", 8*gib, 8*gib)
	n.AddThinPool(t, "tp", 2*gib, 4)
	d := csitest.StartDriver(t, c, n)

	config := func(name string, params map[string]string) *sanity.TestConfig {
		cfg := sanity.NewTestConfig()
		dir := filepath.Join(t.TempDir(), name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		cfg.Address, cfg.ControllerAddress = d.NodeAddr, d.ControllerAddr
		cfg.TargetPath, cfg.StagingPath = filepath.Join(dir, "target"), filepath.Join(dir, "staging")
		// xfs needs 300 MiB; loop devices are sparse, so size costs nothing.
		cfg.TestVolumeSize, cfg.TestVolumeExpandSize = 320*mib, 512*mib
		cfg.TestVolumeAccessType = "mount"
		cfg.TestVolumeParameters = params
		cfg.TestSnapshotParameters = map[string]string{parameters.SnapshotInitialSize: "64Mi"}
		cfg.IdempotentCount = 2
		return &cfg
	}
	thick := config("thick", map[string]string{parameters.FSType: "xfs", parameters.VGName: "olsanitysnap"})
	thin := config("thin", map[string]string{parameters.FSType: "xfs", parameters.ThinPool: "tp"})
	// The containers' names must not match the focus below (it would select
	// every spec of the suite: 19 min in the emulated VM instead of the
	// snapshot specs alone).
	Describe("thick LVM volumes (copy-on-write)", func() { sanity.GinkgoTest(thick) })
	Describe("thin LVM volumes (thin pool)", func() { sanity.GinkgoTest(thin) })

	var passed, failed, skipped int
	var skips []string
	ReportAfterSuite("counts", func(r Report) {
		for _, s := range r.SpecReports {
			if s.LeafNodeType != types.NodeTypeIt {
				continue
			}
			switch {
			case s.State == types.SpecStatePassed:
				passed++
			case s.State == types.SpecStateSkipped || s.State == types.SpecStatePending:
				skipped++
				if s.Failure.Message != "" {
					skips = append(skips, s.FullText()+": "+s.Failure.Message)
				}
			case s.State.Is(types.SpecStateFailureStates):
				failed++
			}
		}
	})
	RegisterFailHandler(Fail)
	suiteCfg, reporterCfg := GinkgoConfiguration()
	// The specs csi/sanity skips (they need device-mapper), and the clone
	// spec: with device-mapper a thin volume's clone is a thin snapshot.
	suiteCfg.FocusStrings = append(suiteCfg.FocusStrings, "[Ss]napshot", "from an existing source volume")
	suiteCfg.Timeout = time.Hour
	reporterCfg.Succinct = true
	start := time.Now()
	RunSpecs(t, "open-local CSI sanity: snapshots", suiteCfg, reporterCfg)
	t.Logf("csi-sanity snapshot specs: %d passed, %d failed, %d skipped in %s", passed, failed, skipped, time.Since(start).Round(time.Second))
	for _, s := range skips {
		t.Logf("skipped: %s", strings.TrimSpace(s))
	}
	if passed == 0 {
		t.Error("no snapshot spec ran")
	}
}
