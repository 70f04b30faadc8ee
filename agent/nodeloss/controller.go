/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package nodeloss handles LocalVolumes whose node is gone: its Node object
// was deleted (not merely NotReady) and has not come back within a grace
// period, confirmed by a live read from the API server (informers lag). No
// agent will ever carry out such a volume or remove its LV and finalizer, so
// DeleteVolume would wait for ever and the PV stay Released with nothing
// saying why.
//
// Always (it is information): the volume gets the condition NodeGone=True,
// and its PV and PVC a Warning Event saying what happened and what to do.
// With Cleanup on (opt-in, --node-loss-cleanup): the finalizer of each such
// volume being deleted is removed (its LV, if the machine still exists, is
// left on the disk: the agent reports it as an orphan LV and never counts
// it free), and each PVC that opted in with the annotation
// v1alpha1.NodeLossAnnotation="true" is deleted, so a StatefulSet recreates
// it, empty, on another node. It never touches anything of a node whose Node
// object exists, whatever its Ready condition. It runs in the leader-elected
// controller (agent --mode=controller).
//
// Unlike TopoLVM's node finalizer it puts no finalizer on Nodes (a node
// deletion never waits for us), deletes only claims that opted in (TopoLVM
// deletes every claim of the node: a Node object re-created by a cluster
// upgrade cost people their data), waits out a grace period with a live
// re-check, and says on every object involved what it did.
package nodeloss

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/open-local/open-local/agent/orphanvolumes"
	"github.com/open-local/open-local/agent/workloop"
	"github.com/open-local/open-local/apis/client/clientset/versioned"
	olinformers "github.com/open-local/open-local/apis/client/informers/externalversions/storage/v1alpha1"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/config"
)

// Event reasons.
const (
	// ReasonNodeGone (Warning, on the PV and the PVC, and the LocalVolume):
	// the volume's node is gone.
	ReasonNodeGone = "NodeGone"
	// ReasonNodeReturned (Normal, on the LocalVolume): a Node of that name
	// exists again.
	ReasonNodeReturned = "NodeReturned"
	// ReasonFinalizerRemoved (Normal, on the LocalVolume): cleanup let a
	// volume being deleted go.
	ReasonFinalizerRemoved = "NodeGoneFinalizerRemoved"
	// ReasonClaimDeleted (Warning, on the PVC): cleanup deleted an
	// opted-in claim.
	ReasonClaimDeleted = "NodeGoneClaimDeleted"
)

// DefaultGrace is --node-loss-grace's default: a Node deleted and
// re-created (a kubelet re-registering, a node replaced under the same
// name) within it is never treated as gone.
const DefaultGrace = 2 * time.Minute

// Metric actions (the action label).
const (
	ActionMarked           = "marked"            // NodeGone set True on a volume
	ActionFinalizerRemoved = "finalizer_removed" // cleanup removed a finalizer
	ActionClaimDeleted     = "claim_deleted"     // cleanup deleted an opted-in PVC
)

// Indexes.
const (
	nodeIndex   = "node" // LocalVolumes by spec.nodeName
	handleIndex = orphanvolumes.PVHandleIndex
)

// Metrics are the controller's; made once per process (a new leader term
// builds a new Controller with the same Metrics).
type Metrics struct {
	actions *prometheus.CounterVec
}

// NewMetrics registers open_local_node_loss_total{action}.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{actions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "open_local_node_loss_total",
		Help: "What the node-loss controller did to LocalVolumes of deleted nodes: marked (NodeGone set), finalizer_removed, claim_deleted.",
	}, []string{"action"})}
	for _, a := range []string{ActionMarked, ActionFinalizerRemoved, ActionClaimDeleted} {
		m.actions.WithLabelValues(a)
	}
	reg.MustRegister(m.actions)
	return m
}

func (m *Metrics) inc(action string) {
	if m != nil {
		m.actions.WithLabelValues(action).Inc()
	}
}

// Options tune the controller.
type Options struct {
	// Grace: how long a node must have been seen without a Node object
	// before its volumes are treated as gone (default DefaultGrace).
	Grace time.Duration
	// Cleanup removes the finalizers of gone nodes' volumes being deleted
	// and deletes their opted-in PVCs. Off: conditions and Events only.
	Cleanup bool
	// Resync: every node that has volumes is looked at again this often.
	Resync time.Duration
	// Driver names our PVs (default config.ProvisionerName).
	Driver  string
	Metrics *Metrics
}

