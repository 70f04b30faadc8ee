/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package volumes is the node agent's LocalVolume reconciler: it carries out
// the LocalVolumes of its own node (docs/localvolume.md) — lvcreate (thick,
// or thin in spec.thinPool), lvextend when spec.size grows, snapshots
// (classic copy-on-write, grown by their snapshotPolicy, or thin), restores
// (read-only views of a snapshot, thin snapshots of a thin snapshot, or a
// new LV filled by a block copy), lvremove of exactly the LV the record
// names on deletion — and reports the result in the status (phase,
// devicePath, currentSize, gRPC code and message, snapshot and copy
// details) and as Events.
//
// It is idempotent and restart-safe: all it knows comes from the API and from
// lvm, and every step checks what exists before acting.
package volumes

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/open-local/open-local/agent/workloop"
	"github.com/open-local/open-local/apis/client/clientset/versioned"
	olscheme "github.com/open-local/open-local/apis/client/clientset/versioned/scheme"
	"github.com/open-local/open-local/apis/client/informers/externalversions"
	listers "github.com/open-local/open-local/apis/client/listers/storage/v1alpha1"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/blockdev"
	"github.com/open-local/open-local/lvm"
)

// Event reasons on LocalVolumes.
const (
	ReasonCreated      = "LVCreated"
	ReasonExtended     = "LVExtended"
	ReasonRemoved      = "LVRemoved"
	ReasonCreateFailed = "CreateFailed"
	ReasonExtendFailed = "ExtendFailed"
	ReasonRemoveFailed = "RemoveFailed"
	ReasonDeviceFailed = "DeviceFailed"
	ReasonUnsupported  = "Unsupported"
	ReasonForeignLV    = "ForeignLV"
	// ReasonAdopted: an adopted volume's LV (v1alpha1.AdoptedLabel) was
	// verified and tagged ours; ReasonAdoptRefused: it does not match.
	ReasonAdopted      = "Adopted"
	ReasonAdoptRefused = "AdoptRefused"

	ReasonSnapshotCreated     = "SnapshotCreated"
	ReasonSnapshotFailed      = "SnapshotFailed"
	ReasonSnapshotExpanding   = "SnapshotExpanding"
	ReasonSnapshotExpanded    = "SnapshotExpanded"
	ReasonSnapshotInvalidated = "SnapshotInvalidated"
	ReasonRestoreFailed       = "RestoreFailed"
	ReasonRestoreStarted      = "RestoreStarted"
	ReasonRestored            = "Restored"
	ReasonInUse               = "InUse"

	ReasonDeviceInUse       = "DeviceInUse"
	ReasonDeviceQuarantined = "DeviceQuarantined"
	ReasonDeviceWiped       = "DeviceWiped"
	ReasonDeviceReleased    = "DeviceReleased"
	ReasonWipeFailed        = "WipeFailed"
)

// sourceIndex indexes LocalVolumes by the LocalVolumes they come from
// (source.volume, source.snapshot), so a change of a source wakes its
// snapshots and restores.
const sourceIndex = "source"

// Options configure a Reconciler.
type Options struct {
	// NodeName is this node: only LocalVolumes with spec.nodeName equal to
	// it are reconciled.
	NodeName string
	// Client is the open-local clientset, Kube the core clientset (Events).
	Client versioned.Interface
	Kube   kubernetes.Interface
	// LVM runs lvm2 on this node; Activator turns an LV into a block device.
	LVM       *lvm.Client
	Activator lvm.Activator
	// Recorder emits the Events; when nil the reconciler records through
	// its own broadcaster to Kube.
	Recorder record.EventRecorder
	// Workers is the number of volumes reconciled in parallel (default 2).
	Workers int
	// Resync re-checks every volume this often (default 10 min), so an LV
	// removed behind our back is reported.
	Resync time.Duration
	// RetryBase and RetryMax bound the backoff of a failing volume
	// (defaults 1 s and 2 min).
	RetryBase, RetryMax time.Duration
	// SnapshotCheck is how often a classic snapshot's copy-on-write usage
	// is compared with its snapshotPolicy (default 30 s; open-local's
	// Expand_Snapshot_Interval).
	SnapshotCheck time.Duration
	// CopyProgress is how often a restore by block copy reports its
	// progress in the status (default 5 s).
	CopyProgress time.Duration
	// ZeroNewLVs zeroes all of a new thick LV before it is reported Ready:
	// lvcreate leaves the previous owner's data in the extents, readable
	// through a raw block volume. Thin LVs read zeros where nothing was
	// written, and restores are filled by their copy: neither needs it.
	ZeroNewLVs bool
	// DeviceWipe is how a released Device volume's disk is wiped before
	// its record goes (default blockdev.WipeSignatures); Wiper does it
	// (default: commands through lvm.ExecRunner, sysfs at Sysfs).
	DeviceWipe blockdev.Policy
	Wiper      *blockdev.Wiper
	// Sysfs is where sysfs is mounted (default /sys): device identities.
	Sysfs string
}

