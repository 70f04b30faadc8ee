/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package nlscontroller keeps one NodeLocalStorage per Node, its spec
// derived from the NodeLocalStorageInitConfig (see Spec): it creates the NLS
// of a new node, rewrites the spec when the config or the node's labels
// change it (only then), and deletes the NLS of a deleted node. It runs
// cluster-wide in one leader-elected replica (agent --mode=controller).
package nlscontroller

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	coreinformers "k8s.io/client-go/informers/core/v1"
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
)

// Event reasons, on the NodeLocalStorageInitConfig.
const (
	// ReasonSynced: an NLS was created, updated or deleted.
	ReasonSynced = "Synced"
	// ReasonInvalidSelector: a nodesConfig selector is invalid; no NLS is
	// created or changed until it is fixed.
	ReasonInvalidSelector = "InvalidSelector"
)

// FieldManager is the manager name of the controller's writes.
const FieldManager = "open-local-nls-controller"

// InitConfigLabel marks the NodeLocalStorages a controller manages, with the
// name of its NodeLocalStorageInitConfig. Only those are deleted with their
// Node; NLS objects without it (written by hand or another tool) of nodes
// the controller serves are adopted (labelled) on their next sync.
const InitConfigLabel = "csi.aliyun.com/init-config"

// Options configure the controller.
type Options struct {
	// InitConfig is the name of the NodeLocalStorageInitConfig (open-local's --initconfig).
	InitConfig string
	// UpdateSpecs: rewrite the spec of existing NLS objects when it differs
	// (open-local's UpdateNLS feature gate, on by default). Off, only new
	// nodes get an NLS from the config.
	UpdateSpecs bool
	// Workers is the number of parallel syncs.
	Workers int
	// NodeSelector limits the nodes that get a NodeLocalStorage (nil: all).
	NodeSelector labels.Selector
}

// Controller is the NodeLocalStorage controller.
type Controller struct {
	opts     Options
	client   versioned.Interface
	recorder record.EventRecorder
	nodes    corelisters.NodeLister
	nls      listers.NodeLocalStorageLister
	nlsc     listers.NodeLocalStorageInitConfigLister
	synced   []cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string]

	warnMu     sync.Mutex
	lastWarned string // resourceVersion of the config last warned about
}

// New wires the controller to informers; start them, then Run.
func New(client versioned.Interface, nodes coreinformers.NodeInformer, nls olinformers.NodeLocalStorageInformer,
	nlsc olinformers.NodeLocalStorageInitConfigInformer, recorder record.EventRecorder, opts Options) (*Controller, error) {
	if opts.InitConfig == "" {
		return nil, fmt.Errorf("nlscontroller: the NodeLocalStorageInitConfig name is required")
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.NodeSelector == nil {
		opts.NodeSelector = labels.Everything()
	}
	c := &Controller{
		opts:     opts,
		client:   client,
		recorder: recorder,
		nodes:    nodes.Lister(),
		nls:      nls.Lister(),
		nlsc:     nlsc.Lister(),
		synced:   []cache.InformerSynced{nodes.Informer().HasSynced, nls.Informer().HasSynced, nlsc.Informer().HasSynced},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "nlscontroller"}),
	}
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}
	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{nodes.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc: enqueue,
			UpdateFunc: func(o, n any) {
				if !maps.Equal(o.(*corev1.Node).Labels, n.(*corev1.Node).Labels) {
					enqueue(n)
				}
			},
			DeleteFunc: enqueue,
		}},
		// NLS events repair drift: a deleted NLS of a live node comes back,
		// a hand-edited spec is rewritten, an orphan is deleted.
		{nls.Informer(), cache.ResourceEventHandlerFuncs{
			AddFunc: enqueue,
			UpdateFunc: func(o, n any) {
				if o.(*v1alpha1.NodeLocalStorage).Generation != n.(*v1alpha1.NodeLocalStorage).Generation {
					enqueue(n)
				}
			},
			DeleteFunc: enqueue,
		}},
		{nlsc.Informer(), cache.FilteringResourceEventHandler{
			FilterFunc: func(obj any) bool {
				if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = t.Obj
				}
				m, ok := obj.(metav1.Object)
				return ok && m.GetName() == opts.InitConfig
			},
			Handler: cache.ResourceEventHandlerFuncs{
				AddFunc:    func(any) { c.enqueueAll() },
				UpdateFunc: func(any, any) { c.enqueueAll() },
				DeleteFunc: func(any) { c.enqueueAll() },
			},
		}},
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// enqueueAll queues every node and every NLS (the config changed).
func (c *Controller) enqueueAll() {
	nodes, _ := c.nodes.List(labels.Everything())
	for _, n := range nodes {
		c.queue.Add(n.Name)
	}
	all, _ := c.nls.List(labels.Everything())
	for _, n := range all {
		c.queue.Add(n.Name)
	}
}

