package plugin

import (
	"context"
	"fmt"
	schedcache "k8s.io/kubernetes/pkg/scheduler/backend/cache"
	"sort"
	"strings"
	"testing"
	"time"

	snapv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2/ktesting"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"
	st "k8s.io/kubernetes/pkg/scheduler/testing"
	"k8s.io/utils/ptr"

	olfake "github.com/open-local/open-local/apis/client/clientset/versioned/fake"
	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/parameters"
	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/config"
)

const (
	gi        = int64(1) << 30
	ns        = "default"
	ourDriver = config.ProvisionerName
)

// --- fixtures -------------------------------------------------------------

func class(name, provisioner string, params map[string]string) *storagev1.StorageClass {
	return &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: provisioner, Parameters: params,
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingWaitForFirstConsumer),
	}
}

func claim(name, className string, gib int64) *v1.PersistentVolumeClaim {
	pvc := st.MakePersistentVolumeClaim().Name(name).Namespace(ns).StorageClassName(ptr.To(className)).
		Resources(v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: *resource.NewQuantity(gib*gi, resource.BinarySI)}}).Obj()
	pvc.UID = types.UID("uid-" + name)
	return pvc
}

func podWith(name string, claims ...string) *v1.Pod {
	w := st.MakePod().Name(name).Namespace(ns).UID("pod-" + name)
	for _, c := range claims {
		w = w.PVC(c)
	}
	return w.Obj()
}

func inline(name, vg, size string) v1.Volume {
	attrs := map[string]string{}
	if vg != "" {
		attrs[parameters.VGName] = vg
	}
	if size != "" {
		attrs[parameters.InlineSize] = size
	}
	return v1.Volume{Name: name, VolumeSource: v1.VolumeSource{CSI: &v1.CSIVolumeSource{Driver: ourDriver, VolumeAttributes: attrs}}}
}

type vg struct {
	name string
	gib  int64
}

func nodeStorage(node string, vgs []vg, devices ...v1alpha1.DeviceInfo) *v1alpha1.NodeLocalStorage {
	o := &v1alpha1.NodeLocalStorage{ObjectMeta: metav1.ObjectMeta{Name: node}, Spec: v1alpha1.NodeLocalStorageSpec{NodeName: node}}
	for _, g := range vgs {
		o.Status.NodeStorageInfo.VolumeGroups = append(o.Status.NodeStorageInfo.VolumeGroups,
			v1alpha1.VolumeGroup{Name: g.name, Total: uint64(g.gib * gi), Allocatable: uint64(g.gib * gi)})
		o.Status.FilteredStorageInfo.VolumeGroups = append(o.Status.FilteredStorageInfo.VolumeGroups, g.name)
	}
	for _, d := range devices {
		o.Status.NodeStorageInfo.DeviceInfos = append(o.Status.NodeStorageInfo.DeviceInfos, d)
		o.Status.FilteredStorageInfo.Devices = append(o.Status.FilteredStorageInfo.Devices, d.Name)
	}
	return o
}

func ssd(name string, gib int64) v1alpha1.DeviceInfo {
	return v1alpha1.DeviceInfo{Name: name, MediaType: "ssd", Total: uint64(gib * gi)}
}

func localVolume(name, node, vgName string, gib int64) *v1alpha1.LocalVolume {
	return &v1alpha1.LocalVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("lv-" + name)},
		Spec: v1alpha1.LocalVolumeSpec{NodeName: node, VolumeType: v1alpha1.VolumeTypeLVM, VGName: vgName,
			Size: *resource.NewQuantity(gib*gi, resource.BinarySI)},
	}
}

// standard is the cluster most cases use: n1 with a 100Gi and a 40Gi VG
// (88Gi of pool0 used), n2 with one 100Gi VG and two ssd devices, n3
// without NodeLocalStorage.
func standard() ([]runtime.Object, []runtime.Object) {
	k8s := []runtime.Object{
		class("lvm", ourDriver, map[string]string{"volumeType": "LVM"}),
		class("lvm-pool1", ourDriver, map[string]string{"volumeType": "LVM", "vgName": "pool1"}),
		class("legacy", config.LegacyProvisionerName, nil),
		class("ssd", ourDriver, map[string]string{"volumeType": "Device", "mediaType": "ssd"}),
		class("bad-type", ourDriver, map[string]string{"volumeType": "Quota"}),
		class("device-no-media", ourDriver, map[string]string{"volumeType": "Device"}),
		class("other", "ebs.csi.aws.com", nil),
	}
	ol := []runtime.Object{
		nodeStorage("n1", []vg{{"pool0", 100}, {"pool1", 40}}),
		nodeStorage("n2", []vg{{"pool0", 100}}, ssd("/dev/sdb", 100), ssd("/dev/sdc", 50)),
		localVolume("pvc-used", "n1", "pool0", 88),
	}
	return k8s, ol
}

type harness struct {
	pl     *OpenLocal
	k8s    *fake.Clientset
	ol     *olfake.Clientset
	nodes  []*v1.Node
	ctx    context.Context
	fwk    framework.Framework
	cancel context.CancelFunc
}