// Controller watches Nodes and LocalVolumes, keyed by node name.
type Controller struct {
	opts     Options
	client   versioned.Interface
	kube     kubernetes.Interface
	nodes    corelisters.NodeLister
	lvIndex  cache.Indexer
	pvcs     corelisters.PersistentVolumeClaimLister
	pvIndex  cache.Indexer
	synced   []cache.InformerSynced
	recorder record.EventRecorder
	queue    workqueue.TypedRateLimitingInterface[string]
	now      func() time.Time

	// goneSince: when each node was first seen without a Node object, by
	// this leader (one worker). A new leader waits a full grace again.
	goneSince map[string]time.Time
}

// New wires the controller to shared informers; the caller starts them.
func New(client versioned.Interface, kube kubernetes.Interface, nodes coreinformers.NodeInformer,
	lvs olinformers.LocalVolumeInformer, pvcs coreinformers.PersistentVolumeClaimInformer,
	pvs coreinformers.PersistentVolumeInformer, recorder record.EventRecorder, opts Options) (*Controller, error) {
	if opts.Grace <= 0 {
		opts.Grace = DefaultGrace
	}
	if opts.Resync <= 0 {
		opts.Resync = time.Minute
	}
	if opts.Driver == "" {
		opts.Driver = config.ProvisionerName
	}
	c := &Controller{
		opts: opts, client: client, kube: kube,
		nodes: nodes.Lister(), lvIndex: lvs.Informer().GetIndexer(),
		pvcs: pvcs.Lister(), pvIndex: pvs.Informer().GetIndexer(),
		synced: []cache.InformerSynced{nodes.Informer().HasSynced, lvs.Informer().HasSynced,
			pvcs.Informer().HasSynced, pvs.Informer().HasSynced},
		recorder: recorder,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, time.Minute),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "nodeloss"}),
		now:       time.Now,
		goneSince: map[string]time.Time{},
	}
	if err := lvs.Informer().AddIndexers(cache.Indexers{nodeIndex: func(obj any) ([]string, error) {
		if lv, ok := obj.(*v1alpha1.LocalVolume); ok {
			return []string{lv.Spec.NodeName}, nil
		}
		return nil, nil
	}}); err != nil {
		return nil, err
	}
	// The same index as the orphan collector's, on the informer they share.
	if err := orphanvolumes.AddPVHandleIndex(pvs.Informer(), opts.Driver); err != nil {
		return nil, err
	}
	enqueueNode := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if n, ok := obj.(*corev1.Node); ok {
			c.queue.Add(n.Name)
		}
	}
	if _, err := nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueueNode, DeleteFunc: enqueueNode,
	}); err != nil {
		return nil, err
	}
	// A volume appearing or starting its deletion on a gone node is work.
	enqueueVolume := func(obj any) {
		if lv, ok := obj.(*v1alpha1.LocalVolume); ok {
			c.queue.Add(lv.Spec.NodeName)
		}
	}
	if _, err := lvs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueueVolume, UpdateFunc: func(_, obj any) { enqueueVolume(obj) },
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// Run works until ctx is done: one worker (node losses are rare).
func (c *Controller) Run(ctx context.Context) error {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return ctx.Err()
	}
	klog.InfoS("node-loss controller started", "grace", c.opts.Grace, "cleanup", c.opts.Cleanup)
	go wait.UntilWithContext(ctx, func(context.Context) {
		for _, node := range c.lvIndex.ListIndexFuncValues(nodeIndex) {
			c.queue.Add(node)
		}
	}, c.opts.Resync)
	workloop.Run(ctx, c.queue, 1, "check node loss", "node", func(ctx context.Context, node string) (time.Duration, error) {
		return 0, c.sync(ctx, node)
	})
	return nil
}

func (c *Controller) volumesOf(node string) []*v1alpha1.LocalVolume {
	objs, _ := c.lvIndex.ByIndex(nodeIndex, node)
	var lvs []*v1alpha1.LocalVolume
	for _, o := range objs {
		if lv, ok := o.(*v1alpha1.LocalVolume); ok {
			lvs = append(lvs, lv)
		}
	}
	return lvs
}

