/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package deploy_test

import (
	"context"
	"strings"
	"testing"
	"time"

	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/test/cluster"
)

// storageClassTable is one table for the Go parser and the chart's CEL
// policy: every row must get the same verdict, and the same message, from
// both. Each refused row has one fault, so "the first error" is the same.
var storageClassTable = []struct {
	name   string
	params map[string]string
}{
	{"no parameters", nil},
	{"the chart's LVM class", map[string]string{"volumeType": "LVM", "csi.storage.k8s.io/fstype": "ext4"}},
	{"xfs", map[string]string{"volumeType": "LVM", "csi.storage.k8s.io/fstype": "xfs"}},
	{"ext3", map[string]string{"csi.storage.k8s.io/fstype": "ext3"}},
	{"empty fstype", map[string]string{"csi.storage.k8s.io/fstype": ""}},
	{"io throttling", map[string]string{"volumeType": "LVM", "bps": "1048576", "iops": "1024"}},
	{"bps quantity", map[string]string{"bps": "10Mi"}},
	{"vgName", map[string]string{"vgName": "pool-0.a+b_c"}},
	{"striping", map[string]string{"lvmType": "striping"}},
	{"linear", map[string]string{"lvmType": "linear"}},
	{"thin", map[string]string{"thinPool": "pool", "vgName": "vg"}},
	{"device ssd", map[string]string{"volumeType": "Device", "mediaType": "ssd"}},
	{"device hdd", map[string]string{"volumeType": "Device", "mediaType": "hdd"}},
	{"sidecar keys", map[string]string{"csi.storage.k8s.io/provisioner-secret-name": "x"}},

	{"unknown key (typo)", map[string]string{"vgname": "x"}},
	{"unknown key", map[string]string{"spdk": "true"}},
	{"volumeType spdk", map[string]string{"volumeType": "spdk"}},
	{"volumeType MountPoint", map[string]string{"volumeType": "MountPoint"}},
	{"volumeType lowercase", map[string]string{"volumeType": "lvm"}},
	{"fstype ntfs", map[string]string{"csi.storage.k8s.io/fstype": "ntfs"}},
	{"bps word", map[string]string{"bps": "fast"}},
	{"bps negative", map[string]string{"bps": "-1"}},
	{"bps zero", map[string]string{"bps": "0"}},
	{"bps milli", map[string]string{"bps": "1m"}},
	{"bps 1e30", map[string]string{"bps": "1e30"}},
	{"bps at the bound", map[string]string{"bps": "1Pi"}},
	{"iops at the bound", map[string]string{"iops": "1000000000"}},
	{"iops past the bound", map[string]string{"iops": "1000000001"}},
	{"iops past int64", map[string]string{"iops": "9223372036854775808"}},
	{"iops word", map[string]string{"iops": "abc"}},
	{"iops zero", map[string]string{"iops": "0"}},
	{"iops negative", map[string]string{"iops": "-5"}},
	{"iops fractional", map[string]string{"iops": "1.5"}},
	{"vgName shell", map[string]string{"vgName": "$(reboot)"}},
	{"vgName path", map[string]string{"vgName": "../etc"}},
	{"vgName slash", map[string]string{"vgName": "a/b"}},
	{"vgName semicolon", map[string]string{"vgName": "a;b"}},
	{"vgName dotdot", map[string]string{"vgName": ".."}},
	{"vgName dash", map[string]string{"vgName": "-vg"}},
	{"vgName empty", map[string]string{"vgName": ""}},
	{"vgName too long", map[string]string{"vgName": strings.Repeat("v", 128)}},
	{"mediaType nvme", map[string]string{"volumeType": "Device", "mediaType": "nvme"}},
	{"lvmType raid", map[string]string{"lvmType": "raid1"}},
	{"thinPool reserved", map[string]string{"thinPool": "snapshot0"}},
	{"thinPool shell", map[string]string{"thinPool": "p;rm"}},
	{"device without mediaType", map[string]string{"volumeType": "Device"}},
	{"device with vgName", map[string]string{"volumeType": "Device", "mediaType": "ssd", "vgName": "vg"}},
	{"device with thinPool", map[string]string{"volumeType": "Device", "mediaType": "ssd", "thinPool": "p"}},
	{"thin and striping", map[string]string{"thinPool": "p", "lvmType": "striping"}},
}

// TestStorageClassPolicy applies the chart's ValidatingAdmissionPolicy to
// the local cluster's API server and creates (server-side dry run) a
// StorageClass of our provisioner for every row of storageClassTable: the
// API server must refuse exactly what parameters.Parse refuses, with its
// message. Classes of other provisioners are not its business.
func TestStorageClassPolicy(t *testing.T) {
	c := cluster.ForTest(t)
	ctx := t.Context()
	applyChart(t, c)
	classes := c.Client().StorageV1().StorageClasses()
	create := func(ctx context.Context, provisioner string, params map[string]string) error {
		sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{GenerateName: "policy-test-"},
			Provisioner: provisioner, Parameters: params}
		_, err := classes.Create(ctx, sc, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err
	}
	// The API server starts enforcing a new policy once its informer has it.
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		return create(ctx, "local.csi.aliyun.com", map[string]string{"bps": "fast"}) != nil, nil
	}); err != nil {
		t.Fatalf("the chart's StorageClass policy is not enforced after a minute: %v", err)
	}
	refused := 0
	for _, tc := range storageClassTable {
		t.Run(tc.name, func(t *testing.T) {
			_, perr := parameters.Parse(tc.params)
			aerr := create(ctx, "local.csi.aliyun.com", tc.params)
			switch {
			case perr == nil && aerr != nil:
				t.Errorf("the policy refuses what the parser accepts: %v", aerr)
			case perr != nil && aerr == nil:
				t.Errorf("the policy accepts what the parser refuses: %v", perr)
			case perr != nil && !strings.Contains(aerr.Error(), perr.Error()):
				t.Errorf("the policy's reason differs from the parser's:\n  policy: %v\n  parser: %v", aerr, perr)
			}
			if perr != nil {
				refused++
				if err := create(ctx, "other.example.com", tc.params); err != nil {
					t.Errorf("a class of another provisioner is refused: %v", err)
				}
			}
		})
	}
	if refused < 25 {
		t.Errorf("only %d refused rows; the table is meant to cover the hostile cases", refused)
	}
}
