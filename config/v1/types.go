package v1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// OpenLocalArgs are the arguments of the OpenLocal scheduler plugin.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type OpenLocalArgs struct {
	metav1.TypeMeta `json:",inline"`

	// Strategy chooses among the VGs of a node for volumes without a vgName,
	// and ranks nodes: "binpack" (default: fullest VG that fits) or "spread"
	// (emptiest VG).
	Strategy *string `json:"strategy,omitempty"`
	// ScoreWeights weigh the parts of a storage pod's node score.
	ScoreWeights *ScoreWeights `json:"scoreWeights,omitempty"`
	// StorageFreePodAntiAffinityWeight (0–100, default 0 = off) is the score a
	// node without local storage gets for a pod without local volumes
	// (storage nodes get 0), keeping such pods off storage nodes.
	StorageFreePodAntiAffinityWeight *int32 `json:"storageFreePodAntiAffinityWeight,omitempty"`
	// Provisioners are the provisioner (and CSI driver) names whose PVCs and
	// CSI inline volumes the plugin allocates. Default: local.csi.aliyun.com
	// and the legacy yodaplugin.csi.alibabacloud.com.
	Provisioners []string `json:"provisioners,omitempty"`
	// DefaultInlineVolumeSize is the size of a CSI inline volume without a
	// "size" attribute (default 1Gi, as open-local).
	DefaultInlineVolumeSize *resource.Quantity `json:"defaultInlineVolumeSize,omitempty"`
	// ThinPoolFillThresholds: a thin pool whose data or metadata space is
	// fuller than its threshold takes no new volume (the CSI controller
	// keeps the same defaults).
	ThinPoolFillThresholds *ThinPoolFillThresholds `json:"thinPoolFillThresholds,omitempty"`
}

// ThinPoolFillThresholds are percentages of a thin pool's space (1–100;
// 100 turns one off): dataPercent defaults to 90, metadataPercent to 80.
type ThinPoolFillThresholds struct {
	DataPercent     *int32 `json:"dataPercent,omitempty"`
	MetadataPercent *int32 `json:"metadataPercent,omitempty"`
}

// ScoreWeights weigh the LVM and the exclusive-device part of a node score
// (each 0–100, default 1; at least one positive).
type ScoreWeights struct {
	LVM    *int32 `json:"lvm,omitempty"`
	Device *int32 `json:"device,omitempty"`
}
