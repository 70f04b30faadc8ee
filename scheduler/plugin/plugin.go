// Package plugin is OpenLocal, the storage plugin of the open-local
// scheduler: it places pods so that all their node-local volumes fit on the
// node together, holds the space from Reserve on, and persists the choice
// as LocalVolume objects in PreBind, before VolumeBinding's PreBind hands
// the PVCs to the provisioner.
//
// Extension points: PreFilter (the pod's needs, once), Filter (fit on a
// node), PostFilter (the closest near miss, for the pod's event), PreScore
// / Score / NormalizeScore (binpack or spread, and anti-affinity for
// storage-free pods), Reserve / Unreserve, PreBind, and EnqueueExtensions
// with queueing hints.
package plugin

import (
	"context"
	"fmt"
	"time"

	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apimachinery/pkg/util/wait"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	olclient "github.com/open-local/open-local/apis/client/clientset/versioned"
	olinformers "github.com/open-local/open-local/apis/client/informers/externalversions"
	ollisters "github.com/open-local/open-local/apis/client/listers/storage/v1alpha1"
	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/apis/storage/podvolumes"
	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/config"
	_ "github.com/open-local/open-local/config/scheme" // registers OpenLocalArgs with the scheduler's scheme
	configv1 "github.com/open-local/open-local/config/v1"
	"github.com/open-local/open-local/config/validation"
)

// Name is the plugin's name in scheduler profiles.
const Name = config.PluginName

// syncTimeout bounds the wait for our informers in New: a scheduler that
// cannot see NodeLocalStorage and LocalVolume must not schedule.
const syncTimeout = 2 * time.Minute

// persistedGrace is how long a reservation whose LocalVolume was written
// waits for the informer to deliver it before it is considered gone.
const persistedGrace = 2 * time.Minute

// OpenLocal is the plugin.
type OpenLocal struct {
	handle fwk.Handle
	args   *config.OpenLocalArgs
	// defaultInlineSize is args.DefaultInlineVolumeSize in bytes (validated).
	defaultInlineSize int64
	strategy          ledger.Strategy
	weights           ledger.Weights
	fill              ledger.Fill
	ours              map[string]bool

	ledger    *ledger.Ledger
	client    olclient.Interface
	lvLister  ollisters.LocalVolumeLister
	pvcLister corelisters.PersistentVolumeClaimLister
	podLister corelisters.PodLister
	scLister  storagelisters.StorageClassLister
	snapshots snapshotResolver
	waiting   *waitingPods
}

var (
	_ fwk.PreFilterPlugin   = &OpenLocal{}
	_ fwk.FilterPlugin      = &OpenLocal{}
	_ fwk.PostFilterPlugin  = &OpenLocal{}
	_ fwk.PreScorePlugin    = &OpenLocal{}
	_ fwk.ScorePlugin       = &OpenLocal{}
	_ fwk.ReservePlugin     = &OpenLocal{}
	_ fwk.PreBindPlugin     = &OpenLocal{}
	_ fwk.EnqueueExtensions = &OpenLocal{}
	_ fwk.SignPlugin        = &OpenLocal{}
)

// Name returns the plugin's name.
func (pl *OpenLocal) Name() string { return Name }

// New is the plugin factory the scheduler binary registers.
func New(ctx context.Context, obj runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
	if h.KubeConfig() == nil {
		return nil, fmt.Errorf("%s: the framework handle has no kubeconfig", Name)
	}
	// The scheduler's config asks for protobuf, which CRDs do not speak.
	cfg := rest.CopyConfig(h.KubeConfig())
	cfg.ContentType, cfg.AcceptContentTypes = runtime.ContentTypeJSON, runtime.ContentTypeJSON
	client, err := olclient.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	snaps, err := snapclient.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return newPlugin(ctx, obj, h, client, snaps)
}

