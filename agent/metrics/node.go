/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package metrics

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/open-local/open-local/apis/client/clientset/versioned"
	"github.com/open-local/open-local/apis/client/informers/externalversions"
	listers "github.com/open-local/open-local/apis/client/listers/storage/v1alpha1"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
)

// The open-local-compatible gauges (alibaba/open-local's extender exported
// them under subsystem "local"; names and labels are kept so its dashboards
// and alerts keep working). Here the agent exports them for its own node.
var (
	vgTotalDesc = prometheus.NewDesc("local_volume_group_total",
		"Allocatable bytes of a schedulable VG (NodeLocalStorage status allocatable).",
		[]string{"nodename", "vgname"}, nil)
	vgUsedDesc = prometheus.NewDesc("local_volume_group_used",
		"Bytes of a VG allocated to LocalVolumes (the sum of their spec.size, snapshots and volumes being deleted included): what the scheduler counts as used.",
		[]string{"nodename", "vgname"}, nil)
	deviceTotalDesc = prometheus.NewDesc("local_device_total",
		"Size in bytes of a schedulable exclusive device.",
		[]string{"nodename", "name", "type"}, nil)
	deviceAvailableDesc = prometheus.NewDesc("local_device_available",
		"Size in bytes of a schedulable exclusive device when no volume holds it, else 0.",
		[]string{"nodename", "name", "type"}, nil)
	deviceBindDesc = prometheus.NewDesc("local_device_bind",
		"1 when a Device volume holds the device, else 0.",
		[]string{"nodename", "name"}, nil)
	allocatedNumDesc = prometheus.NewDesc("local_allocated_num",
		"Number of persistent volumes (LocalVolumes of PVCs, not snapshots or inline volumes) on the node.",
		[]string{"nodename"}, nil)
	localPVDesc = prometheus.NewDesc("local_local_pv",
		"Requested bytes of a persistent volume on the node. pv_name is the LocalVolume (= PV) name, status the LocalVolume phase, storage_name the VG or device.",
		[]string{"nodename", "pv_name", "pv_type", "pvc_name", "pvc_ns", "status", "storage_name"}, nil)
	inlineVolumeDesc = prometheus.NewDesc("local_inline_volume",
		"Requested bytes of a CSI ephemeral inline volume; volume_name is its LocalVolume name (the kubelet's volume handle).",
		[]string{"pod_name", "pod_namespace", "nodename", "vgname", "volume_name"}, nil)
)

// What open-local did not export.
var (
	localVolumesDesc = prometheus.NewDesc("open_local_local_volumes",
		"LocalVolumes (volumes and snapshots) of the node by status phase; Failed ones are being retried by the agent.",
		[]string{"nodename", "phase"}, nil)
	thinPoolDataDesc = prometheus.NewDesc("open_local_thin_pool_data_percent",
		"How full a thin pool's data space is (lvm's data_percent), for thin pools in schedulable VGs.",
		[]string{"nodename", "vgname", "pool"}, nil)
	thinPoolMetadataDesc = prometheus.NewDesc("open_local_thin_pool_metadata_percent",
		"How full a thin pool's metadata space is (lvm's metadata_percent); at 100% every thin LV of the pool stops.",
		[]string{"nodename", "vgname", "pool"}, nil)
	thinPoolScrapeErrorDesc = prometheus.NewDesc("open_local_thin_pool_scrape_error",
		"1 when the last lvs run for thin pool metrics failed (the values are then from the last success), else 0.",
		[]string{"nodename"}, nil)
)

// NodeOptions configure the node collector.
type NodeOptions struct {
	// NodeName is the node whose NodeLocalStorage and LocalVolumes are reported.
	NodeName string
	// Client reads our CRDs (two watches, narrowed by field selectors to
	// this node's objects).
	Client versioned.Interface
	// LVM lists thin pools every ThinPoolInterval; nil disables thin pool metrics.
	LVM *lvm.Client
	// ThinPoolInterval is the time between thin pool reads (default 1 min).
	// They run in the background so a scrape never waits for lvm.
	ThinPoolInterval time.Duration
	// ProcFS and SysFS are where procfs and sysfs are mounted (defaults
	// /proc and /sys); per-volume IO comes from <ProcFS>/diskstats.
	ProcFS, SysFS string
	// DeviceNumber resolves a device path to its major:minor (default: stat
	// of the block device). Tests substitute it.
	DeviceNumber func(path string) (major, minor uint32, err error)
}

