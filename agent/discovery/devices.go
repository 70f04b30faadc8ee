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

	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// DefaultDeviceRegexp is open-local's --regexp default: SCSI, virtio and Xen disks.
const DefaultDeviceRegexp = `^(s|v|xv)d[a-z]+$`

// Media types of DeviceInfo.
const (
	MediaSSD = "ssd"
	MediaHDD = "hdd"
)

// BlockDevices lists the block devices under sysfs/block whose name matches
// nameRE (Go regexp semantics, as open-local's --regexp), each followed by
// its partitions, sorted by name. Size is sysfs size × 512; media type comes
// from the disk's queue/rotational (1 = hdd); read-only from ro. Devices of
// size 0 (empty loop devices, card readers without a card) are skipped.
func BlockDevices(sysfs string, nameRE *regexp.Regexp) ([]v1alpha1.DeviceInfo, error) {
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
		disk, err := device(dir, name, media)
		if err != nil {
			return nil, err
		}
		if disk.Total > 0 {
			devs = append(devs, disk)
		}
		subs, err := os.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		for _, s := range subs {
			if _, err := os.Stat(filepath.Join(dir, s.Name(), "partition")); err != nil {
				continue
			}
			part, err := device(filepath.Join(dir, s.Name()), s.Name(), media)
			if err != nil {
				return nil, err
			}
			if part.Total > 0 {
				devs = append(devs, part)
			}
		}
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].Name < devs[j].Name })
	return devs, nil
}

func device(dir, name, media string) (v1alpha1.DeviceInfo, error) {
	sectors, err := readUint(filepath.Join(dir, "size"))
	if err != nil {
		return v1alpha1.DeviceInfo{}, err
	}
	ro, err := readString(filepath.Join(dir, "ro"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return v1alpha1.DeviceInfo{}, err
	}
	return v1alpha1.DeviceInfo{
		Name:      "/dev/" + name,
		MediaType: media,
		Total:     sectors * 512,
		ReadOnly:  ro == "1",
		Condition: v1alpha1.StorageReady,
	}, nil
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
