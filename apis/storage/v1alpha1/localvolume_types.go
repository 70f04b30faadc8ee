package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// LocalVolume is one allocation of node-local storage: a logical volume, an
// LVM snapshot, or an exclusive whole device, on one node.
//
// The scheduler's PreBind writes it before the pod's PVCs get a selected node
// (or the CSI controller does, for pods another scheduler placed); the
// scheduler's capacity cache counts these objects, so a restarted scheduler
// rebuilds its ledger from the API alone. The agent on spec.nodeName carries
// it out (lvcreate / lvextend / snapshot), reports status, and removes the
// finalizer only after the LV is gone. Controller and node talk through this
// object only: there is no network port on nodes.
//
// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=lvol
// +kubebuilder:subresource:status
// +kubebuilder:selectablefield:JSONPath=`.spec.nodeName`
// +kubebuilder:printcolumn:JSONPath=`.spec.nodeName`,name="Node",type=string
// +kubebuilder:printcolumn:JSONPath=`.spec.volumeType`,name="Type",type=string
// +kubebuilder:printcolumn:JSONPath=`.spec.kind`,name="Kind",type=string
// +kubebuilder:printcolumn:JSONPath=`.spec.vgName`,name="VG",type=string
// +kubebuilder:printcolumn:JSONPath=`.spec.device`,name="Device",type=string,priority=1
// +kubebuilder:printcolumn:JSONPath=`.spec.thinPool`,name="ThinPool",type=string,priority=1
// +kubebuilder:printcolumn:JSONPath=`.spec.size`,name="Size",type=string
// +kubebuilder:printcolumn:JSONPath=`.status.phase`,name="Phase",type=string
// +kubebuilder:printcolumn:JSONPath=`.spec.claimRef.name`,name="Claim",type=string,priority=1
// +kubebuilder:printcolumn:JSONPath=`.spec.source.volume`,name="SourceVolume",type=string,priority=1
// +kubebuilder:printcolumn:JSONPath=`.spec.source.snapshot`,name="SourceSnapshot",type=string,priority=1
// +kubebuilder:printcolumn:JSONPath=`.metadata.creationTimestamp`,name="Age",type=date
type LocalVolume struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   LocalVolumeSpec   `json:"spec"`
	Status LocalVolumeStatus `json:"status,omitempty"`
}

// LocalVolumeList contains a list of LocalVolume.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type LocalVolumeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []LocalVolume `json:"items"`
}

// VolumeType is the kind of storage a volume takes (open-local's volumeType).
// +kubebuilder:validation:Enum=LVM;Device
type VolumeType string

// Volume types.
const (
	VolumeTypeLVM    VolumeType = "LVM"
	VolumeTypeDevice VolumeType = "Device"
)

// LocalVolumeKind says whether the object is a volume or a snapshot.
// +kubebuilder:validation:Enum=Volume;Snapshot
type LocalVolumeKind string

// Local volume kinds.
const (
	KindVolume   LocalVolumeKind = "Volume"
	KindSnapshot LocalVolumeKind = "Snapshot"
)

// LVMType is the LV layout.
// +kubebuilder:validation:Enum=linear;striping
type LVMType string

// LV layouts.
const (
	LVMTypeLinear   LVMType = "linear"
	LVMTypeStriping LVMType = "striping"
)

