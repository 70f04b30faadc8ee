// Package v1alpha1 holds the csi.aliyun.com/v1alpha1 API: NodeLocalStorage and
// NodeLocalStorageInitConfig (schema-compatible with alibaba/open-local, so its
// users can switch) and LocalVolume, our allocation record.
//
// +kubebuilder:object:generate=true
// +groupName=csi.aliyun.com
package v1alpha1
