package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeLocalStorageInitConfig is the cluster-wide template from which the NLS
// controller writes each node's NodeLocalStorage spec: globalConfig for every
// node, replaced as a whole by the last nodesConfig entry whose selector
// matches the node's labels.
//
// +genclient
// +genclient:nonNamespaced
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=nlsc
type NodeLocalStorageInitConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec NodeLocalStorageInitConfigSpec `json:"spec,omitempty"`
}

// NodeLocalStorageInitConfigList contains a list of NodeLocalStorageInitConfig.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type NodeLocalStorageInitConfigList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeLocalStorageInitConfig `json:"items"`
}

// NodeLocalStorageInitConfigSpec is the spec of NodeLocalStorageInitConfig.
type NodeLocalStorageInitConfigSpec struct {
	// GlobalConfig applies to every node that no nodesConfig entry selects.
	GlobalConfig GlobalConfig `json:"globalConfig,omitempty"`
	// NodesConfig entries apply to the nodes their selector matches; the last match wins.
	NodesConfig []NodeConfig `json:"nodesConfig,omitempty"`
}

// GlobalConfig is the default NodeLocalStorage spec.
type GlobalConfig struct {
	SpdkConfig         SpdkConfig         `json:"spdkConfig,omitempty"`
	ListConfig         ListConfig         `json:"listConfig,omitempty"`
	ResourceToBeInited ResourceToBeInited `json:"resourceToBeInited,omitempty"`
}

// NodeConfig is the NodeLocalStorage spec of the nodes its selector matches.
type NodeConfig struct {
	Selector           *metav1.LabelSelector `json:"selector,omitempty"`
	SpdkConfig         SpdkConfig            `json:"spdkConfig,omitempty"`
	ListConfig         ListConfig            `json:"listConfig,omitempty"`
	ResourceToBeInited ResourceToBeInited    `json:"resourceToBeInited,omitempty"`
}
