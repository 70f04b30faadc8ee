package plugin

import (
	"strings"
	"sync"
	"sync/atomic"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/open-local/open-local/apis/storage/ledger"
	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// Metrics on the scheduler's standard /metrics endpoint (legacyregistry),
// under open_local_scheduler_*.
const subsystem = "open_local_scheduler"

var (
	decisions = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem:      subsystem,
		Name:           "filter_decisions_total",
		Help:           "Filter and PreFilter decisions, by result: fit, or why the node or pod was refused.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	reservations = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem:      subsystem,
		Name:           "reservations_total",
		Help:           "Reserve outcomes (reserved, conflict: the re-check under the ledger lock failed) and Unreserve calls (released).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	localVolumes = metrics.NewCounterVec(&metrics.CounterOpts{
		Subsystem:      subsystem,
		Name:           "local_volumes_total",
		Help:           "LocalVolume writes: created by PreBind, existing (same node, idempotent), deleted by Unreserve, released by PostFilter (left uncommitted by an interrupted cycle).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	preBindDuration = metrics.NewHistogram(&metrics.HistogramOpts{
		Subsystem:      subsystem,
		Name:           "prebind_duration_seconds",
		Help:           "Time PreBind takes to persist a pod's LocalVolumes.",
		Buckets:        metrics.ExponentialBuckets(0.001, 2, 15),
		StabilityLevel: metrics.ALPHA,
	})
	activations = metrics.NewCounter(&metrics.CounterOpts{
		Subsystem:      subsystem,
		Name:           "waiting_pod_activations_total",
		Help:           "Waiting pods moved back to the active queue because the ledger freed space.",
		StabilityLevel: metrics.ALPHA,
	})

	// Resolved once registered, so the hot path does no label lookups.
	filterFit, filterWrongNode                metrics.CounterMetric = noop{}, noop{}
	filterShortfall                                                 = map[ledger.ShortfallKind]metrics.CounterMetric{}
	reserveOK, reserveConflict, unreserved    metrics.CounterMetric = noop{}, noop{}, noop{}
	localVolumesCreated, localVolumesExisting metrics.CounterMetric = noop{}, noop{}
	localVolumesDeleted                       metrics.CounterMetric = noop{}
	localVolumesReleased                      metrics.CounterMetric = noop{}
	registerOnce                              sync.Once
	metricsLedger                             atomic.Pointer[ledger.Ledger]
	shortfallLabels                           = map[ledger.ShortfallKind]string{
		ledger.NoStorage: "no_storage", ledger.NoSuchVG: "no_such_vg", ledger.VGFull: "vg_full",
		ledger.NoVGFits: "no_vg_fits", ledger.NoDevice: "no_device", ledger.HeldElsewhere: "held_elsewhere",
		ledger.NoSuchPool: "no_such_thin_pool", ledger.PoolFull: "thin_pool_full", ledger.PoolFilled: "thin_pool_filled",
		ledger.NodeUnavailable: "node_unavailable",
	}
)

type noop struct{}

func (noop) Inc()        {}
func (noop) Add(float64) {}

// registerMetrics registers the metrics once per process and points the
// cache-size collector at the latest plugin instance's ledger.
func registerMetrics(l *ledger.Ledger) {
	metricsLedger.Store(l)
	registerOnce.Do(func() {
		legacyregistry.MustRegister(decisions, reservations, localVolumes, preBindDuration, activations)
		legacyregistry.CustomMustRegister(&ledgerCollector{})
		filterFit = decisions.WithLabelValues("fit")
		filterWrongNode = decisions.WithLabelValues("wrong_node")
		for k, label := range shortfallLabels {
			filterShortfall[k] = decisions.WithLabelValues(label)
		}
		reserveOK = reservations.WithLabelValues("reserved")
		reserveConflict = reservations.WithLabelValues("conflict")
		unreserved = reservations.WithLabelValues("released")
		localVolumesCreated = localVolumes.WithLabelValues("created")
		localVolumesExisting = localVolumes.WithLabelValues("existing")
		localVolumesDeleted = localVolumes.WithLabelValues("deleted")
		localVolumesReleased = localVolumes.WithLabelValues("released")
	})
}

// observeDecision counts a PreFilter refusal by status code.
func observeDecision(code string) {
	decisions.WithLabelValues("prefilter_" + code).Inc()
}

// ledgerCollector reports the ledger at scrape time: its sizes and each
// VG's capacity and allocation.
type ledgerCollector struct {
	metrics.BaseStableCollector
}