// Reconciler reconciles the LocalVolumes of one node.
type Reconciler struct {
	opts     Options
	lister   listers.LocalVolumeLister
	informer cache.SharedIndexInformer
	factory  externalversions.SharedInformerFactory
	queue    workqueue.TypedRateLimitingInterface[string]
	recorder record.EventRecorder
	events   record.EventBroadcaster
	copies   *copies
}

// New sets up the informer (field selector spec.nodeName=<node>) and the queue.
func New(opts Options) (*Reconciler, error) {
	if opts.NodeName == "" || opts.Client == nil || opts.Kube == nil || opts.LVM == nil || opts.Activator == nil {
		return nil, errors.New("volumes: NodeName, Client, Kube, LVM and Activator are required")
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.Resync <= 0 {
		opts.Resync = 10 * time.Minute
	}
	if opts.RetryBase <= 0 {
		opts.RetryBase = time.Second
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = 2 * time.Minute
	}
	if opts.SnapshotCheck <= 0 {
		opts.SnapshotCheck = 30 * time.Second
	}
	if opts.CopyProgress <= 0 {
		opts.CopyProgress = 5 * time.Second
	}
	if opts.Sysfs == "" {
		opts.Sysfs = "/sys"
	}
	if opts.DeviceWipe == "" {
		opts.DeviceWipe = blockdev.WipeSignatures
	}
	if _, err := blockdev.ParsePolicy(string(opts.DeviceWipe)); err != nil {
		return nil, fmt.Errorf("volumes: %w", err)
	}
	if opts.Wiper == nil {
		opts.Wiper = &blockdev.Wiper{Runner: &lvm.ExecRunner{}, Sysfs: opts.Sysfs}
	}
	selector := fields.OneTermEqualSelector("spec.nodeName", opts.NodeName).String()
	factory := externalversions.NewSharedInformerFactoryWithOptions(opts.Client, opts.Resync,
		externalversions.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = selector }))
	inf := factory.Csi().V1alpha1().LocalVolumes()
	r := &Reconciler{
		opts:     opts,
		lister:   inf.Lister(),
		informer: inf.Informer(),
		factory:  factory,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](opts.RetryBase, opts.RetryMax),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "localvolumes"}),
		copies: newCopies(),
	}
	if err := r.informer.AddIndexers(cache.Indexers{sourceIndex: sourcesOf}); err != nil {
		return nil, err
	}
	r.recorder = opts.Recorder
	if r.recorder == nil {
		r.events = record.NewBroadcaster()
		r.recorder = r.events.NewRecorder(olscheme.Scheme, corev1.EventSource{Component: "open-local-agent", Host: opts.NodeName})
	}
	_, err := r.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    r.enqueue,
		UpdateFunc: func(_, obj any) { r.enqueue(obj) },
		DeleteFunc: r.enqueue,
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reconciler) enqueue(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	lv, ok := obj.(*v1alpha1.LocalVolume)
	if !ok || lv.Spec.NodeName != r.opts.NodeName {
		return
	}
	r.queue.Add(lv.Name)
	// Snapshots wait for their origin, restores for their snapshot, and a
	// snapshot's deletion for its read-only restores: wake them.
	deps, _ := r.informer.GetIndexer().ByIndex(sourceIndex, lv.Name)
	for _, d := range deps {
		if dep, ok := d.(*v1alpha1.LocalVolume); ok {
			r.queue.Add(dep.Name)
		}
	}
	for _, src := range sourceNames(lv) {
		r.queue.Add(src)
	}
	// A Device volume waits for the others naming its disk: wake them.
	if lv.Spec.VolumeType == v1alpha1.VolumeTypeDevice {
		others, _ := r.lister.List(labels.Everything())
		for _, o := range others {
			if o.Name != lv.Name && o.Spec.VolumeType == v1alpha1.VolumeTypeDevice && o.Spec.Device == lv.Spec.Device {
				r.queue.Add(o.Name)
			}
		}
	}
}

func sourceNames(lv *v1alpha1.LocalVolume) []string {
	var names []string
	if s := lv.Spec.Source; s != nil {
		for _, n := range []string{s.Volume, s.Snapshot} {
			if n != "" {
				names = append(names, n)
			}
		}
	}
	return names
}

func sourcesOf(obj any) ([]string, error) {
	lv, ok := obj.(*v1alpha1.LocalVolume)
	if !ok {
		return nil, nil
	}
	return sourceNames(lv), nil
}