func newHarness(t *testing.T, args *config.OpenLocalArgs, k8sObjs, olObjs []runtime.Object, snapObjs ...runtime.Object) *harness {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	h := &harness{ctx: ctx, cancel: cancel}
	for _, n := range []string{"n1", "n2", "n3"} {
		node := st.MakeNode().Name(n).Label(v1.LabelHostname, n).Obj()
		h.nodes = append(h.nodes, node)
		k8sObjs = append(k8sObjs, node)
	}
	h.k8s = fake.NewClientset(k8sObjs...)
	h.ol = olfake.NewSimpleClientset(olObjs...)
	snaps := snapfake.NewSimpleClientset(snapObjs...)
	if len(snapObjs) > 0 {
		snaps.Resources = []*metav1.APIResourceList{{GroupVersion: snapv1.SchemeGroupVersion.String()}}
	}
	factory := informers.NewSharedInformerFactory(h.k8s, 0)
	fw, err := frameworkruntime.NewFramework(ctx, nil, nil,
		frameworkruntime.WithClientSet(h.k8s), frameworkruntime.WithInformerFactory(factory),
		frameworkruntime.WithSnapshotSharedLister(schedcache.NewSnapshot(nil, h.nodes)))
	if err != nil {
		t.Fatal(err)
	}
	h.fwk = fw
	var obj runtime.Object
	if args != nil {
		obj = args
	}
	h.pl, err = newPlugin(ctx, obj, fw, h.ol, snaps)
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	// Informer handlers run after the caches report synced: wait until the
	// ledger holds every object, or a test may see a half-built ledger.
	var nlsCount, lvCount int
	for _, o := range olObjs {
		switch o.(type) {
		case *v1alpha1.NodeLocalStorage:
			nlsCount++
		case *v1alpha1.LocalVolume:
			lvCount++
		}
	}
	if err := wait.PollUntilContextTimeout(ctx, time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		st := h.pl.ledger.Stats()
		return st.Nodes == nlsCount && st.Volumes == lvCount, nil
	}); err != nil {
		t.Fatalf("ledger never held the %d NodeLocalStorages and %d LocalVolumes: %+v", nlsCount, lvCount, h.pl.ledger.Stats())
	}
	return h
}

func (h *harness) nodeInfo(name string) fwk.NodeInfo {
	for _, n := range h.nodes {
		if n.Name == name {
			ni := framework.NewNodeInfo()
			ni.SetNode(n)
			return ni
		}
	}
	panic("no node " + name)
}

// filterAll runs PreFilter and Filter on every node and renders the
// outcome: "skip", "prefilter: <code> <msg>", or per node "ok" / "<code>: <msg>".
func (h *harness) filterAll(pod *v1.Pod) (fwk.CycleState, string) {
	cs := framework.NewCycleState()
	_, s := h.pl.PreFilter(h.ctx, cs, pod, nil)
	if s.IsSkip() {
		return cs, "skip"
	}
	if !s.IsSuccess() {
		return cs, fmt.Sprintf("prefilter: %s %s", s.Code(), s.Message())
	}
	var out []string
	for _, n := range h.nodes {
		s := h.pl.Filter(h.ctx, cs, pod, h.nodeInfo(n.Name))
		if s.IsSuccess() {
			out = append(out, n.Name+" ok")
		} else {
			out = append(out, fmt.Sprintf("%s %s: %s", n.Name, s.Code(), s.Message()))
		}
	}
	return cs, strings.Join(out, "\n")
}

// --- PreFilter and Filter -------------------------------------------------