// Node is the collector of the node's view. It is a nodeagent.Controller:
// Run keeps its informers and thin pool reads going until ctx is done.
type Node struct {
	opts    NodeOptions
	nls     listers.NodeLocalStorageLister
	lvs     listers.LocalVolumeLister
	synced  []cache.InformerSynced
	start   func(stop <-chan struct{})
	stop    func()
	io      *ioStats
	poolsMu sync.Mutex
	pools   []lvm.LV
	poolErr bool
}

// NewNode registers the node collector with reg.
func NewNode(reg prometheus.Registerer, o NodeOptions) (*Node, error) {
	if o.NodeName == "" || o.Client == nil {
		return nil, errors.New("metrics: NodeName and Client are required")
	}
	byName := externalversions.NewSharedInformerFactoryWithOptions(o.Client, 0,
		externalversions.WithTweakListOptions(func(lo *metav1.ListOptions) {
			lo.FieldSelector = fields.OneTermEqualSelector("metadata.name", o.NodeName).String()
		}))
	byNode := externalversions.NewSharedInformerFactoryWithOptions(o.Client, 0,
		externalversions.WithTweakListOptions(func(lo *metav1.ListOptions) {
			lo.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", o.NodeName).String()
		}))
	nls := byName.Csi().V1alpha1().NodeLocalStorages()
	lvs := byNode.Csi().V1alpha1().LocalVolumes()
	n := newNode(o, nls.Lister(), lvs.Lister())
	n.synced = []cache.InformerSynced{nls.Informer().HasSynced, lvs.Informer().HasSynced}
	n.start = func(stop <-chan struct{}) {
		byName.Start(stop)
		byNode.Start(stop)
	}
	n.stop = func() {
		byName.Shutdown()
		byNode.Shutdown()
	}
	if err := reg.Register(n); err != nil {
		return nil, fmt.Errorf("metrics: register node collector: %w", err)
	}
	return n, nil
}

// newNode builds the collector over listers (informer-backed in NewNode).
func newNode(o NodeOptions, nls listers.NodeLocalStorageLister, lvs listers.LocalVolumeLister) *Node {
	if o.ThinPoolInterval <= 0 {
		o.ThinPoolInterval = time.Minute
	}
	if o.DeviceNumber == nil {
		o.DeviceNumber = blockDeviceNumber
	}
	return &Node{opts: o, nls: nls, lvs: lvs, io: &ioStats{procFS: o.ProcFS, sysFS: o.SysFS},
		start: func(<-chan struct{}) {}, stop: func() {}}
}

// Run feeds the collector until ctx is done.
func (n *Node) Run(ctx context.Context) error {
	n.start(ctx.Done())
	defer n.stop()
	if !cache.WaitForCacheSync(ctx.Done(), n.synced...) {
		return nil // shutting down
	}
	if n.opts.LVM != nil {
		go wait.UntilWithContext(ctx, n.readThinPools, n.opts.ThinPoolInterval)
	}
	<-ctx.Done()
	return nil
}

func (n *Node) readThinPools(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	all, err := n.opts.LVM.ListLVs(ctx, "")
	n.poolsMu.Lock()
	defer n.poolsMu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			klog.FromContext(ctx).V(2).Info("thin pool metrics: lvs failed", "err", err)
		}
		n.poolErr = true
		return
	}
	n.poolErr = false
	n.pools = slices.DeleteFunc(all, func(lv lvm.LV) bool { return !lv.IsThinPool() })
}

// Describe implements prometheus.Collector.
func (n *Node) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{vgTotalDesc, vgUsedDesc, deviceTotalDesc, deviceAvailableDesc, deviceBindDesc,
		allocatedNumDesc, localPVDesc, inlineVolumeDesc, localVolumesDesc, thinPoolDataDesc, thinPoolMetadataDesc,
		thinPoolScrapeErrorDesc} {
		ch <- d
	}
	describeIO(ch)
}