// Run reconciles until ctx is done.
func (r *Reconciler) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithValues("node", r.opts.NodeName)
	ctx = klog.NewContext(ctx, logger)
	if r.events != nil {
		r.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: r.opts.Kube.CoreV1().Events("")})
		defer r.events.Shutdown()
	}
	defer r.queue.ShutDown()
	r.factory.Start(ctx.Done())
	defer r.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), r.informer.HasSynced) {
		// Only a stop ends the wait: stopping before the first sync is
		// a shutdown like any other, not a failure.
		return nil
	}
	logger.Info("LocalVolume reconciler started", "workers", r.opts.Workers)
	workloop.Run(ctx, r.queue, r.opts.Workers, "reconcile LocalVolume", "name", func(ctx context.Context, name string) (time.Duration, error) {
		return 0, r.reconcile(ctx, name)
	})
	// Copies write to LVs: let them stop before the process (and maybe
	// the test's VG) goes.
	r.copies.stopAll()
	return nil
}

// reconcile carries out one LocalVolume. A returned error retries it.
func (r *Reconciler) reconcile(ctx context.Context, name string) error {
	lv, err := r.lister.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if lv.Spec.NodeName != r.opts.NodeName {
		return nil
	}
	if lv.DeletionTimestamp != nil {
		return r.remove(ctx, lv)
	}
	if !slices.Contains(lv.Finalizers, v1alpha1.LocalVolumeFinalizer) {
		// Writers add it; adding it here too means no LV we create can
		// outlive its record unnoticed.
		if err := r.updateFinalizers(ctx, lv.Name, func(f []string) []string { return append(f, v1alpha1.LocalVolumeFinalizer) }); err != nil {
			return err
		}
	}
	switch {
	case lv.Spec.VolumeType == v1alpha1.VolumeTypeLVM && lv.Spec.Kind == v1alpha1.KindSnapshot:
		return r.ensureSnapshot(ctx, lv)
	case lv.Spec.VolumeType == v1alpha1.VolumeTypeLVM && lv.Spec.IsReadOnlyRestore():
		return r.ensureReadOnlyRestore(ctx, lv)
	}
	switch lv.Spec.VolumeType {
	case v1alpha1.VolumeTypeLVM:
		return r.ensureLV(ctx, lv)
	case v1alpha1.VolumeTypeDevice:
		return r.ensureDevice(ctx, lv)
	default:
		return r.fail(ctx, lv, codes.InvalidArgument, ReasonUnsupported, fmt.Errorf("unknown volumeType %q", lv.Spec.VolumeType))
	}
}

