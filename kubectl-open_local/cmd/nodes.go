/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package cmd

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-local/open-local/apis/storage/ledger"
	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// NodeReport is one node's storage as the scheduler accounts it.
type NodeReport struct {
	Node string `json:"node"`
	// State is the agent's NLS state (DiskReady, DiskFault), "Stale" when
	// its heartbeat is older than the scheduler tolerates.
	State        string         `json:"state"`
	Reason       string         `json:"reason,omitempty"`
	Heartbeat    *metav1.Time   `json:"lastHeartbeatTime,omitempty"`
	HeartbeatAge string         `json:"heartbeatAge,omitempty"`
	VGs          []VGReport     `json:"volumeGroups"`
	Devices      []DeviceReport `json:"devices,omitempty"`
}

// VGReport is one VG: Total as LVM reports it, Allocatable what the
// scheduler may hand out, Allocated its LocalVolumes (extent-rounded, as
// the ledger counts them), Free the difference.
type VGReport struct {
	Name        string       `json:"name"`
	Schedulable bool         `json:"schedulable"`
	Total       int64        `json:"total"`
	Allocatable int64        `json:"allocatable"`
	Allocated   int64        `json:"allocated"`
	Free        int64        `json:"free"`
	ExtentSize  int64        `json:"extentSize"`
	ThinPools   []PoolReport `json:"thinPools,omitempty"`
}

// PoolReport is a thin pool: Virtual is the virtual size of its volumes,
// counted against Allocatable (Size × OverprovisionRatio).
type PoolReport struct {
	Name               string `json:"name"`
	Size               int64  `json:"size"`
	OverprovisionRatio string `json:"overprovisionRatio"`
	Allocatable        int64  `json:"allocatable"`
	Virtual            int64  `json:"virtual"`
	Free               int64  `json:"free"`
	DataPercent        *int32 `json:"dataPercent,omitempty"`
	MetadataPercent    *int32 `json:"metadataPercent,omitempty"`
	// OverFilled: past the default fill thresholds, the pool takes no new volume.
	OverFilled string `json:"overFilled,omitempty"`
}

// DeviceReport is a whole disk: free, held (by LocalVolumes), quarantined
// (released, waiting for its wipe) or excluded (not in filteredStorageInfo).
type DeviceReport struct {
	Name      string   `json:"name"`
	MediaType string   `json:"mediaType,omitempty"`
	Size      int64    `json:"size"`
	State     string   `json:"state"`
	Holders   []string `json:"holders,omitempty"`
}

// Device states.
const (
	DeviceFree        = "free"
	DeviceHeld        = "held"
	DeviceQuarantined = "quarantined"
	DeviceExcluded    = "excluded"
)

func (o *options) nodesCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "nodes [NODE...]",
		Short: "Per node and VG: total, allocatable, allocated (as the scheduler counts), free, thin pools, devices, agent state",
		RunE: func(c *cobra.Command, args []string) error {
			if err := o.complete(); err != nil {
				return err
			}
			nls, lvs, err := o.storage(c.Context())
			if err != nil {
				return err
			}
			if len(args) > 0 {
				nls = slices.DeleteFunc(nls, func(n v1alpha1.NodeLocalStorage) bool { return !slices.Contains(args, nodeName(&n)) })
			}
			rep := nodeReports(nls, lvs)
			if done, err := o.structured(rep); done {
				return err
			}
			return o.printNodes(rep)
		},
	}
}

// storage lists the NodeLocalStorages (-l applies) and every LocalVolume:
// usage is all of a node's volumes, whatever the selector.
func (o *options) storage(ctx context.Context) ([]v1alpha1.NodeLocalStorage, []v1alpha1.LocalVolume, error) {
	nls, err := o.ol.CsiV1alpha1().NodeLocalStorages().List(ctx, metav1.ListOptions{LabelSelector: o.selector})
	if err != nil {
		return nil, nil, err
	}
	lvs, err := o.ol.CsiV1alpha1().LocalVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, err
	}
	slices.SortFunc(nls.Items, func(a, b v1alpha1.NodeLocalStorage) int { return strings.Compare(nodeName(&a), nodeName(&b)) })
	slices.SortFunc(lvs.Items, func(a, b v1alpha1.LocalVolume) int { return strings.Compare(a.Name, b.Name) })
	return nls.Items, lvs.Items, nil
}

