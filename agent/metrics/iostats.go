/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/procfs/blockdevice"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// Per-volume IO counters from /proc/diskstats, for the block device each
// Ready LocalVolume reports (status.devicePath: /dev/<vg>/<lv> → dm-N, a loop
// device over the LV where the kernel has no device-mapper, or the disk of a
// Device volume). node_exporter reports the same counters per kernel device
// name; these carry the volume and its claim instead, which is what an
// operator looks for.
var ioLabels = []string{"nodename", "volume", "vgname", "pvc_ns", "pvc_name"}

type ioCounter struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(s blockdevice.IOStats) float64
}

const sectorBytes = 512 // diskstats counts 512-byte sectors whatever the device's block size

var ioCounters = []ioCounter{
	{prometheus.NewDesc("open_local_volume_reads_completed_total", "Reads completed on the volume's block device.", ioLabels, nil),
		prometheus.CounterValue, func(s blockdevice.IOStats) float64 { return float64(s.ReadIOs) }},
	{prometheus.NewDesc("open_local_volume_writes_completed_total", "Writes completed on the volume's block device.", ioLabels, nil),
		prometheus.CounterValue, func(s blockdevice.IOStats) float64 { return float64(s.WriteIOs) }},
	{prometheus.NewDesc("open_local_volume_read_bytes_total", "Bytes read from the volume's block device.", ioLabels, nil),
		prometheus.CounterValue, func(s blockdevice.IOStats) float64 { return float64(s.ReadSectors * sectorBytes) }},
	{prometheus.NewDesc("open_local_volume_written_bytes_total", "Bytes written to the volume's block device.", ioLabels, nil),
		prometheus.CounterValue, func(s blockdevice.IOStats) float64 { return float64(s.WriteSectors * sectorBytes) }},
	{prometheus.NewDesc("open_local_volume_read_time_seconds_total", "Time all reads of the volume took.", ioLabels, nil),
		prometheus.CounterValue, func(s blockdevice.IOStats) float64 { return float64(s.ReadTicks) / 1000 }},
	{prometheus.NewDesc("open_local_volume_write_time_seconds_total", "Time all writes of the volume took.", ioLabels, nil),
		prometheus.CounterValue, func(s blockdevice.IOStats) float64 { return float64(s.WriteTicks) / 1000 }},
	{prometheus.NewDesc("open_local_volume_io_time_seconds_total", "Time the volume's device had IO in flight (its utilisation when divided by wall time).", ioLabels, nil),
		prometheus.CounterValue, func(s blockdevice.IOStats) float64 { return float64(s.IOsTotalTicks) / 1000 }},
	{prometheus.NewDesc("open_local_volume_io_now", "IOs in flight on the volume's device.", ioLabels, nil),
		prometheus.GaugeValue, func(s blockdevice.IOStats) float64 { return float64(s.IOsInProgress) }},
}

func describeIO(ch chan<- *prometheus.Desc) {
	for _, c := range ioCounters {
		ch <- c.desc
	}
}

// ioStats reads diskstats once per scrape.
type ioStats struct {
	procFS, sysFS string
}

type devNum struct{ major, minor uint32 }

func (s *ioStats) read() (map[devNum]blockdevice.IOStats, error) {
	fs, err := blockdevice.NewFS(s.procFS, s.sysFS)
	if err != nil {
		return nil, err
	}
	all, err := fs.ProcDiskstats()
	if err != nil {
		return nil, err
	}
	byNum := make(map[devNum]blockdevice.IOStats, len(all))
	for _, d := range all {
		byNum[devNum{d.MajorNumber, d.MinorNumber}] = d.IOStats
	}
	return byNum, nil
}

func (s *ioStats) collect(ch chan<- prometheus.Metric, node string, volumes []*v1alpha1.LocalVolume,
	deviceNumber func(string) (uint32, uint32, error)) {
	if len(volumes) == 0 {
		return
	}
	stats, err := s.read()
	if err != nil {
		klog.V(2).InfoS("volume IO metrics: cannot read diskstats", "err", err)
		return
	}
	for _, lv := range volumes {
		major, minor, err := deviceNumber(lv.Status.DevicePath)
		if err != nil {
			// A loop device detached meanwhile, or a path that is not
			// visible in this container: nothing to report.
			klog.V(4).InfoS("volume IO metrics: no device", "localVolume", lv.Name, "path", lv.Status.DevicePath, "err", err)
			continue
		}
		st, ok := stats[devNum{major, minor}]
		if !ok {
			continue
		}
		var pvcNS, pvcName string
		if ref := lv.Spec.ClaimRef; ref != nil {
			pvcNS, pvcName = ref.Namespace, ref.Name
		}
		for _, c := range ioCounters {
			ch <- prometheus.MustNewConstMetric(c.desc, c.typ, c.value(st), node, lv.Name, lv.Spec.VGName, pvcNS, pvcName)
		}
	}
}

// blockDeviceNumber stats path (following /dev/<vg>/<lv> symlinks) and
// returns the block device's major:minor.
func blockDeviceNumber(path string) (uint32, uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, 0, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, 0, fmt.Errorf("%s is not a block device", path)
	}
	return unix.Major(st.Rdev), unix.Minor(st.Rdev), nil
}
