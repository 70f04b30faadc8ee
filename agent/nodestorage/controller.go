/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package nodestorage is the agent's NodeLocalStorage loop for its node:
// it creates and extends the VGs spec.resourceToBeInited names, discovers
// VGs, LVs, PVs and block devices, and writes status, only when something
// changed or a heartbeat is due. Bad input becomes Warning Events on the NLS
// and reasons in its status, never a crash.
package nodestorage

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/open-local/open-local/agent/discovery"
	agentmetrics "github.com/open-local/open-local/agent/metrics"
	"github.com/open-local/open-local/agent/nodeagent"
	"github.com/open-local/open-local/agent/workloop"
	"github.com/open-local/open-local/apis/client/clientset/versioned"
	"github.com/open-local/open-local/apis/client/informers/externalversions"
	listers "github.com/open-local/open-local/apis/client/listers/storage/v1alpha1"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
)

// Options tune the loop.
type Options struct {
	// Interval between discovery passes (open-local's --interval).
	Interval time.Duration
	// HeartbeatInterval: the status is written at least this often (its
	// lastHeartbeatTime), and otherwise only when it changed.
	HeartbeatInterval time.Duration
	// MaxInitBackoff caps the delay between attempts of a failing VG
	// creation or extension.
	MaxInitBackoff time.Duration
	// Sysfs is where /sys is mounted (open-local's --path.sysfs).
	Sysfs string
	// DeviceRegexp selects block devices by name (open-local's --regexp).
	DeviceRegexp *regexp.Regexp
	// Mountinfo is a mountinfo file that shows the host's mounts (default
	// /proc/self/mountinfo): a device with a mounted filesystem is in use.
	Mountinfo string
	// Ownership tells LVs that look like open-local's from others: those
	// no LocalVolume names are reported as orphans.
	Ownership discovery.Ownership
	// Metrics, when set, gets the open_local_orphan_lvs gauge.
	Metrics prometheus.Registerer
}

// Defaults of Options.
const (
	DefaultInterval          = time.Minute
	DefaultHeartbeatInterval = 2 * time.Minute
)

// Controller is the NodeLocalStorage loop of one node.
type Controller struct {
	node     string
	opts     Options
	client   versioned.Interface
	lvm      *lvm.Client
	recorder record.EventRecorder
	factory  externalversions.SharedInformerFactory
	lister   listers.NodeLocalStorageLister
	synced   cache.InformerSynced
	// The node's LocalVolumes (field selector spec.nodeName): the LVs they
	// name are the ones the ledger counts (discovery.Accounted).
	volFactory externalversions.SharedInformerFactory
	volumes    listers.LocalVolumeLister
	volSynced  cache.InformerSynced
	queue      workqueue.TypedRateLimitingInterface[string]
	now        func() time.Time
	orphanLVs  *agentmetrics.OrphanLVs
	quarantine *agentmetrics.QuarantinedDevices

	// Worker state (one worker).
	backoffs map[string]*backoff
	warned   map[string]string // reason -> last message emitted
	// reported: orphans announced by an OrphanLV Event (vg/lv), so each
	// gets one Event while it lasts.
	reported map[string]bool

	// suspects: the orphans of the last pass (vg/lv), read by the
	// LocalVolume handler too.
	suspectsMu sync.Mutex
	suspects   map[string]bool

	// StatusWrites counts status updates sent to the API server.
	StatusWrites atomic.Int64
}

var _ nodeagent.Controller = (*Controller)(nil)