func TestPreFilterAndFilter(t *testing.T) {
	boundPVC := claim("bound", "lvm", 5)
	boundPVC.Spec.VolumeName = "pv-1"
	immediate := class("immediate", ourDriver, nil)
	immediate.VolumeBindingMode = ptr.To(storagev1.VolumeBindingImmediate)
	ephemeralPod := st.MakePod().Name("eph").Namespace(ns).UID("pod-eph").Volume(v1.Volume{Name: "scratch",
		VolumeSource: v1.VolumeSource{Ephemeral: &v1.EphemeralVolumeSource{}}}).Obj()
	ephemeralPVC := claim("eph-scratch", "lvm", 30)
	ephemeralPVC.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: "eph", UID: "pod-eph", Controller: ptr.To(true)}}

	for _, tc := range []struct {
		name   string
		objs   []runtime.Object // extra k8s objects
		olObjs []runtime.Object // extra open-local objects
		pod    *v1.Pod
		want   string
	}{
		{name: "no volumes", pod: podWith("p"), want: "skip"},
		{name: "foreign provisioner", objs: []runtime.Object{claim("a", "other", 5)}, pod: podWith("p", "a"), want: "skip"},
		{name: "bound PVC needs nothing", objs: []runtime.Object{boundPVC}, pod: podWith("p", "bound"), want: "skip"},
		{name: "immediate binding is not ours to place", objs: []runtime.Object{immediate, claim("a", "immediate", 5)}, pod: podWith("p", "a"), want: "skip"},
		{name: "missing PVC is VolumeBinding's to report", pod: podWith("p", "nope"), want: "skip"},
		{
			name: "one PVC", objs: []runtime.Object{claim("a", "lvm", 30)}, pod: podWith("p", "a"),
			want: "n1 ok\nn2 ok\nn3 UnschedulableAndUnresolvable: node(s) had no NodeLocalStorage",
		},
		{
			name: "legacy provisioner is ours", objs: []runtime.Object{claim("a", "legacy", 60)}, pod: podWith("p", "a"),
			want: "n1 UnschedulableAndUnresolvable: node(s) had no VG with 60Gi free for pvc default/a\nn2 ok\nn3 UnschedulableAndUnresolvable: node(s) had no NodeLocalStorage",
		},
		{
			name: "all PVCs of a pod must fit together (alibaba/open-local#158)",
			objs: []runtime.Object{claim("a", "lvm", 35), claim("b", "lvm", 35), claim("c", "lvm", 35)}, pod: podWith("p", "a", "b", "c"),
			want: "n1 UnschedulableAndUnresolvable: node(s) had no VG with 35Gi free for pvc default/b\n" +
				"n2 UnschedulableAndUnresolvable: node(s) had no VG with 35Gi free for pvc default/c\n" +
				"n3 UnschedulableAndUnresolvable: node(s) had no NodeLocalStorage",
		},
		{
			name: "vgName pins the VG", objs: []runtime.Object{claim("a", "lvm-pool1", 30)}, pod: podWith("p", "a"),
			want: "n1 ok\nn2 UnschedulableAndUnresolvable: node(s) had no VG pool1 (vgName of pvc default/a)\nn3 UnschedulableAndUnresolvable: node(s) had no NodeLocalStorage",
		},
		{
			name: "pinned PVCs are summed", objs: []runtime.Object{claim("a", "lvm-pool1", 30), claim("b", "lvm-pool1", 20)}, pod: podWith("p", "a", "b"),
			want: "n1 UnschedulableAndUnresolvable: node(s) had less than 50Gi free in VG pool1\nn2 UnschedulableAndUnresolvable: node(s) had no VG pool1 (vgName of pvc default/a)\nn3 UnschedulableAndUnresolvable: node(s) had no NodeLocalStorage",
		},
		{
			name: "devices", objs: []runtime.Object{claim("d1", "ssd", 40), claim("d2", "ssd", 40)}, pod: podWith("p", "d1", "d2"),
			want: "n1 UnschedulableAndUnresolvable: node(s) had no free ssd device of at least 40Gi for pvc default/d1\nn2 ok\nn3 UnschedulableAndUnresolvable: node(s) had no NodeLocalStorage",
		},
		{
			name: "missing StorageClass fails only its pod (alibaba/open-local#211)", objs: []runtime.Object{claim("a", "deleted-class", 5)}, pod: podWith("p", "a"),
			want: `prefilter: UnschedulableAndUnresolvable pvc default/a: storageclass "deleted-class" not found`,
		},
		{
			name: "bad volumeType", objs: []runtime.Object{claim("a", "bad-type", 5)}, pod: podWith("p", "a"),
			want: `prefilter: UnschedulableAndUnresolvable pvc default/a: storageclass bad-type: StorageClass parameter "volumeType"="Quota": want LVM or Device (MountPoint is not supported)`,
		},
		{
			name: "Device without mediaType", objs: []runtime.Object{claim("a", "device-no-media", 5)}, pod: podWith("p", "a"),
			want: `prefilter: UnschedulableAndUnresolvable pvc default/a: storageclass device-no-media: StorageClass parameter "mediaType"="": required for volumeType Device`,
		},
		{
			name: "generic ephemeral volume", objs: []runtime.Object{ephemeralPVC}, pod: ephemeralPod,
			want: "n1 ok\nn2 ok\nn3 UnschedulableAndUnresolvable: node(s) had no NodeLocalStorage",
		},
		{
			name: "CSI inline volume with default size", pod: st.MakePod().Name("i").Namespace(ns).UID("pod-i").Volume(inline("scratch", "pool1", "")).Obj(),
			want: "n1 ok\nn2 UnschedulableAndUnresolvable: node(s) had no VG pool1 (vgName of inline volume scratch of pod default/i)\nn3 UnschedulableAndUnresolvable: node(s) had no NodeLocalStorage",
		},
		{
			name: "CSI inline volume with a bad size", pod: st.MakePod().Name("i").Namespace(ns).UID("pod-i").Volume(inline("scratch", "", "lots")).Obj(),
			want: `prefilter: UnschedulableAndUnresolvable inline volume scratch of pod default/i: inline volume attribute "size"="lots": want a quantity such as 10Gi`,
		},
		{
			name: "an allocated PVC pins the pod to its node", objs: []runtime.Object{claim("a", "lvm", 5), claim("b", "lvm", 5)},
			olObjs: []runtime.Object{localVolume("pvc-uid-a", "n2", "pool0", 5)}, pod: podWith("p", "a", "b"),
			want: "n1 UnschedulableAndUnresolvable: node(s) were not n2: pvc default/a is allocated there\nn2 ok\nn3 UnschedulableAndUnresolvable: node(s) were not n2: pvc default/a is allocated there",
		},
		{
			name: "a LocalVolume being deleted blocks its PVC", objs: []runtime.Object{claim("a", "lvm", 5)},
			olObjs: []runtime.Object{func() runtime.Object {
				lv := localVolume("pvc-uid-a", "n2", "pool0", 5)
				lv.DeletionTimestamp, lv.Finalizers = ptr.To(metav1.Now()), []string{v1alpha1.LocalVolumeFinalizer}
				return lv
			}()}, pod: podWith("p", "a"),
			want: "prefilter: Unschedulable LocalVolume pvc-uid-a of pvc default/a is being deleted; waiting until it is gone",
		},
		{
			name: "a clone lives with its source", objs: []runtime.Object{claim("src", "lvm", 5), func() runtime.Object {
				c := claim("copy", "lvm", 5)
				c.Spec.DataSource = &v1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "src"}
				return c
			}()}, olObjs: []runtime.Object{localVolume("pvc-uid-src", "n1", "pool1", 5)}, pod: podWith("p", "copy"),
			want: "n1 ok\nn2 UnschedulableAndUnresolvable: node(s) were not n1: pvc default/copy is copied from pvc-uid-src there\nn3 UnschedulableAndUnresolvable: node(s) were not n1: pvc default/copy is copied from pvc-uid-src there",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k8s, ol := standard()
			h := newHarness(t, nil, append(k8s, tc.objs...), append(ol, tc.olObjs...))
			if _, got := h.filterAll(tc.pod); got != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

// A PVC restored from a VolumeSnapshot goes where the snapshot is: a
// writable restore is a new volume in the snapshot's VG (thin when its class
// says so), a read-only one (csi.aliyun.com/readonly snapshots) is the
// snapshot's LV and counts nothing. PreBind records which.
func TestRestoreFromSnapshot(t *testing.T) {
	k8s, ol := standard()
	k8s = append(k8s, class("thin", ourDriver, map[string]string{"volumeType": "LVM", "thinPool": "tp"}))
	restore := func(name, className string, gib int64) *v1.PersistentVolumeClaim {
		pvc := claim(name, className, gib)
		pvc.Spec.DataSource = &v1.TypedLocalObjectReference{APIGroup: ptr.To("snapshot.storage.k8s.io"), Kind: "VolumeSnapshot", Name: "snap"}
		return pvc
	}
	vs := &snapv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Name: "snap", Namespace: ns, UID: "vs-uid"}}
	snapLV := localVolume("snap-vs-uid", "n2", "pool0", 1)
	snapLV.Spec.Kind = v1alpha1.KindSnapshot
	n2 := nodeStorage("n2", []vg{{"pool0", 100}})
	n2.Status.NodeStorageInfo.VolumeGroups[0].ThinPools = []v1alpha1.ThinPool{{Name: "tp", Total: uint64(10 * gi), Allocatable: uint64(20 * gi)}}
	ol = withNodeStorage(ol, n2)
	for _, tc := range []struct {
		name, class string
		readOnly    bool
		// want: the LocalVolume PreBind writes.
		want string
	}{
		{name: "writable", class: "lvm", want: "vg=pool0 pool= size=5Gi readOnly=false source=snap-vs-uid"},
		{name: "writable thin", class: "thin", want: "vg=pool0 pool=tp size=5Gi readOnly=false source=snap-vs-uid"},
		{name: "read-only", class: "thin", readOnly: true, want: "vg=pool0 pool= size=5Gi readOnly=true source=snap-vs-uid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := snapLV.DeepCopy()
			snap.Spec.ReadOnly = tc.readOnly
			pvc := restore("restored", tc.class, 5)
			h := newHarness(t, nil, append(k8s, pvc), append(ol, snap), vs)
			pod := podWith("p", "restored")
			cs, got := h.filterAll(pod)
			want := "n1 UnschedulableAndUnresolvable: node(s) were not n2: pvc default/restored is copied from snap-vs-uid there\nn2 ok\n" +
				"n3 UnschedulableAndUnresolvable: node(s) were not n2: pvc default/restored is copied from snap-vs-uid there"
			if got != want {
				t.Fatalf("got:\n%s\nwant:\n%s", got, want)
			}
			if s := h.pl.Reserve(h.ctx, cs, pod, "n2"); !s.IsSuccess() {
				t.Fatal(s)
			}
			if s := h.pl.PreBind(h.ctx, cs, pod, "n2"); !s.IsSuccess() {
				t.Fatal(s)
			}
			lv, err := h.ol.CsiV1alpha1().LocalVolumes().Get(h.ctx, "pvc-uid-restored", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			src := ""
			if lv.Spec.Source != nil {
				src = lv.Spec.Source.Snapshot
			}
			if got := fmt.Sprintf("vg=%s pool=%s size=%s readOnly=%v source=%s", lv.Spec.VGName, lv.Spec.ThinPool, lv.Spec.Size.String(), lv.Spec.ReadOnly, src); got != tc.want {
				t.Errorf("LocalVolume: %s\nwant        %s", got, tc.want)
			}
		})
	}

	// A restore larger than its pool can promise does not fit.
	h := newHarness(t, nil, append(k8s, restore("big", "thin", 25)), append(ol, snapLV), vs)
	if _, got := h.filterAll(podWith("p", "big")); !strings.Contains(got, "n2 UnschedulableAndUnresolvable: node(s) had no thin pool tp in VG pool0 with 25Gi of virtual size free for pvc default/big") {
		t.Errorf("oversized thin restore: %s", got)
	}

	// Without the snapshot API the reason says so.
	h = newHarness(t, nil, append(k8s, restore("restored", "lvm", 5)), append(ol, snapLV))
	if _, got := h.filterAll(podWith("p", "restored")); !strings.Contains(got, "the snapshot.storage.k8s.io API was not installed") {
		t.Errorf("without the snapshot API: %s", got)
	}
}