// Collect implements prometheus.Collector: everything is computed from the
// informers' caches (and the last thin pool read) at scrape time.
func (n *Node) Collect(ch chan<- prometheus.Metric) {
	node := n.opts.NodeName
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}

	var schedulableVGs, schedulableDevices []string
	nls, err := n.nls.Get(node)
	if err == nil {
		schedulableVGs = nls.Status.FilteredStorageInfo.VolumeGroups
		schedulableDevices = nls.Status.FilteredStorageInfo.Devices
	}
	used := map[string]int64{}
	for _, vg := range schedulableVGs {
		used[vg] = 0
	}
	bound := map[string]bool{}
	phases := map[v1alpha1.LocalVolumePhase]int{v1alpha1.PhasePending: 0, v1alpha1.PhaseReady: 0, v1alpha1.PhaseFailed: 0}
	allocated := 0
	lvs, _ := n.lvs.List(labels.Everything())
	var ioVolumes []*v1alpha1.LocalVolume
	for _, lv := range lvs {
		if lv.Spec.NodeName != node {
			continue
		}
		size := lv.Spec.Size.Value()
		storage := lv.Spec.VGName
		switch lv.Spec.VolumeType {
		case v1alpha1.VolumeTypeLVM:
			used[lv.Spec.VGName] += size
		case v1alpha1.VolumeTypeDevice:
			bound[lv.Spec.Device] = true
			storage = lv.Spec.Device
		}
		phase := lv.Status.Phase
		if phase == "" {
			phase = v1alpha1.PhasePending
		}
		phases[phase]++
		if lv.Status.Phase == v1alpha1.PhaseReady && lv.Status.DevicePath != "" {
			ioVolumes = append(ioVolumes, lv)
		}
		if lv.Spec.Kind == v1alpha1.KindSnapshot {
			continue
		}
		if ref := lv.Spec.PodRef; ref != nil {
			gauge(inlineVolumeDesc, float64(size), ref.Name, ref.Namespace, node, lv.Spec.VGName, lv.Name)
			continue
		}
		allocated++
		var pvcName, pvcNS string
		if ref := lv.Spec.ClaimRef; ref != nil {
			pvcName, pvcNS = ref.Name, ref.Namespace
		}
		gauge(localPVDesc, float64(size), node, lv.Name, string(lv.Spec.VolumeType), pvcName, pvcNS, string(phase), storage)
	}

	if nls != nil {
		for _, vg := range nls.Status.NodeStorageInfo.VolumeGroups {
			if slices.Contains(schedulableVGs, vg.Name) {
				gauge(vgTotalDesc, float64(vg.Allocatable), node, vg.Name)
			}
		}
		for _, d := range nls.Status.NodeStorageInfo.DeviceInfos {
			if !slices.Contains(schedulableDevices, d.Name) {
				continue
			}
			available, bind := float64(d.Total), 0.0
			if bound[d.Name] {
				available, bind = 0, 1
			}
			gauge(deviceTotalDesc, float64(d.Total), node, d.Name, d.MediaType)
			gauge(deviceAvailableDesc, available, node, d.Name, d.MediaType)
			gauge(deviceBindDesc, bind, node, d.Name)
		}
	}
	for vg, bytes := range used {
		gauge(vgUsedDesc, float64(bytes), node, vg)
	}
	gauge(allocatedNumDesc, float64(allocated), node)
	for phase, count := range phases {
		gauge(localVolumesDesc, float64(count), node, string(phase))
	}
	n.io.collect(ch, node, ioVolumes, n.opts.DeviceNumber)

	if n.opts.LVM != nil {
		n.poolsMu.Lock()
		pools, poolErr := n.pools, n.poolErr
		n.poolsMu.Unlock()
		for _, p := range pools {
			if !slices.Contains(schedulableVGs, p.VG) {
				continue
			}
			if p.DataPercent >= 0 {
				gauge(thinPoolDataDesc, p.DataPercent, node, p.VG, p.Name)
			}
			if p.MetadataPercent >= 0 {
				gauge(thinPoolMetadataDesc, p.MetadataPercent, node, p.VG, p.Name)
			}
		}
		failed := 0.0
		if poolErr {
			failed = 1
		}
		gauge(thinPoolScrapeErrorDesc, failed, node)
	}
}
