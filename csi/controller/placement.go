/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package controller

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// nodeStorage is one node's capacity (its NodeLocalStorage status) and the
// allocations on it (its LocalVolumes), read from the API, not a cache:
// the controller's own choices must see its previous ones.
type nodeStorage struct {
	name    string
	nls     *v1alpha1.NodeLocalStorage // nil: the node has no NodeLocalStorage
	volumes []*v1alpha1.LocalVolume
}

func (s *Server) readNode(ctx context.Context, node string) (*nodeStorage, error) {
	ns := &nodeStorage{name: node}
	nls, err := s.client.CsiV1alpha1().NodeLocalStorages().Get(ctx, node, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "read NodeLocalStorage %s: %v", node, err)
	default:
		ns.nls = nls
	}
	list, err := s.client.CsiV1alpha1().LocalVolumes().List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String()})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "list LocalVolumes of node %s: %v", node, err)
	}
	for i := range list.Items {
		ns.volumes = append(ns.volumes, &list.Items[i])
	}
	return ns, nil
}

// readAllNodes reads every node that has a NodeLocalStorage.
func (s *Server) readAllNodes(ctx context.Context) ([]*nodeStorage, error) {
	nlsList, err := s.client.CsiV1alpha1().NodeLocalStorages().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "list NodeLocalStorages: %v", err)
	}
	vols, err := s.client.CsiV1alpha1().LocalVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "list LocalVolumes: %v", err)
	}
	byNode := map[string]*nodeStorage{}
	var nodes []*nodeStorage
	for i := range nlsList.Items {
		n := &nodeStorage{name: nlsList.Items[i].Name, nls: &nlsList.Items[i]}
		byNode[n.name] = n
		nodes = append(nodes, n)
	}
	for i := range vols.Items {
		if n := byNode[vols.Items[i].Spec.NodeName]; n != nil {
			n.volumes = append(n.volumes, &vols.Items[i])
		}
	}
	return nodes, nil
}

// strategy is how the controller chooses among a node's VGs (and among
// nodes, when the CO names none) for volumes the scheduler did not place:
// spread keeps the most room everywhere for the scheduler, which placed
// everything else (its own strategy is its configuration, not known here).
const strategy = ledger.Spread

// ledgerOf builds a ledger of the nodes read: the same capacity model the
// scheduler keeps (StorageFault and filtered-out VGs, extents, thin pools,
// devices, DiskFault and silent nodes), over what the API says now.
func (s *Server) ledgerOf(nodes ...*nodeStorage) *ledger.Ledger {
	l := ledger.New()
	l.SetFill(s.fill)
	for _, n := range nodes {
		l.AddNode(n.name, n.nls, n.volumes)
	}
	return l
}

// want is the ledger's view of a volume of class p and size bytes.
func want(id string, p parameters.Params, size int64) ledger.Volume {
	return ledger.Volume{Name: id, Desc: "volume " + id, Type: p.VolumeType, VG: p.VGName,
		ThinPool: p.ThinPool, MediaType: p.MediaType, Size: size,
		Striped: p.Striped()}
}

// capacity is what GetCapacity reports for one node and StorageClass.
func (n *nodeStorage) capacity(l *ledger.Ledger, p parameters.Params) (total, maxVolume int64) {
	return l.Capacity(n.name, want("", p, 0))
}

// placement is where a new volume goes.
type placement struct {
	node     string
	vg       string
	thinPool string
	device   string
	size     int64 // device volumes: the whole device
}

// place chooses a VG, thin pool or device for a new volume on the node
// (see strategy; devices: the smallest that fits, big disks stay for big
// requests). ResourceExhausted explains why nothing fits.
func (n *nodeStorage) place(l *ledger.Ledger, id string, p parameters.Params, size int64) (placement, error) {
	a, sf := l.Place(n.name, want(id, p, size), strategy)
	if sf != nil {
		return placement{}, shortfallError(sf, codes.ResourceExhausted)
	}
	pl := placement{node: n.name, vg: a.VG, thinPool: a.ThinPool, device: a.Device, size: size}
	if a.Device != "" {
		for _, d := range n.nls.Status.NodeStorageInfo.DeviceInfos {
			if d.Name == a.Device {
				pl.size = int64(min(d.Total, 1<<62))
			}
		}
	}
	return pl, nil
}