// withNodeStorage replaces the NodeLocalStorage of nls's node in objs.
func withNodeStorage(objs []runtime.Object, nls *v1alpha1.NodeLocalStorage) []runtime.Object {
	var out []runtime.Object
	for _, o := range objs {
		if n, ok := o.(*v1alpha1.NodeLocalStorage); !ok || n.Name != nls.Name {
			out = append(out, o)
		}
	}
	return append(out, nls)
}

// A thin StorageClass places volumes in its pool; striping and thin do not mix.
func TestThinClass(t *testing.T) {
	k8s, ol := standard()
	k8s = append(k8s, class("thin", ourDriver, map[string]string{"volumeType": "LVM", "thinPool": "tp"}),
		class("thin-striped", ourDriver, map[string]string{"volumeType": "LVM", "thinPool": "tp", "lvmType": "striping"}),
		claim("t", "thin", 150), claim("ts", "thin-striped", 1))
	n2 := nodeStorage("n2", []vg{{"pool0", 100}})
	n2.Status.NodeStorageInfo.VolumeGroups[0].ThinPools = []v1alpha1.ThinPool{{Name: "tp", Total: uint64(50 * gi), Allocatable: uint64(200 * gi)}}
	h := newHarness(t, nil, k8s, withNodeStorage(ol, n2))
	// 150Gi virtual fits n2's overprovisioned pool, nowhere else.
	_, got := h.filterAll(podWith("p", "t"))
	if !strings.Contains(got, "n2 ok") || !strings.Contains(got, "n1 UnschedulableAndUnresolvable: node(s) had no thin pool tp") {
		t.Errorf("thin: %s", got)
	}
	if _, got := h.filterAll(podWith("p2", "ts")); !strings.Contains(got, `"thinPool"="tp": a thin volume's layout is its pool's: not with lvmType striping`) {
		t.Errorf("striped thin: %s", got)
	}
}

