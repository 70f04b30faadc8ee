/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package orphanvolumes

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/open-local/open-local/agent/workloop"
	"github.com/open-local/open-local/apis/client/clientset/versioned"
	olinformers "github.com/open-local/open-local/apis/client/informers/externalversions/storage/v1alpha1"
	listers "github.com/open-local/open-local/apis/client/listers/storage/v1alpha1"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/config"
)

// ReasonCollected is the Event (Normal, on the LocalVolume) of a collection.
const ReasonCollected = "OrphanVolumeCollected"

// DefaultGrace is --orphan-volume-grace's default: long past any
// CreateVolume (the CSI controller waits minutes for the agent) and any
// informer lag.
const DefaultGrace = 5 * time.Minute

// Indexes.
const (
	claimIndex  = "claim"  // LocalVolumes by claimRef namespace/name
	handleIndex = "handle" // PVs of our driver by volumeHandle
)

// Metrics are the collector's; make them once per process (a new leader
// term builds a new Collector with the same Metrics).
type Metrics struct {
	collected *prometheus.CounterVec
}

// NewMetrics registers open_local_orphan_volumes_collected_total{reason}.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{collected: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "open_local_orphan_volumes_collected_total",
		Help: "LocalVolumes deleted because their PVC is gone (ClaimDeleted) or was replaced (ClaimReplaced) and no PV names them.",
	}, []string{"reason"})}
	for _, r := range []string{ReasonClaimDeleted, ReasonClaimReplaced} {
		m.collected.WithLabelValues(r)
	}
	reg.MustRegister(m.collected)
	return m
}

// Options tune the collector.
type Options struct {
	// Grace: how long a volume must have been orphaned (and exist) before
	// it is deleted (default DefaultGrace).
	Grace time.Duration
	// Resync: every volume is looked at again this often (default 1 min),
	// beside the events that wake it.
	Resync time.Duration
	// Driver is the CSI driver whose PVs' volumeHandle is a LocalVolume
	// name (default config.ProvisionerName).
	Driver string
	// Metrics, when set, counts collections.
	Metrics *Metrics
}

// Collector deletes orphan LocalVolumes (see Decide).
type Collector struct {
	opts     Options
	client   versioned.Interface
	kube     kubernetes.Interface
	lvs      listers.LocalVolumeLister
	lvIndex  cache.Indexer
	pvcs     corelisters.PersistentVolumeClaimLister
	pvIndex  cache.Indexer
	synced   []cache.InformerSynced
	recorder record.EventRecorder
	queue    workqueue.TypedRateLimitingInterface[string]
	now      func() time.Time

	// orphanSince: when each volume was first seen orphaned (one worker).
	orphanSince map[string]time.Time
}

// New wires the collector to shared informers; the caller starts them.
func New(client versioned.Interface, kube kubernetes.Interface, lvs olinformers.LocalVolumeInformer,
	pvcs coreinformers.PersistentVolumeClaimInformer, pvs coreinformers.PersistentVolumeInformer,
	recorder record.EventRecorder, opts Options) (*Collector, error) {
	if opts.Grace <= 0 {
		opts.Grace = DefaultGrace
	}
	if opts.Resync <= 0 {
		opts.Resync = time.Minute
	}
	if opts.Driver == "" {
		opts.Driver = config.ProvisionerName
	}
	c := &Collector{
		opts: opts, client: client, kube: kube,
		lvs: lvs.Lister(), lvIndex: lvs.Informer().GetIndexer(),
		pvcs: pvcs.Lister(), pvIndex: pvs.Informer().GetIndexer(),
		synced:   []cache.InformerSynced{lvs.Informer().HasSynced, pvcs.Informer().HasSynced, pvs.Informer().HasSynced},
		recorder: recorder,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, time.Minute),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "orphanvolumes"}),
		now:         time.Now,
		orphanSince: map[string]time.Time{},
	}
	if err := lvs.Informer().AddIndexers(cache.Indexers{claimIndex: func(obj any) ([]string, error) {
		lv, ok := obj.(*v1alpha1.LocalVolume)
		if !ok || lv.Spec.ClaimRef == nil {
			return nil, nil
		}
		return []string{lv.Spec.ClaimRef.Namespace + "/" + lv.Spec.ClaimRef.Name}, nil
	}}); err != nil {
		return nil, err
	}
	if err := AddPVHandleIndex(pvs.Informer(), opts.Driver); err != nil {
		return nil, err
	}
	add := func(obj any) {
		if lv, ok := obj.(*v1alpha1.LocalVolume); ok && lv.Spec.ClaimRef != nil {
			c.queue.Add(lv.Name)
		}
	}
	if _, err := lvs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: add, UpdateFunc: func(_, obj any) { add(obj) },
	}); err != nil {
		return nil, err
	}
	// A claim or PV going away (or a claim of the name coming back with
	// another UID) may make volumes orphans.
	claimChanged := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if pvc, ok := obj.(*corev1.PersistentVolumeClaim); ok {
			c.enqueueIndexed(c.lvIndex, claimIndex, pvc.Namespace+"/"+pvc.Name)
		}
	}
	if _, err := pvcs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: claimChanged, DeleteFunc: claimChanged,
	}); err != nil {
		return nil, err
	}
	if _, err := pvs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if pv, ok := obj.(*corev1.PersistentVolume); ok && pv.Spec.CSI != nil && pv.Spec.CSI.Driver == opts.Driver {
				c.queue.Add(pv.Spec.CSI.VolumeHandle)
			}
		},
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// PVHandleIndex indexes the PVs of a driver by volumeHandle (a LocalVolume
// name), in a PV informer AddPVHandleIndex set up.
const PVHandleIndex = handleIndex

