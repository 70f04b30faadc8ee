package simagent

import (
	"context"
	"fmt"
	"slices"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	olclient "github.com/open-local/open-local/apis/client/clientset/versioned"
	olinformers "github.com/open-local/open-local/apis/client/informers/externalversions"
	ollisters "github.com/open-local/open-local/apis/client/listers/storage/v1alpha1"
	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// Annotations the provisioning flow uses (as csi-provisioner and the PV controller do).
const (
	annSelectedNode  = "volume.kubernetes.io/selected-node"
	annProvisionedBy = "pv.kubernetes.io/provisioned-by"
	paramFSType      = "csi.storage.k8s.io/fstype"
)

// Provisioner is the stand-in CSI controller + csi-provisioner (see the
// package doc). It serves PVCs whose StorageClass names one of its
// provisioners.
type Provisioner struct {
	provisioners []string
	kube         kubernetes.Interface
	client       olclient.Interface
	pvcs         corelisters.PersistentVolumeClaimLister
	pvs          corelisters.PersistentVolumeLister
	classes      storagelisters.StorageClassLister
	lvs          ollisters.LocalVolumeLister
	// keys are "pvc/<ns>/<name>" or "pv/<name>".
	queue workqueue.TypedRateLimitingInterface[string]
}

// StartProvisioner starts a Provisioner; it runs until ctx ends and returns
// once its informers are synced.
func StartProvisioner(ctx context.Context, cfg *rest.Config, provisioners []string, workers int) (*Provisioner, error) {
	if len(provisioners) == 0 {
		return nil, fmt.Errorf("simagent: no provisioner names")
	}
	p := &Provisioner{
		provisioners: provisioners,
		kube:         kubernetes.NewForConfigOrDie(cfg),
		client:       olclient.NewForConfigOrDie(cfg),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "simprovisioner"}),
	}
	kf := informers.NewSharedInformerFactory(p.kube, 0)
	olf := olinformers.NewSharedInformerFactory(p.client, 0)
	p.pvcs = kf.Core().V1().PersistentVolumeClaims().Lister()
	p.pvs = kf.Core().V1().PersistentVolumes().Lister()
	p.classes = kf.Storage().V1().StorageClasses().Lister()
	p.lvs = olf.Csi().V1alpha1().LocalVolumes().Lister()

	onPVC := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			p.queue.Add("pvc/" + key)
		}
	}
	onPV := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			p.queue.Add("pv/" + key)
		}
	}
	// A LocalVolume turning Ready, or going away, moves its PVC or PV on.
	onLV := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		lv, ok := obj.(*v1alpha1.LocalVolume)
		if !ok {
			return
		}
		if r := lv.Spec.ClaimRef; r != nil {
			p.queue.Add("pvc/" + r.Namespace + "/" + r.Name)
		}
		p.queue.Add("pv/" + lv.Name)
	}
	for _, reg := range []struct {
		inf cache.SharedIndexInformer
		fn  func(any)
	}{
		{kf.Core().V1().PersistentVolumeClaims().Informer(), onPVC},
		{kf.Core().V1().PersistentVolumes().Informer(), onPV},
		{olf.Csi().V1alpha1().LocalVolumes().Informer(), onLV},
	} {
		fn := reg.fn
		if _, err := reg.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: fn, UpdateFunc: func(_, o any) { fn(o) }, DeleteFunc: fn,
		}); err != nil {
			return nil, err
		}
	}
	kf.Storage().V1().StorageClasses().Informer()
	kf.Start(ctx.Done())
	olf.Start(ctx.Done())
	for _, synced := range []map[any]bool{anyMap(kf.WaitForCacheSync(ctx.Done())), anyMap(olf.WaitForCacheSync(ctx.Done()))} {
		for typ, ok := range synced {
			if !ok {
				return nil, fmt.Errorf("simagent: %v informer did not sync", typ)
			}
		}
	}
	go func() {
		<-ctx.Done()
		p.queue.ShutDown()
	}()
	for range max(workers, 1) {
		go wait.UntilWithContext(ctx, p.worker, time.Second)
	}
	return p, nil
}

func (p *Provisioner) worker(ctx context.Context) {
	for {
		key, shutdown := p.queue.Get()
		if shutdown {
			return
		}
		var err error
		var again time.Duration
		switch {
		case len(key) > 4 && key[:4] == "pvc/":
			err = p.syncClaim(ctx, key[4:])
		case len(key) > 3 && key[:3] == "pv/":
			again, err = p.syncVolume(ctx, key[3:])
		}
		switch {
		case err != nil:
			klog.FromContext(ctx).V(2).Info("simprovisioner: retrying", "key", key, "err", err)
			p.queue.AddRateLimited(key)
		case again > 0:
			p.queue.AddAfter(key, again)
		default:
			p.queue.Forget(key)
		}
		p.queue.Done(key)
	}
}

func (p *Provisioner) ours(className string) (*storagev1.StorageClass, bool) {
	sc, err := p.classes.Get(className)
	if err != nil || !slices.Contains(p.provisioners, sc.Provisioner) {
		return nil, false
	}
	return sc, true
}