// newPlugin builds the plugin over the given clients (fakes in tests),
// starts its informers and waits until the ledger reflects the API.
func newPlugin(ctx context.Context, obj runtime.Object, h fwk.Handle, client olclient.Interface, snaps snapclient.Interface) (*OpenLocal, error) {
	logger := klog.FromContext(ctx).WithName(Name)
	args, err := decodeArgs(obj)
	if err != nil {
		return nil, err
	}
	inlineSize, err := parameters.ParseSize(args.DefaultInlineVolumeSize)
	if err != nil {
		return nil, fmt.Errorf("%s: defaultInlineVolumeSize: %w", Name, err)
	}
	strategy, err := ledger.ParseStrategy(string(args.Strategy))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	pl := &OpenLocal{
		handle:            h,
		args:              args,
		defaultInlineSize: inlineSize,
		strategy:          strategy,
		weights:           ledger.Weights{LVM: int64(args.ScoreWeights.LVM), Device: int64(args.ScoreWeights.Device)},
		ours:              map[string]bool{},
		ledger:            ledger.New(),
		client:            client,
		waiting:           newWaitingPods(h),
	}
	pl.fill = ledger.Fill{DataPercent: args.ThinPoolFillThresholds.DataPercent, MetadataPercent: args.ThinPoolFillThresholds.MetadataPercent}
	pl.ledger.SetFill(pl.fill)
	for _, p := range args.Provisioners {
		pl.ours[p] = true
	}

	// The scheduler's own informers: requesting them here makes the
	// scheduler start them and wait for their sync before scheduling.
	core := h.SharedInformerFactory()
	pl.pvcLister = core.Core().V1().PersistentVolumeClaims().Lister()
	pl.scLister = core.Storage().V1().StorageClasses().Lister()
	pl.podLister = core.Core().V1().Pods().Lister()
	if _, err := core.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { pl.podChanged(nil, obj) },
		UpdateFunc: pl.podChanged,
		DeleteFunc: pl.podDeleted,
	}); err != nil {
		return nil, err
	}

	// Our own: the ledger is built from them, so wait for them here.
	factory := olinformers.NewSharedInformerFactory(client, 0)
	nls := factory.Csi().V1alpha1().NodeLocalStorages().Informer()
	lvs := factory.Csi().V1alpha1().LocalVolumes()
	pl.lvLister = lvs.Lister()
	if _, err := nls.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { pl.nlsChanged(obj); pl.reportFill(nil, obj) },
		UpdateFunc: func(old, obj any) { pl.nlsChanged(obj); pl.reportFill(old, obj) },
		DeleteFunc: pl.nlsDeleted,
	}); err != nil {
		return nil, err
	}
	if _, err := lvs.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { pl.lvChanged(obj) },
		UpdateFunc: func(_, obj any) { pl.lvChanged(obj) },
		DeleteFunc: pl.lvDeleted,
	}); err != nil {
		return nil, err
	}
	factory.Start(ctx.Done())
	syncCtx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	for typ, ok := range factory.WaitForCacheSync(syncCtx.Done()) {
		if !ok {
			return nil, fmt.Errorf("%s: %v informer did not sync within %s (are the open-local CRDs installed and readable?)", Name, typ, syncTimeout)
		}
	}

	pl.snapshots, err = newSnapshotResolver(ctx, snaps)
	if err != nil {
		return nil, err
	}
	pl.ledger.OnFreed(pl.waiting.kick)
	go pl.waiting.run(ctx)
	go wait.UntilWithContext(ctx, func(ctx context.Context) {
		if n := pl.ledger.ExpirePersisted(time.Now().Add(-persistedGrace), pl.localVolumeGone(ctx)); n > 0 {
			logger.Info("Dropped reservations whose LocalVolumes never appeared", "count", n)
		}
	}, persistedGrace/2)
	registerMetrics(pl.ledger)
	stats := pl.ledger.Stats()
	logger.Info("Ledger built from the API", "nodes", stats.Nodes, "localVolumes", stats.Volumes,
		"strategy", args.Strategy, "provisioners", args.Provisioners, "snapshotAPI", pl.snapshots.available())
	return pl, nil
}

