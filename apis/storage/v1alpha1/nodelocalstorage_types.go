package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeLocalStorage describes the local storage of one node: what the agent
// should manage (spec, written by the NLS controller from the
// NodeLocalStorageInitConfig) and what it found (status, written by the agent).
// The schema matches alibaba/open-local's field for field.
//
// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=nls
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:JSONPath=`.status.nodeStorageInfo.state.type`,name="State",type=string
// +kubebuilder:printcolumn:JSONPath=`.status.nodeStorageInfo.phase`,name="Phase",type=string
// +kubebuilder:printcolumn:JSONPath=`.status.nodeStorageInfo.state.lastHeartbeatTime`,name="AgentUpdateAt",type=date
// +kubebuilder:printcolumn:JSONPath=`.status.filteredStorageInfo.updateStatusInfo.lastUpdateTime`,name="SchedulerUpdateAt",type=date
// +kubebuilder:printcolumn:JSONPath=`.status.filteredStorageInfo.updateStatusInfo.updateStatus`,name="SchedulerUpdateStatus",type=string
type NodeLocalStorage struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   NodeLocalStorageSpec   `json:"spec,omitempty"`
	Status NodeLocalStorageStatus `json:"status,omitempty"`
}

// NodeLocalStorageList contains a list of NodeLocalStorage.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type NodeLocalStorageList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeLocalStorage `json:"items"`
}

// NodeLocalStorageSpec is the desired local storage of a node.
type NodeLocalStorageSpec struct {
	// NodeName is the name of the Kubernetes Node.
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:MinLength=1
	NodeName string `json:"nodeName,omitempty"`
	// SpdkConfig is accepted for compatibility with open-local; SPDK is not supported.
	SpdkConfig SpdkConfig `json:"spdkConfig,omitempty"`
	// ListConfig selects which VGs, mount points and devices may be scheduled.
	ListConfig ListConfig `json:"listConfig,omitempty"`
	// ResourceToBeInited lists storage the agent creates (VGs from devices).
	ResourceToBeInited ResourceToBeInited `json:"resourceToBeInited,omitempty"`
}

// SpdkConfig defines SPDK configuration (kept for schema compatibility).
type SpdkConfig struct {
	// DeviceType is the type of SPDK block devices.
	// +kubebuilder:validation:MaxLength=8
	// +kubebuilder:validation:MinLength=0
	DeviceType string `json:"deviceType,omitempty"`
	// RpcSocket is the unix domain socket for SPDK RPC.
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:MinLength=0
	RpcSocket string `json:"rpcSocket,omitempty"` //nolint:revive // field name fixed by open-local's schema
}

// ListConfig holds include/exclude regular expressions. A name is schedulable
// when it fully matches an include expression and no exclude expression.
type ListConfig struct {
	// VGs selects volume groups by name.
	VGs VGList `json:"vgs,omitempty"`
	// MountPoints selects mount points by path.
	MountPoints MountPointList `json:"mountPoints,omitempty"`
	// Devices selects raw block devices by path (e.g. /dev/sdb).
	Devices DeviceList `json:"devices,omitempty"`
}

// VGList selects volume groups by regular expression.
type VGList struct {
	// +kubebuilder:validation:MaxItems=50
	// +kubebuilder:validation:items:MaxLength=256
	Include []string `json:"include,omitempty"`
	// +kubebuilder:validation:MaxItems=50
	// +kubebuilder:validation:items:MaxLength=256
	Exclude []string `json:"exclude,omitempty"`
}

// MountPointList selects mount points by regular expression.
type MountPointList struct {
	// +kubebuilder:validation:MaxItems=50
	// +kubebuilder:validation:items:MaxLength=256
	Include []string `json:"include,omitempty"`
	// +kubebuilder:validation:MaxItems=50
	// +kubebuilder:validation:items:MaxLength=256
	Exclude []string `json:"exclude,omitempty"`
}