// LocalVolumeSpec is the allocation: where, what and how big.
//
// +kubebuilder:validation:XValidation:rule="self.volumeType != 'LVM' || (has(self.vgName) && size(self.vgName) > 0)",message="vgName is required when volumeType is LVM"
// +kubebuilder:validation:XValidation:rule="self.volumeType != 'Device' || (has(self.device) && size(self.device) > 0)",message="device is required when volumeType is Device"
// +kubebuilder:validation:XValidation:rule="!has(self.kind) || self.kind != 'Snapshot' || (self.volumeType == 'LVM' && has(self.source) && has(self.source.volume))",message="a Snapshot needs volumeType LVM and source.volume"
// +kubebuilder:validation:XValidation:rule="!has(self.readOnly) || !self.readOnly || (has(self.kind) && self.kind == 'Snapshot') || (has(self.source) && has(self.source.snapshot))",message="readOnly is for a snapshot or a volume restored read-only from source.snapshot"
// +kubebuilder:validation:XValidation:rule="!has(self.thinPool) || self.volumeType == 'LVM'",message="thinPool needs volumeType LVM"
// +kubebuilder:validation:XValidation:rule="has(self.thinPool) == has(oldSelf.thinPool)",message="thinPool is immutable"
// +kubebuilder:validation:XValidation:rule="(has(self.readOnly) && self.readOnly) == (has(oldSelf.readOnly) && oldSelf.readOnly)",message="readOnly is immutable"
type LocalVolumeSpec struct {
	// NodeName is the node that holds the storage. Immutable.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="nodeName is immutable"
	NodeName string `json:"nodeName"`
	// VolumeType is LVM (an LV in vgName) or Device (the whole of device, exclusively).
	VolumeType VolumeType `json:"volumeType"`
	// Kind is Volume (default) or Snapshot (an LVM copy-on-write snapshot of source.volume).
	// +kubebuilder:default=Volume
	// +optional
	Kind LocalVolumeKind `json:"kind,omitempty"`
	// VGName is the volume group of an LVM volume. Immutable.
	// +kubebuilder:validation:MaxLength=127
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="vgName is immutable"
	// +optional
	VGName string `json:"vgName,omitempty"`
	// Device is the block device of a Device volume, e.g. /dev/sdb. Immutable.
	// +kubebuilder:validation:Pattern=`^(/[^/ ]*)+/?$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="device is immutable"
	// +optional
	Device string `json:"device,omitempty"`
	// LVName is the LV's name on the node; metadata.name when empty. Immutable.
	// +kubebuilder:validation:MaxLength=127
	// +kubebuilder:validation:Pattern=`^[a-zA-Z0-9+_.][a-zA-Z0-9+_.-]*$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="lvName is immutable"
	// +optional
	LVName string `json:"lvName,omitempty"`
	// Size is the requested size. It may grow (expansion), never shrink.
	// For a classic snapshot it is its copy-on-write space, which the agent
	// grows by snapshotPolicy; for a thin snapshot, the origin's virtual size.
	// A readOnly volume takes no space of its own (it is its snapshot).
	// From 1 byte to 1Ei (MaxSize): past 2^63 Quantity.Value() wraps, and a
	// wrapped size would count as negative space.
	// +kubebuilder:validation:XValidation:rule="isQuantity(string(self)) && quantity(string(self)).compareTo(quantity('1')) >= 0 && quantity(string(self)).compareTo(quantity('1Ei')) <= 0",message="size must be a quantity from 1 byte to 1Ei"
	Size resource.Quantity `json:"size"`
	// LVMType is the LV layout: linear (default) or striping (across all PVs that fit).
	// +optional
	LVMType LVMType `json:"lvmType,omitempty"`
	// ThinPool names the thin pool (in vgName) of a thin LV; empty: a thick
	// LV. A thin volume's size is virtual: it is counted against the pool's
	// allocatable (overprovision ratio × pool size), not against the VG.
	// Immutable.
	// +kubebuilder:validation:MaxLength=127
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="thinPool is immutable"
	// +optional
	ThinPool string `json:"thinPool,omitempty"`
	// Source is what a snapshot is taken of, or what a volume is restored from.
	// +optional
	Source *LocalVolumeSource `json:"source,omitempty"`
	// ReadOnly marks a volume restored read-only from source.snapshot
	// (open-local's read-only snapshot): it has no LV of its own, the node
	// publishes the snapshot's LV read-only. On a snapshot, it says that
	// restores of it are read-only (the VolumeSnapshotClass parameter
	// csi.aliyun.com/readonly). Immutable.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="readOnly is immutable"
	// +optional
	ReadOnly bool `json:"readOnly,omitempty"`
	// ClaimRef is the PVC this volume was allocated for.
	// +optional
	ClaimRef *ObjectReference `json:"claimRef,omitempty"`
	// PodRef is the pod that owns a CSI ephemeral inline volume.
	// +optional
	PodRef *ObjectReference `json:"podRef,omitempty"`
	// SnapshotPolicy grows a snapshot's copy-on-write space as it fills.
	// +optional
	SnapshotPolicy *SnapshotPolicy `json:"snapshotPolicy,omitempty"`
}

// LocalVolumeSource names the LocalVolume a snapshot or restore comes from.
type LocalVolumeSource struct {
	// Volume is the origin LocalVolume of a snapshot or a clone.
	// +optional
	Volume string `json:"volume,omitempty"`
	// Snapshot is the LocalVolume (kind Snapshot) a volume is restored from.
	// +optional
	Snapshot string `json:"snapshot,omitempty"`
}

// ObjectReference points at a namespaced object by name and UID.
type ObjectReference struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	UID       types.UID `json:"uid,omitempty"`
}

// SnapshotPolicy is open-local's snapshot expansion policy.
type SnapshotPolicy struct {
	// ExpansionThresholdPercent: grow when the COW space is fuller than this.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	ExpansionThresholdPercent int32 `json:"expansionThresholdPercent"`
	// ExpansionSize is added each time the threshold is passed.
	ExpansionSize resource.Quantity `json:"expansionSize"`
}

// LocalVolumePhase is where the node is with the allocation.
// +kubebuilder:validation:Enum=Pending;Ready;Failed;Quarantined
type LocalVolumePhase string

