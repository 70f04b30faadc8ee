package plugin

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	st "k8s.io/kubernetes/pkg/scheduler/testing"
	"k8s.io/utils/ptr"
)

// claimOf is a PVC of class requesting the quantity size (parsed without
// the apiserver's checks: the lister may hold anything an old apiserver, a
// restore or a bug let through).
func claimOf(name, className, size string) *v1.PersistentVolumeClaim {
	pvc := st.MakePersistentVolumeClaim().Name(name).Namespace(ns).StorageClassName(ptr.To(className)).
		Resources(v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse(size)}}).Obj()
	pvc.UID = types.UID("uid-" + name)
	return pvc
}

// The scheduler refuses exactly what CreateVolume and the CSI node refuse
// (one parser, apis/storage/parameters), with the parser's reason, before
// anything is reserved: a class or an inline volume the node would refuse
// must not leave space held by a LocalVolume nobody can use (issue 13).
func TestHostileInput(t *testing.T) {
	const wrapped = "18446743858961186816" // 2^64 − 200Gi: Value() wraps to −200Gi
	// Each case is a pod using one PVC of a class with params, requesting
	// size (default 5Gi), or the inline volume vol; want is in the message.
	for _, tc := range []struct {
		name   string
		params map[string]string
		size   string
		vol    *v1.Volume
		want   string
	}{
		// StorageClass parameters.
		{name: "iops not a number", params: map[string]string{"iops": "abc"}, want: `"iops"="abc": want a positive integer`},
		{name: "iops negative", params: map[string]string{"iops": "-5"}, want: `"iops"="-5"`},
		{name: "iops past int64", params: map[string]string{"iops": "99999999999999999999"}, want: `"iops"="99999999999999999999"`},
		{name: "iops absurd", params: map[string]string{"iops": "1000000000000"}, want: `"iops"="1000000000000"`},
		{name: "bps negative", params: map[string]string{"bps": "-1"}, want: `"bps"="-1"`},
		{name: "bps a word", params: map[string]string{"bps": "fast"}, want: `"bps"="fast"`},
		{name: "bps 2^64", params: map[string]string{"bps": "18446744073709551616"}, want: `"bps"="18446744073709551616"`},
		{name: "bps milli", params: map[string]string{"bps": "1m"}, want: `less than one byte`},
		{name: "unknown key (typo)", params: map[string]string{"vgname": "x"}, want: `"vgname"="x": unknown parameter`},
		{name: "open-local spdk", params: map[string]string{"volumeType": "spdk"}, want: `"volumeType"="spdk": want LVM or Device`},
		{name: "MountPoint", params: map[string]string{"volumeType": "MountPoint"}, want: `MountPoint is not supported`},
		{name: "Device with vgName", params: map[string]string{"volumeType": "Device", "mediaType": "ssd", "vgName": "pool0"}, want: `"vgName"="pool0": not allowed for volumeType Device`},
		{name: "Device with thinPool", params: map[string]string{"volumeType": "Device", "mediaType": "ssd", "thinPool": "tp"}, want: `"thinPool"="tp": not allowed for volumeType Device`},
		{name: "Device without mediaType", params: map[string]string{"volumeType": "Device"}, want: `"mediaType"="": required for volumeType Device`},
		{name: "mediaType nvme", params: map[string]string{"volumeType": "Device", "mediaType": "nvme"}, want: `"mediaType"="nvme"`},
		{name: "vgName ..", params: map[string]string{"vgName": ".."}, want: `"vgName"="..": not a valid VG name`},
		{name: "vgName with /", params: map[string]string{"vgName": "a/../b"}, want: `"vgName"="a/../b"`},
		{name: "vgName with ;", params: map[string]string{"vgName": "vg;reboot"}, want: `"vgName"="vg;reboot"`},
		{name: "vgName with $()", params: map[string]string{"vgName": "$(reboot)"}, want: `"vgName"="$(reboot)"`},
		{name: "vgName an option", params: map[string]string{"vgName": "-ff"}, want: `"vgName"="-ff"`},
		{name: "thinPool reserved name", params: map[string]string{"thinPool": "snapshot0"}, want: `"thinPool"="snapshot0": an LV name must not start with "snapshot"`},
		{name: "thinPool with striping", params: map[string]string{"thinPool": "tp", "lvmType": "striping"}, want: `not with lvmType striping`},
		{name: "lvmType raid5", params: map[string]string{"lvmType": "raid5"}, want: `"lvmType"="raid5"`},
		{name: "fstype ntfs", params: map[string]string{"csi.storage.k8s.io/fstype": "ntfs"}, want: `filesystem "ntfs" is not supported`},
		// PVC requests.
		{name: "request 2^64-200Gi", size: wrapped, want: "more than 1Ei"},
		{name: "request 2^63", size: "9223372036854775808", want: "more than 1Ei"},
		{name: "request 2^63-1", size: "9223372036854775807", want: "more than 1Ei"},
		{name: "request 1e30", size: "1e30", want: "more than 1Ei"},
		{name: "request 2Ei", size: "2Ei", want: "more than 1Ei"},
		{name: "request half a byte", size: "0.5", want: "less than one byte"},
		{name: "request 1m (milli)", size: "1m", want: "less than one byte"},
		{name: "request 0", size: "0", want: "not positive"},
		{name: "request negative", size: "-1Gi", want: "not positive"},
		// Inline volume attributes.
		{name: "inline size 2^64-200Gi", vol: inlineAttrs("size", wrapped), want: `"size"="` + wrapped + `"`},
		{name: "inline size 2^63", vol: inlineAttrs("size", "9223372036854775808"), want: "more than 1Ei"},
		{name: "inline size 1e30", vol: inlineAttrs("size", "1e30"), want: "more than 1Ei"},
		{name: "inline size negative", vol: inlineAttrs("size", "-1Gi"), want: "not positive"},
		{name: "inline size 0", vol: inlineAttrs("size", "0"), want: "not positive"},
		{name: "inline size 1m (milli)", vol: inlineAttrs("size", "1m"), want: "less than one byte"},
		{name: "inline size a word", vol: inlineAttrs("size", "lots"), want: `"size"="lots"`},
		{name: "inline unknown attribute", vol: inlineAttrs("vgname", "pool0"), want: `inline volume attribute "vgname"="pool0": unknown`},
		{name: "inline vgName ..", vol: inlineAttrs("vgName", ".."), want: `"vgName"=".."`},
		{name: "inline vgName $()", vol: inlineAttrs("vgName", "$(id)"), want: `"vgName"="$(id)"`},
		{name: "inline bps abc", vol: inlineAttrs("bps", "abc"), want: `"bps"="abc"`},
		{name: "inline iops 0", vol: inlineAttrs("iops", "0"), want: `"iops"="0"`},
		{name: "inline fsType attribute ntfs", vol: inlineAttrs("fsType", "ntfs"), want: `"fsType"="ntfs"`},
		{name: "inline volume fsType ntfs", vol: func() *v1.Volume {
			v := inline("scratch", "pool0", "1Gi")
			v.CSI.FSType = ptr.To("ntfs")
			return &v
		}(), want: `filesystem "ntfs" is not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k8s, ol := standard()
			var pod *v1.Pod
			var prefix string
			if tc.vol != nil {
				pod = st.MakePod().Name("p").Namespace(ns).UID("pod-p").Volume(*tc.vol).Obj()
				prefix = "inline volume scratch of pod default/p: "
			} else {
				size := tc.size
				if size == "" {
					size = "5Gi"
				}
				k8s = append(k8s, class("hostile", ourDriver, tc.params), claimOf("a", "hostile", size))
				pod = podWith("p", "a")
				prefix = "pvc default/a: "
				if tc.params != nil {
					prefix += "storageclass hostile: "
				}
			}
			h := newHarness(t, nil, k8s, ol)
			cs, got := h.filterAll(pod)
			wantPrefix := "prefilter: UnschedulableAndUnresolvable " + prefix
			if !strings.HasPrefix(got, wantPrefix) || !strings.Contains(got, tc.want) {
				t.Errorf("got:\n%s\nwant %q... containing %q", got, wantPrefix, tc.want)
			}
			// Nothing is held: Reserve has no plan to carry out, and the
			// ledger and the API hold no new volume.
			if s := h.pl.Reserve(h.ctx, cs, pod, "n2"); s.IsSuccess() {
				t.Errorf("Reserve succeeded after PreFilter refused")
			}
			if st := h.pl.ledger.Stats(); st.Reservations != 0 || st.Volumes != 1 {
				t.Errorf("ledger holds %+v, want no reservation and only pvc-used", st)
			}
			if list, err := h.ol.CsiV1alpha1().LocalVolumes().List(h.ctx, metav1.ListOptions{}); err != nil || len(list.Items) != 1 {
				t.Errorf("LocalVolumes: %v, %v; want only pvc-used", list, err)
			}
		})
	}
}

// inlineAttrs is an inline volume "scratch" in pool0 with the attribute k=v.
func inlineAttrs(k, v string) *v1.Volume {
	vol := inline("scratch", "pool0", "1Gi")
	if k == "vgName" || k == "size" {
		delete(vol.CSI.VolumeAttributes, k)
	}
	vol.CSI.VolumeAttributes[k] = v
	return &vol
}
