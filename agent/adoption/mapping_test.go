/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package adoption

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

const handle = "local-0b8c1c3e-9f5a-4a52-8a3b-2f6f0c1d2e3f"

// openLocalPV is the PV open-local v0.8.0's CreateVolume leaves for an LVM
// claim (pkg/csi/controllerserver.go: volume context = class parameters +
// vgName + csi-provisioner's extra metadata; AccessibleTopology
// kubernetes.io/hostname; helm/templates/controller.yaml
// --volume-name-prefix=local).
func openLocalPV(edit func(*corev1.PersistentVolume)) *corev1.PersistentVolume {
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: handle},
		Spec: corev1.PersistentVolumeSpec{
			Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("5Gi")},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: "local.csi.aliyun.com", VolumeHandle: handle, FSType: "ext4",
				VolumeAttributes: map[string]string{
					"volumeType": "LVM", "vgName": "open-local-pool-0",
					"csi.storage.k8s.io/pv/name": handle, "csi.storage.k8s.io/pvc/name": "html-nginx-0",
					"csi.storage.k8s.io/pvc/namespace": "default", "volume.kubernetes.io/selected-node": "node-1",
				},
			}},
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: "default", Name: "html-nginx-0", UID: "uid-1"},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{"node-1"}}},
			}}}},
		},
		Status: corev1.PersistentVolumeStatus{Phase: corev1.VolumeBound},
	}
	if edit != nil {
		edit(pv)
	}
	return pv
}

func lvmVolume(edit func(*v1alpha1.LocalVolumeSpec)) *v1alpha1.LocalVolume {
	lv := &v1alpha1.LocalVolume{
		ObjectMeta: metav1.ObjectMeta{Name: handle, Labels: map[string]string{v1alpha1.AdoptedLabel: "true"},
			Annotations: map[string]string{v1alpha1.AdoptedPVAnnotation: handle}, Finalizers: []string{v1alpha1.LocalVolumeFinalizer}},
		Spec: v1alpha1.LocalVolumeSpec{NodeName: "node-1", VolumeType: v1alpha1.VolumeTypeLVM, Kind: v1alpha1.KindVolume,
			VGName: "open-local-pool-0", LVName: handle, Size: resource.MustParse("5Gi"),
			ClaimRef: &v1alpha1.ObjectReference{Namespace: "default", Name: "html-nginx-0", UID: "uid-1"}},
	}
	if edit != nil {
		edit(&lv.Spec)
	}
	return lv
}