// AddPVHandleIndex adds PVHandleIndex to a shared PV informer unless a
// controller sharing it already did (the node-loss controller and this
// collector run on the same informers).
func AddPVHandleIndex(pvs cache.SharedIndexInformer, driver string) error {
	if _, ok := pvs.GetIndexer().GetIndexers()[handleIndex]; ok {
		return nil
	}
	return pvs.AddIndexers(cache.Indexers{handleIndex: func(obj any) ([]string, error) {
		pv, ok := obj.(*corev1.PersistentVolume)
		if !ok || pv.Spec.CSI == nil || pv.Spec.CSI.Driver != driver {
			return nil, nil
		}
		return []string{pv.Spec.CSI.VolumeHandle}, nil
	}})
}

func (c *Collector) enqueueIndexed(idx cache.Indexer, index, key string) {
	objs, _ := idx.ByIndex(index, key)
	for _, o := range objs {
		if lv, ok := o.(*v1alpha1.LocalVolume); ok {
			c.queue.Add(lv.Name)
		}
	}
}

// Run works until ctx is done: one worker (deletions are rare), every
// volume looked at again every Resync.
func (c *Collector) Run(ctx context.Context) error {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return ctx.Err()
	}
	klog.InfoS("orphan LocalVolume collector started", "grace", c.opts.Grace, "driver", c.opts.Driver)
	go wait.UntilWithContext(ctx, func(context.Context) {
		all, _ := c.lvs.List(labels.Everything())
		for _, lv := range all {
			if lv.Spec.ClaimRef != nil {
				c.queue.Add(lv.Name)
			}
		}
	}, c.opts.Resync)
	workloop.Run(ctx, c.queue, 1, "check orphan LocalVolume", "localVolume", func(ctx context.Context, name string) (time.Duration, error) {
		return 0, c.sync(ctx, name)
	})
	return nil
}

// facts gathers what the caches know of lv's claim.
func (c *Collector) facts(lv *v1alpha1.LocalVolume) (Facts, error) {
	var f Facts
	ref := lv.Spec.ClaimRef
	if ref == nil {
		return f, nil
	}
	pvc, err := c.pvcs.PersistentVolumeClaims(ref.Namespace).Get(ref.Name)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return f, err
	default:
		f.Claim = pvc
	}
	pvs, err := c.pvIndex.ByIndex(handleIndex, lv.Name)
	if err != nil {
		return f, err
	}
	f.PVNamed = len(pvs) > 0
	return f, nil
}

func (c *Collector) sync(ctx context.Context, name string) error {
	lv, err := c.lvs.Get(name)
	if apierrors.IsNotFound(err) {
		delete(c.orphanSince, name)
		return nil
	}
	if err != nil {
		return err
	}
	f, err := c.facts(lv)
	if err != nil {
		return err
	}
	now := c.now()
	if s, ok := c.orphanSince[name]; ok {
		f.OrphanSince = s
	} else {
		f.OrphanSince = now
	}
	d := Decide(lv, f, now, c.opts.Grace)
	switch d.Verdict {
	case Keep:
		delete(c.orphanSince, name)
		return nil
	case Wait:
		c.orphanSince[name] = f.OrphanSince
		klog.V(2).InfoS("orphan LocalVolume within its grace period", "localVolume", name, "reason", d.Reason, "collectIn", d.After)
		c.queue.AddAfter(name, d.After)
		return nil
	}
	// The caches may lag: ask the API server before deleting.
	if keep, err := c.confirm(ctx, lv); err != nil || keep {
		if keep {
			delete(c.orphanSince, name)
		}
		return err
	}
	uid := lv.UID
	err = c.client.CsiV1alpha1().LocalVolumes().Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	switch {
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		// Gone, or another object of that name now: nothing of ours to do.
		delete(c.orphanSince, name)
		return nil
	case err != nil:
		return fmt.Errorf("delete orphan LocalVolume %s: %w", name, err)
	}
	delete(c.orphanSince, name)
	msg := describe(lv, d, f, c.opts.Grace)
	klog.InfoS("collected orphan LocalVolume", "localVolume", name, "reason", d.Reason, "message", msg)
	c.recorder.Event(lv, corev1.EventTypeNormal, ReasonCollected, msg)
	if c.opts.Metrics != nil {
		c.opts.Metrics.collected.WithLabelValues(d.Reason).Inc()
	}
	return nil
}

// confirm re-reads, from the API server, the claim and the PVs the CSI
// provisioner would name for lv (its own name, pvc-<claim UID>): true when
// either shows the volume is not an orphan after all.
func (c *Collector) confirm(ctx context.Context, lv *v1alpha1.LocalVolume) (bool, error) {
	ref := lv.Spec.ClaimRef
	pvc, err := c.kube.CoreV1().PersistentVolumeClaims(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	switch {
	case err == nil && pvc.UID == ref.UID:
		return true, nil
	case err != nil && !apierrors.IsNotFound(err):
		return false, fmt.Errorf("get PVC %s/%s: %w", ref.Namespace, ref.Name, err)
	}
	for _, pvName := range []string{lv.Name, "pvc-" + string(ref.UID)} {
		pv, err := c.kube.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return false, fmt.Errorf("get PV %s: %w", pvName, err)
		case pv.Spec.CSI != nil && pv.Spec.CSI.Driver == c.opts.Driver && pv.Spec.CSI.VolumeHandle == lv.Name:
			return true, nil
		}
	}
	return false, nil
}