// syncClaim provisions a PV for a PVC whose LocalVolume is Ready on the
// selected node, or deletes the LocalVolume of a PVC that is gone before
// it got a PV.
func (p *Provisioner) syncClaim(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pvc, err := p.pvcs.PersistentVolumeClaims(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return p.cleanOrphans(ctx, ns, name)
	} else if err != nil {
		return err
	}
	if pvc.Spec.VolumeName != "" || pvc.DeletionTimestamp != nil || pvc.Spec.StorageClassName == nil {
		return nil
	}
	node := pvc.Annotations[annSelectedNode]
	sc, ok := p.ours(*pvc.Spec.StorageClassName)
	if node == "" || !ok {
		return nil
	}
	lvName := "pvc-" + string(pvc.UID)
	if _, err := p.pvs.Get(lvName); err == nil {
		return nil
	}
	lv, err := p.lvs.Get(lvName)
	if err != nil || lv.Status.Phase != v1alpha1.PhaseReady || lv.DeletionTimestamp != nil {
		return nil // its LocalVolume's events bring us back
	}
	if lv.Spec.NodeName != node {
		return fmt.Errorf("PVC %s selected node %s but LocalVolume %s is on %s", key, node, lvName, lv.Spec.NodeName)
	}
	pv := volumeFor(pvc, sc, lv)
	_, err = p.kube.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// cleanOrphans deletes LocalVolumes of a deleted PVC that never got a PV
// (with a PV, the PV's reclaim policy decides).
func (p *Provisioner) cleanOrphans(ctx context.Context, ns, name string) error {
	all, err := p.lvs.List(everything)
	if err != nil {
		return err
	}
	for _, lv := range all {
		r := lv.Spec.ClaimRef
		if r == nil || r.Namespace != ns || r.Name != name || lv.DeletionTimestamp != nil {
			continue
		}
		if _, err := p.pvs.Get(lv.Name); err == nil {
			continue
		}
		// The cache may lag: ask whether the PVC with that UID still exists.
		if cur, err := p.kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{}); err == nil && cur.UID == r.UID {
			continue
		} else if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		err := p.client.CsiV1alpha1().LocalVolumes().Delete(ctx, lv.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &lv.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return err
		}
	}
	return nil
}

// syncVolume reclaims a released Delete-policy PV of ours: the LocalVolume
// goes first (its node removes the LV, then the finalizer), the PV after.
func (p *Provisioner) syncVolume(ctx context.Context, name string) (time.Duration, error) {
	pv, err := p.pvs.Get(name)
	if err != nil {
		return 0, nil //nolint:nilerr // gone: nothing to reclaim
	}
	if !slices.Contains(p.provisioners, pv.Annotations[annProvisionedBy]) || pv.Spec.CSI == nil ||
		pv.Status.Phase != v1.VolumeReleased || pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimDelete {
		return 0, nil
	}
	handle := pv.Spec.CSI.VolumeHandle
	if lv, err := p.lvs.Get(handle); err == nil {
		if lv.DeletionTimestamp == nil {
			err := p.client.CsiV1alpha1().LocalVolumes().Delete(ctx, handle, metav1.DeleteOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				return 0, err
			}
		}
		return 200 * time.Millisecond, nil // wait until the node let it go
	}
	err = p.kube.CoreV1().PersistentVolumes().Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pv.UID}})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return 0, nil
	}
	return 0, err
}

// volumeFor is the PV csi-provisioner would create for the PVC.
func volumeFor(pvc *v1.PersistentVolumeClaim, sc *storagev1.StorageClass, lv *v1alpha1.LocalVolume) *v1.PersistentVolume {
	fsType := sc.Parameters[paramFSType]
	if fsType == "" {
		fsType = "ext4"
	}
	attrs := map[string]string{}
	for k, v := range sc.Parameters {
		attrs[k] = v
	}
	if lv.Spec.VGName != "" {
		attrs["vgName"] = lv.Spec.VGName
	}
	if lv.Spec.Device != "" {
		attrs["Device"] = lv.Spec.Device
	}
	reclaim := v1.PersistentVolumeReclaimDelete
	if sc.ReclaimPolicy != nil {
		reclaim = *sc.ReclaimPolicy
	}
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        lv.Name,
			Annotations: map[string]string{annProvisionedBy: sc.Provisioner},
		},
		Spec: v1.PersistentVolumeSpec{
			Capacity:                      v1.ResourceList{v1.ResourceStorage: lv.Spec.Size},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              sc.Name,
			MountOptions:                  sc.MountOptions,
			VolumeMode:                    pvc.Spec.VolumeMode,
			ClaimRef: &v1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID, ResourceVersion: pvc.ResourceVersion},
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver: sc.Provisioner, VolumeHandle: lv.Name, FSType: fsType, VolumeAttributes: attrs,
			}},
			NodeAffinity: &v1.VolumeNodeAffinity{Required: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
				MatchExpressions: []v1.NodeSelectorRequirement{{Key: v1.LabelHostname, Operator: v1.NodeSelectorOpIn, Values: []string{lv.Spec.NodeName}}},
			}}}},
		},
	}
}