// decodeArgs turns what the framework hands over (internal args after the
// scheduler decoded our registered kind; nil when the profile has none)
// into validated internal args.
func decodeArgs(obj runtime.Object) (*config.OpenLocalArgs, error) {
	var args *config.OpenLocalArgs
	switch a := obj.(type) {
	case *config.OpenLocalArgs:
		args = a.DeepCopy()
	case nil:
		v := &configv1.OpenLocalArgs{}
		configv1.SetDefaults_OpenLocalArgs(v)
		args = &config.OpenLocalArgs{}
		if err := configv1.Convert_v1_OpenLocalArgs_To_config_OpenLocalArgs(v, args, nil); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%s: args of type %T, want *config.OpenLocalArgs (is config/scheme linked in?)", Name, obj)
	}
	if err := validation.ValidateOpenLocalArgs(field.NewPath("args"), args); err != nil {
		return nil, fmt.Errorf("%s: invalid args: %w", Name, err)
	}
	return args, nil
}

func (pl *OpenLocal) nlsChanged(obj any) {
	if nls, ok := obj.(*v1alpha1.NodeLocalStorage); ok {
		pl.ledger.SetNodeStorage(nls)
	}
}

func (pl *OpenLocal) nlsDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if nls, ok := obj.(*v1alpha1.NodeLocalStorage); ok {
		name := nls.Spec.NodeName
		if name == "" {
			name = nls.Name
		}
		pl.ledger.RemoveNodeStorage(name)
	}
}

func (pl *OpenLocal) lvChanged(obj any) {
	if lv, ok := obj.(*v1alpha1.LocalVolume); ok {
		pl.ledger.SetVolume(lv)
	}
}

func (pl *OpenLocal) lvDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if lv, ok := obj.(*v1alpha1.LocalVolume); ok {
		pl.ledger.RemoveVolume(lv.Name)
	}
}

// podDeleted releases whatever a deleted pod still held.
func (pl *OpenLocal) podDeleted(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if pod, ok := obj.(*v1.Pod); ok {
		pl.ledger.Release(pod.UID)
		pl.forgetInline(pod)
		pl.waiting.remove(pod)
	}
}

// podChanged counts the CSI inline volumes of an assigned pod into the
// ledger: the pod object is their durable record (node, attributes, UID),
// so the binding cycle writes nothing for them. A finished pod's volumes
// are forgotten (their LocalVolumes count until the node removes them).
func (pl *OpenLocal) podChanged(old, obj any) {
	pod, ok := obj.(*v1.Pod)
	if !ok || pod.Spec.NodeName == "" || !pl.hasInline(pod) {
		return
	}
	if pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed {
		pl.forgetInline(pod)
		return
	}
	// Status updates of a running pod change nothing here.
	if o, ok := old.(*v1.Pod); ok && o.Spec.NodeName == pod.Spec.NodeName && o.Status.Phase == pod.Status.Phase {
		return
	}
	for i := range pod.Spec.Volumes {
		vol := &pod.Spec.Volumes[i]
		if vol.CSI == nil || !pl.ours[vol.CSI.Driver] {
			continue
		}
		// Attributes the node would refuse make no volume: nothing to count.
		n, _, err := podvolumes.Of(pod, vol, listerLookup{pl}, pl.isOurs, pl.defaultInlineSize)
		if err != nil || n == nil {
			continue
		}
		pl.ledger.SetInline(pod.UID, pod.Spec.NodeName, n.Volume, pl.strategy)
	}
}

func (pl *OpenLocal) forgetInline(pod *v1.Pod) {
	for i := range pod.Spec.Volumes {
		if c := pod.Spec.Volumes[i].CSI; c != nil && pl.ours[c.Driver] {
			pl.ledger.RemoveInline(v1alpha1.InlineVolumeName(pod.UID, pod.Spec.Volumes[i].Name))
		}
	}
}

func (pl *OpenLocal) hasInline(pod *v1.Pod) bool {
	for i := range pod.Spec.Volumes {
		if c := pod.Spec.Volumes[i].CSI; c != nil && pl.ours[c.Driver] {
			return true
		}
	}
	return false
}

// localVolumeGone asks the API (not the informer, which is what lags)
// whether a LocalVolume is gone; any error other than NotFound keeps it.
func (pl *OpenLocal) localVolumeGone(ctx context.Context) func(name string) bool {
	return func(name string) bool {
		_, err := pl.client.CsiV1alpha1().LocalVolumes().Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}
}
