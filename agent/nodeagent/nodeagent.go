/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package nodeagent is the contract between the agent binary and its
// per-node controllers (the NodeLocalStorage reporter, the LocalVolume
// reconciler): the agent builds one Env from its flags and runs every
// Controller with it until shutdown.
package nodeagent

import (
	"context"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"

	"github.com/open-local/open-local/apis/client/clientset/versioned"
	"github.com/open-local/open-local/lvm"
)

// Env is what the agent gives every per-node controller.
type Env struct {
	// NodeName is the Node (and NodeLocalStorage) this agent serves.
	NodeName string
	// Kube and OpenLocal are API clients (Events, Nodes; our CRDs).
	Kube      kubernetes.Interface
	OpenLocal versioned.Interface
	// LVM runs lvm2 with the agent's configuration (--lvm-system-dir); with
	// a loop Activator it allocates contiguously (see lvm.WithAlloc).
	LVM *lvm.Client
	// Activator turns LVs into block devices (--activation).
	Activator lvm.Activator
	// Recorder emits Events from component "open-local-agent" on this node.
	Recorder record.EventRecorder
}

// Controller is one per-node loop.
type Controller interface {
	// Run works until ctx is done; an error ends the agent.
	Run(ctx context.Context) error
}

// ControllerFunc adapts a function to Controller.
type ControllerFunc func(ctx context.Context) error

// Run implements Controller.
func (f ControllerFunc) Run(ctx context.Context) error { return f(ctx) }
