// Package simagent stands in for the node side of open-local on simulated
// (kwok) nodes, which have no disks, so the scheduler and the PVC flow can
// be tested end to end on the local cluster:
//
//   - Agent follows the LocalVolume contract (docs/localvolume.md) of the
//     real agent for the nodes it is told to serve, and only those: it marks
//     their LocalVolumes Ready (currentSize = size) and removes the
//     finalizer of deleted ones. Like kubelet + the CSI node plugin, it
//     writes the LocalVolume of a CSI inline volume of a pod bound to such a
//     node (the scheduler writes none) and deletes it once the pod is gone.
//   - Provisioner turns a PVC that has volume.kubernetes.io/selected-node
//     and a Ready LocalVolume pvc-<uid> into a bound-able PV, and deletes
//     the LocalVolume (then the PV) when a Delete-policy PV is released.
//     It is a stand-in for the CSI controller + csi-provisioner until they
//     exist in this repository; tests should switch to those then.
package simagent

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	olclient "github.com/open-local/open-local/apis/client/clientset/versioned"
	olinformers "github.com/open-local/open-local/apis/client/informers/externalversions"
	ollisters "github.com/open-local/open-local/apis/client/listers/storage/v1alpha1"
	"github.com/open-local/open-local/apis/storage/ledger"
	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// Nodes says which nodes an Agent serves: those named, or those whose
// labels match Selector. A node with a real agent must not be included.
type Nodes struct {
	Names    []string
	Selector labels.Selector
	// InlineStrategy and DefaultInlineSize (0: parameters.DefaultInlineSize)
	// are the CSI node plugin's --inline-strategy and
	// --default-inline-volume-size: the scheduler's args.
	InlineStrategy    ledger.Strategy
	DefaultInlineSize int64
}

func (n Nodes) validate() error {
	if len(n.Names) == 0 && (n.Selector == nil || n.Selector.Empty()) {
		return fmt.Errorf("simagent: no nodes selected (give names or a non-empty label selector)")
	}
	return nil
}

// Agent is the simulated node agent.
type Agent struct {
	nodes     Nodes
	names     map[string]bool
	client    olclient.Interface
	kube      kubernetes.Interface
	lvs       ollisters.LocalVolumeLister
	nodeList  corelisters.NodeLister
	podLister corelisters.PodLister
	queue     workqueue.TypedRateLimitingInterface[string]
	// locks serialise inline volume creation per node (publishInline).
	locksMu sync.Mutex
	locks   map[string]*sync.Mutex
}

// StartAgent starts an Agent for nodes; it runs until ctx ends and returns
// once its informers are synced.
func StartAgent(ctx context.Context, cfg *rest.Config, nodes Nodes, workers int) (*Agent, error) {
	if err := nodes.validate(); err != nil {
		return nil, err
	}
	a := &Agent{
		nodes:  nodes,
		names:  map[string]bool{},
		client: olclient.NewForConfigOrDie(cfg),
		kube:   kubernetes.NewForConfigOrDie(cfg),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "simagent"}),
	}
	for _, n := range nodes.Names {
		a.names[n] = true
	}
	olf := olinformers.NewSharedInformerFactory(a.client, 0)
	kf := informers.NewSharedInformerFactory(a.kube, 0)
	lvInf := olf.Csi().V1alpha1().LocalVolumes()
	a.lvs = lvInf.Lister()
	a.nodeList = kf.Core().V1().Nodes().Lister()
	a.podLister = kf.Core().V1().Pods().Lister()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			a.queue.Add(key)
		}
	}
	if _, err := lvInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) },
	}); err != nil {
		return nil, err
	}
	// A bound pod gets its inline volumes published (their LocalVolumes
	// written, as the CSI node does); a deleted pod's go.
	if _, err := kf.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    a.enqueuePod,
		UpdateFunc: func(_, obj any) { a.enqueuePod(obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			pod, ok := obj.(*v1.Pod)
			if !ok {
				return
			}
			all, _ := a.lvs.List(labels.Everything())
			for _, lv := range all {
				if r := lv.Spec.PodRef; r != nil && r.UID == pod.UID {
					a.queue.Add(lv.Name)
				}
			}
		},
	}); err != nil {
		return nil, err
	}
	// Node labels decide membership; a relabelled node gets its volumes reconsidered.
	if _, err := kf.Core().V1().Nodes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.nodeChanged(obj) },
		UpdateFunc: func(_, obj any) { a.nodeChanged(obj) },
	}); err != nil {
		return nil, err
	}
	olf.Start(ctx.Done())
	kf.Start(ctx.Done())
	for _, synced := range []map[any]bool{anyMap(olf.WaitForCacheSync(ctx.Done())), anyMap(kf.WaitForCacheSync(ctx.Done()))} {
		for typ, ok := range synced {
			if !ok {
				return nil, fmt.Errorf("simagent: %v informer did not sync", typ)
			}
		}
	}
	go func() {
		<-ctx.Done()
		a.queue.ShutDown()
	}()
	for range max(workers, 1) {
		go wait.UntilWithContext(ctx, a.worker, time.Second)
	}
	return a, nil
}

