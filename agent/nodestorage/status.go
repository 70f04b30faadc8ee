/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package nodestorage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/open-local/open-local/agent/discovery"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
)

// Event reasons (Warnings) of status reporting.
const (
	ReasonInvalidListConfig        = "InvalidListConfig"
	ReasonInvalidReserveAnnotation = "InvalidReserveAnnotation"
	ReasonDiscoveryFailed          = "DiscoveryFailed"
	ReasonDeviceDiscoveryFailed    = "DeviceDiscoveryFailed"
	ReasonInvalidThinPoolConfig    = "InvalidThinPoolConfig"
)

// inventory is what lvm reported in one pass.
type inventory struct {
	vgs []lvm.VG
	lvs []lvm.LV
	pvs []lvm.PV
}

// warning is a Warning Event the status computation wants emitted.
type warning struct{ reason, message string }

// observation is one discovery pass: the lvm inventory (or why there is
// none) and the block devices (or why there are none).
type observation struct {
	inv       inventory
	invErr    error
	devices   []v1alpha1.DeviceInfo
	devErr    error
	ownership discovery.Ownership
	// accounted: the LVs the node's LocalVolumes name.
	accounted discovery.Accounted
	// held: the devices the node's Device LocalVolumes name (device to
	// LocalVolume); released: those of them waiting for their wipe.
	held, released map[string]string
}

// heldDevices maps the devices of Device LocalVolumes to their names, and
// the quarantined ones (released, not yet wiped) to why.
func heldDevices(vols []*v1alpha1.LocalVolume) (held, released map[string]string) {
	held, released = map[string]string{}, map[string]string{}
	for _, lv := range vols {
		if lv.Spec.VolumeType != v1alpha1.VolumeTypeDevice || lv.Spec.Device == "" {
			continue
		}
		held[lv.Spec.Device] = lv.Name
		if lv.Status.Phase == v1alpha1.PhaseQuarantined {
			released[lv.Spec.Device] = fmt.Sprintf("released by LocalVolume %s; %s", lv.Name, lv.Status.Message)
		}
	}
	return held, released
}

// desiredStatus computes the status nls should have after this pass, and
// the warnings that explain what was refused. Timestamps are carried over
// from the current status; stamp sets them for a write.
//
// On bad input the status says so and keeps what is known to be safe:
//   - lvm failing: state DiskFault/False with the reason; the last reported
//     VGs are kept (the scheduler can tell from the state);
//   - an invalid include/exclude expression: updateStatus failed with the
//     reason; that category keeps its last accepted list;
//   - an invalid reserve annotation: the VGs it may concern get allocatable 0.
func desiredStatus(nls *v1alpha1.NodeLocalStorage, obs observation) (v1alpha1.NodeLocalStorageStatus, []warning) {
	cur := nls.Status
	var st v1alpha1.NodeLocalStorageStatus
	var warns []warning

	info := &st.NodeStorageInfo
	info.Phase = v1alpha1.NodeStorageRunning
	info.MountPoints = cur.NodeStorageInfo.MountPoints
	info.State = v1alpha1.StorageState{Type: v1alpha1.StorageReady, Status: v1alpha1.ConditionTrue}

	reserve := discovery.Reserve{}
	if a, ok := nls.Annotations[discovery.ReserveAnnotation]; ok {
		var err error
		if reserve, err = discovery.ParseReserve(a); err != nil {
			warns = append(warns, warning{ReasonInvalidReserveAnnotation, err.Error() + "; the VGs concerned get no allocatable space until it is fixed"})
		}
	}
	if obs.invErr != nil {
		info.VolumeGroups = cur.NodeStorageInfo.VolumeGroups
		info.State = v1alpha1.StorageState{Type: v1alpha1.StorageFault, Status: v1alpha1.ConditionFalse,
			Reason: ReasonDiscoveryFailed, Message: obs.invErr.Error()}
		warns = append(warns, warning{ReasonDiscoveryFailed, "listing LVM volume groups failed: " + obs.invErr.Error()})
	} else {
		var err error
		info.VolumeGroups, err = discovery.VolumeGroups(obs.inv.vgs, obs.inv.lvs, obs.inv.pvs, obs.ownership, obs.accounted, reserve,
			discovery.ThinConfigOf(nls.Spec.ResourceToBeInited.VGs))
		if err != nil {
			warns = append(warns, warning{ReasonInvalidThinPoolConfig, err.Error()})
		}
	}
	if obs.devErr != nil {
		info.DeviceInfos = cur.NodeStorageInfo.DeviceInfos
		warns = append(warns, warning{ReasonDeviceDiscoveryFailed, "reading block devices failed: " + obs.devErr.Error()})
	} else {
		info.DeviceInfos = slices.Clone(obs.devices)
		discovery.MarkHeld(info.DeviceInfos, obs.held)
		for i := range info.DeviceInfos {
			info.DeviceInfos[i].Released = obs.released[info.DeviceInfos[i].Name]
		}
	}

	filtered := &st.FilteredStorageInfo
	lc := nls.Spec.ListConfig
	var errs []error
	filter := func(what string, names, include, exclude, last []string) []string {
		out, err := discovery.Filter(names, include, exclude)
		if err != nil {
			errs = append(errs, fmt.Errorf("listConfig.%s: %w", what, err))
			return last
		}
		return out
	}
	filtered.VolumeGroups = filter("vgs", vgNames(info.VolumeGroups), lc.VGs.Include, lc.VGs.Exclude, cur.FilteredStorageInfo.VolumeGroups)
	filtered.Devices = filter("devices", deviceNames(info.DeviceInfos), lc.Devices.Include, lc.Devices.Exclude, cur.FilteredStorageInfo.Devices)
	filtered.MountPoints = filter("mountPoints", mountPointNames(info.MountPoints), lc.MountPoints.Include, lc.MountPoints.Exclude, cur.FilteredStorageInfo.MountPoints)
	filtered.UpdateStatus = v1alpha1.UpdateStatusInfo{Status: v1alpha1.UpdateStatusAccepted}
	if err := errors.Join(errs...); err != nil {
		filtered.UpdateStatus = v1alpha1.UpdateStatusInfo{Status: v1alpha1.UpdateStatusFailed, Reason: ReasonInvalidListConfig + ": " + oneLine(err)}
		warns = append(warns, warning{ReasonInvalidListConfig, oneLine(err) + "; the last accepted lists stay in effect"})
	}

	// Carry timestamps over; stamp replaces them where things changed.
	info.State.LastHeartbeatTime = cur.NodeStorageInfo.State.LastHeartbeatTime
	info.State.LastTransitionTime = cur.NodeStorageInfo.State.LastTransitionTime
	filtered.UpdateStatus.LastUpdateTime = cur.FilteredStorageInfo.UpdateStatus.LastUpdateTime
	return st, warns
}

