package plugin

import (
	"context"
	"fmt"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	snapinformers "github.com/kubernetes-csi/external-snapshotter/client/v8/informers/externalversions"
	snaplisters "github.com/kubernetes-csi/external-snapshotter/client/v8/listers/volumesnapshot/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// snapshotResolver finds the LocalVolume a VolumeSnapshot's data lives in.
type snapshotResolver struct {
	snapshots snaplisters.VolumeSnapshotLister
	contents  snaplisters.VolumeSnapshotContentLister
}

// newSnapshotResolver watches VolumeSnapshots and their contents when the
// snapshot API is installed; without it, restores are refused with a clear
// reason and everything else works.
func newSnapshotResolver(ctx context.Context, client snapclient.Interface) (snapshotResolver, error) {
	if client == nil {
		return snapshotResolver{}, nil
	}
	_, err := client.Discovery().ServerResourcesForGroupVersion(snapv1.SchemeGroupVersion.String())
	if apierrors.IsNotFound(err) {
		return snapshotResolver{}, nil
	} else if err != nil {
		return snapshotResolver{}, fmt.Errorf("%s: discover the snapshot API: %w", Name, err)
	}
	factory := snapinformers.NewSharedInformerFactory(client, 0)
	r := snapshotResolver{
		snapshots: factory.Snapshot().V1().VolumeSnapshots().Lister(),
		contents:  factory.Snapshot().V1().VolumeSnapshotContents().Lister(),
	}
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return snapshotResolver{}, fmt.Errorf("%s: %v informer did not sync", Name, typ)
		}
	}
	return r, nil
}

func (r snapshotResolver) available() bool { return r.snapshots != nil }

// localVolumeOf returns the LocalVolume name of a VolumeSnapshot: its
// content's snapshot handle (the CSI snapshot ID is the LocalVolume name),
// else the name CreateSnapshot gives csi-snapshotter's default CSI name
// snapshot-<VolumeSnapshot UID>: snap-<UID> (docs/localvolume.md).
func (r snapshotResolver) localVolumeOf(namespace, name string) (string, *needError) {
	if !r.available() {
		return "", unresolvable("volumesnapshot %s/%s: the snapshot.storage.k8s.io API was not installed when the scheduler started", namespace, name)
	}
	vs, err := r.snapshots.VolumeSnapshots(namespace).Get(name)
	if err != nil {
		return "", unschedulable("volumesnapshot %s/%s: %v", namespace, name, err)
	}
	if vs.Status != nil && vs.Status.BoundVolumeSnapshotContentName != nil {
		if c, err := r.contents.Get(*vs.Status.BoundVolumeSnapshotContentName); err == nil && c.Status != nil && c.Status.SnapshotHandle != nil {
			return *c.Status.SnapshotHandle, nil
		}
	}
	// Not bound yet: external-snapshotter will ask CreateSnapshot for
	// "snapshot-<VolumeSnapshot UID>", whose LocalVolume this is.
	return v1alpha1.SnapshotVolumeName("snapshot-" + string(vs.UID)), nil
}