func nodeName(n *v1alpha1.NodeLocalStorage) string {
	if n.Spec.NodeName != "" {
		return n.Spec.NodeName
	}
	return n.Name
}

// newLedger builds the scheduler's ledger from the API: the same
// SetNodeStorage / SetVolume the scheduler's informers call, without
// reservations (only a running scheduler has those in flight).
func newLedger(nls []v1alpha1.NodeLocalStorage, lvs []v1alpha1.LocalVolume) *ledger.Ledger {
	l := ledger.New()
	l.SetClock(now, ledger.DefaultStaleAfter)
	l.SetFill(ledger.DefaultFill)
	for i := range nls {
		l.SetNodeStorage(&nls[i])
	}
	for i := range lvs {
		l.SetVolume(&lvs[i])
	}
	return l
}

func nodeReports(nls []v1alpha1.NodeLocalStorage, lvs []v1alpha1.LocalVolume) []NodeReport {
	l := newLedger(nls, lvs)
	vgUse := map[[2]string]ledger.VGUsage{}
	devUse := map[[2]string]ledger.DeviceUsage{}
	poolUse := map[[3]string]ledger.PoolUsage{}
	l.Visit(func(u ledger.VGUsage) { vgUse[[2]string{u.Node, u.VG}] = u },
		func(u ledger.DeviceUsage) { devUse[[2]string{u.Node, u.Device}] = u })
	l.VisitPools(func(u ledger.PoolUsage) { poolUse[[3]string{u.Node, u.VG, u.Pool}] = u })
	quarantined := map[[2]string]string{} // node, device -> LocalVolume
	for i := range lvs {
		if lv := &lvs[i]; lv.Status.Phase == v1alpha1.PhaseQuarantined {
			quarantined[[2]string{lv.Spec.NodeName, lv.Spec.Device}] = lv.Name
		}
	}

	out := make([]NodeReport, 0, len(nls))
	for i := range nls {
		n := &nls[i]
		name := nodeName(n)
		st := &n.Status.NodeStorageInfo.State
		r := NodeReport{Node: name, State: string(st.Type), Reason: st.Reason, Heartbeat: st.LastHeartbeatTime, VGs: []VGReport{}}
		if r.State == "" {
			r.State = "Unknown"
		}
		if hb := st.LastHeartbeatTime; hb != nil {
			r.HeartbeatAge = age(hb.Time)
			if now().Sub(hb.Time) > ledger.DefaultStaleAfter {
				r.State, r.Reason = "Stale", fmt.Sprintf("no heartbeat for %s (the scheduler places nothing here after %s)", r.HeartbeatAge, ledger.DefaultStaleAfter)
			}
		}
		for _, g := range n.Status.NodeStorageInfo.VolumeGroups {
			u := vgUse[[2]string{name, g.Name}]
			vr := VGReport{Name: g.Name, Schedulable: u.Schedulable, Total: clamp(g.Total), Allocatable: u.Capacity,
				Allocated: u.Used, Free: u.Capacity - u.Used, ExtentSize: clamp(g.ExtentSize)}
			if vr.ExtentSize == 0 {
				vr.ExtentSize = v1alpha1.DefaultExtentSize
			}
			if !u.Schedulable {
				vr.Allocatable, vr.Free = 0, 0
			}
			for _, p := range g.ThinPools {
				pu := poolUse[[3]string{name, g.Name, p.Name}]
				pr := PoolReport{Name: p.Name, Size: clamp(p.Total), OverprovisionRatio: p.OverprovisionRatio.String(),
					Allocatable: pu.Capacity, Virtual: pu.Used, Free: pu.Capacity - pu.Used,
					DataPercent: p.DataPercent, MetadataPercent: p.MetadataPercent}
				if what, fill, threshold, over := ledger.DefaultFill.Exceeded(p); over {
					pr.OverFilled = fmt.Sprintf("%s %d%% > %d%%", what, fill, threshold)
				}
				vr.ThinPools = append(vr.ThinPools, pr)
			}
			r.VGs = append(r.VGs, vr)
		}
		filtered := map[string]bool{}
		for _, d := range n.Status.FilteredStorageInfo.Devices {
			filtered[d] = true
		}
		for _, d := range n.Status.NodeStorageInfo.DeviceInfos {
			u := devUse[[2]string{name, d.Name}]
			dr := DeviceReport{Name: d.Name, MediaType: d.MediaType, Size: clamp(d.Total), State: DeviceFree, Holders: u.Holders}
			switch {
			case d.Released != "" || quarantined[[2]string{name, d.Name}] != "":
				dr.State = DeviceQuarantined
			case len(u.Holders) > 0:
				dr.State = DeviceHeld
			case !filtered[d.Name] || !u.Schedulable:
				dr.State = DeviceExcluded
			}
			r.Devices = append(r.Devices, dr)
		}
		out = append(out, r)
	}
	return out
}

