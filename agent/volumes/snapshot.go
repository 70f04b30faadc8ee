/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package volumes

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/lvm"
)

// errWaiting is returned (and retried with backoff) while a snapshot or
// restore waits for its source to be carried out first.
var errWaiting = errors.New("waiting for the source")

// ensureSnapshot carries out a snapshot of source.volume: a classic
// copy-on-write snapshot of spec.size (grown by spec.snapshotPolicy), or a
// thin snapshot when the origin is thin. A snapshot is taken once: if its
// LV disappears later it is reported lost, never silently taken again (that
// would be another point in time).
func (r *Reconciler) ensureSnapshot(ctx context.Context, lv *v1alpha1.LocalVolume) error {
	logger := klog.FromContext(ctx).WithValues("snapshot", lv.Name)
	vg, name := lv.Spec.VGName, lv.LVName()
	got, err := r.opts.LVM.GetLV(ctx, vg, name)
	switch {
	case errors.Is(err, lvm.ErrNotFound):
		if lv.Status.SnapshotTime != nil {
			return r.fail(ctx, lv, codes.DataLoss, ReasonSnapshotFailed,
				fmt.Errorf("snapshot LV %s/%s was removed behind open-local's back; its data is gone. Delete the VolumeSnapshot", vg, name))
		}
		if got, err = r.takeSnapshot(ctx, lv); err != nil {
			if errors.Is(err, errWaiting) {
				return err
			}
			return r.fail(ctx, lv, codeOf(err), ReasonSnapshotFailed, err)
		}
		logger.Info("Took snapshot", "vg", vg, "lv", name, "origin", got.Origin, "thin", got.IsThin(), "size", got.Size)
		r.recorder.Eventf(lv, corev1.EventTypeNormal, ReasonSnapshotCreated, "Took %s snapshot %s/%s of %s (%s)",
			snapshotKind(got), vg, name, got.Origin, quantity(got.Size))
	case err != nil:
		return r.fail(ctx, lv, lvm.Code(err), ReasonSnapshotFailed, fmt.Errorf("look up LV %s/%s: %w", vg, name, err))
	case !got.HasTag(lvm.OwnedTag) || !got.IsSnapshot():
		return r.fail(ctx, lv, codes.AlreadyExists, ReasonForeignLV,
			fmt.Errorf("LV %s/%s exists but is not a snapshot created by open-local; refusing to use it", vg, name))
	}
	if got.IsInvalidSnapshot() {
		// Terminal: lvm dropped the snapshot when its copy-on-write space
		// overflowed. Report it once and stop retrying.
		err := fmt.Errorf("snapshot %s/%s overflowed its copy-on-write space (%s) and lvm invalidated it: its data is lost. "+
			"Delete the VolumeSnapshot; give the VolumeSnapshotClass a larger csi.aliyun.com/snapshot-initial-size or a lower expansion threshold",
			vg, name, quantity(got.Size))
		if lv.Status.Phase != v1alpha1.PhaseFailed || lv.Status.Code != codes.DataLoss.String() {
			_ = r.fail(ctx, lv, codes.DataLoss, ReasonSnapshotInvalidated, err)
		}
		return nil
	}
	if got.IsClassicSnapshot() {
		if lv.Spec.Size.Value() > int64(got.Size) {
			grown, err := r.opts.LVM.ExtendLV(ctx, vg, name, uint64(lv.Spec.Size.Value()))
			if err != nil {
				// Still a valid snapshot: stay Ready, warn, retry.
				r.recorder.Eventf(lv, corev1.EventTypeWarning, ReasonExtendFailed, "Grow copy-on-write space of %s/%s to %s: %v", vg, name, lv.Spec.Size.String(), err)
				return fmt.Errorf("grow snapshot %s/%s: %w", vg, name, err)
			}
			logger.Info("Grew snapshot copy-on-write space", "size", grown.Size)
			r.recorder.Eventf(lv, corev1.EventTypeNormal, ReasonSnapshotExpanded, "Grew copy-on-write space of %s/%s to %s", vg, name, quantity(grown.Size))
			got = grown
		} else if grow, ok := expansionDue(lv, got); ok {
			return r.growSnapshot(ctx, lv, got, grow)
		}
	}
	path, err := r.opts.Activator.Activate(ctx, vg, name)
	if err != nil {
		return r.fail(ctx, lv, lvm.Code(err), ReasonSnapshotFailed, fmt.Errorf("activate snapshot %s/%s: %w", vg, name, err))
	}
	st := v1alpha1.LocalVolumeStatus{
		Phase: v1alpha1.PhaseReady, DevicePath: path, ObservedGeneration: lv.Generation,
		CurrentSize:  resource.NewQuantity(int64(got.Size), resource.BinarySI),
		RestoreSize:  lv.Status.RestoreSize,
		SnapshotTime: lv.Status.SnapshotTime,
	}
	if st.RestoreSize == nil {
		st.RestoreSize = resource.NewQuantity(int64(restoreSizeOf(got)), resource.BinarySI)
	}
	if st.SnapshotTime == nil {
		t := got.Time
		if t.IsZero() {
			t = time.Now()
		}
		mt := metav1.NewTime(t.Truncate(time.Second))
		st.SnapshotTime = &mt
	}
	if err := r.setStatus(ctx, lv, st); err != nil {
		return err
	}
	if got.IsClassicSnapshot() {
		// Watch the copy-on-write space fill up: grow it by policy, and
		// report an overflow as soon as it happens.
		r.queue.AddAfter(lv.Name, r.opts.SnapshotCheck)
	}
	return nil
}

