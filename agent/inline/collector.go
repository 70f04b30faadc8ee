/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package inline is the node agent's garbage collector of CSI ephemeral
// inline volumes. Their LocalVolumes (spec.podRef set) are normally deleted
// by the CSI node plugin at NodeUnpublishVolume; a node that missed it
// (plugin down, pod force-deleted, a scheduler that crashed between
// allocation and binding) would leak the space. The collector deletes the
// LocalVolumes on its node whose pod is gone (deleted, or replaced by a pod
// of the same name with another UID), finished (Succeeded or Failed, so its
// volumes are never used again), or bound to another node; the LocalVolume
// reconciler then removes the LV.
//
// It never deletes a volume whose device is still mounted (held open
// exclusively): a finished pod's volume is unmounted by kubelet shortly
// after, and removing the LV under a mounted filesystem could hand its
// extents to another volume while it is still written.
package inline

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/open-local/open-local/agent/workloop"
	"github.com/open-local/open-local/apis/client/clientset/versioned"
	"github.com/open-local/open-local/apis/client/informers/externalversions"
	listers "github.com/open-local/open-local/apis/client/listers/storage/v1alpha1"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// Event reasons on LocalVolumes.
const (
	// ReasonCollected: the collector deleted the volume.
	ReasonCollected = "InlineVolumeCollected"
	// ReasonInUse: the pod is gone or finished but the device is still
	// mounted; the collector waits.
	ReasonInUse = "InlineVolumeInUse"
)

// Options configure a Collector.
type Options struct {
	// NodeName is this node: only its LocalVolumes are collected.
	NodeName string
	Client   versioned.Interface
	Kube     kubernetes.Interface
	Recorder record.EventRecorder
	// Resync re-checks every inline volume this often (default 1 min), for
	// pods whose deletion happened while the agent was not watching.
	Resync time.Duration
	// InUseRetry is how soon a volume whose device is still mounted is
	// checked again (default 10 s).
	InUseRetry time.Duration
	// DeviceInUse reports whether a LocalVolume's device is mounted or held
	// (default: an exclusive open of status.devicePath fails with EBUSY).
	DeviceInUse func(devicePath string) (bool, error)
}

// Collector deletes the inline volumes of gone and finished pods.
type Collector struct {
	opts      Options
	lvLister  listers.LocalVolumeLister
	podLister corelisters.PodLister
	synced    []cache.InformerSynced
	olf       externalversions.SharedInformerFactory
	kf        informers.SharedInformerFactory
	queue     workqueue.TypedRateLimitingInterface[string]
	// warned remembers the volumes an InUse Event was emitted for, so a
	// long wait yields one Event, not one per retry.
	warned map[string]bool
}

// New sets up informers on the node's LocalVolumes and pods.
func New(opts Options) (*Collector, error) {
	if opts.NodeName == "" || opts.Client == nil || opts.Kube == nil || opts.Recorder == nil {
		return nil, errors.New("inline: NodeName, Client, Kube and Recorder are required")
	}
	if opts.Resync <= 0 {
		opts.Resync = time.Minute
	}
	if opts.InUseRetry <= 0 {
		opts.InUseRetry = 10 * time.Second
	}
	if opts.DeviceInUse == nil {
		opts.DeviceInUse = DeviceInUse
	}
	c := &Collector{
		opts: opts,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "inlinevolumes"}),
		warned: map[string]bool{},
	}
	onNode := func(field string) func(*metav1.ListOptions) {
		return func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector(field, opts.NodeName).String()
		}
	}
	c.olf = externalversions.NewSharedInformerFactoryWithOptions(opts.Client, opts.Resync, externalversions.WithTweakListOptions(onNode("spec.nodeName")))
	// Pods of this node only: the ones whose volumes can be here. A pod
	// not (yet) bound here is looked up with a GET.
	c.kf = informers.NewSharedInformerFactoryWithOptions(opts.Kube, 0, informers.WithTweakListOptions(onNode("spec.nodeName")))
	lvInf := c.olf.Csi().V1alpha1().LocalVolumes()
	podInf := c.kf.Core().V1().Pods()
	c.lvLister, c.podLister = lvInf.Lister(), podInf.Lister()
	c.synced = []cache.InformerSynced{lvInf.Informer().HasSynced, podInf.Informer().HasSynced}
	if _, err := lvInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueueVolume,
		UpdateFunc: func(_, obj any) { c.enqueueVolume(obj) },
	}); err != nil {
		return nil, err
	}
	if _, err := podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj any) {
			if p, ok := obj.(*corev1.Pod); ok && (p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed) {
				c.podChanged(obj)
			}
		},
		DeleteFunc: c.podChanged,
	}); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Collector) enqueueVolume(obj any) {
	if lv, ok := obj.(*v1alpha1.LocalVolume); ok && lv.Spec.PodRef != nil {
		c.queue.Add(lv.Name)
	}
}