func TestIsOpenLocalPV(t *testing.T) {
	for _, tc := range []struct {
		name string
		pv   *corev1.PersistentVolume
		want bool
	}{
		{"open-local's", openLocalPV(nil), true},
		{"legacy driver name", openLocalPV(func(pv *corev1.PersistentVolume) { pv.Spec.CSI.Driver = "yodaplugin.csi.alibabacloud.com" }), true},
		{"another driver", openLocalPV(func(pv *corev1.PersistentVolume) { pv.Spec.CSI.Driver = "topolvm.io" }), false},
		{"not CSI", openLocalPV(func(pv *corev1.PersistentVolume) {
			pv.Spec.CSI = nil
			pv.Spec.HostPath = &corev1.HostPathVolumeSource{Path: "/x"}
		}), false},
		{"ours (pvc-<uid> handle)", openLocalPV(func(pv *corev1.PersistentVolume) {
			pv.Name, pv.Spec.CSI.VolumeHandle = "pvc-1234", "pvc-1234"
		}), false},
		{"handle differs from the PV name", openLocalPV(func(pv *corev1.PersistentVolume) { pv.Name = "local-other" }), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsOpenLocalPV(tc.pv); got != tc.want {
				t.Errorf("IsOpenLocalPV = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLocalVolumeFor(t *testing.T) {
	huge := resource.MustParse("16Ei") // 2^64: past 2^63
	affinity := func(reqs ...corev1.NodeSelectorRequirement) func(*corev1.PersistentVolume) {
		return func(pv *corev1.PersistentVolume) {
			pv.Spec.NodeAffinity.Required.NodeSelectorTerms = []corev1.NodeSelectorTerm{{MatchExpressions: reqs}}
		}
	}
	host := func(op corev1.NodeSelectorOperator, v ...string) corev1.NodeSelectorRequirement {
		return corev1.NodeSelectorRequirement{Key: "kubernetes.io/hostname", Operator: op, Values: v}
	}
	for _, tc := range []struct {
		name   string
		pv     *corev1.PersistentVolume
		want   *v1alpha1.LocalVolume
		reason string
	}{
		{name: "LVM volume", pv: openLocalPV(nil), want: lvmVolume(nil)},
		{name: "VG from pv-allocated annotation, which wins", pv: openLocalPV(func(pv *corev1.PersistentVolume) {
			pv.Annotations = map[string]string{AllocatedAnnotation: `{"vgName":"open-local-pool-1","volumeType":"LVM"}`}
		}), want: lvmVolume(func(s *v1alpha1.LocalVolumeSpec) { s.VGName = "open-local-pool-1" })},
		{name: "framework-mode PV: VG only in the annotation", pv: openLocalPV(func(pv *corev1.PersistentVolume) {
			delete(pv.Spec.CSI.VolumeAttributes, "vgName")
			pv.Annotations = map[string]string{AllocatedAnnotation: `{"vgName":"open-local-pool-0","deviceName":"","volumeType":"LVM"}`}
		}), want: lvmVolume(nil)},
		{name: "striped", pv: openLocalPV(func(pv *corev1.PersistentVolume) { pv.Spec.CSI.VolumeAttributes["lvmType"] = "striping" }),
			want: lvmVolume(func(s *v1alpha1.LocalVolumeSpec) { s.LVMType = v1alpha1.LVMTypeStriping })},
		{name: "no claim (Available)", pv: openLocalPV(func(pv *corev1.PersistentVolume) { pv.Spec.ClaimRef = nil }),
			want: lvmVolume(func(s *v1alpha1.LocalVolumeSpec) { s.ClaimRef = nil })},
		{name: "Device volume", pv: openLocalPV(func(pv *corev1.PersistentVolume) {
			a := pv.Spec.CSI.VolumeAttributes
			delete(a, "vgName")
			a["volumeType"], a["Device"], a["mediaType"] = "Device", "/dev/vdc", "ssd"
		}), want: lvmVolume(func(s *v1alpha1.LocalVolumeSpec) {
			s.VolumeType, s.VGName, s.LVName, s.Device = v1alpha1.VolumeTypeDevice, "", "", "/dev/vdc"
		})},
		{name: "fractional size rounds up to whole bytes", pv: openLocalPV(func(pv *corev1.PersistentVolume) {
			pv.Spec.Capacity[corev1.ResourceStorage] = resource.MustParse("1500m")
		}), want: lvmVolume(func(s *v1alpha1.LocalVolumeSpec) { s.Size = resource.MustParse("2") })},

		{name: "size past 2^63", pv: openLocalPV(func(pv *corev1.PersistentVolume) { pv.Spec.Capacity[corev1.ResourceStorage] = huge }), reason: ReasonBadSize},
		{name: "size past 1Ei", pv: openLocalPV(func(pv *corev1.PersistentVolume) {
			pv.Spec.Capacity[corev1.ResourceStorage] = resource.MustParse("1025Pi")
		}), reason: ReasonBadSize},
		{name: "size zero", pv: openLocalPV(func(pv *corev1.PersistentVolume) { pv.Spec.Capacity[corev1.ResourceStorage] = resource.MustParse("0") }), reason: ReasonBadSize},
		{name: "size negative", pv: openLocalPV(func(pv *corev1.PersistentVolume) {
			pv.Spec.Capacity[corev1.ResourceStorage] = resource.MustParse("-1Gi")
		}), reason: ReasonBadSize},
		{name: "no capacity", pv: openLocalPV(func(pv *corev1.PersistentVolume) { pv.Spec.Capacity = nil }), reason: ReasonBadSize},

		{name: "no node affinity", pv: openLocalPV(func(pv *corev1.PersistentVolume) { pv.Spec.NodeAffinity = nil }), reason: ReasonNoNode},
		{name: "no required terms", pv: openLocalPV(func(pv *corev1.PersistentVolume) { pv.Spec.NodeAffinity.Required = nil }), reason: ReasonNoNode},
		{name: "affinity on another key", pv: openLocalPV(affinity(corev1.NodeSelectorRequirement{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"a"}})), reason: ReasonNoNode},
		{name: "two hostnames", pv: openLocalPV(affinity(host(corev1.NodeSelectorOpIn, "node-1", "node-2"))), reason: ReasonNoNode},
		{name: "NotIn hostname", pv: openLocalPV(affinity(host(corev1.NodeSelectorOpNotIn, "node-1"))), reason: ReasonNoNode},
		{name: "node name with slash", pv: openLocalPV(affinity(host(corev1.NodeSelectorOpIn, "../etc"))), reason: ReasonNoNode},

		{name: "handle with slash", pv: openLocalPV(func(pv *corev1.PersistentVolume) { pv.Spec.CSI.VolumeHandle = "local-a/../b" }), reason: ReasonBadName},
		{name: "handle with ..", pv: openLocalPV(func(pv *corev1.PersistentVolume) { pv.Spec.CSI.VolumeHandle = "local-a..b" }), reason: ReasonBadName},
		{name: "handle with ;", pv: openLocalPV(func(pv *corev1.PersistentVolume) { pv.Spec.CSI.VolumeHandle = "local-a;rm" }), reason: ReasonBadName},

		{name: "VG with slash", pv: openLocalPV(func(pv *corev1.PersistentVolume) { pv.Spec.CSI.VolumeAttributes["vgName"] = "../vg0" }), reason: ReasonBadLocation},
		{name: "VG with ;", pv: openLocalPV(func(pv *corev1.PersistentVolume) { pv.Spec.CSI.VolumeAttributes["vgName"] = "vg0;reboot" }), reason: ReasonBadLocation},
		{name: "VG ..", pv: openLocalPV(func(pv *corev1.PersistentVolume) { pv.Spec.CSI.VolumeAttributes["vgName"] = ".." }), reason: ReasonBadLocation},
		{name: "no VG", pv: openLocalPV(func(pv *corev1.PersistentVolume) { delete(pv.Spec.CSI.VolumeAttributes, "vgName") }), reason: ReasonBadLocation},
		{name: "annotation not JSON", pv: openLocalPV(func(pv *corev1.PersistentVolume) {
			pv.Annotations = map[string]string{AllocatedAnnotation: `{vgName:`}
		}), reason: ReasonBadLocation},
		{name: "device with ..", pv: openLocalPV(func(pv *corev1.PersistentVolume) {
			a := pv.Spec.CSI.VolumeAttributes
			a["volumeType"], a["Device"] = "Device", "/dev/../etc/passwd"
		}), reason: ReasonBadLocation},
		{name: "device outside /dev", pv: openLocalPV(func(pv *corev1.PersistentVolume) {
			a := pv.Spec.CSI.VolumeAttributes
			a["volumeType"], a["Device"] = "Device", "/etc/passwd"
		}), reason: ReasonBadLocation},
		{name: "device with ;", pv: openLocalPV(func(pv *corev1.PersistentVolume) {
			a := pv.Spec.CSI.VolumeAttributes
			a["volumeType"], a["Device"] = "Device", "/dev/sdb;reboot"
		}), reason: ReasonBadLocation},
		{name: "device missing", pv: openLocalPV(func(pv *corev1.PersistentVolume) { pv.Spec.CSI.VolumeAttributes["volumeType"] = "Device" }), reason: ReasonBadLocation},

		{name: "MountPoint", pv: openLocalPV(func(pv *corev1.PersistentVolume) {
			a := pv.Spec.CSI.VolumeAttributes
			a["volumeType"], a["MountPoint"] = "MountPoint", "/mnt/open-local/disk-1"
		}), reason: ReasonUnsupportedType},
		{name: "unknown type", pv: openLocalPV(func(pv *corev1.PersistentVolume) { pv.Spec.CSI.VolumeAttributes["volumeType"] = "Quota" }), reason: ReasonUnsupportedType},
		{name: "read-only snapshot restore", pv: openLocalPV(func(pv *corev1.PersistentVolume) {
			a := pv.Spec.CSI.VolumeAttributes
			a["csi.aliyun.com/snapshot-id"], a["csi.aliyun.com/source-volume-id"], a["csi.aliyun.com/readonly"] = "snap-1", "local-src", "true"
		}), reason: ReasonSnapshot},
		{name: "read-write (restic) snapshot restore", pv: openLocalPV(func(pv *corev1.PersistentVolume) {
			a := pv.Spec.CSI.VolumeAttributes
			a["csi.aliyun.com/snapshot-id"], a["csi.aliyun.com/source-volume-id"] = "snap-1", "local-src"
		}), reason: ReasonSnapshot},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, r := LocalVolumeFor(tc.pv)
			if tc.reason != "" {
				if r == nil || r.Reason != tc.reason {
					t.Fatalf("refusal = %v, want reason %s (volume %+v)", r, tc.reason, got)
				}
				if got != nil {
					t.Errorf("refused, yet a volume: %+v", got)
				}
				return
			}
			if r != nil {
				t.Fatalf("refused: %v", r)
			}
			if !equality.Semantic.DeepEqual(got, tc.want) {
				t.Errorf("got\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}
