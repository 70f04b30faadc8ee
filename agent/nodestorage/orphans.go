/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package nodestorage

import (
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
)

// ReasonOrphanLV (Warning, on the NLS): an LV that looks like open-local's
// but that no LocalVolume of the node names; its space is kept out of
// allocatable.
const ReasonOrphanLV = "OrphanLV"

// reportOrphans emits one OrphanLV Event per orphan LV while it lasts and
// sets the open_local_orphan_lvs gauge. Both count an LV only once it was
// an orphan in two passes in a row: the one pass in which a just-created
// LV's LocalVolume has not reached this informer yet is no orphan to
// report (its space is still kept out of allocatable for that pass).
func (c *Controller) reportOrphans(nls *v1alpha1.NodeLocalStorage, vgs []v1alpha1.VolumeGroup) {
	now := map[string]bool{}
	byVG := map[string]int{}
	var confirmed []v1alpha1.LogicalVolume
	c.suspectsMu.Lock()
	prev := c.suspects
	for _, vg := range vgs {
		byVG[vg.Name] = 0
		for _, lv := range vg.LogicalVolumes {
			if !lv.Orphan {
				continue
			}
			key := vg.Name + "/" + lv.Name
			now[key] = true
			if prev[key] {
				byVG[vg.Name]++
				confirmed = append(confirmed, lv)
			}
		}
	}
	c.suspects = now
	c.suspectsMu.Unlock()

	sort.Slice(confirmed, func(i, j int) bool {
		return confirmed[i].VGName+"/"+confirmed[i].Name < confirmed[j].VGName+"/"+confirmed[j].Name
	})
	reported := map[string]bool{}
	for _, lv := range confirmed {
		key := lv.VGName + "/" + lv.Name
		reported[key] = true
		if c.reported[key] {
			continue
		}
		msg := fmt.Sprintf("LV %s (%s) looks like open-local's (tag %s or name prefix) but no LocalVolume of node %s names it, so the scheduler counts it nowhere: its space is kept out of VG %s's allocatable. Adopt it (a LocalVolume naming it) or remove it (lvremove %s).",
			key, resource.NewQuantity(int64(min(lv.Total, 1<<62)), resource.BinarySI), lvm.OwnedTag, c.node, lv.VGName, key)
		klog.InfoS("orphan LV", "node", c.node, "lv", key, "bytes", lv.Total)
		c.recorder.Event(nls, corev1.EventTypeWarning, ReasonOrphanLV, msg)
	}
	c.reported = reported
	c.orphanLVs.Set(c.node, byVG)
}

func (c *Controller) isSuspect(key string) bool {
	c.suspectsMu.Lock()
	defer c.suspectsMu.Unlock()
	return c.suspects[key]
}