// --- Score ---------------------------------------------------------------

func TestScore(t *testing.T) {
	k8s, ol := standard()
	k8s = append(k8s, claim("a", "lvm", 10))
	for _, tc := range []struct {
		name     string
		strategy config.Strategy
		pod      *v1.Pod
		anti     int32
		want     map[string]int64 // after NormalizeScore
	}{
		// n1's pool0 is 88% used: binpack prefers it, spread prefers n2.
		{name: "binpack", strategy: config.StrategyBinpack, pod: podWith("p", "a"), want: map[string]int64{"n1": 100, "n2": 0}},
		{name: "spread", strategy: config.StrategySpread, pod: podWith("p", "a"), want: map[string]int64{"n1": 0, "n2": 100}},
		{name: "storage-free pod, anti-affinity off", pod: podWith("free"), want: nil},
		{name: "storage-free pod kept off storage nodes", pod: podWith("free"), anti: 60, want: map[string]int64{"n1": 0, "n2": 0, "n3": 60}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := defaultArgs()
			if tc.strategy != "" {
				args.Strategy = tc.strategy
			}
			args.StorageFreePodAntiAffinityWeight = tc.anti
			h := newHarness(t, args, k8s, ol)
			cs, _ := h.filterAll(tc.pod)
			if s := h.pl.PreScore(h.ctx, cs, tc.pod, nil); s.IsSkip() {
				if tc.want != nil {
					t.Fatal("PreScore skipped")
				}
				return
			} else if tc.want == nil {
				t.Fatal("PreScore did not skip")
			}
			var scores fwk.NodeScoreList
			for name := range tc.want {
				s, status := h.pl.Score(h.ctx, cs, tc.pod, h.nodeInfo(name))
				if !status.IsSuccess() {
					t.Fatal(status)
				}
				scores = append(scores, fwk.NodeScore{Name: name, Score: s})
			}
			if s := h.pl.ScoreExtensions().NormalizeScore(h.ctx, cs, tc.pod, scores); !s.IsSuccess() {
				t.Fatal(s)
			}
			got := map[string]int64{}
			for _, s := range scores {
				got[s.Name] = s.Score
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("scores = %v, want %v", got, tc.want)
			}
		})
	}
}

func defaultArgs() *config.OpenLocalArgs {
	a, err := decodeArgs(nil)
	if err != nil {
		panic(err)
	}
	return a
}

// --- Reserve, PreBind, Unreserve -----------------------------------------

