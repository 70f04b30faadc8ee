/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package deploy_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/deploy"
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

// TestSchedulerNamePolicy applies the chart with the opt-in
// schedulerNamePolicy to the local cluster's API server and creates (server-
// side dry run) pods in a namespace the binding selects and in one it does
// not: only pods of the default scheduler that use our storage move to ours.
func TestSchedulerNamePolicy(t *testing.T) {
	c := cluster.ForTest(t)
	ctx := t.Context()
	applyChart(t, c, "admission.schedulerNamePolicy.enabled=true")
	kube := c.Client()
	run := rand.String(6)
	selected, other := "snp-in-"+run, "snp-out-"+run
	for ns, labels := range map[string]map[string]string{
		selected: {"storage.open-local.io/scheduler": "open-local"}, other: nil} {
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	}
	class := func(name string) *string { return &name }
	vol := func(src corev1.VolumeSource) []corev1.Volume { return []corev1.Volume{{Name: "v", VolumeSource: src}} }
	claim := vol(corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}})
	ephemeral := func(sc *string) []corev1.Volume {
		return vol(corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{
			Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: sc, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}}})
	}
	inline := func(driver string) []corev1.Volume {
		return vol(corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: driver, VolumeAttributes: map[string]string{"size": "1Gi"}}})
	}
	create := func(ctx context.Context, ns, scheduler, node string, volumes []corev1.Volume) (string, error) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "snp-"},
			Spec: corev1.PodSpec{SchedulerName: scheduler, NodeName: node, Volumes: volumes,
				Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
		got, err := kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return "", err
		}
		return got.Spec.SchedulerName, nil
	}
	// The API server applies a new policy once its informer has it.
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := create(ctx, selected, "", "", claim)
		return err == nil && got == "open-local-scheduler", nil
	}); err != nil {
		t.Fatalf("the chart's schedulerName policy is not applied after a minute: %v", err)
	}
	for _, tc := range []struct {
		name, ns, scheduler, node string
		volumes                   []corev1.Volume
		want                      string
	}{
		{"claim", selected, "", "", claim, "open-local-scheduler"},
		{"claim, default-scheduler named", selected, "default-scheduler", "", claim, "open-local-scheduler"},
		{"our inline volume", selected, "", "", inline("local.csi.aliyun.com"), "open-local-scheduler"},
		{"open-local's legacy driver name", selected, "", "", inline("yodaplugin.csi.alibabacloud.com"), "open-local-scheduler"},
		{"another driver's inline volume", selected, "", "", inline("other.example.com"), "default-scheduler"},
		{"ephemeral of our class", selected, "", "", ephemeral(class("open-local-lvm")), "open-local-scheduler"},
		{"ephemeral of another class", selected, "", "", ephemeral(class("standard")), "default-scheduler"},
		{"ephemeral of the default class", selected, "", "", ephemeral(nil), "default-scheduler"},
		{"no volumes", selected, "", "", nil, "default-scheduler"},
		{"emptyDir", selected, "", "", vol(corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}), "default-scheduler"},
		{"another scheduler named", selected, "volcano", "", claim, "volcano"},
		{"created bound to a node", selected, "", "node-a", claim, "default-scheduler"},
		{"namespace not selected", other, "", "", claim, "default-scheduler"},
		{"namespace not selected, inline", other, "", "", inline("local.csi.aliyun.com"), "default-scheduler"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := create(ctx, tc.ns, tc.scheduler, tc.node, tc.volumes)
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			if got != tc.want {
				t.Errorf("schedulerName %q, want %q", got, tc.want)
			}
		})
	}
}

// TestSchedulerNamePolicyRender: off by default; on a cluster older than
// MutatingAdmissionPolicy v1 the render fails with the reason rather than
// installing an object the API server does not serve.
func TestSchedulerNamePolicyRender(t *testing.T) {
	for _, u := range render(t).objs {
		if strings.HasPrefix(u.GetKind(), "MutatingAdmissionPolicy") {
			t.Errorf("%s %s rendered by default", u.GetKind(), u.GetName())
		}
	}
	m := render(t, "admission.schedulerNamePolicy.enabled=true")
	if n := len(m.ofKind("MutatingAdmissionPolicy")) + len(m.ofKind("MutatingAdmissionPolicyBinding")); n != 2 {
		t.Errorf("enabled: %d policy objects, want 2", n)
	}
	cmd := exec.CommandContext(t.Context(), filepath.Join(cluster.ToolsForTest(t), "helm"), "template", "open-local", deploy.ChartDir,
		"--namespace", namespace, "--kube-version", "1.35.0", "--set", "admission.schedulerNamePolicy.enabled=true")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "needs MutatingAdmissionPolicy") {
		t.Errorf("render for 1.35 with the policy on: err %v, output %.300s", err, out)
	}
}
