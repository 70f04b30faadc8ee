/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package controller

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// nodeStorage is one node's capacity (its NodeLocalStorage status) and the
// allocations on it (its LocalVolumes), read from the API, not a cache:
// the controller's own choices must see its previous ones.
type nodeStorage struct {
	name    string
	nls     *v1alpha1.NodeLocalStorage // nil: the node has no NodeLocalStorage
	volumes []v1alpha1.LocalVolume
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
	ns.volumes = list.Items
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
	for _, v := range vols.Items {
		if n := byNode[v.Spec.NodeName]; n != nil {
			n.volumes = append(n.volumes, v)
		}
	}
	return nodes, nil
}

// vgSpace is the room left in one VG of a node.
type vgSpace struct {
	name              string
	allocatable, used int64
}

func (v vgSpace) free() int64 { return max(v.allocatable-v.used, 0) }

// vgs returns the VGs open-local may use on the node (the NodeLocalStorage's
// filtered list), with allocations subtracted (whole extents, as the
// scheduler counts them); exclude is a LocalVolume whose own size must not
// count (the one being expanded).
func (n *nodeStorage) vgs(exclude string) []vgSpace {
	if n.nls == nil {
		return nil
	}
	var out []vgSpace
	for _, vg := range n.nls.Status.NodeStorageInfo.VolumeGroups {
		if !slices.Contains(n.nls.Status.FilteredStorageInfo.VolumeGroups, vg.Name) {
			continue
		}
		sp := vgSpace{name: vg.Name, allocatable: int64(min(vg.Allocatable, 1<<62))}
		for _, v := range n.volumes {
			if v.Name != exclude && v.Spec.VolumeType == v1alpha1.VolumeTypeLVM && v.Spec.VGName == vg.Name && v.Spec.ThinPool == "" {
				sp.used += v1alpha1.ExtentRounded(v.Spec.CountedSize(), int64(min(vg.ExtentSize, 1<<62)))
			}
		}
		out = append(out, sp)
	}
	return out
}

// poolSpace is the virtual room left in one thin pool of a node.
type poolSpace struct {
	vg, name          string
	allocatable, used int64
}

func (p poolSpace) free() int64 { return max(p.allocatable-p.used, 0) }

// pools returns the thin pools of the VGs open-local may use on the node,
// with the virtual sizes of their volumes subtracted (the same count as
// the scheduler's: v1alpha1.LocalVolumeSpec.CountedSize); exclude is not
// counted.
func (n *nodeStorage) pools(exclude string) []poolSpace {
	if n.nls == nil {
		return nil
	}
	var out []poolSpace
	for _, vg := range n.nls.Status.NodeStorageInfo.VolumeGroups {
		if !slices.Contains(n.nls.Status.FilteredStorageInfo.VolumeGroups, vg.Name) {
			continue
		}
		for _, p := range vg.ThinPools {
			sp := poolSpace{vg: vg.Name, name: p.Name, allocatable: int64(min(p.Allocatable, 1<<62))}
			for _, v := range n.volumes {
				if v.Name != exclude && v.Spec.VGName == vg.Name && v.Spec.ThinPool == p.Name {
					sp.used += v.Spec.CountedSize()
				}
			}
			out = append(out, sp)
		}
	}
	return out
}

// deviceSpace is a whole device open-local may hand out.
type deviceSpace struct {
	name      string
	mediaType string
	size      int64
	used      bool
}

func (n *nodeStorage) devices() []deviceSpace {
	if n.nls == nil {
		return nil
	}
	var out []deviceSpace
	for _, d := range n.nls.Status.NodeStorageInfo.DeviceInfos {
		if !slices.Contains(n.nls.Status.FilteredStorageInfo.Devices, d.Name) || d.ReadOnly {
			continue
		}
		ds := deviceSpace{name: d.Name, mediaType: d.MediaType, size: int64(d.Total)}
		for _, v := range n.volumes {
			if v.Spec.VolumeType == v1alpha1.VolumeTypeDevice && v.Spec.Device == d.Name {
				ds.used = true
			}
		}
		out = append(out, ds)
	}
	return out
}

// capacity is what GetCapacity reports for one node and StorageClass.
func (n *nodeStorage) capacity(p parameters.Params) (total, maxVolume int64) {
	if p.VolumeType == v1alpha1.VolumeTypeDevice {
		for _, d := range n.devices() {
			if !d.used && d.mediaType == p.MediaType {
				total += d.size
				maxVolume = max(maxVolume, d.size)
			}
		}
		return total, maxVolume
	}
	if p.ThinPool != "" {
		// Virtual sizes, as the scheduler counts them.
		for _, pool := range n.pools("") {
			if pool.name == p.ThinPool && (p.VGName == "" || pool.vg == p.VGName) {
				total += pool.free()
				maxVolume = max(maxVolume, pool.free())
			}
		}
		return total, maxVolume
	}
	for _, vg := range n.vgs("") {
		if p.VGName != "" && vg.name != p.VGName {
			continue
		}
		total += vg.free()
		// An LV lives in one VG: the largest volume is the largest free VG.
		maxVolume = max(maxVolume, vg.free())
	}
	return total, maxVolume
}