// New returns the loop for env.NodeName.
func New(env *nodeagent.Env, opts Options) (*Controller, error) {
	if env.NodeName == "" {
		return nil, errors.New("nodestorage: node name is required")
	}
	if opts.Interval <= 0 || opts.HeartbeatInterval <= 0 {
		return nil, fmt.Errorf("nodestorage: interval %s and heartbeat interval %s must be positive", opts.Interval, opts.HeartbeatInterval)
	}
	if opts.MaxInitBackoff < opts.Interval {
		opts.MaxInitBackoff = 30 * opts.Interval
	}
	if opts.DeviceRegexp == nil {
		opts.DeviceRegexp = regexp.MustCompile(discovery.DefaultDeviceRegexp)
	}
	if opts.Mountinfo == "" {
		opts.Mountinfo = "/proc/self/mountinfo"
	}
	if opts.Sysfs == "" {
		opts.Sysfs = "/sys"
	}
	factory := externalversions.NewSharedInformerFactoryWithOptions(env.OpenLocal, 0,
		externalversions.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", env.NodeName).String()
		}))
	informer := factory.Csi().V1alpha1().NodeLocalStorages()
	volFactory := externalversions.NewSharedInformerFactoryWithOptions(env.OpenLocal, 0,
		externalversions.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", env.NodeName).String()
		}))
	volInformer := volFactory.Csi().V1alpha1().LocalVolumes()
	c := &Controller{
		node:       env.NodeName,
		opts:       opts,
		client:     env.OpenLocal,
		lvm:        env.LVM,
		recorder:   env.Recorder,
		factory:    factory,
		lister:     informer.Lister(),
		synced:     informer.Informer().HasSynced,
		volFactory: volFactory,
		volumes:    volInformer.Lister(),
		volSynced:  volInformer.Informer().HasSynced,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, opts.Interval),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "nodestorage"}),
		now:      time.Now,
		backoffs: map[string]*backoff{},
		warned:   map[string]string{},
		reported: map[string]bool{},
		suspects: map[string]bool{},
	}
	if opts.Metrics != nil {
		c.orphanLVs = agentmetrics.NewOrphanLVs(opts.Metrics)
		c.quarantine = agentmetrics.NewQuarantinedDevices(opts.Metrics)
	}
	// A LocalVolume naming an LV the last pass counted as an orphan (the
	// agent made its LV before this informer showed it): pass again at once
	// rather than keep its space out of allocatable for an interval.
	// A Device volume arriving, changing phase (Quarantined) or going
	// changes which devices are offered and shown released: pass again.
	isDevice := func(obj any) bool {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		lv, ok := obj.(*v1alpha1.LocalVolume)
		return ok && lv.Spec.VolumeType == v1alpha1.VolumeTypeDevice
	}
	_, err := volInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if lv, ok := obj.(*v1alpha1.LocalVolume); ok && (c.isSuspect(lv.Spec.VGName+"/"+lv.LVName()) || isDevice(lv)) {
				c.queue.Add(c.node)
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			o, n := oldObj.(*v1alpha1.LocalVolume), newObj.(*v1alpha1.LocalVolume)
			if isDevice(n) && o.Status.Phase != n.Status.Phase {
				c.queue.Add(c.node)
			}
		},
		DeleteFunc: func(obj any) {
			if isDevice(obj) {
				c.queue.Add(c.node)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	_, err = informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { c.queue.Add(c.node) },
		UpdateFunc: func(oldObj, newObj any) {
			o, n := oldObj.(*v1alpha1.NodeLocalStorage), newObj.(*v1alpha1.NodeLocalStorage)
			// Our own status writes come back here: only spec and
			// annotation changes call for a pass.
			if o.Generation != n.Generation || !maps.Equal(o.Annotations, n.Annotations) {
				c.queue.Add(c.node)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Run implements nodeagent.Controller: one worker, a discovery pass every
// Interval and after every spec or annotation change.
func (c *Controller) Run(ctx context.Context) error {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	c.volFactory.Start(ctx.Done())
	defer c.volFactory.Shutdown()
	// Before the first pass: with no LocalVolumes known, every LV would
	// count as an orphan.
	if !cache.WaitForCacheSync(ctx.Done(), c.synced, c.volSynced) {
		return ctx.Err()
	}
	klog.InfoS("NodeLocalStorage loop started", "node", c.node, "interval", c.opts.Interval, "heartbeat", c.opts.HeartbeatInterval)
	go wait.UntilWithContext(ctx, func(context.Context) { c.queue.Add(c.node) }, c.opts.Interval)
	workloop.Run(ctx, c.queue, 1, "sync NodeLocalStorage", "node", func(ctx context.Context, _ string) (time.Duration, error) {
		return 0, c.sync(ctx)
	})
	return nil
}

// sync is one pass: initialise VGs, discover, write status if needed.
func (c *Controller) sync(ctx context.Context) error {
	nls, err := c.lister.Get(c.node)
	if apierrors.IsNotFound(err) {
		klog.V(2).InfoS("no NodeLocalStorage for this node yet; the NLS controller creates it", "node", c.node)
		return nil
	}
	if err != nil {
		return err
	}
	obs := observation{ownership: c.opts.Ownership}
	obs.inv, obs.invErr = c.readInventory(ctx)
	// Twice: a thin pool is planned only once its VG exists.
	for range 2 {
		if obs.invErr != nil || !c.initVGs(ctx, nls, obs.inv) {
			break
		}
		obs.inv, obs.invErr = c.readInventory(ctx)
	}
	var use discovery.Usage
	if use, obs.devErr = discovery.UsageOf(obs.inv.pvs, c.opts.Mountinfo); obs.devErr == nil {
		if obs.invErr != nil {
			// Without lvm's report a PV would look free: offer no device.
			obs.devErr = fmt.Errorf("lvm's physical volumes are unknown: %w", obs.invErr)
		} else {
			obs.devices, obs.devErr = discovery.BlockDevices(c.opts.Sysfs, c.opts.DeviceRegexp, use)
		}
	}
	// After lvm's report: the agent creates an LV only for a LocalVolume
	// the API already has, so any LV in the report has its LocalVolume in
	// the API by now; this lister may still lag the volumes reconciler's.
	// Then the LV counts as foreign for this pass while the ledger counts
	// its LocalVolume too: allocatable is under-stated (the safe side),
	// and the LocalVolume's arrival triggers a new pass (see New).
	vols, err := c.volumes.List(labels.Everything())
	if err != nil {
		return err
	}
	obs.accounted = discovery.AccountedBy(vols)
	obs.held, obs.released = heldDevices(vols)
	c.quarantine.Set(c.node, len(obs.released))

	status, warns := desiredStatus(nls, obs)
	c.emitWarnings(nls, warns)
	if obs.invErr == nil {
		c.reportOrphans(nls, status.NodeStorageInfo.VolumeGroups)
	}
	now := c.now()
	due := nls.Status.NodeStorageInfo.State.LastHeartbeatTime == nil ||
		now.Sub(nls.Status.NodeStorageInfo.State.LastHeartbeatTime.Time) >= c.opts.HeartbeatInterval
	if !changed(&status, &nls.Status) && !due {
		return obs.invErr
	}
	stamp(&status, &nls.Status, now)
	upd := nls.DeepCopy()
	upd.Status = status
	if _, err := c.client.CsiV1alpha1().NodeLocalStorages().UpdateStatus(ctx, upd, metav1.UpdateOptions{FieldManager: "open-local-agent"}); err != nil {
		return fmt.Errorf("update status of NodeLocalStorage %s: %w", c.node, err)
	}
	c.StatusWrites.Add(1)
	klog.V(2).InfoS("wrote NodeLocalStorage status", "node", c.node, "changed", changed(&status, &nls.Status), "heartbeat", due)
	return obs.invErr
}

func (c *Controller) readInventory(ctx context.Context) (inventory, error) {
	var inv inventory
	var err error
	if inv.vgs, err = c.lvm.ListVGs(ctx); err != nil {
		return inv, err
	}
	if inv.lvs, err = c.lvm.ListLVs(ctx, ""); err != nil {
		return inv, err
	}
	inv.pvs, err = c.lvm.ListPVs(ctx)
	return inv, err
}

// emitWarnings emits each warning once for as long as it lasts: a problem
// that persists does not add an Event (an API write) every pass.
func (c *Controller) emitWarnings(nls *v1alpha1.NodeLocalStorage, warns []warning) {
	seen := map[string]bool{}
	for _, w := range warns {
		seen[w.reason] = true
		if c.warned[w.reason] == w.message {
			continue
		}
		c.warned[w.reason] = w.message
		klog.InfoS("warning", "node", c.node, "reason", w.reason, "message", w.message)
		c.recorder.Event(nls, corev1.EventTypeWarning, w.reason, w.message)
	}
	for r := range c.warned {
		if !seen[r] {
			delete(c.warned, r)
		}
	}
}
