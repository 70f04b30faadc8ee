package config

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-local/open-local/apis/storage/ledger"
)

// PluginName is the OpenLocal plugin's name in scheduler profiles; its args
// kind is PluginName+"Args", which is how the scheduler finds the type.
const PluginName = "OpenLocal"

// Strategy says how volumes are spread over VGs and pods over nodes.
type Strategy string

const (
	// StrategyBinpack fills the fullest VG (and node) that still fits, keeping
	// large contiguous free space elsewhere.
	StrategyBinpack Strategy = ledger.BinpackName
	// StrategySpread picks the emptiest VG (and node), balancing IO and wear.
	StrategySpread Strategy = ledger.SpreadName
)

// Provisioner names accepted as ours: open-local's and its legacy name.
const (
	ProvisionerName       = "local.csi.aliyun.com"
	LegacyProvisionerName = "yodaplugin.csi.alibabacloud.com"
)

// OpenLocalArgs are the arguments of the OpenLocal plugin (internal version).
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
type OpenLocalArgs struct {
	metav1.TypeMeta

	// Strategy chooses among the VGs of a node for volumes without a vgName,
	// and ranks nodes: binpack or spread.
	Strategy Strategy
	// ScoreWeights weigh the parts of a storage pod's node score.
	ScoreWeights ScoreWeights
	// StorageFreePodAntiAffinityWeight (0–100) is the score a node without
	// local storage gets for a pod without local volumes (storage nodes get
	// 0), so such pods keep off storage nodes. 0 turns it off: such pods are
	// then not scored by this plugin at all.
	StorageFreePodAntiAffinityWeight int32
	// Provisioners are the provisioner (and CSI driver) names whose PVCs and
	// CSI inline volumes this plugin allocates.
	Provisioners []string
	// DefaultInlineVolumeSize is the size of a CSI inline volume that has no
	// "size" attribute.
	DefaultInlineVolumeSize resource.Quantity
	// ThinPoolFillThresholds: a thin pool filled past one takes no new
	// volume (ledger.Fill).
	ThinPoolFillThresholds ThinPoolFillThresholds
}

// ThinPoolFillThresholds are percentages (1–100; 100 turns one off) of a
// thin pool's data and metadata space.
type ThinPoolFillThresholds struct {
	DataPercent     int32
	MetadataPercent int32
}

// ScoreWeights weigh the LVM and the exclusive-device part of a node score.
type ScoreWeights struct {
	// LVM weighs the VG utilisation score.
	LVM int32
	// Device weighs the device fit score.
	Device int32
}