// placement is where a new volume goes.
type placement struct {
	node     string
	vg       string
	thinPool string
	device   string
	size     int64 // device volumes: the whole device
}

// place chooses a VG (the one with the most free space: it keeps the most
// room for later volumes everywhere) or a device (the smallest that fits:
// big disks stay for big requests). ResourceExhausted explains why nothing fits.
func (n *nodeStorage) place(p parameters.Params, size int64) (placement, error) {
	if n.nls == nil {
		return placement{}, status.Errorf(codes.ResourceExhausted,
			"node %s has no NodeLocalStorage: open-local's agent does not run there", n.name)
	}
	if p.VolumeType == v1alpha1.VolumeTypeDevice {
		var fits []deviceSpace
		var seen []string
		for _, d := range n.devices() {
			if d.mediaType != p.MediaType {
				continue
			}
			seen = append(seen, fmt.Sprintf("%s %s%s", d.name, quantity(d.size), map[bool]string{true: " (in use)"}[d.used]))
			if !d.used && d.size >= size {
				fits = append(fits, d)
			}
		}
		if len(fits) == 0 {
			return placement{}, status.Errorf(codes.ResourceExhausted,
				"node %s: no free %s device of at least %s (devices: %s)", n.name, p.MediaType, quantity(size), listOrNone(seen))
		}
		sort.Slice(fits, func(i, j int) bool { return fits[i].size < fits[j].size })
		return placement{node: n.name, device: fits[0].name, size: fits[0].size}, nil
	}
	if p.ThinPool != "" {
		return n.placeThin(p, size)
	}
	var best *vgSpace
	var seen []string
	vgs := n.vgs("")
	for i, vg := range vgs {
		if p.VGName != "" && vg.name != p.VGName {
			continue
		}
		seen = append(seen, fmt.Sprintf("VG %s free %s", vg.name, quantity(vg.free())))
		if vg.free() >= size && (best == nil || vg.free() > best.free()) {
			best = &vgs[i]
		}
	}
	if best == nil {
		if p.VGName != "" {
			if len(seen) == 0 {
				return placement{}, status.Errorf(codes.ResourceExhausted,
					"VG %s on node %s: not in the node's NodeLocalStorage status (missing, or filtered out by the NodeLocalStorageInitConfig)", p.VGName, n.name)
			}
			return placement{}, status.Errorf(codes.ResourceExhausted, "VG %s on node %s: need %s, %s", p.VGName, n.name, quantity(size), seen[0])
		}
		return placement{}, status.Errorf(codes.ResourceExhausted, "node %s: no VG has %s free (%s)", n.name, quantity(size), listOrNone(seen))
	}
	return placement{node: n.name, vg: best.name, size: size}, nil
}

// placeThin chooses the pool named p.ThinPool (in p.VGName, if set) with
// the most virtual room.
func (n *nodeStorage) placeThin(p parameters.Params, size int64) (placement, error) {
	var best *poolSpace
	var seen []string
	pools := n.pools("")
	for i, pool := range pools {
		if pool.name != p.ThinPool || (p.VGName != "" && pool.vg != p.VGName) {
			continue
		}
		seen = append(seen, fmt.Sprintf("thin pool %s/%s free %s", pool.vg, pool.name, quantity(pool.free())))
		if pool.free() >= size && (best == nil || pool.free() > best.free()) {
			best = &pools[i]
		}
	}
	if best == nil {
		if len(seen) == 0 {
			return placement{}, status.Errorf(codes.ResourceExhausted, "node %s has no thin pool %s%s in its NodeLocalStorage status", n.name, p.ThinPool, inVG(p.VGName))
		}
		return placement{}, status.Errorf(codes.ResourceExhausted, "node %s: no thin pool %s has %s of virtual size free (%s)", n.name, p.ThinPool, quantity(size), strings.Join(seen, ", "))
	}
	return placement{node: n.name, vg: best.vg, thinPool: best.name, size: size}, nil
}

func inVG(vg string) string {
	if vg == "" {
		return ""
	}
	return " in VG " + vg
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none in the node's NodeLocalStorage status"
	}
	return strings.Join(s, ", ")
}

func quantity(n int64) string { return resource.NewQuantity(n, resource.BinarySI).String() }