// checkVG fails with ResourceExhausted when vg lacks size bytes (whole
// extents) for what, a new LV.
func (n *nodeStorage) checkVG(l *ledger.Ledger, vg string, size int64, what string) error {
	v := ledger.Volume{Name: what, Desc: what, Type: v1alpha1.VolumeTypeLVM, VG: vg, Size: size}
	if _, sf := l.Place(n.name, v, strategy); sf != nil {
		return shortfallError(sf, codes.FailedPrecondition)
	}
	return nil
}

// checkPool fails with ResourceExhausted when thin pool vg/pool lacks size
// bytes of virtual room for what.
func (n *nodeStorage) checkPool(l *ledger.Ledger, vg, pool string, size int64, what string) error {
	v := ledger.Volume{Name: what, Desc: what, Type: v1alpha1.VolumeTypeLVM, VG: vg, ThinPool: pool, Size: size}
	if _, sf := l.Place(n.name, v, strategy); sf != nil {
		return shortfallError(sf, codes.FailedPrecondition)
	}
	return nil
}

// shortfallError is the gRPC error for a ledger shortfall: ResourceExhausted
// when space is short (csi-provisioner reschedules), missing the code the
// caller gives for a VG or pool the node does not offer.
func shortfallError(sf *ledger.Shortfall, missing codes.Code) error {
	what := sf.Volume.Desc
	switch sf.Kind {
	case ledger.NoStorage:
		return status.Errorf(codes.ResourceExhausted, "node %s has no NodeLocalStorage: open-local's agent does not run there", sf.Node)
	case ledger.NodeUnavailable:
		return status.Errorf(codes.ResourceExhausted, "%s: no new volumes go there", sf.Detail())
	case ledger.NoSuchVG:
		return status.Errorf(missing, "VG %s on node %s: not in the node's NodeLocalStorage status (missing, DiskFault, or filtered out by the NodeLocalStorageInitConfig): cannot place %s", sf.VG, sf.Node, what)
	case ledger.NoSuchPool:
		return status.Errorf(missing, "node %s has no thin pool %s%s in its NodeLocalStorage status: cannot place %s", sf.Node, sf.Pool, inVG(sf.VG), what)
	case ledger.VGFull:
		return status.Errorf(codes.ResourceExhausted, "VG %s on node %s: need %s for %s, free %s (whole extents)", sf.VG, sf.Node, quantity(sf.Need), what, quantity(sf.Free))
	case ledger.NoVGFits:
		return status.Errorf(codes.ResourceExhausted, "node %s: no VG has %s free for %s (largest free %s)", sf.Node, quantity(sf.Need), what, quantity(sf.Free))
	case ledger.PoolFull:
		pool := sf.Pool
		if sf.VG != "" {
			pool = sf.VG + "/" + sf.Pool
		}
		return status.Errorf(codes.ResourceExhausted, "thin pool %s on node %s: need %s of virtual size for %s, free %s", pool, sf.Node, quantity(sf.Need), what, quantity(sf.Free))
	case ledger.NoDevice:
		return status.Errorf(codes.ResourceExhausted, "node %s: no free %s device of at least %s for %s (largest free %s)", sf.Node, sf.MediaType, quantity(sf.Need), what, quantity(sf.Free))
	}
	return status.Errorf(codes.ResourceExhausted, "%s", sf.Detail())
}

func inVG(vg string) string {
	if vg == "" {
		return ""
	}
	return " in VG " + vg
}

func quantity(n int64) string { return resource.NewQuantity(n, resource.BinarySI).String() }
