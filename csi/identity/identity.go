/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package identity is the CSI Identity service and the driver's CSIDriver
// object.
package identity

import (
	"context"
	_ "embed"
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/protobuf/types/known/wrapperspb"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/util/yaml"
)

// DefaultDriverName is open-local's provisioner name.
const DefaultDriverName = "local.csi.aliyun.com"

//go:embed csidriver.yaml
var csiDriverYAML []byte

// CSIDriverYAML is the CSIDriver manifest for the default driver name.
func CSIDriverYAML() []byte { return csiDriverYAML }

// CSIDriver returns the CSIDriver object for driverName.
func CSIDriver(driverName string) (*storagev1.CSIDriver, error) {
	var d storagev1.CSIDriver
	if err := yaml.UnmarshalStrict(csiDriverYAML, &d); err != nil {
		return nil, fmt.Errorf("csidriver.yaml: %w", err)
	}
	d.Name = driverName
	return &d, nil
}

// Server implements csi.IdentityServer.
type Server struct {
	csi.UnimplementedIdentityServer
	name, version string
}

// New returns the Identity service of a driver named name.
func New(name, version string) *Server {
	return &Server{name: name, version: version}
}

// GetPluginInfo returns the driver name and version.
func (s *Server) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: s.name, VendorVersion: s.version}, nil
}

// GetPluginCapabilities: the controller service, topology (volumes live on
// one node) and online expansion. Node-mode processes advertise the
// controller service too: it describes the plugin, whose controller runs in
// another process (as with every split CSI deployment).
func (s *Server) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	svc := func(t csi.PluginCapability_Service_Type) *csi.PluginCapability {
		return &csi.PluginCapability{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: t}}}
	}
	caps := []*csi.PluginCapability{
		svc(csi.PluginCapability_Service_CONTROLLER_SERVICE),
		svc(csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS),
		{Type: &csi.PluginCapability_VolumeExpansion_{VolumeExpansion: &csi.PluginCapability_VolumeExpansion{
			Type: csi.PluginCapability_VolumeExpansion_ONLINE}}},
	}
	return &csi.GetPluginCapabilitiesResponse{Capabilities: caps}, nil
}

// Probe reports ready: the services answer only once their dependencies
// (API clients, the LVM layer) were set up in main.
func (s *Server) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}
