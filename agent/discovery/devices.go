/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package discovery

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	mount "k8s.io/mount-utils"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
)

// DefaultDeviceRegexp is open-local's --regexp default: SCSI, virtio and Xen disks.
const DefaultDeviceRegexp = `^(s|v|xv)d[a-z]+$`

// Media types of DeviceInfo.
const (
	MediaSSD = "ssd"
	MediaHDD = "hdd"
)

// Usage is what else on the node uses block devices, keyed by device number
// ("major:minor", as sysfs's dev file): lvm's physical volumes (to their VG)
// and mounted filesystems (to a mount point).
type Usage struct {
	PVs    map[string]string
	Mounts map[string]string
}

// UsageOf builds Usage from lvm's PV report and a mountinfo file
// (/proc/self/mountinfo of a process that sees the host's mounts).
func UsageOf(pvs []lvm.PV, mountinfo string) (Usage, error) {
	u := Usage{PVs: map[string]string{}, Mounts: map[string]string{}}
	for _, pv := range pvs {
		u.PVs[fmt.Sprintf("%d:%d", pv.Major, pv.Minor)] = pv.VG
	}
	mounts, err := mount.ParseMountInfo(mountinfo)
	if err != nil {
		return u, err
	}
	for _, m := range mounts {
		key := fmt.Sprintf("%d:%d", m.Major, m.Minor)
		if _, ok := u.Mounts[key]; !ok {
			u.Mounts[key] = m.MountPoint
		}
	}
	return u, nil
}

// BlockDevices lists the block devices under sysfs/block whose name matches
// nameRE (Go regexp semantics, as open-local's --regexp), each followed by
// its partitions, sorted by name. Size is sysfs size × 512; media type comes
// from the disk's queue/rotational (1 = hdd); read-only from ro. Devices of
// size 0 (empty loop devices, card readers without a card) are skipped.
//
// InUse is set on a device that must not be handed out whole: a PV, one
// with holders (device-mapper, md), one with a mounted filesystem, and a
// disk with partitions (the partitions are the units then: a disk and its
// partitions overlap, so only one of the two may ever be offered).
func BlockDevices(sysfs string, nameRE *regexp.Regexp, use Usage) ([]v1alpha1.DeviceInfo, error) {
	blockDir := filepath.Join(sysfs, "block")
	entries, err := os.ReadDir(blockDir)
	if err != nil {
		return nil, err
	}
	var devs []v1alpha1.DeviceInfo
	for _, e := range entries {
		name := e.Name()
		if !nameRE.MatchString(name) {
			continue
		}
		dir := filepath.Join(blockDir, name)
		media := MediaSSD
		if rot, err := readString(filepath.Join(dir, "queue", "rotational")); err == nil && rot == "1" {
			media = MediaHDD
		}
		disk, err := device(dir, name, media, use)
		if err != nil {
			return nil, err
		}
		subs, err := os.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		var parts []string
		for _, s := range subs {
			if _, err := os.Stat(filepath.Join(dir, s.Name(), "partition")); err != nil {
				continue
			}
			part, err := device(filepath.Join(dir, s.Name()), s.Name(), media, use)
			if err != nil {
				return nil, err
			}
			parts = append(parts, part.Name)
			part.Parent = disk.Name
			if part.Total > 0 {
				devs = append(devs, part)
			}
		}
		if len(parts) > 0 && disk.InUse == "" {
			sort.Strings(parts)
			disk.InUse = "has partitions " + strings.Join(parts, ",")
		}
		if disk.Total > 0 {
			devs = append(devs, disk)
		}
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].Name < devs[j].Name })
	return devs, nil
}

func device(dir, name, media string, use Usage) (v1alpha1.DeviceInfo, error) {
	sectors, err := readUint(filepath.Join(dir, "size"))
	if err != nil {
		return v1alpha1.DeviceInfo{}, err
	}
	ro, err := readString(filepath.Join(dir, "ro"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return v1alpha1.DeviceInfo{}, err
	}
	d := v1alpha1.DeviceInfo{
		Name:      "/dev/" + name,
		MediaType: media,
		Total:     sectors * 512,
		ReadOnly:  ro == "1",
		Condition: v1alpha1.StorageReady,
	}
	holders, err := os.ReadDir(filepath.Join(dir, "holders"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return d, err
	}
	var held []string
	for _, h := range holders {
		if !strings.HasPrefix(h.Name(), ".") {
			held = append(held, h.Name())
		}
	}
	num, err := readString(filepath.Join(dir, "dev"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return d, err
	}
	vg, isPV := use.PVs[num]
	mnt, isMounted := use.Mounts[num]
	switch {
	case num == "":
	case isPV && vg != "":
		d.InUse = "physical volume of VG " + vg
	case isPV:
		d.InUse = "physical volume"
	case isMounted:
		d.InUse = "mounted at " + mnt
	}
	if d.InUse == "" && len(held) > 0 {
		d.InUse = "held by " + strings.Join(held, ",")
	}
	return d, nil
}

// MarkHeld marks in use the disks and partitions that overlap a device a
// LocalVolume holds (held maps device path to LocalVolume name): the
// partitions of a held disk, and the disk of a held partition. What a
// tenant does on its disk (partition it) must not create new free devices.
func MarkHeld(devs []v1alpha1.DeviceInfo, held map[string]string) {
	for i := range devs {
		d := &devs[i]
		if d.InUse != "" {
			continue
		}
		if lv, ok := held[d.Parent]; ok && d.Parent != "" {
			d.InUse = fmt.Sprintf("disk %s is held by LocalVolume %s", d.Parent, lv)
			continue
		}
		for j := range devs {
			if p := &devs[j]; p.Parent == d.Name {
				if lv, ok := held[p.Name]; ok {
					d.InUse = fmt.Sprintf("partition %s is held by LocalVolume %s", p.Name, lv)
					break
				}
			}
		}
	}
}

func readString(path string) (string, error) {
	b, err := os.ReadFile(path)
	return strings.TrimSpace(string(b)), err
}

func readUint(path string) (uint64, error) {
	s, err := readString(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}