// DeviceList selects block devices by regular expression.
type DeviceList struct {
	// +kubebuilder:validation:MaxItems=50
	// +kubebuilder:validation:items:MaxLength=256
	Include []string `json:"include,omitempty"`
	// +kubebuilder:validation:MaxItems=50
	// +kubebuilder:validation:items:MaxLength=256
	Exclude []string `json:"exclude,omitempty"`
}

// ResourceToBeInited lists storage the agent creates on the node.
type ResourceToBeInited struct {
	// VGs are volume groups to create from devices (or to extend with newly listed devices).
	// +kubebuilder:validation:MaxItems=50
	VGs []VGToBeInited `json:"vgs,omitempty"`
	// MountPoints are filesystems to create and mount (accepted for compatibility).
	// +kubebuilder:validation:MaxItems=50
	MountPoints []MountPointToBeInited `json:"mountpoints,omitempty"`
}

// VGToBeInited is a volume group to create from devices.
type VGToBeInited struct {
	// Name is the volume group name.
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Devices are whole disks or partitions to turn into physical volumes.
	// +kubebuilder:validation:MaxItems=50
	// +kubebuilder:validation:items:Pattern=`^(/[^/ ]*)+/?$`
	Devices []string `json:"devices"`
	// ThinPool configures a thin pool in this VG (our addition to
	// open-local's schema): with a size, the agent creates it when it is
	// missing; without, it only sets the overprovision ratio of a pool an
	// administrator made. The agent creates pools nowhere else.
	// +optional
	ThinPool *ThinPoolToBeInited `json:"thinPool,omitempty"`
}