// restoreSizeOf is what a snapshot holds: its origin's size when it was
// taken. A thin snapshot is as large as its origin was; a classic one's
// lv_size is its copy-on-write space, so lvm's origin_size tells.
func restoreSizeOf(s *lvm.LV) uint64 {
	if s.IsThin() {
		return s.Size
	}
	return s.OriginSize
}

func snapshotKind(lv *lvm.LV) string {
	if lv.IsThin() {
		return "thin"
	}
	return "copy-on-write"
}

// takeSnapshot creates the snapshot LV of lv's source volume.
func (r *Reconciler) takeSnapshot(ctx context.Context, lv *v1alpha1.LocalVolume) (*lvm.LV, error) {
	vg, name := lv.Spec.VGName, lv.LVName()
	srcName := lv.Spec.Source.Volume
	src, err := r.lister.Get(srcName)
	switch {
	case apierrors.IsNotFound(err):
		return nil, codeError(codes.NotFound, fmt.Errorf("source volume %s is not a LocalVolume of node %s", srcName, r.opts.NodeName))
	case err != nil:
		return nil, err
	case src.DeletionTimestamp != nil:
		return nil, codeError(codes.FailedPrecondition, fmt.Errorf("source volume %s is being deleted", srcName))
	case src.Spec.VolumeType != v1alpha1.VolumeTypeLVM || src.Spec.Kind == v1alpha1.KindSnapshot || src.Spec.IsReadOnlyRestore():
		return nil, codeError(codes.InvalidArgument, fmt.Errorf("source %s is not an LVM volume with an LV of its own", srcName))
	case src.Spec.VGName != vg:
		return nil, codeError(codes.InvalidArgument, fmt.Errorf("source volume %s is in VG %s, the snapshot in %s", srcName, src.Spec.VGName, vg))
	case src.Status.Phase != v1alpha1.PhaseReady || src.Status.CurrentSize == nil:
		r.setPending(ctx, lv, fmt.Sprintf("waiting for source volume %s to be Ready", srcName))
		return nil, fmt.Errorf("snapshot %s: %w %s", lv.Name, errWaiting, srcName)
	}
	origin, err := r.opts.LVM.GetLV(ctx, vg, src.LVName())
	if err != nil {
		return nil, fmt.Errorf("look up origin LV %s/%s: %w", vg, src.LVName(), err)
	}
	if origin.IsThin() {
		if lv.Spec.ThinPool != "" && lv.Spec.ThinPool != origin.Pool {
			return nil, codeError(codes.InvalidArgument, fmt.Errorf("snapshot names thin pool %s, its origin is in %s", lv.Spec.ThinPool, origin.Pool))
		}
		s, err := r.opts.LVM.CreateThinSnapshot(ctx, vg, origin.Name, name, lvm.OwnedTag)
		if err != nil {
			return nil, fmt.Errorf("thin snapshot %s/%s of %s: %w", vg, name, origin.Name, err)
		}
		return s, nil
	}
	if err := r.admit(ctx, lv, lv.Spec.Size.Value()); err != nil {
		var noRoom *errNoRoom
		if errors.As(err, &noRoom) {
			return nil, codeError(codes.ResourceExhausted, fmt.Errorf("copy-on-write space of snapshot %s: %w", lv.Name, err))
		}
		return nil, err
	}
	s, err := r.opts.LVM.CreateSnapshot(ctx, lvm.SnapshotOptions{VG: vg, Origin: origin.Name, Name: name,
		Size: uint64(lv.Spec.Size.Value()), Tags: []string{lvm.OwnedTag}})
	if err != nil {
		return nil, fmt.Errorf("snapshot %s/%s of %s with %s of copy-on-write space: %w", vg, name, origin.Name, lv.Spec.Size.String(), err)
	}
	return s, nil
}