func TestReservePreBindUnreserve(t *testing.T) {
	k8s, ol := standard()
	k8s = append(k8s, claim("a", "lvm", 30), claim("d", "ssd", 40), claim("b", "lvm", 80))
	h := newHarness(t, nil, k8s, ol)
	pod := st.MakePod().Name("p").Namespace(ns).UID("pod-p").PVC("a").PVC("d").Volume(inline("scratch", "", "2Gi")).Obj()
	cs, got := h.filterAll(pod)
	if !strings.Contains(got, "n2 ok") {
		t.Fatalf("filter: %s", got)
	}
	if s := h.pl.Reserve(h.ctx, cs, pod, "n2"); !s.IsSuccess() {
		t.Fatal(s)
	}
	// Held: a pod needing 80Gi more on n2's pool0 (100 - 30 - 2 = 68 free) no longer fits there.
	other := podWith("o", "b")
	if _, got := h.filterAll(other); !strings.Contains(got, "n2 UnschedulableAndUnresolvable: node(s) had no VG with 80Gi free for pvc default/b") {
		t.Errorf("reservation not held:\n%s", got)
	}
	if r, s := h.pl.PreBindPreFlight(h.ctx, cs, pod, "n2"); !s.IsSuccess() || r.AllowParallel {
		t.Fatalf("PreBindPreFlight = %+v, %v", r, s)
	}
	if s := h.pl.PreBind(h.ctx, cs, pod, "n2"); !s.IsSuccess() {
		t.Fatal(s)
	}
	list, err := h.ol.CsiV1alpha1().LocalVolumes().List(h.ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var lvs []string
	for _, lv := range list.Items {
		if lv.Name == "pvc-used" {
			continue
		}
		s := lv.Spec
		ref := ""
		if s.ClaimRef != nil {
			ref = "claim=" + s.ClaimRef.Namespace + "/" + s.ClaimRef.Name + "/" + string(s.ClaimRef.UID)
		}
		if s.PodRef != nil {
			ref = "pod=" + s.PodRef.Namespace + "/" + s.PodRef.Name + "/" + string(s.PodRef.UID)
		}
		lvs = append(lvs, fmt.Sprintf("%s node=%s %s vg=%s dev=%s size=%s %s finalizers=%v",
			lv.Name, s.NodeName, s.VolumeType, s.VGName, s.Device, s.Size.String(), ref, lv.Finalizers))
	}
	sort.Strings(lvs)
	// No LocalVolume for the inline volume: the bound pod records it, the
	// ledger counts it from the pod informer (TestInlineVolumesFromPods).
	want := []string{
		"pvc-uid-a node=n2 LVM vg=pool0 dev= size=30Gi claim=default/a/uid-a finalizers=[csi.aliyun.com/local-volume]",
		"pvc-uid-d node=n2 Device vg= dev=/dev/sdc size=40Gi claim=default/d/uid-d finalizers=[csi.aliyun.com/local-volume]",
	}
	if strings.Join(lvs, "\n") != strings.Join(want, "\n") {
		t.Errorf("LocalVolumes:\n%s\nwant:\n%s", strings.Join(lvs, "\n"), strings.Join(want, "\n"))
	}
	// PreBind does not touch PVCs (VolumeBinding updates them next).
	for _, a := range h.k8s.Actions() {
		if a.GetResource().Resource == "persistentvolumeclaims" && a.GetVerb() != "list" && a.GetVerb() != "watch" {
			t.Errorf("PreBind touched a PVC: %v", a)
		}
	}
	// PreBind is idempotent: a retry finds its own objects.
	if s := h.pl.PreBind(h.ctx, cs, pod, "n2"); !s.IsSuccess() {
		t.Errorf("second PreBind: %v", s)
	}
	// Unreserve (binding failed): the space and the objects go.
	h.pl.Unreserve(h.ctx, cs, pod, "n2")
	list, _ = h.ol.CsiV1alpha1().LocalVolumes().List(h.ctx, metav1.ListOptions{})
	if len(list.Items) != 1 {
		t.Errorf("after Unreserve %d LocalVolumes remain, want only pvc-used", len(list.Items))
	}
	if node, _, ok := h.pl.ledger.Reservation(pod.UID); ok {
		t.Errorf("reservation on %v still held", node)
	}
}

func TestPreBindConflicts(t *testing.T) {
	k8s, ol := standard()
	k8s = append(k8s, claim("a", "lvm", 5))
	for _, tc := range []struct {
		name     string
		existing *v1alpha1.LocalVolume
		want     string // "" = success
	}{
		{name: "same node: idempotent", existing: localVolume("pvc-uid-a", "n2", "pool0", 5)},
		{name: "other node", existing: localVolume("pvc-uid-a", "n1", "pool0", 5), want: "already exists on node n1, not n2"},
		{name: "being deleted", existing: func() *v1alpha1.LocalVolume {
			lv := localVolume("pvc-uid-a", "n2", "pool0", 5)
			lv.DeletionTimestamp, lv.Finalizers = ptr.To(metav1.Now()), []string{v1alpha1.LocalVolumeFinalizer}
			return lv
		}(), want: "is being deleted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil, k8s, ol)
			pod := podWith("p", "a")
			cs, _ := h.filterAll(pod)
			if s := h.pl.Reserve(h.ctx, cs, pod, "n2"); !s.IsSuccess() {
				t.Fatal(s)
			}
			// Appears behind the ledger's back (the CSI controller, a race).
			if _, err := h.ol.CsiV1alpha1().LocalVolumes().Create(h.ctx, tc.existing, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			s := h.pl.PreBind(h.ctx, cs, pod, "n2")
			if tc.want == "" {
				if !s.IsSuccess() {
					t.Fatal(s)
				}
				// Unreserve must not delete an object it did not create.
				h.pl.Unreserve(h.ctx, cs, pod, "n2")
				if _, err := h.ol.CsiV1alpha1().LocalVolumes().Get(h.ctx, "pvc-uid-a", metav1.GetOptions{}); apierrors.IsNotFound(err) {
					t.Error("Unreserve deleted a LocalVolume PreBind did not create")
				}
				return
			}
			if s.IsSuccess() || !strings.Contains(s.Message(), tc.want) {
				t.Errorf("PreBind = %v, want an error containing %q", s, tc.want)
			}
		})
	}
}

// A Reserve that lost a race re-checks under the lock and refuses.
func TestReserveRechecks(t *testing.T) {
	k8s, ol := standard()
	k8s = append(k8s, claim("a", "lvm", 60), claim("b", "lvm", 60))
	h := newHarness(t, nil, k8s, ol)
	pa, pb := podWith("pa", "a"), podWith("pb", "b")
	csA, _ := h.filterAll(pa)
	csB, _ := h.filterAll(pb) // both saw n2 with room for one of them
	if s := h.pl.Reserve(h.ctx, csA, pa, "n2"); !s.IsSuccess() {
		t.Fatal(s)
	}
	s := h.pl.Reserve(h.ctx, csB, pb, "n2")
	if s.Code() != fwk.Unschedulable || s.Message() != "pvc default/b on n2: need 60Gi, largest VG free 40Gi" {
		t.Errorf("second Reserve = %v", s)
	}
	h.pl.Unreserve(h.ctx, csB, pb, "n2")
	if s := h.pl.Reserve(h.ctx, csB, pb, "n2"); s.IsSuccess() {
		t.Error("Unreserve of the loser released the winner's space")
	}
}

// --- queueing hints ----------------------------------------------------------

func TestQueueingHints(t *testing.T) {
	k8s, ol := standard()
	h := newHarness(t, nil, k8s, ol)
	logger, _ := ktesting.NewTestContext(t)
	pod := podWith("p", "a")
	unstr := func(obj runtime.Object) any {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			t.Fatal(err)
		}
		return &unstructured.Unstructured{Object: m}
	}
	small := nodeStorage("n1", []vg{{"pool0", 100}})
	bigger := nodeStorage("n1", []vg{{"pool0", 150}})
	newVG := nodeStorage("n1", []vg{{"pool0", 100}, {"pool1", 10}})
	heartbeat := small.DeepCopy()
	heartbeat.Status.NodeStorageInfo.State.LastHeartbeatTime = ptr.To(metav1.Now())
	snap := localVolume("snapshot-1", "n1", "pool0", 1)
	snap.Spec.Kind = v1alpha1.KindSnapshot
	ours := &v1.PersistentVolume{Spec: v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{Driver: ourDriver}}}}
	theirs := &v1.PersistentVolume{Spec: v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{Driver: "x"}}}}
	for _, tc := range []struct {
		name     string
		fn       fwk.QueueingHintFn
		old, new any
		want     fwk.QueueingHint
	}{
		{"NLS added", h.pl.afterNodeStorageChange, nil, unstr(small), fwk.Queue},
		{"VG grew", h.pl.afterNodeStorageChange, unstr(small), unstr(bigger), fwk.Queue},
		{"VG added", h.pl.afterNodeStorageChange, unstr(small), unstr(newVG), fwk.Queue},
		{"VG shrank", h.pl.afterNodeStorageChange, unstr(bigger), unstr(small), fwk.QueueSkip},
		{"heartbeat only", h.pl.afterNodeStorageChange, unstr(small), unstr(heartbeat), fwk.QueueSkip},
		{"typed objects too", h.pl.afterNodeStorageChange, small, bigger, fwk.Queue},
		{"LocalVolume deleted", h.pl.afterLocalVolumeChange, unstr(localVolume("x", "n1", "pool0", 1)), nil, fwk.Queue},
		{"LocalVolume added", h.pl.afterLocalVolumeChange, nil, unstr(localVolume("x", "n1", "pool0", 1)), fwk.QueueSkip},
		{"snapshot added", h.pl.afterLocalVolumeChange, nil, unstr(snap), fwk.Queue},
		{"the pod's PVC", h.pl.afterClaimChange, nil, claim("a", "lvm", 1), fwk.Queue},
		{"another PVC", h.pl.afterClaimChange, nil, claim("z", "lvm", 1), fwk.QueueSkip},
		{"StorageClass added", h.pl.afterClassAdded, nil, class("new", ourDriver, nil), fwk.Queue},
		{"our PV deleted", h.pl.afterVolumeDeleted, ours, nil, fwk.Queue},
		{"foreign PV deleted", h.pl.afterVolumeDeleted, theirs, nil, fwk.QueueSkip},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.fn(logger, pod, tc.old, tc.new)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("hint = %v, want %v", got, tc.want)
			}
		})
	}
	events, err := h.pl.EventsToRegister(h.ctx)
	if err != nil || len(events) != 5 {
		t.Errorf("EventsToRegister = %d events, %v", len(events), err)
	}
}