// ensureLV carries out a volume: a thick LV in spec.vgName or a thin LV in
// spec.thinPool, filled from spec.source.snapshot when it is a restore and
// from spec.source.volume when it is a clone.
func (r *Reconciler) ensureLV(ctx context.Context, lv *v1alpha1.LocalVolume) error {
	logger := klog.FromContext(ctx).WithValues("localVolume", lv.Name)
	vg, name, want := lv.Spec.VGName, lv.LVName(), uint64(lv.Spec.Size.Value())
	got, err := r.opts.LVM.GetLV(ctx, vg, name)
	// A restore needs its snapshot, and a clone its source volume, until
	// its LV is created and filled; afterwards it is a volume of its own
	// (the origin may go).
	var src *restoreSource
	if errors.Is(err, lvm.ErrNotFound) || (err == nil && got.HasTag(restoringTag)) {
		var serr error
		if src, serr = r.fillSourceOf(ctx, lv); serr != nil {
			return serr // already reported
		}
	}
	created := false
	adopted := isAdopted(lv)
	switch {
	case adopted && errors.Is(err, lvm.ErrNotFound):
		// Never an empty LV where open-local's data was expected.
		return r.fail(ctx, lv, codes.NotFound, ReasonAdoptRefused,
			fmt.Errorf("adopted volume: LV %s/%s that its PV names is not on node %s; nothing is created in its place", vg, name, r.opts.NodeName))
	case adopted && err == nil && !got.HasTag(lvm.OwnedTag):
		if err := r.verifyAdopted(ctx, lv, got); err != nil {
			return err
		}
	case errors.Is(err, lvm.ErrNotFound):
		if lv.Status.CurrentSize != nil {
			// It existed (the status says so) and is gone: recreating it
			// empty would hand its user a blank volume as if nothing happened.
			return r.fail(ctx, lv, codes.NotFound, ReasonCreateFailed,
				fmt.Errorf("LV %s/%s was removed behind open-local's back; its data is gone. Delete the volume", vg, name))
		}
		if err := r.admit(ctx, lv, int64(want)); err != nil {
			return r.refuse(ctx, lv, ReasonCreateFailed, fmt.Sprintf("create LV %s/%s", vg, name), err)
		}
		if got, err = r.createLV(ctx, lv, src); err != nil {
			return r.fail(ctx, lv, lvm.Code(err), ReasonCreateFailed, fmt.Errorf("create LV %s/%s of %d bytes: %w", vg, name, want, err))
		}
		created = true
		logger.Info("Created LV", "vg", vg, "lv", name, "size", got.Size, "thinPool", lv.Spec.ThinPool, "source", sourceNames(lv))
		r.recorder.Eventf(lv, corev1.EventTypeNormal, ReasonCreated, "Created LV %s/%s (%s) on node %s%s", vg, name, quantity(got.Size), r.opts.NodeName, describeLayout(lv, src))
	case err != nil:
		return r.fail(ctx, lv, lvm.Code(err), ReasonCreateFailed, fmt.Errorf("look up LV %s/%s: %w", vg, name, err))
	case !got.HasTag(lvm.OwnedTag):
		return r.fail(ctx, lv, codes.AlreadyExists, ReasonForeignLV,
			fmt.Errorf("LV %s/%s exists but was not created by open-local (no %s tag); refusing to use it", vg, name, lvm.OwnedTag))
	case lv.Spec.ThinPool != "" && got.Pool != lv.Spec.ThinPool:
		return r.fail(ctx, lv, codes.AlreadyExists, ReasonCreateFailed,
			fmt.Errorf("LV %s/%s exists outside thin pool %s (pool %q); refusing to use it", vg, name, lv.Spec.ThinPool, got.Pool))
	}
	if got.Size < want {
		if err := r.admit(ctx, lv, int64(want)); err != nil {
			return r.refuse(ctx, lv, ReasonExtendFailed, fmt.Sprintf("extend LV %s/%s to %d bytes", vg, name, want), err)
		}
		if got, err = r.opts.LVM.ExtendLV(ctx, vg, name, want); err != nil {
			return r.fail(ctx, lv, lvm.Code(err), ReasonExtendFailed, fmt.Errorf("extend LV %s/%s to %d bytes: %w", vg, name, want, err))
		}
		logger.Info("Extended LV", "vg", vg, "lv", name, "size", got.Size)
		r.recorder.Eventf(lv, corev1.EventTypeNormal, ReasonExtended, "Extended LV %s/%s to %s", vg, name, quantity(got.Size))
	}
	// Activating again after an extension grows a loop device.
	path, err := r.opts.Activator.Activate(ctx, vg, name)
	if err != nil {
		return r.fail(ctx, lv, lvm.Code(err), ReasonCreateFailed, fmt.Errorf("activate LV %s/%s: %w", vg, name, err))
	}
	// Wipe only an LV that was never reported Ready (so no pod has used
	// it): just created, or created before a crash that came before the
	// status. Zeroing it all covers the signatures; without it, lvcreate
	// cannot wipe them without device-mapper, so the edges are wiped here.
	fresh := neverHandedOut(lv, created)
	switch {
	case fresh && r.opts.ZeroNewLVs && lv.Spec.ThinPool == "":
		start := time.Now()
		if err := lvm.ZeroDevice(ctx, path, 0); err != nil {
			return r.fail(ctx, lv, codes.Internal, ReasonCreateFailed, fmt.Errorf("zero new LV %s/%s at %s: %w", vg, name, path, err))
		}
		logger.Info("Zeroed new LV", "vg", vg, "lv", name, "size", got.Size, "duration", time.Since(start))
	case fresh && r.opts.Activator.Mode() == lvm.ModeLoop:
		if err := lvm.WipeEdges(path); err != nil {
			return r.fail(ctx, lv, codes.Internal, ReasonCreateFailed, fmt.Errorf("wipe new LV %s/%s at %s: %w", vg, name, path, err))
		}
	}
	if got.HasTag(restoringTag) {
		// A block copy is due (a new restore, or one a restart cut short).
		return r.restoreByCopy(ctx, lv, got, path, src)
	}
	st := v1alpha1.LocalVolumeStatus{Phase: v1alpha1.PhaseReady, DevicePath: path,
		CurrentSize: resource.NewQuantity(int64(got.Size), resource.BinarySI), ObservedGeneration: lv.Generation, Copy: lv.Status.Copy.DeepCopy()}
	if c := st.Copy; c != nil && c.CompletionTime == nil {
		// The copy finished (its tag is gone) but reporting it did not
		// (a conflict, a restart): report it now.
		now := metav1.NewTime(time.Now().Truncate(time.Second))
		c.CopiedBytes, c.CompletionTime = c.TotalBytes, &now
	}
	return r.setStatus(ctx, lv, st)
}