// Local volume phases.
const (
	// PhasePending: the node has not (yet) carried out the spec.
	PhasePending LocalVolumePhase = "Pending"
	// PhaseReady: the storage exists with at least spec.size.
	PhaseReady LocalVolumePhase = "Ready"
	// PhaseFailed: the last attempt failed; code and message say why. The node keeps retrying.
	PhaseFailed LocalVolumePhase = "Failed"
	// PhaseQuarantined: a Device volume being deleted whose disk waits for
	// its wipe (the agent's --device-wipe policy, or an operator's
	// annotation under policy manual). The record, and so the disk, stays
	// held until the wipe is done: no next tenant sees the last one's data.
	PhaseQuarantined LocalVolumePhase = "Quarantined"
)

// LocalVolumeStatus is what the node did.
type LocalVolumeStatus struct {
	// +optional
	Phase LocalVolumePhase `json:"phase,omitempty"`
	// DevicePath is the block device of the volume on its node.
	// +optional
	DevicePath string `json:"devicePath,omitempty"`
	// DeviceIdentity is the stable identity of a Device volume's disk
	// (blockdev.Identity: its WWN, model and serial, or a loop device's
	// backing file), recorded at first use. The node finds the disk by it
	// (devicePath follows it when kernel names move) and refuses to stage,
	// publish or wipe a disk that does not have it.
	// +optional
	DeviceIdentity string `json:"deviceIdentity,omitempty"`
	// CurrentSize is the size the storage has now.
	// +optional
	CurrentSize *resource.Quantity `json:"currentSize,omitempty"`
	// Code is the gRPC code name of the last failure (e.g. ResourceExhausted), empty when Ready.
	// +optional
	Code string `json:"code,omitempty"`
	// Message explains the last failure.
	// +optional
	Message string `json:"message,omitempty"`
	// ObservedGeneration is the spec generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// RestoreSize is, for a snapshot, the size of its origin when it was
	// taken: the smallest volume it can be restored into (CSI size_bytes).
	// +optional
	RestoreSize *resource.Quantity `json:"restoreSize,omitempty"`
	// SnapshotTime is when the node took the snapshot (CSI creation_time).
	// +optional
	SnapshotTime *metav1.Time `json:"snapshotTime,omitempty"`
	// Copy reports a restore by block copy: a writable volume filled with
	// its source snapshot's data on the node.
	// +optional
	Copy *CopyStatus `json:"copy,omitempty"`
	// Conditions are facts about the volume that other controllers than
	// its node's agent observe (ConditionNodeGone); the agent keeps them
	// when it writes the rest of the status.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ConditionNodeGone is True while the Node object of spec.nodeName does not
// exist (deleted, and not re-created past a grace period, confirmed by a
// live read): no agent will carry out the volume, nor remove its LV and
// finalizer. False when the node came back. A NotReady node is not gone.
const ConditionNodeGone = "NodeGone"

// Reasons of ConditionNodeGone.
const (
	ReasonNodeDeleted  = "NodeDeleted"  // True: the Node object is gone
	ReasonNodeReturned = "NodeReturned" // False: a Node of that name exists again
)

// NodeLossAnnotation on a PVC opts it in to deletion when its volume's node
// is gone (the value "true"), so a StatefulSet recreates it, empty, on
// another node. Put it in the StatefulSet's volumeClaimTemplates so every
// claim it makes carries it. Acted on only by the controller's node-loss
// cleanup (agent --mode=controller --node-loss-cleanup).
const NodeLossAnnotation = "csi.aliyun.com/delete-on-node-loss"

// DeviceWipedAnnotation, set on a quarantined Device LocalVolume to the
// device's identity (status.deviceIdentity), tells the agent an operator
// wiped (or otherwise vouches for) the disk: the agent then releases it
// without wiping. The value must match, so an annotation copied from
// another volume releases nothing.
const DeviceWipedAnnotation = "csi.aliyun.com/device-wiped"

// CopyStatus is the progress of a block copy from a snapshot into a new volume.
type CopyStatus struct {
	// Source is the LocalVolume copied from.
	Source string `json:"source"`
	// TotalBytes is how much is copied in all (the snapshot's restore size).
	TotalBytes int64 `json:"totalBytes"`
	// CopiedBytes is how much has been copied so far.
	CopiedBytes int64 `json:"copiedBytes"`
	// CompletionTime is when the copy finished; the volume is Ready from then on.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}

// LocalVolumeFinalizer keeps a LocalVolume until its node has removed the storage.
const LocalVolumeFinalizer = "csi.aliyun.com/local-volume"

// AdoptedLabel (value "true") marks a LocalVolume the controller's importer
// (agent/adoption) wrote for a PV that alibaba/open-local provisioned. Its
// node's agent verifies the LV or disk it names instead of creating one:
// only an LV of that name and at least that size is tagged ours and Ready;
// nothing on disk is created, wiped, renamed or removed to make it fit.
const AdoptedLabel = "csi.aliyun.com/adopted"

// AdoptedPVAnnotation on a PV names the LocalVolume adopted for it. The
// importer adopts a PV once: a PV that carries it whose LocalVolume is gone
// (deleted with its claim) is not adopted again.
const AdoptedPVAnnotation = "csi.aliyun.com/adopted-as"