// Run works until ctx is done. Informers must have been started.
func (c *Controller) Run(ctx context.Context) error {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return ctx.Err()
	}
	klog.InfoS("NodeLocalStorage controller started", "initConfig", c.opts.InitConfig, "workers", c.opts.Workers)
	workloop.Run(ctx, c.queue, c.opts.Workers, "sync NodeLocalStorage", "node", func(ctx context.Context, name string) (time.Duration, error) {
		return 0, c.sync(ctx, name)
	})
	return nil
}

// sync makes the NLS called name match node name and the config.
func (c *Controller) sync(ctx context.Context, name string) error {
	api := c.client.CsiV1alpha1().NodeLocalStorages()
	node, err := c.nodes.Get(name)
	if apierrors.IsNotFound(err) {
		nls, err := c.nls.Get(name)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if nls.Labels[InitConfigLabel] != c.opts.InitConfig {
			return nil // not ours to delete
		}
		// Precondition on the UID: never delete a successor of this object.
		err = api.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &nls.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return err
		}
		klog.InfoS("deleted NodeLocalStorage of a deleted node", "node", name)
		if cfg, err := c.nlsc.Get(c.opts.InitConfig); err == nil {
			c.recorder.Eventf(cfg, corev1.EventTypeNormal, ReasonSynced, "deleted NodeLocalStorage %s: its node is gone", name)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if !c.opts.NodeSelector.Matches(labels.Set(node.Labels)) {
		return nil
	}
	cfg, err := c.nlsc.Get(c.opts.InitConfig)
	if apierrors.IsNotFound(err) {
		klog.V(2).InfoS("no NodeLocalStorageInitConfig; nothing to do", "name", c.opts.InitConfig, "node", name)
		return nil
	}
	if err != nil {
		return err
	}
	spec, err := Spec(cfg, node)
	if err != nil {
		c.warnInvalid(cfg, err)
		return nil // the config's next change queues every node again
	}
	existing, err := c.nls.Get(name)
	if apierrors.IsNotFound(err) {
		nls := &v1alpha1.NodeLocalStorage{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{InitConfigLabel: c.opts.InitConfig}},
			Spec:       spec,
		}
		if _, err := api.Create(ctx, nls, metav1.CreateOptions{FieldManager: FieldManager}); err != nil {
			if apierrors.IsAlreadyExists(err) {
				c.queue.Add(name) // the informer is behind: compare again
				return nil
			}
			return err
		}
		klog.InfoS("created NodeLocalStorage", "node", name)
		c.recorder.Eventf(cfg, corev1.EventTypeNormal, ReasonSynced, "created NodeLocalStorage %s", name)
		return nil
	}
	if err != nil {
		return err
	}
	adopt := existing.Labels[InitConfigLabel] != c.opts.InitConfig
	respec := c.opts.UpdateSpecs && !equality.Semantic.DeepEqual(existing.Spec, spec)
	if !adopt && !respec {
		return nil
	}
	upd := existing.DeepCopy()
	if upd.Labels == nil {
		upd.Labels = map[string]string{}
	}
	upd.Labels[InitConfigLabel] = c.opts.InitConfig
	if respec {
		upd.Spec = spec
	}
	if _, err := api.Update(ctx, upd, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
		return err // a conflict is retried against the newer object
	}
	if !respec {
		klog.InfoS("adopted NodeLocalStorage", "node", name)
		return nil
	}
	klog.InfoS("updated NodeLocalStorage spec", "node", name)
	c.recorder.Eventf(cfg, corev1.EventTypeNormal, ReasonSynced, "updated spec of NodeLocalStorage %s", name)
	return nil
}

// warnInvalid emits one Warning per version of a broken config (not one per node).
func (c *Controller) warnInvalid(cfg *v1alpha1.NodeLocalStorageInitConfig, err error) {
	c.warnMu.Lock()
	defer c.warnMu.Unlock()
	if c.lastWarned == cfg.ResourceVersion {
		return
	}
	c.lastWarned = cfg.ResourceVersion
	msg := strings.ReplaceAll(err.Error(), "\n", "; ") + "; no NodeLocalStorage is created or changed until it is fixed"
	klog.ErrorS(err, "invalid NodeLocalStorageInitConfig", "name", cfg.Name)
	c.recorder.Event(cfg, corev1.EventTypeWarning, ReasonInvalidSelector, msg)
}