func clamp(v uint64) int64 {
	if v > 1<<63-1 {
		return 1<<63 - 1
	}
	return int64(v)
}

func (o *options) printNodes(rep []NodeReport) error {
	header := []string{"NODE", "STATE", "HEARTBEAT", "VG", "TOTAL", "ALLOCATABLE", "ALLOCATED", "FREE", "+EXTENT", "+RATIO", "+FILL", "DEVICES(FREE/HELD/QUARANTINED)"}
	var rows [][]string
	for _, r := range rep {
		counts := map[string]int{}
		for _, d := range r.Devices {
			counts[d.State]++
		}
		devices := fmt.Sprintf("%d/%d/%d", counts[DeviceFree], counts[DeviceHeld], counts[DeviceQuarantined])
		hb := orNone(r.HeartbeatAge)
		if len(r.VGs) == 0 {
			rows = append(rows, []string{r.Node, r.State, hb, "<none>", "-", "-", "-", "-", "-", "-", "-", devices})
		}
		for _, g := range r.VGs {
			alloc, free := qty(g.Allocatable), qty(g.Free)
			if !g.Schedulable {
				alloc, free = "excluded", "-"
			}
			rows = append(rows, []string{r.Node, r.State, hb, g.Name, qty(g.Total), alloc, qty(g.Allocated), free, qty(g.ExtentSize), "-", "-", devices})
			for _, p := range g.ThinPools {
				fill := fmt.Sprintf("data %s meta %s", percent(p.DataPercent), percent(p.MetadataPercent))
				if p.OverFilled != "" {
					fill += " (full: " + p.OverFilled + ")"
				}
				rows = append(rows, []string{r.Node, r.State, hb, g.Name + "/" + p.Name + " (thin)", qty(p.Size), qty(p.Allocatable), qty(p.Virtual), qty(p.Free), "-", p.OverprovisionRatio, fill, devices})
			}
		}
	}
	if err := o.table(o.streams.Out, header, rows); err != nil {
		return err
	}
	if o.output != "wide" {
		return nil
	}
	// Wide: the devices themselves.
	var drows [][]string
	for _, r := range rep {
		for _, d := range r.Devices {
			drows = append(drows, []string{r.Node, d.Name, orNone(d.MediaType), qty(d.Size), d.State, orNone(strings.Join(d.Holders, ","))})
		}
	}
	if len(drows) == 0 {
		return nil
	}
	fmt.Fprintln(o.streams.Out)
	return o.table(o.streams.Out, []string{"NODE", "DEVICE", "MEDIA", "SIZE", "STATE", "HELD BY"}, drows)
}

func percent(p *int32) string {
	if p == nil {
		return "?"
	}
	return fmt.Sprintf("%d%%", *p)
}