// ThinPoolToBeInited is a thin pool of a VG the agent manages.
type ThinPoolToBeInited struct {
	// Name is the pool LV's name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=127
	// +kubebuilder:validation:Pattern=`^[a-zA-Z0-9+_.][a-zA-Z0-9+_.-]*$`
	Name string `json:"name"`
	// Size of the pool's data space when the agent creates it: a quantity
	// (100Gi) or a percentage of the VG's size (90%). Empty: the agent does
	// not create the pool.
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?%|[0-9]+(\.[0-9]+)?([KMGTPE]i?)?)$`
	// +optional
	Size string `json:"size,omitempty"`
	// OverprovisionRatio is how many times its size thin volumes may
	// promise in total (TopoLVM's overprovision-ratio); at least 1, default 1.
	// +optional
	OverprovisionRatio *resource.Quantity `json:"overprovisionRatio,omitempty"`
}

// MountPointToBeInited is a filesystem to create on a device and mount.
type MountPointToBeInited struct {
	// Path is the mount point.
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:Pattern=`^(/[^/ ]*)+/?$`
	Path string `json:"path"`
	// Device is the device underlying the mount point.
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:Pattern=`^(/[^/ ]*)+/?$`
	Device string `json:"device"`
	// FsType is the filesystem type: ext4 (default), ext3 or xfs.
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:MinLength=1
	FsType string `json:"fsType,omitempty"`
	// Options are mount options.
	Options []string `json:"options,omitempty"`
}

// NodeLocalStorageStatus is what the agent found on the node.
type NodeLocalStorageStatus struct {
	NodeStorageInfo     NodeStorageInfo     `json:"nodeStorageInfo,omitempty"`
	FilteredStorageInfo FilteredStorageInfo `json:"filteredStorageInfo,omitempty"`
}

// NodeStorageInfo is every storage resource the agent discovered on the node.
type NodeStorageInfo struct {
	// DeviceInfos are the block devices (and partitions) of the node.
	DeviceInfos []DeviceInfo `json:"deviceInfo,omitempty"`
	// VolumeGroups are the LVM volume groups of the node.
	VolumeGroups []VolumeGroup `json:"volumeGroups,omitempty"`
	// MountPoints are the mount points of the node.
	MountPoints []MountPoint `json:"mountPoints,omitempty"`
	// Phase is the lifecycle phase of the node's storage.
	// +optional
	Phase StoragePhase `json:"phase,omitempty"`
	// State is the last observed state of the node's storage.
	// +optional
	State StorageState `json:"state,omitempty"`
}

// UpdateStatus says whether the filtered storage info was accepted.
// +kubebuilder:validation:Enum=pending;accepted;failed
type UpdateStatus string

// Filtered-storage update statuses.
const (
	UpdateStatusPending  UpdateStatus = "pending"
	UpdateStatusAccepted UpdateStatus = "accepted"
	UpdateStatusFailed   UpdateStatus = "failed"
)

// UpdateStatusInfo records the last update of the filtered storage info.
type UpdateStatusInfo struct {
	LastUpdateTime *metav1.Time `json:"lastUpdateTime,omitempty"`
	Status         UpdateStatus `json:"updateStatus,omitempty"`
	Reason         string       `json:"reason,omitempty"`
}

// FilteredStorageInfo is the storage the scheduler may use: the names that
// passed spec.listConfig.
type FilteredStorageInfo struct {
	VolumeGroups []string         `json:"volumeGroups,omitempty"`
	MountPoints  []string         `json:"mountPoints,omitempty"`
	Devices      []string         `json:"devices,omitempty"`
	UpdateStatus UpdateStatusInfo `json:"updateStatusInfo,omitempty"`
}

// StoragePhase is the lifecycle phase of a node's storage.
// +kubebuilder:validation:Enum=Pending;Running;Terminated
type StoragePhase string

// Storage phases.
const (
	NodeStoragePending    StoragePhase = "Pending"
	NodeStorageRunning    StoragePhase = "Running"
	NodeStorageTerminated StoragePhase = "Terminated"
)

// VolumeGroup is an LVM volume group.
type VolumeGroup struct {
	// Name is the VG name.
	Name string `json:"name"`
	// PhysicalVolumes are the block devices of the VG.
	PhysicalVolumes []string `json:"physicalVolumes"`
	// LogicalVolumes are the LVs in the VG.
	LogicalVolumes []LogicalVolume `json:"logicalVolumes,omitempty"`
	// Total is the VG size in bytes.
	Total uint64 `json:"total"`
	// Available is the VG's free space in bytes.
	Available uint64 `json:"available"`
	// Allocatable is what open-local may use: Total minus LVs it does not own
	// minus the reserve annotation.
	Allocatable uint64 `json:"allocatable"`
	// ExtentSize is the VG's physical extent size in bytes: LVM allocates
	// whole extents, so a volume takes its size rounded up to it (not in
	// open-local's schema: an addition older readers ignore; the scheduler
	// assumes LVM's default, 4 MiB, when it is absent).
	// +optional
	ExtentSize uint64 `json:"extentSize,omitempty"`
	// Condition is the VG's condition.
	Condition StorageConditionType `json:"condition,omitempty"`
	// ThinPools are the VG's thin pools (not in open-local's schema: an
	// addition older readers ignore). Their space is not in Allocatable.
	// +optional
	ThinPools []ThinPool `json:"thinPools,omitempty"`
}

// ThinPool is an LVM thin pool. Thin volumes are counted against it by
// their virtual size, up to Allocatable = OverprovisionRatio × Total.
type ThinPool struct {
	// Name is the pool LV's name.
	Name string `json:"name"`
	// Total is the size of the pool's data space in bytes.
	Total uint64 `json:"total"`
	// Used is the pool's data space written so far, in bytes (lvm's data_percent).
	Used uint64 `json:"used"`
	// DataPercent is how full the pool's data space is (lvm's
	// data_percent, rounded up). Absent when lvm reports none (an inactive
	// pool, or lvm without device-mapper): unknown, not empty.
	// +optional
	DataPercent *int32 `json:"dataPercent,omitempty"`
	// MetadataPercent is how full the pool's metadata space is (lvm's
	// metadata_percent, rounded up); absent when unknown, as DataPercent.
	// A full metadata space stops every thin volume of the pool.
	// +optional
	MetadataPercent *int32 `json:"metadataPercent,omitempty"`
	// OverprovisionRatio is what the node's configuration
	// (resourceToBeInited.vgs[].thinPool) says, 1 when it says nothing.
	OverprovisionRatio resource.Quantity `json:"overprovisionRatio"`
	// Allocatable is the virtual size open-local's thin volumes may have
	// together in the pool: OverprovisionRatio × Total.
	Allocatable uint64 `json:"allocatable"`
}

// LogicalVolume is an LVM logical volume.
type LogicalVolume struct {
	Name   string `json:"name"`
	VGName string `json:"vgname"`
	// Total is the LV size in bytes.
	Total     uint64               `json:"total"`
	ReadOnly  bool                 `json:"readOnly,omitempty"`
	Condition StorageConditionType `json:"condition,omitempty"`
	// Orphan: the LV looks like open-local's (tag or name prefix) but no
	// LocalVolume of the node names it, so the scheduler counts it nowhere;
	// its space is kept out of the VG's allocatable until an operator
	// adopts it (a LocalVolume naming it) or removes it. Not in open-local.
	Orphan bool `json:"orphan,omitempty"`
}

// MountPoint is a mounted filesystem on the node.
type MountPoint struct {
	Name      string               `json:"name,omitempty"`
	Total     uint64               `json:"total"`
	Available uint64               `json:"available"`
	FsType    string               `json:"fsType,omitempty"`
	IsBind    bool                 `json:"isBind"`
	Options   []string             `json:"options,omitempty"`
	Device    string               `json:"device,omitempty"`
	ReadOnly  bool                 `json:"readOnly"`
	Condition StorageConditionType `json:"condition,omitempty"`
}

// DeviceInfo is a raw block device (or partition) on the node.
type DeviceInfo struct {
	// Name is the device path, e.g. /dev/sdb.
	Name string `json:"name,omitempty"`
	// MediaType is ssd or hdd (from queue/rotational).
	MediaType string `json:"mediaType,omitempty"`
	// Total is the device size in bytes.
	Total     uint64               `json:"total"`
	ReadOnly  bool                 `json:"readOnly"`
	Condition StorageConditionType `json:"condition,omitempty"`
	// InUse says why the device is not free to hand out whole, e.g.
	// "physical volume of VG x", "held by dm-0", "mounted at /var",
	// "has partitions /dev/sdb1", "disk /dev/sdb is held by LocalVolume y"
	// (empty: free). A device in use is left out of filteredStorageInfo.
	// Not in open-local's schema: an addition older readers ignore.
	// +optional
	InUse string `json:"inUse,omitempty"`
	// Parent is the disk of a partition (empty for a disk): a disk and
	// its partitions are never handed out at the same time. Not in
	// open-local's schema.
	// +optional
	Parent string `json:"parent,omitempty"`
	// Released is set while a Device volume released from this device
	// waits for its wipe (LocalVolume phase Quarantined): the device is
	// held until then. Not in open-local's schema.
	// +optional
	Released string `json:"released,omitempty"`
}

// StorageConditionType is the health of a storage resource.
type StorageConditionType string

// Storage conditions.
const (
	StorageReady StorageConditionType = "DiskReady"
	StorageFull  StorageConditionType = "DiskFull"
	StorageFault StorageConditionType = "DiskFault"
)

// ConditionStatus is True, False or Unknown.
type ConditionStatus string

// Condition statuses.
const (
	ConditionTrue    ConditionStatus = "True"
	ConditionFalse   ConditionStatus = "False"
	ConditionUnknown ConditionStatus = "Unknown"
)

// StorageState is the overall state of the node's storage.
type StorageState struct {
	Type   StorageConditionType `json:"type,omitempty"`
	Status ConditionStatus      `json:"status,omitempty"`
	// +optional
	LastHeartbeatTime *metav1.Time `json:"lastHeartbeatTime,omitempty"`
	// +optional
	LastTransitionTime *metav1.Time `json:"lastTransitionTime,omitempty"`
	// +optional
	Reason string `json:"reason,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}