// podChanged enqueues the inline volumes of a pod that finished or went.
func (c *Collector) podChanged(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	all, err := c.lvLister.List(labels.Everything())
	if err != nil {
		return
	}
	for _, lv := range all {
		if r := lv.Spec.PodRef; r != nil && r.UID == pod.UID {
			c.queue.Add(lv.Name)
		}
	}
}

// Run collects until ctx is done.
func (c *Collector) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithValues("node", c.opts.NodeName)
	ctx = klog.NewContext(ctx, logger)
	defer c.queue.ShutDown()
	c.olf.Start(ctx.Done())
	c.kf.Start(ctx.Done())
	defer c.olf.Shutdown()
	defer c.kf.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return fmt.Errorf("inline: informers did not sync: %w", ctx.Err())
	}
	logger.Info("Inline volume collector started")
	workloop.Run(ctx, c.queue, 1, "collect inline volume", "localVolume", c.collect)
	return nil
}

// collect deletes the inline volume name if its pod no longer needs it. A
// positive duration asks to look again then.
func (c *Collector) collect(ctx context.Context, name string) (time.Duration, error) {
	lv, err := c.lvLister.Get(name)
	if apierrors.IsNotFound(err) {
		delete(c.warned, name)
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	ref := lv.Spec.PodRef
	if ref == nil || lv.Spec.ClaimRef != nil || lv.DeletionTimestamp != nil || lv.Spec.NodeName != c.opts.NodeName {
		return 0, nil
	}
	why, err := c.unneeded(ctx, lv)
	if err != nil || why == "" {
		return 0, err
	}
	logger := klog.FromContext(ctx).WithValues("localVolume", lv.Name, "pod", klog.KRef(ref.Namespace, ref.Name))
	if dev := lv.Status.DevicePath; dev != "" {
		busy, err := c.opts.DeviceInUse(dev)
		if err != nil {
			return 0, fmt.Errorf("check whether %s of LocalVolume %s is in use: %w", dev, lv.Name, err)
		}
		if busy {
			if !c.warned[lv.Name] {
				c.warned[lv.Name] = true
				c.opts.Recorder.Eventf(lv, corev1.EventTypeWarning, ReasonInUse,
					"Pod %s/%s %s, but %s is still mounted; the volume is deleted once it is unmounted", ref.Namespace, ref.Name, why, dev)
			}
			logger.V(2).Info("Inline volume of an unneeded pod is still in use", "reason", why, "device", dev)
			return c.opts.InUseRetry, nil
		}
	}
	err = c.opts.Client.CsiV1alpha1().LocalVolumes().Delete(ctx, lv.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &lv.UID}})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	delete(c.warned, lv.Name)
	logger.Info("Deleted inline volume of an unneeded pod", "reason", why)
	c.opts.Recorder.Eventf(lv, corev1.EventTypeNormal, ReasonCollected, "Pod %s/%s %s: deleted its inline volume", ref.Namespace, ref.Name, why)
	return 0, nil
}

// unneeded says why the volume's pod no longer needs it ("" if it does).
func (c *Collector) unneeded(ctx context.Context, lv *v1alpha1.LocalVolume) (string, error) {
	ref := lv.Spec.PodRef
	pod, err := c.podLister.Pods(ref.Namespace).Get(ref.Name)
	if err != nil || pod.UID != ref.UID {
		// Not bound here (yet), or the informer is behind: ask the API.
		pod, err = c.opts.Kube.CoreV1().Pods(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return "is gone", nil
		}
		if err != nil {
			return "", err
		}
	}
	switch {
	case pod.UID != ref.UID:
		return fmt.Sprintf("is gone (a pod of that name now has UID %s, not %s)", pod.UID, ref.UID), nil
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return "has " + string(pod.Status.Phase), nil
	case pod.Spec.NodeName != "" && pod.Spec.NodeName != lv.Spec.NodeName:
		return "runs on node " + pod.Spec.NodeName, nil
	}
	return "", nil
}

// DeviceInUse reports whether a block device is mounted or otherwise held
// exclusively: the kernel refuses an O_EXCL open of such a device with
// EBUSY. A device that does not exist (a deactivated LV) is not in use.
// It opens read-only and never writes.
func DeviceInUse(path string) (bool, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	switch {
	case err == nil:
		return false, unix.Close(fd)
	case errors.Is(err, syscall.EBUSY):
		return true, nil
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ENXIO), errors.Is(err, syscall.ENODEV):
		return false, nil
	}
	return false, err
}
