package simagent

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"sync"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/parameters"
	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// DriverName is the CSI driver whose inline volumes the Agent publishes.
const DriverName = "local.csi.aliyun.com"

// podKeyPrefix marks a pod key in the Agent's queue (the others are
// LocalVolume names, which never contain '/').
const podKeyPrefix = "pod/"

// enqueuePod queues a pod bound to a served node that has inline volumes
// of our driver: kubelet would call NodePublishVolume for them.
func (a *Agent) enqueuePod(obj any) {
	pod, ok := obj.(*v1.Pod)
	if !ok || pod.Spec.NodeName == "" || pod.DeletionTimestamp != nil || !hasInline(pod) {
		return
	}
	if key, err := cache.MetaNamespaceKeyFunc(pod); err == nil {
		a.queue.Add(podKeyPrefix + key)
	}
}

func hasInline(pod *v1.Pod) bool {
	for i := range pod.Spec.Volumes {
		if c := pod.Spec.Volumes[i].CSI; c != nil && c.Driver == DriverName {
			return true
		}
	}
	return false
}

// publishInline is what the CSI node's NodePublishVolume does for an inline
// volume with no LocalVolume yet (csi/node createInline): check the node's
// room with a one-node ledger, choose the VG the same way when the pod
// names none, and write v1alpha1.InlineLocalVolume. The scheduler wrote
// nothing for it (it counts the volume from the pod).
func (a *Agent) publishInline(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(strings.TrimPrefix(key, podKeyPrefix))
	if err != nil {
		return nil
	}
	pod, err := a.podLister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	if pod.Spec.NodeName == "" || !a.serves(pod.Spec.NodeName) || pod.DeletionTimestamp != nil ||
		pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed {
		return nil
	}
	for i := range pod.Spec.Volumes {
		vol := &pod.Spec.Volumes[i]
		if vol.CSI == nil || vol.CSI.Driver != DriverName {
			continue
		}
		id := v1alpha1.InlineVolumeName(pod.UID, vol.Name)
		if _, err := a.lvs.Get(id); err == nil {
			continue
		}
		attrs, err := parameters.ParseInline(vol.CSI.VolumeAttributes, cmp.Or(a.nodes.DefaultInlineSize, parameters.DefaultInlineSize))
		if err != nil {
			klog.FromContext(ctx).Info("simagent: refusing inline volume", "pod", klog.KObj(pod), "volume", vol.Name, "err", err)
			continue
		}
		if err := a.createInline(ctx, pod, id, attrs); err != nil {
			return err
		}
	}
	return nil
}

func (a *Agent) createInline(ctx context.Context, pod *v1.Pod, id string, attrs parameters.Inline) error {
	node := pod.Spec.NodeName
	mu := a.nodeLock(node)
	mu.Lock()
	defer mu.Unlock()
	api := a.client.CsiV1alpha1()
	nls, err := api.NodeLocalStorages().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return err
	}
	list, err := api.LocalVolumes().List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String()})
	if err != nil {
		return err
	}
	volumes := make([]*v1alpha1.LocalVolume, len(list.Items))
	for i := range list.Items {
		if list.Items[i].Name == id {
			return nil // a concurrent publish of the same volume
		}
		volumes[i] = &list.Items[i]
	}
	want := ledger.Volume{Name: id, Desc: fmt.Sprintf("inline volume %s of pod %s/%s", id, pod.Namespace, pod.Name),
		Type: v1alpha1.VolumeTypeLVM, VG: attrs.VGName, Size: attrs.Size}
	placed, sf := ledger.ForNode(node, nls, volumes).Place(node, want, a.nodes.InlineStrategy)
	if sf != nil {
		// NodePublishVolume's ResourceExhausted: kubelet retries; so do we.
		return fmt.Errorf("%s: %s", want.Desc, sf.Detail())
	}
	lv := v1alpha1.InlineLocalVolume(id, node, placed.VG, attrs.Size, v1alpha1.ObjectReference{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID})
	if _, err := api.LocalVolumes().Create(ctx, lv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

func (a *Agent) nodeLock(node string) *sync.Mutex {
	a.locksMu.Lock()
	defer a.locksMu.Unlock()
	if a.locks == nil {
		a.locks = map[string]*sync.Mutex{}
	}
	mu := a.locks[node]
	if mu == nil {
		mu = &sync.Mutex{}
		a.locks[node] = mu
	}
	return mu
}