var (
	cacheSizeDesc = metrics.NewDesc(subsystem+"_cache_size",
		"Objects in the scheduler's storage ledger, by kind: nodes (with NodeLocalStorage), local_volumes, reservations (in flight), inline_volumes (of bound pods, counted from the pod).",
		[]string{"kind"}, nil, metrics.ALPHA, "")
	vgCapacityDesc = metrics.NewDesc(subsystem+"_vg_capacity_bytes",
		"Allocatable bytes of a schedulable VG, from its node's NodeLocalStorage.",
		[]string{"node", "vg"}, nil, metrics.ALPHA, "")
	vgAllocatedDesc = metrics.NewDesc(subsystem+"_vg_allocated_bytes",
		"Bytes of a VG held by LocalVolumes (state=volumes) and by in-flight reservations (state=reserved).",
		[]string{"node", "vg", "state"}, nil, metrics.ALPHA, "")
	heartbeatAgeDesc = metrics.NewDesc(subsystem+"_node_heartbeat_age_seconds",
		"Age of a node's NodeLocalStorage heartbeat (status.nodeStorageInfo.state.lastHeartbeatTime) as the scheduler sees it; nodes without one are not reported.",
		[]string{"node"}, nil, metrics.ALPHA, "")
	unavailableDesc = metrics.NewDesc(subsystem+"_node_unavailable",
		"1 for a node the scheduler places no new local volumes on, by reason: stale (heartbeat older than three agent intervals) or DiskFault (the NodeLocalStorage state).",
		[]string{"node", "reason"}, nil, metrics.ALPHA, "")
	devicesDesc = metrics.NewDesc(subsystem+"_devices",
		"Schedulable exclusive devices by node, media type and whether one is allocated.",
		[]string{"node", "media_type", "allocated"}, nil, metrics.ALPHA, "")
)

func (c *ledgerCollector) DescribeWithStability(ch chan<- *metrics.Desc) {
	ch <- cacheSizeDesc
	ch <- vgCapacityDesc
	ch <- vgAllocatedDesc
	ch <- devicesDesc
	ch <- heartbeatAgeDesc
	ch <- unavailableDesc
}

func (c *ledgerCollector) CollectWithStability(ch chan<- metrics.Metric) {
	l := metricsLedger.Load()
	if l == nil {
		return
	}
	s := l.Stats()
	ch <- metrics.NewLazyConstMetric(cacheSizeDesc, metrics.GaugeValue, float64(s.Nodes), "nodes")
	ch <- metrics.NewLazyConstMetric(cacheSizeDesc, metrics.GaugeValue, float64(s.Volumes), "local_volumes")
	ch <- metrics.NewLazyConstMetric(cacheSizeDesc, metrics.GaugeValue, float64(s.Reservations), "reservations")
	ch <- metrics.NewLazyConstMetric(cacheSizeDesc, metrics.GaugeValue, float64(s.InlineVolumes), "inline_volumes")
	type devKey struct{ node, media, allocated string }
	devs := map[devKey]int{}
	var vgs []ledger.VGUsage
	// Copy under the ledger's read lock, send after: a slow scrape must not
	// hold up Reserve.
	l.Visit(func(u ledger.VGUsage) { vgs = append(vgs, u) }, func(u ledger.DeviceUsage) {
		if u.Schedulable {
			allocated := "false"
			if u.Holder != "" {
				allocated = "true"
			}
			devs[devKey{u.Node, u.MediaType, allocated}]++
		}
	})
	for _, u := range vgs {
		if u.Schedulable {
			ch <- metrics.NewLazyConstMetric(vgCapacityDesc, metrics.GaugeValue, float64(u.Capacity), u.Node, u.VG)
		}
		ch <- metrics.NewLazyConstMetric(vgAllocatedDesc, metrics.GaugeValue, float64(u.Used), u.Node, u.VG, "volumes")
		ch <- metrics.NewLazyConstMetric(vgAllocatedDesc, metrics.GaugeValue, float64(u.Reserved), u.Node, u.VG, "reserved")
	}
	for k, n := range devs {
		ch <- metrics.NewLazyConstMetric(devicesDesc, metrics.GaugeValue, float64(n), k.node, k.media, k.allocated)
	}
	var nodes []ledger.NodeState
	l.VisitNodes(func(s ledger.NodeState) { nodes = append(nodes, s) })
	for _, s := range nodes {
		if s.HasNLS && s.HeartbeatAge >= 0 {
			ch <- metrics.NewLazyConstMetric(heartbeatAgeDesc, metrics.GaugeValue, s.HeartbeatAge.Seconds(), s.Node)
		}
		if s.Unavailable != "" {
			reason := "stale"
			if strings.HasPrefix(s.Unavailable, string(v1alpha1.StorageFault)) {
				reason = string(v1alpha1.StorageFault) // the free-text reason stays out of the label
			}
			ch <- metrics.NewLazyConstMetric(unavailableDesc, metrics.GaugeValue, 1, s.Node, reason)
		}
	}
}