func (c *Controller) sync(ctx context.Context, node string) error {
	lvs := c.volumesOf(node)
	_, err := c.nodes.Get(node)
	switch {
	case err == nil:
		delete(c.goneSince, node)
		return c.returned(ctx, node, lvs)
	case !apierrors.IsNotFound(err):
		return err
	}
	if len(lvs) == 0 {
		delete(c.goneSince, node)
		return nil
	}
	now := c.now()
	since, ok := c.goneSince[node]
	if !ok {
		since = now
		c.goneSince[node] = since
	}
	if left := since.Add(c.opts.Grace).Sub(now); left > 0 {
		klog.V(2).InfoS("node without a Node object, within the grace period", "node", node, "volumes", len(lvs), "actIn", left)
		c.queue.AddAfter(node, left)
		return nil
	}
	// The informer may lag behind a re-created Node: ask the API server.
	_, err = c.kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	switch {
	case err == nil:
		delete(c.goneSince, node)
		return nil // its Add event is on its way
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("get Node %s: %w", node, err)
	}
	var errs []error
	for _, lv := range lvs {
		if err := c.gone(ctx, lv, since); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// gone marks lv NodeGone (Events on the first time) and, with Cleanup,
// lets it go if it is being deleted and deletes its opted-in claim.
func (c *Controller) gone(ctx context.Context, lv *v1alpha1.LocalVolume, since time.Time) error {
	if !meta.IsStatusConditionTrue(lv.Status.Conditions, v1alpha1.ConditionNodeGone) {
		msg := fmt.Sprintf("Node %s does not exist (seen without a Node object since %s, confirmed by the API server after %s); no agent will carry out this volume or remove its LV",
			lv.Spec.NodeName, since.UTC().Format(time.RFC3339), c.opts.Grace)
		next := lv.DeepCopy()
		meta.SetStatusCondition(&next.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionNodeGone,
			Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonNodeDeleted, Message: msg, ObservedGeneration: lv.Generation})
		updated, err := c.client.CsiV1alpha1().LocalVolumes().UpdateStatus(ctx, next, metav1.UpdateOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return fmt.Errorf("set NodeGone on LocalVolume %s: %w", lv.Name, err)
		}
		lv = updated
		c.opts.Metrics.inc(ActionMarked)
		klog.InfoS("volume's node is gone", "localVolume", lv.Name, "node", lv.Spec.NodeName, "cleanup", c.opts.Cleanup)
		c.recorder.Event(lv, corev1.EventTypeWarning, ReasonNodeGone, msg)
		c.announce(lv)
	}
	if !c.opts.Cleanup {
		return nil
	}
	if err := c.deleteOptedInClaim(ctx, lv); err != nil {
		return err
	}
	return c.releaseFinalizer(ctx, lv)
}

// announce puts a Warning on the PV and the PVC of lv: what happened and
// what the operator can do.
func (c *Controller) announce(lv *v1alpha1.LocalVolume) {
	pvs, _ := c.pvIndex.ByIndex(handleIndex, lv.Name)
	claim := c.claimOf(lv)
	what := fmt.Sprintf("node %s of volume %s (LocalVolume %s, %s) is gone: its data is on that machine's disks only",
		lv.Spec.NodeName, lv.Name, lv.Name, lv.Spec.Size.String())
	var todo string
	switch {
	case claim == nil:
		todo = "no claim of it exists"
	case c.opts.Cleanup && optedIn(claim):
		todo = fmt.Sprintf("PVC %s/%s opted in (%s=true): it is deleted so its StatefulSet recreates it, empty, on another node", claim.Namespace, claim.Name, v1alpha1.NodeLossAnnotation)
	case c.opts.Cleanup:
		todo = fmt.Sprintf("PVC %s/%s is kept (no %s=true annotation); to recreate it elsewhere, empty: kubectl -n %s delete pvc %s", claim.Namespace, claim.Name, v1alpha1.NodeLossAnnotation, claim.Namespace, claim.Name)
	default:
		todo = fmt.Sprintf("node-loss cleanup is off; to recreate PVC %s/%s elsewhere, empty: kubectl -n %s delete pvc %s, then kubectl patch localvolume %s --type=merge -p '{\"metadata\":{\"finalizers\":null}}'",
			claim.Namespace, claim.Name, claim.Namespace, claim.Name, lv.Name)
	}
	msg := what + "; " + todo
	for _, o := range pvs {
		if pv, ok := o.(*corev1.PersistentVolume); ok {
			c.recorder.Event(pv, corev1.EventTypeWarning, ReasonNodeGone, msg)
		}
	}
	if claim != nil {
		c.recorder.Event(claim, corev1.EventTypeWarning, ReasonNodeGone, msg)
	}
}

// claimOf is the PVC lv was made for, only while it has the UID lv names.
func (c *Controller) claimOf(lv *v1alpha1.LocalVolume) *corev1.PersistentVolumeClaim {
	ref := lv.Spec.ClaimRef
	if ref == nil || ref.UID == "" || lv.Spec.PodRef != nil || lv.Spec.Kind == v1alpha1.KindSnapshot {
		return nil
	}
	pvc, err := c.pvcs.PersistentVolumeClaims(ref.Namespace).Get(ref.Name)
	if err != nil || pvc.UID != ref.UID {
		return nil
	}
	return pvc
}

func optedIn(pvc *corev1.PersistentVolumeClaim) bool {
	return pvc.Annotations[v1alpha1.NodeLossAnnotation] == "true"
}

func (c *Controller) deleteOptedInClaim(ctx context.Context, lv *v1alpha1.LocalVolume) error {
	pvc := c.claimOf(lv)
	if pvc == nil || !optedIn(pvc) || pvc.DeletionTimestamp != nil {
		return nil
	}
	uid := pvc.UID
	err := c.kube.CoreV1().PersistentVolumeClaims(pvc.Namespace).Delete(ctx, pvc.Name,
		metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	switch {
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		return nil // gone, or another claim of that name now: not ours
	case err != nil:
		return fmt.Errorf("delete PVC %s/%s: %w", pvc.Namespace, pvc.Name, err)
	}
	c.opts.Metrics.inc(ActionClaimDeleted)
	msg := fmt.Sprintf("deleted: its volume %s is on node %s, which is gone, and the claim opted in (%s=true); its StatefulSet recreates it, empty, on another node",
		lv.Name, lv.Spec.NodeName, v1alpha1.NodeLossAnnotation)
	klog.InfoS("deleted claim of a gone node", "pvc", klog.KObj(pvc), "localVolume", lv.Name, "node", lv.Spec.NodeName)
	c.recorder.Event(pvc, corev1.EventTypeWarning, ReasonClaimDeleted, msg)
	return nil
}

// releaseFinalizer removes the agent's finalizer from lv once its deletion
// started (DeleteVolume after the PV was released, or an operator): the
// object goes, the LV stays on the disk if the disk still exists.
func (c *Controller) releaseFinalizer(ctx context.Context, lv *v1alpha1.LocalVolume) error {
	if lv.DeletionTimestamp == nil || !slices.Contains(lv.Finalizers, v1alpha1.LocalVolumeFinalizer) {
		return nil
	}
	next := lv.DeepCopy()
	next.Finalizers = slices.DeleteFunc(next.Finalizers, func(f string) bool { return f == v1alpha1.LocalVolumeFinalizer })
	_, err := c.client.CsiV1alpha1().LocalVolumes().Update(ctx, next, metav1.UpdateOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("remove the finalizer of LocalVolume %s: %w", lv.Name, err)
	}
	c.opts.Metrics.inc(ActionFinalizerRemoved)
	msg := fmt.Sprintf("removed finalizer %s: node %s is gone, no agent will remove LV %s; if that machine comes back its agent reports the LV as an orphan (never counted free)",
		v1alpha1.LocalVolumeFinalizer, lv.Spec.NodeName, lv.Name)
	klog.InfoS("released volume of a gone node", "localVolume", lv.Name, "node", lv.Spec.NodeName)
	c.recorder.Event(lv, corev1.EventTypeNormal, ReasonFinalizerRemoved, msg)
	return nil
}

// returned sets NodeGone=False on the volumes of a node that exists again.
func (c *Controller) returned(ctx context.Context, node string, lvs []*v1alpha1.LocalVolume) error {
	var errs []error
	for _, lv := range lvs {
		if !meta.IsStatusConditionTrue(lv.Status.Conditions, v1alpha1.ConditionNodeGone) {
			continue
		}
		msg := fmt.Sprintf("a Node named %s exists again", node)
		next := lv.DeepCopy()
		meta.SetStatusCondition(&next.Status.Conditions, metav1.Condition{Type: v1alpha1.ConditionNodeGone,
			Status: metav1.ConditionFalse, Reason: v1alpha1.ReasonNodeReturned, Message: msg, ObservedGeneration: lv.Generation})
		updated, err := c.client.CsiV1alpha1().LocalVolumes().UpdateStatus(ctx, next, metav1.UpdateOptions{})
		switch {
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("clear NodeGone on LocalVolume %s: %w", lv.Name, err))
			continue
		}
		c.recorder.Event(updated, corev1.EventTypeNormal, ReasonNodeReturned, msg)
	}
	return errors.Join(errs...)
}