// A striped volume takes stripes × ceil(extents/stripes) extents, and the
// agent picks the stripe count (up to the VG's PVs) at lvcreate time: the
// scheduler counts the worst case, as the CSI controller does.
func TestStripedClassCountsWorstCase(t *testing.T) {
	k8s, ol := standard()
	k8s = append(k8s, class("striped", ourDriver, map[string]string{"volumeType": "LVM", "lvmType": "striping"}),
		class("linear", ourDriver, map[string]string{"volumeType": "LVM"}),
		claim("s", "striped", 1), claim("l", "linear", 1))
	// 257 extents of 4Mi over 4 PVs: a linear 1Gi (256 extents) fits; a
	// striped one may take 258 (3 stripes of 86), which does not.
	n2 := nodeStorage("n2", []vg{{"pool0", 1}})
	g := &n2.Status.NodeStorageInfo.VolumeGroups[0]
	g.Total, g.Allocatable, g.ExtentSize = uint64(257*4<<20), uint64(257*4<<20), 4<<20
	g.PhysicalVolumes = []string{"/dev/a", "/dev/b", "/dev/c", "/dev/d"}
	h := newHarness(t, nil, k8s, withNodeStorage(ol, n2))
	if _, got := h.filterAll(podWith("p", "l")); !strings.Contains(got, "n2 ok") {
		t.Errorf("linear 1Gi in 257 extents: %s", got)
	}
	if _, got := h.filterAll(podWith("p2", "s")); strings.Contains(got, "n2 ok") {
		t.Errorf("striped 1Gi may take 258 extents of the 257, yet: %s", got)
	}
}

