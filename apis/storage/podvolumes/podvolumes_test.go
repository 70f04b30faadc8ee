/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package podvolumes

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

const driver = "local.csi.aliyun.com"

type objects struct {
	claims  map[string]*v1.PersistentVolumeClaim
	classes map[string]*storagev1.StorageClass
}

func (o objects) Claim(_, name string) (*v1.PersistentVolumeClaim, error) {
	if c, ok := o.claims[name]; ok {
		return c, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "persistentvolumeclaims"}, name)
}

func (o objects) Class(name string) (*storagev1.StorageClass, error) {
	if c, ok := o.classes[name]; ok {
		return c, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Group: "storage.k8s.io", Resource: "storageclasses"}, name)
}

func class(name string, mode storagev1.VolumeBindingMode, params map[string]string) *storagev1.StorageClass {
	return &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: driver, VolumeBindingMode: &mode, Parameters: params}
}

func pvc(name, class, size string, mutate ...func(*v1.PersistentVolumeClaim)) *v1.PersistentVolumeClaim {
	c := &v1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name)},
		Spec: v1.PersistentVolumeClaimSpec{StorageClassName: &class,
			Resources: v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse(size)}}}}
	for _, m := range mutate {
		m(c)
	}
	return c
}

func TestOf(t *testing.T) {
	wffc, imm := storagev1.VolumeBindingWaitForFirstConsumer, storagev1.VolumeBindingImmediate
	objs := objects{
		classes: map[string]*storagev1.StorageClass{
			"lvm":    class("lvm", wffc, map[string]string{"volumeType": "LVM", "vgName": "pool0"}),
			"ssd":    class("ssd", wffc, map[string]string{"volumeType": "Device", "mediaType": "ssd"}),
			"imm":    class("imm", imm, map[string]string{"volumeType": "LVM"}),
			"bad":    class("bad", wffc, map[string]string{"volumeType": "LVM", "iops": "abc"}),
			"other":  {ObjectMeta: metav1.ObjectMeta{Name: "other"}, Provisioner: "ebs.csi.aws.com"},
			"stripe": class("stripe", wffc, map[string]string{"volumeType": "LVM", "lvmType": "striping"}),
		},
		claims: map[string]*v1.PersistentVolumeClaim{
			"data":    pvc("data", "lvm", "10Gi"),
			"disk":    pvc("disk", "ssd", "100Gi"),
			"bound":   pvc("bound", "lvm", "1Gi", func(c *v1.PersistentVolumeClaim) { c.Spec.VolumeName = "pv-1" }),
			"later":   pvc("later", "imm", "1Gi"),
			"refused": pvc("refused", "bad", "1Gi"),
			"ebs":     pvc("ebs", "other", "1Gi"),
			"noclass": pvc("noclass", "gone", "1Gi"),
			"huge":    pvc("huge", "lvm", "16Ei"),
			"striped": pvc("striped", "stripe", "1Gi"),
			"clone": pvc("clone", "lvm", "10Gi", func(c *v1.PersistentVolumeClaim) {
				c.Spec.DataSource = &v1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "data"}
			}),
			"restore": pvc("restore", "lvm", "10Gi", func(c *v1.PersistentVolumeClaim) {
				g := "snapshot.storage.k8s.io"
				c.Spec.DataSourceRef = &v1.TypedObjectReference{APIGroup: &g, Kind: "VolumeSnapshot", Name: "snap"}
			}),
			"diskclone": pvc("diskclone", "ssd", "10Gi", func(c *v1.PersistentVolumeClaim) {
				c.Spec.DataSource = &v1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "disk"}
			}),
			"orphanclone": pvc("orphanclone", "lvm", "10Gi", func(c *v1.PersistentVolumeClaim) {
				c.Spec.DataSource = &v1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "nope"}
			}),
		},
	}
	pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "pod-uid"}}
	claimVol := func(name string) *v1.Volume {
		return &v1.Volume{Name: "v", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: name}}}
	}
	inlineVol := func(drv string, attrs map[string]string) *v1.Volume {
		return &v1.Volume{Name: "scratch", VolumeSource: v1.VolumeSource{CSI: &v1.CSIVolumeSource{Driver: drv, VolumeAttributes: attrs}}}
	}
	for _, tc := range []struct {
		name       string
		vol        *v1.Volume
		want       string // Need rendered, "" for none
		wantSkip   string // substring of Skip.Reason
		wantBound  string
		wantRefuse string // substring of the Refusal
	}{
		{name: "emptyDir", vol: &v1.Volume{Name: "e", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}}},
		{name: "lvm claim", vol: claimVol("data"), want: "pvc-uid-data LVM vg=pool0 size=10737418240"},
		{name: "device claim", vol: claimVol("disk"), want: "pvc-uid-disk Device media=ssd size=107374182400"},
		{name: "striped", vol: claimVol("striped"), want: "pvc-uid-striped LVM vg= size=1073741824 striped"},
		{name: "bound", vol: claimVol("bound"), wantSkip: "bound to PV pv-1", wantBound: "pv-1"},
		{name: "missing claim", vol: claimVol("nope"), wantSkip: "not found (VolumeBinding waits for it)"},
		{name: "immediate", vol: claimVol("later"), wantSkip: "binds Immediately"},
		{name: "another driver", vol: claimVol("ebs")},
		{name: "refused class", vol: claimVol("refused"), wantRefuse: "storageclass bad: "},
		{name: "missing class", vol: claimVol("noclass"), wantRefuse: `storageclass "gone" not found`},
		{name: "size past the bound", vol: claimVol("huge"), wantRefuse: "storage request"},
		{name: "clone", vol: claimVol("clone"), want: "pvc-uid-clone LVM vg=pool0 size=10737418240 from=pvc-uid-data"},
		{name: "restore", vol: claimVol("restore"), want: "pvc-uid-restore LVM vg=pool0 size=10737418240 snapshot=snap"},
		{name: "device clone", vol: claimVol("diskclone"), wantRefuse: "a Device volume cannot be restored or cloned"},
		{name: "clone of a missing claim", vol: claimVol("orphanclone"), wantRefuse: `source pvc "nope"`},
		{name: "inline", vol: inlineVol(driver, map[string]string{"vgName": "pool0", "size": "2Gi"}),
			want: v1alpha1.InlineVolumeName("pod-uid", "scratch") + " LVM vg=pool0 size=2147483648"},
		{name: "inline of another driver", vol: inlineVol("other.csi", map[string]string{"vgName": "x"})},
		{name: "inline with a hostile size", vol: inlineVol(driver, map[string]string{"vgName": "pool0", "size": "18446744073709551616"}), wantRefuse: "inline volume scratch of pod ns/p"},
		{name: "inline with an unknown key", vol: inlineVol(driver, map[string]string{"vgName": "pool0", "$(rm)": "x"}), wantRefuse: "inline volume scratch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			need, skip, err := Of(pod, tc.vol, objs, func(d string) bool { return d == driver }, 1<<30)
			if tc.wantRefuse != "" {
				if !IsRefusal(err) || !strings.Contains(err.Error(), tc.wantRefuse) {
					t.Fatalf("err %v, want a refusal with %q", err, tc.wantRefuse)
				}
				if need != nil {
					t.Errorf("a refused volume needs %+v", need)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := render(need); got != tc.want {
				t.Errorf("need %q, want %q", got, tc.want)
			}
			if !strings.Contains(skip.Reason, tc.wantSkip) || (tc.wantSkip == "" && skip.Reason != "") {
				t.Errorf("skip %q, want %q", skip.Reason, tc.wantSkip)
			}
			if skip.BoundTo != tc.wantBound {
				t.Errorf("bound to %q, want %q", skip.BoundTo, tc.wantBound)
			}
		})
	}
}

func render(n *Need) string {
	if n == nil {
		return ""
	}
	s := n.Name + " " + string(n.Type)
	switch n.Type {
	case v1alpha1.VolumeTypeLVM:
		s += " vg=" + n.VG
	case v1alpha1.VolumeTypeDevice:
		s += " media=" + n.MediaType
	}
	s += " size=" + resource.NewQuantity(n.Size, resource.DecimalSI).String()
	if n.Striped {
		s += " striped"
	}
	if n.Source != nil {
		s += " from=" + n.Source.Volume
	}
	if n.Snapshot != "" {
		s += " snapshot=" + n.Snapshot
	}
	return s
}