func anyMap[K comparable](m map[K]bool) map[any]bool {
	out := map[any]bool{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (a *Agent) nodeChanged(obj any) {
	node, ok := obj.(*v1.Node)
	if !ok || !a.serves(node.Name) {
		return
	}
	all, _ := a.lvs.List(labels.Everything())
	for _, lv := range all {
		if lv.Spec.NodeName == node.Name {
			a.queue.Add(lv.Name)
		}
	}
}

// serves reports whether the node is one of the simulated ones.
func (a *Agent) serves(nodeName string) bool {
	if a.names[nodeName] {
		return true
	}
	if a.nodes.Selector == nil || a.nodes.Selector.Empty() {
		return false
	}
	node, err := a.nodeList.Get(nodeName)
	return err == nil && a.nodes.Selector.Matches(labels.Set(node.Labels))
}

func (a *Agent) worker(ctx context.Context) {
	for {
		key, shutdown := a.queue.Get()
		if shutdown {
			return
		}
		reconcile := a.reconcile
		if strings.HasPrefix(key, podKeyPrefix) {
			reconcile = a.publishInline
		}
		if err := reconcile(ctx, key); err != nil {
			klog.FromContext(ctx).V(2).Info("simagent: retrying", "localVolume", key, "err", err)
			a.queue.AddRateLimited(key)
		} else {
			a.queue.Forget(key)
		}
		a.queue.Done(key)
	}
}

func (a *Agent) reconcile(ctx context.Context, name string) error {
	lv, err := a.lvs.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	if !a.serves(lv.Spec.NodeName) {
		return nil
	}
	api := a.client.CsiV1alpha1().LocalVolumes()
	if lv.DeletionTimestamp != nil {
		// "lvremove" done: let the object go.
		if !slices.Contains(lv.Finalizers, v1alpha1.LocalVolumeFinalizer) {
			return nil
		}
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := api.Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			} else if err != nil {
				return err
			}
			cur.Finalizers = slices.DeleteFunc(cur.Finalizers, func(f string) bool { return f == v1alpha1.LocalVolumeFinalizer })
			_, err = api.Update(ctx, cur, metav1.UpdateOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return err
		})
	}
	if r := lv.Spec.PodRef; r != nil {
		gone, err := a.podGone(ctx, r)
		if err != nil {
			return err
		}
		if gone {
			err := api.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &lv.UID}})
			if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
				return nil
			}
			return err
		}
	}
	if lv.Status.Phase == v1alpha1.PhaseReady && lv.Status.CurrentSize != nil && lv.Status.CurrentSize.Cmp(lv.Spec.Size) >= 0 &&
		lv.Status.ObservedGeneration == lv.Generation {
		return nil
	}
	// "lvcreate" / "lvextend" done.
	cur := lv.DeepCopy()
	size := lv.Spec.Size.DeepCopy()
	cur.Status = v1alpha1.LocalVolumeStatus{
		Phase:              v1alpha1.PhaseReady,
		DevicePath:         devicePath(lv),
		CurrentSize:        &size,
		ObservedGeneration: lv.Generation,
	}
	_, err = api.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// podGone asks the API when the cache does not know the pod: a LocalVolume
// can be seen before its pod is.
func (a *Agent) podGone(ctx context.Context, r *v1alpha1.ObjectReference) (bool, error) {
	if pod, err := a.podLister.Pods(r.Namespace).Get(r.Name); err == nil && pod.UID == r.UID {
		return false, nil
	}
	pod, err := a.kube.CoreV1().Pods(r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return true, nil
	} else if err != nil {
		return false, err
	}
	return pod.UID != r.UID, nil
}

func devicePath(lv *v1alpha1.LocalVolume) string {
	if lv.Spec.VolumeType == v1alpha1.VolumeTypeDevice {
		return lv.Spec.Device
	}
	return "/dev/" + lv.Spec.VGName + "/" + lv.LVName()
}

var everything = labels.Everything()
