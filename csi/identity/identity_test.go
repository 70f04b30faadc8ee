/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package identity

import (
	"slices"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	storagev1 "k8s.io/api/storage/v1"
)

func TestCSIDriver(t *testing.T) {
	d, err := CSIDriver("other.csi.example")
	if err != nil {
		t.Fatal(err)
	}
	s := d.Spec
	if d.Name != "other.csi.example" || s.AttachRequired == nil || *s.AttachRequired || s.PodInfoOnMount == nil || !*s.PodInfoOnMount ||
		s.StorageCapacity == nil || !*s.StorageCapacity ||
		!slices.Equal(s.VolumeLifecycleModes, []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent, storagev1.VolumeLifecycleEphemeral}) {
		t.Fatalf("CSIDriver = %+v", d)
	}
}

func TestIdentity(t *testing.T) {
	s := New(DefaultDriverName, "v1")
	info, err := s.GetPluginInfo(t.Context(), &csi.GetPluginInfoRequest{})
	if err != nil || info.Name != DefaultDriverName || info.VendorVersion != "v1" {
		t.Fatalf("GetPluginInfo = %v, %v", info, err)
	}
	caps, err := s.GetPluginCapabilities(t.Context(), &csi.GetPluginCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var services []csi.PluginCapability_Service_Type
	online := false
	for _, c := range caps.Capabilities {
		if svc := c.GetService(); svc != nil {
			services = append(services, svc.Type)
		}
		online = online || c.GetVolumeExpansion().GetType() == csi.PluginCapability_VolumeExpansion_ONLINE
	}
	if !slices.Contains(services, csi.PluginCapability_Service_CONTROLLER_SERVICE) ||
		!slices.Contains(services, csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS) || !online {
		t.Fatalf("capabilities = %v", caps.Capabilities)
	}
	if p, err := s.Probe(t.Context(), &csi.ProbeRequest{}); err != nil || !p.Ready.GetValue() {
		t.Fatalf("Probe = %v, %v", p, err)
	}
}