// refuse reports an admit error: a refusal for lack of room fails the
// volume (ResourceExhausted), anything else is retried.
func (r *Reconciler) refuse(ctx context.Context, lv *v1alpha1.LocalVolume, reason, what string, err error) error {
	var noRoom *errNoRoom
	if errors.As(err, &noRoom) {
		return r.fail(ctx, lv, codes.ResourceExhausted, reason, fmt.Errorf("%s: %w", what, err))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// neverHandedOut tells whether lv's LV holds nothing of its own yet, so
// wiping it loses nothing: created by this reconcile, or before a crash that
// came before its first Ready status. A restore is never that, whatever its
// status says: its data came from the snapshot (a thin snapshot, or a copy
// whose tag is already gone while the Ready status still failed to land).
func neverHandedOut(lv *v1alpha1.LocalVolume, created bool) bool {
	if lv.Spec.Source != nil || isAdopted(lv) {
		return false
	}
	return created || lv.Status.CurrentSize == nil
}

// isAdopted tells an adopted volume: its LV (or disk) was open-local's,
// with a tenant's data, before the LocalVolume existed.
func isAdopted(lv *v1alpha1.LocalVolume) bool { return lv.Labels[v1alpha1.AdoptedLabel] == "true" }

// verifyAdopted takes over the LV open-local made for an adopted volume:
// a plain LV (no snapshot, no thin LV) of at least spec.size, which it
// then tags ours so the normal paths (expand, delete, discovery) treat it
// as any other. A mismatch fails the volume; the LV is left as it is.
func (r *Reconciler) verifyAdopted(ctx context.Context, lv *v1alpha1.LocalVolume, got *lvm.LV) error {
	vg, name, want := lv.Spec.VGName, got.Name, uint64(lv.Spec.Size.Value())
	var mismatch string
	switch {
	case got.Origin != "" || got.Pool != "" || lv.Spec.ThinPool != "":
		mismatch = fmt.Sprintf("it is a snapshot or thin LV (origin %q, pool %q), not a volume", got.Origin, got.Pool)
	case got.Size < want:
		mismatch = fmt.Sprintf("it has %d bytes, fewer than the %d its PV says", got.Size, want)
	}
	if mismatch != "" {
		return r.fail(ctx, lv, codes.FailedPrecondition, ReasonAdoptRefused,
			fmt.Errorf("adopted volume: LV %s/%s does not match: %s; left as it is", vg, name, mismatch))
	}
	if err := r.opts.LVM.AddTags(ctx, vg, name, lvm.OwnedTag); err != nil {
		return r.fail(ctx, lv, lvm.Code(err), ReasonAdoptRefused, fmt.Errorf("tag adopted LV %s/%s: %w", vg, name, err))
	}
	got.Tags = append(got.Tags, lvm.OwnedTag)
	klog.FromContext(ctx).Info("Adopted LV", "localVolume", lv.Name, "vg", vg, "lv", name, "size", got.Size)
	r.recorder.Eventf(lv, corev1.EventTypeNormal, ReasonAdopted, "Adopted open-local's LV %s/%s (%s) on node %s", vg, name, quantity(got.Size), r.opts.NodeName)
	return nil
}

// createLV creates the LV of a volume: a thin snapshot of its source when
// both are thin in the same pool (nothing to copy), else an empty LV —
// tagged restoringTag when a copy must fill it, so a restart knows.
func (r *Reconciler) createLV(ctx context.Context, lv *v1alpha1.LocalVolume, src *restoreSource) (*lvm.LV, error) {
	vg, name, want := lv.Spec.VGName, lv.LVName(), uint64(lv.Spec.Size.Value())
	tags := []string{lvm.OwnedTag}
	if src != nil {
		if src.lv.IsThin() && src.lv.Pool == lv.Spec.ThinPool {
			return r.opts.LVM.CreateThinSnapshot(ctx, vg, src.lv.Name, name, tags...)
		}
		tags = append(tags, restoringTag)
	}
	if lv.Spec.ThinPool != "" {
		return r.opts.LVM.CreateThinLV(ctx, lvm.ThinLVOptions{VG: vg, Pool: lv.Spec.ThinPool, Name: name, VirtualSize: want, Tags: tags})
	}
	return r.opts.LVM.CreateLV(ctx, lvm.CreateLVOptions{
		VG: vg, Name: name, Size: want,
		Striped: lv.Spec.LVMType == v1alpha1.LVMTypeStriping,
		Tags:    tags,
	})
}

func describeLayout(lv *v1alpha1.LocalVolume, src *restoreSource) string {
	var s string
	if lv.Spec.ThinPool != "" {
		s = " in thin pool " + lv.Spec.ThinPool
	}
	switch {
	case src == nil:
	case src.lv.IsThin() && src.lv.Pool == lv.Spec.ThinPool:
		s += ", a thin snapshot of " + src.String()
	default:
		s += ", to be filled from " + src.String()
	}
	return s
}

// ensureDevice hands a whole disk to a Device volume: exclusively (no
// other LocalVolume of the node holds it, nothing else uses it), and by
// identity: at first use the disk's stable identity is recorded, and from
// then on the disk is found by it, not by a kernel name that moves.
func (r *Reconciler) ensureDevice(ctx context.Context, lv *v1alpha1.LocalVolume) error {
	if holder := r.deviceHolder(lv); holder != nil {
		return r.fail(ctx, lv, codes.FailedPrecondition, ReasonDeviceInUse,
			fmt.Errorf("device %s is held by LocalVolume %s; this volume gets it only once that one is deleted and the disk wiped", lv.Spec.Device, holder.Name))
	}
	path, id := lv.Spec.Device, lv.Status.DeviceIdentity
	if id == "" {
		var err error
		if id, err = blockdev.Identity(r.opts.Sysfs, path); err != nil {
			code := codes.FailedPrecondition
			if errors.Is(err, os.ErrNotExist) {
				code = codes.NotFound
			}
			return r.fail(ctx, lv, code, ReasonDeviceFailed, fmt.Errorf("refusing device %s: %w", path, err))
		}
		// A volume already handed out (by an agent that recorded no
		// identity, or by open-local: adopted) is busy with its own
		// tenant: adopt it as it is.
		if lv.Status.CurrentSize == nil && !isAdopted(lv) {
			if err := r.deviceFree(ctx, path); err != nil {
				return r.fail(ctx, lv, codes.FailedPrecondition, ReasonDeviceInUse, err)
			}
		}
	} else {
		var err error
		if path, err = blockdev.Resolve(r.opts.Sysfs, id); err != nil {
			return r.fail(ctx, lv, codes.NotFound, ReasonDeviceFailed,
				fmt.Errorf("the disk of this volume (%s, recorded at %s) is not on this node: %w", id, lv.Spec.Device, err))
		}
	}
	size, err := blockDeviceSize(path)
	if err != nil {
		code := codes.Internal
		if errors.Is(err, os.ErrNotExist) {
			code = codes.NotFound
		}
		return r.fail(ctx, lv, code, ReasonDeviceFailed, err)
	}
	if size < lv.Spec.Size.Value() {
		return r.fail(ctx, lv, codes.ResourceExhausted, ReasonDeviceFailed,
			fmt.Errorf("device %s has %d bytes, fewer than the %d requested", path, size, lv.Spec.Size.Value()))
	}
	return r.setStatus(ctx, lv, v1alpha1.LocalVolumeStatus{
		Phase: v1alpha1.PhaseReady, DevicePath: path, DeviceIdentity: id,
		CurrentSize: resource.NewQuantity(size, resource.BinarySI), ObservedGeneration: lv.Generation,
	})
}

// deviceHolder returns the other LocalVolume of the node that has lv's
// disk, if any: one that names the same device or identity, or a disk of
// which lv's is a partition or the other way round, and was
// handed it (an identity recorded) or, when neither was, came first. The
// ledger keeps every claim; this decides which one the node serves.
func (r *Reconciler) deviceHolder(lv *v1alpha1.LocalVolume) *v1alpha1.LocalVolume {
	others, err := r.lister.List(labels.Everything())
	if err != nil {
		return nil
	}
	var holder *v1alpha1.LocalVolume
	for _, o := range others {
		if o.Name == lv.Name || o.Spec.NodeName != lv.Spec.NodeName || o.Spec.VolumeType != v1alpha1.VolumeTypeDevice {
			continue
		}
		same := o.Spec.Device == lv.Spec.Device ||
			(o.Status.DeviceIdentity != "" && o.Status.DeviceIdentity == lv.Status.DeviceIdentity)
		if !same {
			// A disk and its partitions are one exclusive unit.
			same, _ = blockdev.Overlap(r.opts.Sysfs, o.Spec.Device, lv.Spec.Device)
		}
		if !same || !holdsBefore(o, lv) {
			continue
		}
		if holder == nil || holdsBefore(o, holder) {
			holder = o
		}
	}
	return holder
}

// holdsBefore: a has a disk before b does — a was handed it and b not, or
// both or neither were and a is older (then by name).
func holdsBefore(a, b *v1alpha1.LocalVolume) bool {
	if ha, hb := a.Status.DeviceIdentity != "", b.Status.DeviceIdentity != ""; ha != hb {
		return ha
	}
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

// deviceFree refuses a disk something else uses: a physical volume of lvm
// (not claimed in the kernel, so asked of lvm), or one that is mounted or
// held by device-mapper or md (an exclusive open fails with EBUSY).
func (r *Reconciler) deviceFree(ctx context.Context, path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("device %s: %w", path, err)
	}
	pvs, err := r.opts.LVM.ListPVs(ctx)
	if err != nil {
		return fmt.Errorf("list physical volumes: %w", err)
	}
	for _, pv := range pvs {
		if uint32(pv.Major) == unix.Major(st.Rdev) && uint32(pv.Minor) == unix.Minor(st.Rdev) {
			return fmt.Errorf("device %s is a physical volume of VG %q; refusing to hand it out whole", path, pv.VG)
		}
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_EXCL, 0)
	if err != nil {
		return fmt.Errorf("device %s is in use (mounted, or held by device-mapper or md): %w", path, err)
	}
	return f.Close()
}

// errQuarantined: the disk stays quarantined until an operator acts; the
// record keeps its finalizer, and no retry is due (the annotation wakes it).
var errQuarantined = errors.New("device quarantined")

// releaseDevice wipes a released Device volume's disk by the node's policy
// before its record (and so the ledger's hold on the disk) goes: the next
// tenant must never find the last one's data. Meanwhile the volume is
// phase Quarantined, which the NLS status and the metrics show.
func (r *Reconciler) releaseDevice(ctx context.Context, lv *v1alpha1.LocalVolume) error {
	id := lv.Status.DeviceIdentity
	if id == "" {
		// Never handed out (no identity was recorded, so never Ready):
		// nothing of a tenant's is on it.
		return nil
	}
	if lv.Annotations[blockdev.ReleasedAnnotation] == id {
		r.recorder.Eventf(lv, corev1.EventTypeNormal, ReasonDeviceReleased, "Device %s released by an operator (%s=%s), not wiped by open-local", lv.Status.DevicePath, blockdev.ReleasedAnnotation, id)
		return nil
	}
	quarantine := func(code codes.Code, msg string) error {
		st := lv.Status.DeepCopy()
		st.Phase, st.Code, st.Message, st.ObservedGeneration = v1alpha1.PhaseQuarantined, "", msg, lv.Generation
		if code != codes.OK {
			st.Code = code.String()
		}
		if statusEqual(lv.Status, *st) {
			return nil
		}
		r.recorder.Event(lv, corev1.EventTypeWarning, ReasonDeviceQuarantined, msg)
		return r.setStatus(ctx, lv, *st)
	}
	how := fmt.Sprintf("wipe it, then annotate this LocalVolume %s=%s", blockdev.ReleasedAnnotation, id)
	policy := r.opts.DeviceWipe
	if policy == blockdev.WipeManual {
		if err := quarantine(codes.OK, "released; the disk is quarantined until an operator wipes it (policy manual): "+how); err != nil {
			return err
		}
		return errQuarantined
	}
	path, err := blockdev.Resolve(r.opts.Sysfs, id)
	if err != nil {
		cause := fmt.Errorf("released; the disk (%s) is not on this node, so nothing is wiped: %w; when it is back it is wiped, or %s", id, err, how)
		return errors.Join(cause, quarantine(codes.NotFound, cause.Error()))
	}
	if err := quarantine(codes.OK, fmt.Sprintf("released; wiping %s (policy %s)", path, policy)); err != nil {
		return err
	}
	if err := r.opts.Wiper.Wipe(ctx, path, id, policy); err != nil {
		cause := fmt.Errorf("released; wiping %s (policy %s) failed: %w; it is retried, or %s", path, policy, err, how)
		r.recorder.Event(lv, corev1.EventTypeWarning, ReasonWipeFailed, cause.Error())
		return errors.Join(cause, quarantine(codes.Internal, cause.Error()))
	}
	klog.FromContext(ctx).Info("Wiped released device", "localVolume", lv.Name, "device", path, "identity", id, "policy", policy)
	r.recorder.Eventf(lv, corev1.EventTypeNormal, ReasonDeviceWiped, "Wiped device %s (policy %s); it may be handed out again", path, policy)
	return nil
}

// remove deletes exactly the LV the record names, then lets the record go.
// A Device volume's disk is wiped first (releaseDevice), or stays
// quarantined, record and all, until it is.
func (r *Reconciler) remove(ctx context.Context, lv *v1alpha1.LocalVolume) error {
	if !slices.Contains(lv.Finalizers, v1alpha1.LocalVolumeFinalizer) {
		return nil
	}
	// A copy into the LV must stop before the LV goes.
	r.copies.stop(lv.Name)
	if lv.Spec.VolumeType == v1alpha1.VolumeTypeLVM {
		if users := r.readOnlyUsers(lv); len(users) > 0 {
			return r.fail(ctx, lv, codes.FailedPrecondition, ReasonInUse,
				fmt.Errorf("%s is in use by %s; it is removed once they are deleted or filled", strings.ToLower(string(lv.Spec.Kind)), strings.Join(users, ", ")))
		}
	}
	if lv.Spec.VolumeType == v1alpha1.VolumeTypeDevice {
		if r.deviceHolder(lv) != nil {
			// Refused, never had the disk: nothing of it to wipe.
		} else if err := r.releaseDevice(ctx, lv); errors.Is(err, errQuarantined) {
			return nil
		} else if err != nil {
			return err
		}
	}
	// A read-only restore is its snapshot's LV: nothing of its own to remove.
	if lv.Spec.VolumeType == v1alpha1.VolumeTypeLVM && !lv.Spec.IsReadOnlyRestore() {
		vg, name := lv.Spec.VGName, lv.LVName()
		got, err := r.opts.LVM.GetLV(ctx, vg, name)
		switch {
		case errors.Is(err, lvm.ErrNotFound):
			// Never created, or removed before a restart: nothing to do.
		case err != nil:
			return r.fail(ctx, lv, lvm.Code(err), ReasonRemoveFailed, fmt.Errorf("look up LV %s/%s: %w", vg, name, err))
		case !got.HasTag(lvm.OwnedTag):
			return r.fail(ctx, lv, codes.FailedPrecondition, ReasonForeignLV,
				fmt.Errorf("LV %s/%s was not created by open-local (no %s tag); not removing it: remove it or the finalizer by hand", vg, name, lvm.OwnedTag))
		default:
			// Before RemoveLV: afterwards the LV's extents are unknown.
			if err := r.opts.Activator.Deactivate(ctx, vg, name); err != nil {
				return r.fail(ctx, lv, lvm.Code(err), ReasonRemoveFailed, fmt.Errorf("deactivate LV %s/%s: %w", vg, name, err))
			}
			if err := r.opts.LVM.RemoveLV(ctx, vg, name); err != nil && !errors.Is(err, lvm.ErrNotFound) {
				return r.fail(ctx, lv, lvm.Code(err), ReasonRemoveFailed, fmt.Errorf("remove LV %s/%s: %w", vg, name, err))
			}
			klog.FromContext(ctx).Info("Removed LV", "localVolume", lv.Name, "vg", vg, "lv", name)
			r.recorder.Eventf(lv, corev1.EventTypeNormal, ReasonRemoved, "Removed LV %s/%s", vg, name)
		}
	}
	err := r.updateFinalizers(ctx, lv.Name, func(f []string) []string {
		return slices.DeleteFunc(f, func(s string) bool { return s == v1alpha1.LocalVolumeFinalizer })
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func (r *Reconciler) updateFinalizers(ctx context.Context, name string, edit func([]string) []string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := r.opts.Client.CsiV1alpha1().LocalVolumes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		next := edit(slices.Clone(cur.Finalizers))
		if slices.Equal(next, cur.Finalizers) {
			return nil
		}
		cur.Finalizers = next
		_, err = r.opts.Client.CsiV1alpha1().LocalVolumes().Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
}

func (r *Reconciler) ready(ctx context.Context, lv *v1alpha1.LocalVolume, devicePath string, size int64) error {
	q := resource.NewQuantity(size, resource.BinarySI)
	return r.setStatus(ctx, lv, v1alpha1.LocalVolumeStatus{
		Phase: v1alpha1.PhaseReady, DevicePath: devicePath, CurrentSize: q, ObservedGeneration: lv.Generation,
	})
}

// fail records the failure in the status and as a Warning Event, and returns
// an error so the volume is retried with backoff.
func (r *Reconciler) fail(ctx context.Context, lv *v1alpha1.LocalVolume, code codes.Code, reason string, cause error) error {
	r.recorder.Event(lv, corev1.EventTypeWarning, reason, cause.Error())
	st := lv.Status.DeepCopy()
	st.Phase, st.Code, st.Message, st.ObservedGeneration = v1alpha1.PhaseFailed, code.String(), cause.Error(), lv.Generation
	if err := r.setStatus(ctx, lv, *st); err != nil {
		return errors.Join(cause, err)
	}
	return cause
}

func (r *Reconciler) setStatus(ctx context.Context, lv *v1alpha1.LocalVolume, st v1alpha1.LocalVolumeStatus) error {
	// Conditions are other controllers' (NodeGone): carried over, never
	// dropped by a status built afresh.
	st.Conditions = lv.Status.Conditions
	if statusEqual(lv.Status, st) {
		return nil
	}
	next := lv.DeepCopy()
	next.Status = st
	_, err := r.opts.Client.CsiV1alpha1().LocalVolumes().UpdateStatus(ctx, next, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		// A newer version is on its way through the informer: reconcile
		// that one instead.
		return fmt.Errorf("status of %s: %w", lv.Name, err)
	}
	return err
}

// statusEqual compares statuses as the API server stores them (quantities
// by value, times to the second).
func statusEqual(a, b v1alpha1.LocalVolumeStatus) bool {
	return equality.Semantic.DeepEqual(a, b)
}

func quantity(n uint64) string { return resource.NewQuantity(int64(n), resource.BinarySI).String() }

// blockDeviceSize opens path read-only (never for writing) and returns its
// size; it refuses anything that is not a block device.
func blockDeviceSize(path string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("device %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, fmt.Errorf("device %s is not a block device", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, io.SeekEnd)
}
