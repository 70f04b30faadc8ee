/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package adoption

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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
)

// ReasonAdopted is the Normal Event on a PV whose LocalVolume was written.
const ReasonAdopted = "Adopted"

// Importer writes the LocalVolumes of open-local's PVs (LocalVolumeFor).
type Importer struct {
	client   versioned.Interface
	kube     kubernetes.Interface
	lvs      listers.LocalVolumeLister
	pvs      corelisters.PersistentVolumeLister
	synced   []cache.InformerSynced
	recorder record.EventRecorder
	queue    workqueue.TypedRateLimitingInterface[string]
}

// New wires the importer to shared informers; the caller starts them.
func New(client versioned.Interface, kube kubernetes.Interface, lvs olinformers.LocalVolumeInformer,
	pvs coreinformers.PersistentVolumeInformer, recorder record.EventRecorder) (*Importer, error) {
	im := &Importer{
		client: client, kube: kube, lvs: lvs.Lister(), pvs: pvs.Lister(),
		synced:   []cache.InformerSynced{lvs.Informer().HasSynced, pvs.Informer().HasSynced},
		recorder: recorder,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, time.Minute),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "adoption"}),
	}
	add := func(obj any) {
		if pv, ok := obj.(*corev1.PersistentVolume); ok && IsOpenLocalPV(pv) {
			im.queue.Add(pv.Name)
		}
	}
	if _, err := pvs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: add, UpdateFunc: func(_, obj any) { add(obj) },
	}); err != nil {
		return nil, err
	}
	return im, nil
}

// Run imports until ctx ends.
func (im *Importer) Run(ctx context.Context) error {
	defer im.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), im.synced...) {
		return ctx.Err()
	}
	workloop.Run(ctx, im.queue, 1, "adopt PV", "pv", func(ctx context.Context, name string) (time.Duration, error) {
		return 0, im.sync(ctx, name)
	})
	return nil
}

// sync adopts one PV: once (AdoptedPVAnnotation), while it is Bound or
// Available and not being deleted. A Released PV is left alone: its
// claim is gone, and adopting it now would only race its deletion.
func (im *Importer) sync(ctx context.Context, name string) error {
	pv, err := im.pvs.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case !IsOpenLocalPV(pv), pv.DeletionTimestamp != nil, pv.Annotations[v1alpha1.AdoptedPVAnnotation] != "":
		return nil
	case pv.Status.Phase != corev1.VolumeBound && pv.Status.Phase != corev1.VolumeAvailable:
		return nil
	}
	lvName := pv.Spec.CSI.VolumeHandle
	if _, err := im.lvs.Get(lvName); err == nil {
		// Written before a restart cut the PV's annotation short.
		return im.markPV(ctx, pv, lvName)
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	lv, refusal := LocalVolumeFor(pv)
	if refusal != nil {
		klog.FromContext(ctx).Info("Not adopting open-local PV", "pv", pv.Name, "reason", refusal.Reason, "message", refusal.Message)
		im.recorder.Eventf(pv, corev1.EventTypeWarning, refusal.Reason, "Not adopted: %s; the PV and its storage are left as they are", refusal.Message)
		return nil
	}
	if _, err := im.client.CsiV1alpha1().LocalVolumes().Create(ctx, lv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create LocalVolume %s: %w", lv.Name, err)
	}
	klog.FromContext(ctx).Info("Adopted open-local PV", "pv", pv.Name, "node", lv.Spec.NodeName, "vg", lv.Spec.VGName, "device", lv.Spec.Device, "size", lv.Spec.Size.String())
	where := lv.Spec.VGName + "/" + lv.LVName()
	if lv.Spec.VolumeType == v1alpha1.VolumeTypeDevice {
		where = lv.Spec.Device
	}
	im.recorder.Eventf(pv, corev1.EventTypeNormal, ReasonAdopted, "Adopted as LocalVolume %s (%s, %s on node %s); the node's agent verifies it before it is Ready",
		lv.Name, where, lv.Spec.Size.String(), lv.Spec.NodeName)
	return im.markPV(ctx, pv, lv.Name)
}

// markPV records on the PV that it was adopted (the only write to it).
func (im *Importer) markPV(ctx context.Context, pv *corev1.PersistentVolume, lvName string) error {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{v1alpha1.AdoptedPVAnnotation: lvName}}})
	if err != nil {
		return err
	}
	_, err = im.kube.CoreV1().PersistentVolumes().Patch(ctx, pv.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
