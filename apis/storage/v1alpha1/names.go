package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
)

// The names every component derives the same way: the scheduler writes
// LocalVolumes under them, the CSI controller and node find them. The LV
// of a LocalVolume is LocalVolume.LVName (accounting.go).
//
// Generated names are a prefix and a hex SHA-256 of the input (hashName),
// cut to a length per prefix, so that two schemes never make the same
// name. They are stored (LocalVolume names, spec.lvName, CSI volume and
// snapshot IDs): changing a prefix or a length renames nothing that
// exists, it orphans it. names_test.go pins them.
const (
	// PVCVolumePrefix: pvc-<PVC UID>, a PVC's volume (PVCVolumeName).
	PVCVolumePrefix = "pvc-"
	// GeneratedVolumePrefix: csi-<hex>. 64 hex digits (all of the hash):
	// kubelet's handle of an inline volume (InlineVolumeName); 40: a
	// CreateVolume name that is no object name (RequestVolumeName).
	GeneratedVolumePrefix = "csi-"
	// SnapshotPrefix starts every snapshot's LocalVolume name, and so its
	// LV name, never "snapshot", which lvm refuses (SnapshotVolumeName).
	SnapshotPrefix = "snap-"
	// GeneratedLVPrefix: lv-<32 hex>, the spec.lvName of a LocalVolume
	// whose name is no good LV name (GeneratedLVName).
	GeneratedLVPrefix = "lv-"
)

// hashName is prefix followed by the first n bytes of sha256(s) in hex.
func hashName(prefix string, n int, s string) string {
	sum := sha256.Sum256([]byte(s))
	return prefix + hex.EncodeToString(sum[:n])
}

// PVCVolumeName is the LocalVolume name of a PVC's volume.
func PVCVolumeName(pvcUID types.UID) string { return PVCVolumePrefix + string(pvcUID) }

// InlineVolumeName is kubelet's volume handle of a CSI ephemeral inline
// volume (k8s.io/kubernetes/pkg/volume/csi makeVolumeHandle:
// csi-<sha256(podUID+volumeName)>), which is the volume's LocalVolume
// name: NodePublishVolume receives it as the volume ID and writes the
// LocalVolume (InlineLocalVolume); the scheduler counts the volume from the
// pod under the same name until then.
func InlineVolumeName(podUID types.UID, volumeName string) string {
	return hashName(GeneratedVolumePrefix, sha256.Size, string(podUID)+volumeName)
}

// RequestVolumeName is the LocalVolume name of a CreateVolume request
// name that cannot be an object name itself (csi-<40 hex>; shorter than
// an inline handle, so never one).
func RequestVolumeName(requestName string) string {
	return hashName(GeneratedVolumePrefix, 20, requestName)
}

// SnapshotVolumeName is the LocalVolume name of a CSI snapshot name:
// snap-<UID> for the snapshot-<UID> names external-snapshotter sends,
// else snap-<40 hex>. Deterministic, so a retried CreateSnapshot finds its
// snapshot again.
func SnapshotVolumeName(csiName string) string {
	if rest, ok := strings.CutPrefix(csiName, "snapshot-"); ok {
		if id := SnapshotPrefix + rest; len(validation.IsDNS1123Subdomain(id)) == 0 {
			return id
		}
	}
	return hashName(SnapshotPrefix, 20, csiName)
}

// GeneratedLVName is the spec.lvName of a LocalVolume whose name is no
// good LV name (lv-<32 hex>: 35 characters, within device-mapper's limit
// beside any VG name lvm allows).
func GeneratedLVName(volumeName string) string {
	return hashName(GeneratedLVPrefix, 16, volumeName)
}

// InlineLocalVolume is the record of a CSI inline volume of pod on node:
// the node side writes it when the volume is published (the scheduler
// writes none: the bound pod is the volume's record until then).
func InlineLocalVolume(name, node, vg string, size int64, pod ObjectReference) *LocalVolume {
	return &LocalVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Finalizers: []string{LocalVolumeFinalizer}},
		Spec: LocalVolumeSpec{
			NodeName:   node,
			VolumeType: VolumeTypeLVM,
			Kind:       KindVolume,
			VGName:     vg,
			Size:       *resource.NewQuantity(size, resource.BinarySI),
			LVMType:    LVMTypeLinear,
			PodRef:     &pod,
		},
	}
}