// stamp sets the timestamps of a status about to be written at now: the
// heartbeat always, the state's transition time when its type or status
// changed, the filtered info's update time when the filtered info changed.
func stamp(st *v1alpha1.NodeLocalStorageStatus, cur *v1alpha1.NodeLocalStorageStatus, now time.Time) {
	t := metav1.NewTime(now.Truncate(time.Second))
	s, c := &st.NodeStorageInfo.State, cur.NodeStorageInfo.State
	s.LastHeartbeatTime = &t
	if s.Type != c.Type || s.Status != c.Status || c.LastTransitionTime == nil {
		s.LastTransitionTime = &t
	}
	if !sameJSON(withoutTimes(st).FilteredStorageInfo, withoutTimes(cur).FilteredStorageInfo) || cur.FilteredStorageInfo.UpdateStatus.LastUpdateTime == nil {
		st.FilteredStorageInfo.UpdateStatus.LastUpdateTime = &t
	}
}

// changed reports whether the statuses differ in anything but timestamps.
// Compared as JSON, as the API server stores them (nil and empty lists are
// the same there).
func changed(a, b *v1alpha1.NodeLocalStorageStatus) bool {
	return !sameJSON(withoutTimes(a), withoutTimes(b))
}

func withoutTimes(s *v1alpha1.NodeLocalStorageStatus) v1alpha1.NodeLocalStorageStatus {
	c := *s.DeepCopy()
	c.NodeStorageInfo.State.LastHeartbeatTime = nil
	c.NodeStorageInfo.State.LastTransitionTime = nil
	c.FilteredStorageInfo.UpdateStatus.LastUpdateTime = nil
	return c
}

func sameJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

func vgNames(vgs []v1alpha1.VolumeGroup) []string {
	var n []string
	for _, vg := range vgs {
		n = append(n, vg.Name)
	}
	return n
}

// deviceNames are the devices that may be offered: not in use by anything
// else (a device a LocalVolume holds stays counted by the ledger as held).
func deviceNames(devs []v1alpha1.DeviceInfo) []string {
	var n []string
	for _, d := range devs {
		if d.InUse == "" && d.Released == "" {
			n = append(n, d.Name)
		}
	}
	return n
}

func mountPointNames(mps []v1alpha1.MountPoint) []string {
	var n []string
	for _, m := range mps {
		n = append(n, m.Name)
	}
	return n
}
