/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package sanity_test runs csi-sanity (kubernetes-csi/csi-test) against the
// driver's controller and node services, backed by the local cluster (the
// LocalVolume round trip), the real LocalVolume reconciler and real lvm2 on
// loop devices, with real mkfs, mount and bind mounts.
package sanity_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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

// SnapshotSpecs matches the csi-sanity specs of snapshots and restores.
const SnapshotSpecs = "[Ss]napshot"

const (
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// TestSanity runs the suite twice in one Ginkgo run (Ginkgo allows one per
// process): xfs filesystem volumes and raw block volumes. xfs, because its
// online growth works on every kernel here; ext4's online growth needs
// CAP_SYS_RESOURCE (see the VM suite and the e2e test for ext4).
func TestSanity(t *testing.T) {
	capability.Require(t, capability.Root, capability.LoopDevices, capability.LVM, capability.XFS)
	c := cluster.ForTest(t)
	n := csitest.NewNode(t, c, "sanity-node", "olsanity", 8*gib, 8*gib)
	d := csitest.StartDriver(t, c, n)

	config := func(name, accessType string, params map[string]string) *sanity.TestConfig {
		cfg := sanity.NewTestConfig()
		dir := filepath.Join(t.TempDir(), name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		cfg.Address, cfg.ControllerAddress = d.NodeAddr, d.ControllerAddr
		cfg.TargetPath, cfg.StagingPath = filepath.Join(dir, "target"), filepath.Join(dir, "staging")
		// xfs needs 300 MiB; loop devices are sparse, so size costs nothing.
		cfg.TestVolumeSize, cfg.TestVolumeExpandSize = 512*mib, 1*gib
		cfg.TestVolumeAccessType = accessType
		cfg.TestVolumeParameters = params
		cfg.IdempotentCount = 3
		return &cfg
	}
	xfs := config("xfs", "mount", map[string]string{parameters.FSType: "xfs", parameters.VolumeType: "LVM", parameters.VGName: "olsanity"})
	block := config("block", "block", map[string]string{parameters.VolumeType: "LVM"})
	Describe("LVM xfs filesystem volumes", func() { sanity.GinkgoTest(xfs) })
	Describe("LVM raw block volumes", func() { sanity.GinkgoTest(block) })

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
				skips = append(skips, s.FullText()+": "+s.Failure.Message)
			case s.State.Is(types.SpecStateFailureStates):
				failed++
			}
		}
	})
	RegisterFailHandler(Fail)
	suiteCfg, reporterCfg := GinkgoConfiguration()
	// Snapshot specs need device-mapper (lvm refuses snapshots without it):
	// csi/sanity/snapshots runs them where it exists (the VM suite).
	suiteCfg.SkipStrings = append(suiteCfg.SkipStrings, SnapshotSpecs)
	reporterCfg.Succinct = true
	RunSpecs(t, "open-local CSI sanity", suiteCfg, reporterCfg)
	t.Logf("csi-sanity: %d passed, %d failed, %d skipped", passed, failed, skipped)
	for _, s := range skips {
		t.Logf("skipped: %s", strings.TrimSpace(s))
	}
}