// expansionDue reports whether a classic snapshot's copy-on-write space is
// fuller than its policy allows, and the size to grow it to.
func expansionDue(lv *v1alpha1.LocalVolume, got *lvm.LV) (int64, bool) {
	p := lv.Spec.SnapshotPolicy
	if p == nil || got.DataPercent < 0 || got.DataPercent < float64(p.ExpansionThresholdPercent) || p.ExpansionSize.Sign() <= 0 {
		return 0, false
	}
	return max(lv.Spec.Size.Value(), int64(got.Size)) + p.ExpansionSize.Value(), true
}

// growSnapshot records the larger copy-on-write space in spec.size first,
// so the scheduler's ledger counts it before the space is taken; the
// update brings the snapshot back here, where lvextend follows.
func (r *Reconciler) growSnapshot(ctx context.Context, lv *v1alpha1.LocalVolume, got *lvm.LV, size int64) error {
	klog.FromContext(ctx).Info("Snapshot copy-on-write space past its threshold", "snapshot", lv.Name,
		"dataPercent", got.DataPercent, "threshold", lv.Spec.SnapshotPolicy.ExpansionThresholdPercent, "newSize", size)
	// The growth is a grant like any other: past the VG's allocatable it is
	// refused (the snapshot may then overflow and be invalidated, which
	// the policy's owner risks; over-committing the VG would put every
	// volume of it at risk).
	if err := r.admit(ctx, lv, size); err != nil {
		var noRoom *errNoRoom
		if !errors.As(err, &noRoom) {
			return err
		}
		r.recorder.Eventf(lv, corev1.EventTypeWarning, ReasonExtendFailed, "Copy-on-write space %.1f%% full (threshold %d%%), cannot grow to %s: %v",
			got.DataPercent, lv.Spec.SnapshotPolicy.ExpansionThresholdPercent, quantity(uint64(size)), err)
		return nil
	}
	r.recorder.Eventf(lv, corev1.EventTypeNormal, ReasonSnapshotExpanding, "Copy-on-write space %.1f%% full (threshold %d%%): growing to %s",
		got.DataPercent, lv.Spec.SnapshotPolicy.ExpansionThresholdPercent, quantity(uint64(size)))
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := r.opts.Client.CsiV1alpha1().LocalVolumes().Get(ctx, lv.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.Spec.Size.Value() >= size {
			return nil
		}
		cur.Spec.Size = *resource.NewQuantity(size, resource.BinarySI)
		_, err = r.opts.Client.CsiV1alpha1().LocalVolumes().Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
}

// ensureReadOnlyRestore carries out a read-only view of a snapshot: no LV
// of its own; Ready with the snapshot's device once the snapshot is.
func (r *Reconciler) ensureReadOnlyRestore(ctx context.Context, lv *v1alpha1.LocalVolume) error {
	src, err := r.restoreSourceOf(ctx, lv)
	if err != nil {
		return err
	}
	path, err := r.opts.Activator.Activate(ctx, src.origin.Spec.VGName, src.origin.LVName())
	if err != nil {
		return r.fail(ctx, lv, lvm.Code(err), ReasonRestoreFailed, fmt.Errorf("activate snapshot %s: %w", src.origin.Name, err))
	}
	return r.setStatus(ctx, lv, v1alpha1.LocalVolumeStatus{
		Phase: v1alpha1.PhaseReady, DevicePath: path, ObservedGeneration: lv.Generation,
		CurrentSize: resource.NewQuantity(src.size, resource.BinarySI),
	})
}

// restoreSource is what a volume is filled from, ready to read: the
// snapshot of a restore, or the volume of a clone.
type restoreSource struct {
	origin *v1alpha1.LocalVolume
	lv     *lvm.LV
	// size is what the origin holds (a snapshot's restore size, a
	// volume's current size).
	size int64
}

// String names the origin for messages: "snapshot X" or "volume X".
func (s *restoreSource) String() string {
	if s.origin.Spec.Kind == v1alpha1.KindSnapshot {
		return "snapshot " + s.origin.Name
	}
	return "volume " + s.origin.Name
}

// fillSourceOf is what lv is filled from: its source.snapshot (a restore)
// or its source.volume (a clone); nil for neither.
func (r *Reconciler) fillSourceOf(ctx context.Context, lv *v1alpha1.LocalVolume) (*restoreSource, error) {
	switch s := lv.Spec.Source; {
	case s == nil:
		return nil, nil
	case s.Snapshot != "":
		return r.restoreSourceOf(ctx, lv)
	case s.Volume != "":
		return r.cloneSourceOf(ctx, lv)
	}
	return nil, nil
}

// cloneSourceOf checks lv's source.volume: a Ready LVM volume of this node,
// in lv's VG, not larger than lv. It is read while it may be in use: a
// block copy of a volume being written is not a point-in-time copy (a thin
// clone is; docs/snapshots.md). Failures are reported in lv's status.
func (r *Reconciler) cloneSourceOf(ctx context.Context, lv *v1alpha1.LocalVolume) (*restoreSource, error) {
	name := lv.Spec.Source.Volume
	src, err := r.lister.Get(name)
	switch {
	case apierrors.IsNotFound(err):
		return nil, r.fail(ctx, lv, codes.NotFound, ReasonRestoreFailed, fmt.Errorf("source volume %s is not a LocalVolume of node %s", name, r.opts.NodeName))
	case err != nil:
		return nil, err
	case src.Spec.Kind == v1alpha1.KindSnapshot:
		return nil, r.fail(ctx, lv, codes.InvalidArgument, ReasonRestoreFailed, fmt.Errorf("source.volume %s is a snapshot (name it in source.snapshot)", name))
	case src.Spec.VolumeType != v1alpha1.VolumeTypeLVM || src.Spec.IsReadOnlyRestore():
		return nil, r.fail(ctx, lv, codes.InvalidArgument, ReasonRestoreFailed, fmt.Errorf("source volume %s has no LV of its own to copy (a device, or a read-only view of a snapshot)", name))
	case src.Spec.VGName != lv.Spec.VGName:
		return nil, r.fail(ctx, lv, codes.InvalidArgument, ReasonRestoreFailed,
			fmt.Errorf("source volume %s is in VG %s, the clone in %s: a clone stays in its source's VG", name, src.Spec.VGName, lv.Spec.VGName))
	case src.DeletionTimestamp != nil:
		return nil, r.fail(ctx, lv, codes.FailedPrecondition, ReasonRestoreFailed, fmt.Errorf("source volume %s is being deleted", name))
	case src.Status.Phase != v1alpha1.PhaseReady || src.Status.CurrentSize == nil:
		r.setPending(ctx, lv, fmt.Sprintf("waiting for source volume %s to be Ready", name))
		return nil, fmt.Errorf("clone %s: %w %s", lv.Name, errWaiting, name)
	}
	// Compared as asked for: both LVs are rounded to the same extents, so
	// a clone asked as large as its source holds all of it.
	if lv.Spec.Size.Cmp(src.Spec.Size) < 0 {
		return nil, r.fail(ctx, lv, codes.OutOfRange, ReasonRestoreFailed,
			fmt.Errorf("volume of %s is smaller than its source volume %s (%s)", lv.Spec.Size.String(), name, src.Spec.Size.String()))
	}
	size := src.Status.CurrentSize.Value()
	got, err := r.opts.LVM.GetLV(ctx, src.Spec.VGName, src.LVName())
	if err != nil {
		return nil, r.fail(ctx, lv, lvm.Code(err), ReasonRestoreFailed, fmt.Errorf("source volume %s: LV %s/%s: %w", name, src.Spec.VGName, src.LVName(), err))
	}
	return &restoreSource{origin: src, lv: got, size: size}, nil
}

// restoreSourceOf checks lv's source.snapshot: on this node, in lv's VG,
// Ready, large enough. A failure is reported in lv's status (and returned);
// errWaiting means the snapshot is not Ready yet.
func (r *Reconciler) restoreSourceOf(ctx context.Context, lv *v1alpha1.LocalVolume) (*restoreSource, error) {
	name := lv.Spec.Source.Snapshot
	// A read-only view that was Ready stays so while the snapshot's LV is
	// there and valid, whatever the snapshot's phase says meanwhile (e.g. a
	// refused deletion): a pod may be using it.
	established := lv.Spec.IsReadOnlyRestore() && lv.Status.CurrentSize != nil
	snap, err := r.lister.Get(name)
	switch {
	case apierrors.IsNotFound(err):
		return nil, r.fail(ctx, lv, codes.NotFound, ReasonRestoreFailed, fmt.Errorf("snapshot %s is not a LocalVolume of node %s", name, r.opts.NodeName))
	case err != nil:
		return nil, err
	case snap.Spec.Kind != v1alpha1.KindSnapshot:
		return nil, r.fail(ctx, lv, codes.InvalidArgument, ReasonRestoreFailed, fmt.Errorf("source.snapshot %s is not a snapshot", name))
	case snap.Spec.VGName != lv.Spec.VGName:
		return nil, r.fail(ctx, lv, codes.InvalidArgument, ReasonRestoreFailed,
			fmt.Errorf("snapshot %s is in VG %s, the volume in %s: a restore stays in its snapshot's VG", name, snap.Spec.VGName, lv.Spec.VGName))
	case snap.Status.Phase == v1alpha1.PhaseFailed && snap.Status.Code == codes.DataLoss.String():
		return nil, r.fail(ctx, lv, codes.DataLoss, ReasonRestoreFailed, fmt.Errorf("snapshot %s: %s", name, snap.Status.Message))
	case established:
	case snap.DeletionTimestamp != nil:
		return nil, r.fail(ctx, lv, codes.FailedPrecondition, ReasonRestoreFailed, fmt.Errorf("snapshot %s is being deleted", name))
	case snap.Status.Phase != v1alpha1.PhaseReady || snap.Status.RestoreSize == nil:
		r.setPending(ctx, lv, fmt.Sprintf("waiting for snapshot %s to be Ready", name))
		return nil, fmt.Errorf("restore %s: %w %s", lv.Name, errWaiting, name)
	}
	var size int64
	if snap.Status.RestoreSize != nil {
		size = snap.Status.RestoreSize.Value()
	} else {
		size = lv.Status.CurrentSize.Value()
	}
	if lv.Spec.Size.Value() < size && !lv.Spec.IsReadOnlyRestore() {
		return nil, r.fail(ctx, lv, codes.OutOfRange, ReasonRestoreFailed,
			fmt.Errorf("volume of %s is smaller than snapshot %s (%s)", lv.Spec.Size.String(), name, quantity(uint64(size))))
	}
	got, err := r.opts.LVM.GetLV(ctx, snap.Spec.VGName, snap.LVName())
	if err != nil {
		return nil, r.fail(ctx, lv, lvm.Code(err), ReasonRestoreFailed, fmt.Errorf("snapshot %s: LV %s/%s: %w", name, snap.Spec.VGName, snap.LVName(), err))
	}
	if got.IsInvalidSnapshot() {
		return nil, r.fail(ctx, lv, codes.DataLoss, ReasonRestoreFailed, fmt.Errorf("snapshot %s was invalidated (its copy-on-write space overflowed)", name))
	}
	return &restoreSource{origin: snap, lv: got, size: size}, nil
}

// readOnlyUsers lists the volumes that need lv's LV: read-only restores of
// a snapshot, and block copies still running from a snapshot (restores) or
// from a volume (clones).
func (r *Reconciler) readOnlyUsers(lv *v1alpha1.LocalVolume) []string {
	deps, _ := r.informer.GetIndexer().ByIndex(sourceIndex, lv.Name)
	var users []string
	for _, d := range deps {
		dep, ok := d.(*v1alpha1.LocalVolume)
		if !ok || dep.Spec.Source == nil || dep.Spec.Kind == v1alpha1.KindSnapshot {
			continue
		}
		if s := dep.Spec.Source; s.Snapshot != lv.Name && s.Volume != lv.Name {
			continue
		}
		copying := dep.Status.Copy != nil && dep.Status.Copy.CompletionTime == nil && dep.DeletionTimestamp == nil
		if dep.Spec.IsReadOnlyRestore() || copying || r.copies.running(dep.Name) {
			users = append(users, dep.Name)
		}
	}
	sort.Strings(users)
	return users
}

// setPending reports that lv waits for something (no Event: waiting is normal).
func (r *Reconciler) setPending(ctx context.Context, lv *v1alpha1.LocalVolume, msg string) {
	st := lv.Status.DeepCopy()
	st.Phase, st.Code, st.Message, st.ObservedGeneration = v1alpha1.PhasePending, "", msg, lv.Generation
	if err := r.setStatus(ctx, lv, *st); err != nil {
		klog.FromContext(ctx).V(2).Info("Could not report waiting", "localVolume", lv.Name, "err", err)
	}
}

// codedError carries the gRPC code a failure should be reported with.
type codedError struct {
	code codes.Code
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func codeError(c codes.Code, err error) error { return &codedError{code: c, err: err} }

// codeOf is the code of a codedError, else lvm's code for err.
func codeOf(err error) codes.Code {
	var ce *codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	return lvm.Code(err)
}