// The binding cycle writes nothing for a pod whose only local volumes are
// CSI inline volumes: PreBind is skipped, and the ledger holds the space
// from Reserve until the bound pod arrives from the informer, then from the
// pod, then from the node's LocalVolume, until both are gone.
func TestInlineVolumesFromPods(t *testing.T) {
	k8s, ol := standard()
	h := newHarness(t, nil, k8s, ol)
	pod := st.MakePod().Name("i").Namespace(ns).UID("pod-i").Volume(inline("scratch", "", "60Gi")).Obj()
	name := v1alpha1.InlineVolumeName(pod.UID, "scratch")
	big := func(n string) *v1.Pod {
		return st.MakePod().Name(n).Namespace(ns).UID("pod-" + n).Volume(inline("scratch", "", "60Gi")).Obj()
	}
	// fitsOnN2 says whether another 60Gi inline pod still fits on n2 (100Gi).
	fitsOnN2 := func() bool {
		_, got := h.filterAll(big("probe"))
		return strings.Contains(got, "n2 ok")
	}
	waitLedger := func(what string, cond func() bool) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(h.ctx, time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) { return cond(), nil }); err != nil {
			t.Fatalf("%s: ledger %+v", what, h.pl.ledger.Stats())
		}
	}
	cs, _ := h.filterAll(pod)
	if s := h.pl.Reserve(h.ctx, cs, pod, "n2"); !s.IsSuccess() {
		t.Fatal(s)
	}
	if _, s := h.pl.PreBindPreFlight(h.ctx, cs, pod, "n2"); !s.IsSkip() {
		t.Errorf("PreBindPreFlight of an inline-only pod = %v, want Skip", s)
	}
	if s := h.pl.PreBind(h.ctx, cs, pod, "n2"); !s.IsSuccess() {
		t.Fatal(s)
	}
	for _, a := range h.ol.Actions() {
		if a.GetVerb() == "create" {
			t.Errorf("the binding cycle of an inline-only pod wrote %v", a)
		}
	}
	if fitsOnN2() {
		t.Fatal("reserved: a second 60Gi inline pod fits on n2")
	}
	// Bound (the binding subresource sets nodeName): the pod's count takes over.
	pod.Spec.NodeName = "n2"
	if _, err := h.k8s.CoreV1().Pods(ns).Create(h.ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitLedger("bound pod counted", func() bool { return h.pl.ledger.Stats().InlineVolumes == 1 })
	if _, _, ok := h.pl.ledger.Reservation(pod.UID); ok {
		t.Error("the reservation outlived the pod's binding")
	}
	if fitsOnN2() {
		t.Fatal("bound: a second 60Gi inline pod fits on n2")
	}
	// The node writes the LocalVolume: still counted once (40Gi free).
	if _, err := h.ol.CsiV1alpha1().LocalVolumes().Create(h.ctx, localVolume(name, "n2", "pool0", 60), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitLedger("LocalVolume seen", func() bool { v, ok := h.pl.ledger.Volume(name); return ok && v.Exists })
	small := st.MakePod().Name("s").Namespace(ns).UID("pod-s").Volume(inline("scratch", "", "40Gi")).Obj()
	if _, got := h.filterAll(small); !strings.Contains(got, "n2 ok") {
		t.Errorf("counted twice: a 40Gi inline pod does not fit the 40Gi left on n2:\n%s", got)
	}
	// Pod gone: the LocalVolume still holds the space until it is removed.
	if err := h.k8s.CoreV1().Pods(ns).Delete(h.ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitLedger("pod gone", func() bool { return h.pl.ledger.Stats().InlineVolumes == 0 })
	if fitsOnN2() {
		t.Fatal("the pod went but its LocalVolume still exists: a 60Gi pod fits")
	}
	if err := h.ol.CsiV1alpha1().LocalVolumes().Delete(h.ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitLedger("space free", fitsOnN2)
}

// A restarted scheduler counts the inline volumes of assigned pods from
// the pods and the LocalVolumes, each exactly once; finished and
// unassigned pods hold nothing.
func TestInlineLedgerRebuilt(t *testing.T) {
	k8s, ol := standard()
	withLV := st.MakePod().Name("a").Namespace(ns).UID("pod-a").Node("n2").Volume(inline("scratch", "", "30Gi")).Obj()
	noLV := st.MakePod().Name("b").Namespace(ns).UID("pod-b").Node("n2").Volume(inline("scratch", "", "30Gi")).Obj()
	done := st.MakePod().Name("c").Namespace(ns).UID("pod-c").Node("n2").Phase(v1.PodSucceeded).Volume(inline("scratch", "", "30Gi")).Obj()
	pending := st.MakePod().Name("d").Namespace(ns).UID("pod-d").Volume(inline("scratch", "", "30Gi")).Obj()
	k8s = append(k8s, withLV, noLV, done, pending)
	ol = append(ol, localVolume(v1alpha1.InlineVolumeName("pod-a", "scratch"), "n2", "pool0", 30))
	h := newHarness(t, nil, k8s, ol)
	if err := wait.PollUntilContextTimeout(h.ctx, time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return h.pl.ledger.Stats().InlineVolumes == 2, nil
	}); err != nil {
		t.Fatalf("inline volumes counted: %+v, want 2 (a and b)", h.pl.ledger.Stats())
	}
	got := ""
	h.pl.ledger.Visit(func(u ledger.VGUsage) {
		if u.Node == "n2" {
			got = fmt.Sprintf("used=%dGi reserved=%dGi", u.Used>>30, u.Reserved>>30)
		}
	}, nil)
	if got != "used=60Gi reserved=0Gi" {
		t.Errorf("n2 pool0 %s, want used=60Gi (a through its LocalVolume, b from its pod)", got)
	}
}
