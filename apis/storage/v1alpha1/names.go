package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"

	"k8s.io/apimachinery/pkg/types"
)

// The names every component derives the same way: the scheduler writes
// LocalVolumes under them, the CSI controller and node find them. The LV
// of a LocalVolume is LocalVolume.LVName (accounting.go).

// PVCVolumeName is the LocalVolume name of a PVC's volume.
func PVCVolumeName(pvcUID types.UID) string { return "pvc-" + string(pvcUID) }

// InlineVolumeName is kubelet's volume handle of a CSI ephemeral inline
// volume (k8s.io/kubernetes/pkg/volume/csi makeVolumeHandle), which is the
// volume's LocalVolume name: the scheduler writes it, NodePublishVolume
// receives it as the volume ID.
func InlineVolumeName(podUID types.UID, volumeName string) string {
	sum := sha256.Sum256([]byte(string(podUID) + volumeName))
	return "csi-" + hex.EncodeToString(sum[:])
}
