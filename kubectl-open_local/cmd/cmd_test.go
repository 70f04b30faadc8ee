/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/utils/ptr"

	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/test/cluster"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from this run")

func TestMain(m *testing.M) { cluster.Main(m) }

const (
	ns    = "kctl-golden"
	label = "open-local.test/kubectl"
	gi    = int64(1) << 30
)

// state is the known state of the golden files, created directly in the
// local cluster's API (no agent or scheduler runs: the objects say what
// they would have written).
type state struct {
	t    *testing.T
	c    *cluster.Cluster
	uids map[string]string // uid -> placeholder, for stable output
	// created are the creation times of everything, for the fixed clock.
	created []time.Time
}

func qtyOf(b int64) resource.Quantity { return *resource.NewQuantity(b, resource.BinarySI) }

// create creates an object, waiting while one of its name is still being
// deleted (a namespace or a protected PV of an earlier run in this
// cluster: go test -count=2, or a reused OPEN_LOCAL_CLUSTER_DIR).
func create(t *testing.T, fn func() error) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 500*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		err := fn()
		if apierrors.IsAlreadyExists(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// placeholder stands for a UID in golden files: as long as a UID (36
// characters), so the tables keep their alignment.
func placeholder(what string) string {
	p := "uid:" + what
	return p + strings.Repeat(".", max(36-len(p), 0))
}

func (s *state) seen(m metav1.ObjectMeta) { s.created = append(s.created, m.CreationTimestamp.Time) }

func (s *state) pvc(name, class string, size int64) *corev1.PersistentVolumeClaim {
	s.t.Helper()
	pvc, err := s.c.Client().CoreV1().PersistentVolumeClaims(ns).Create(s.t.Context(), &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: ptr.To(class), AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: qtyOf(size)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	s.uids[string(pvc.UID)] = placeholder("pvc/" + name)
	s.seen(pvc.ObjectMeta)
	return pvc
}

func (s *state) pod(name string, claims ...string) *corev1.Pod {
	s.t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{SchedulerName: "open-local-scheduler", Containers: []corev1.Container{{Name: "c", Image: "none"}}}}
	for _, c := range claims {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: c,
			VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c}}})
	}
	p, err := s.c.Client().CoreV1().Pods(ns).Create(s.t.Context(), p, metav1.CreateOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	s.uids[string(p.UID)] = placeholder("pod/" + name)
	s.seen(p.ObjectMeta)
	return p
}

func (s *state) localVolume(lv *v1alpha1.LocalVolume, st v1alpha1.LocalVolumeStatus) {
	s.t.Helper()
	ctx := s.t.Context()
	lv.Labels = map[string]string{label: "golden"}
	lvs := s.c.OpenLocalClient().CsiV1alpha1().LocalVolumes()
	created, err := lvs.Create(ctx, lv, metav1.CreateOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = lvs.Delete(context.Background(), lv.Name, metav1.DeleteOptions{}) })
	s.seen(created.ObjectMeta)
	if _, err := cluster.Update(ctx, lvs.Get, lvs.UpdateStatus, lv.Name, func(cur *v1alpha1.LocalVolume) { cur.Status = st }); err != nil {
		s.t.Fatal(err)
	}
}

func claimRef(name string, uid string) *v1alpha1.ObjectReference {
	return &v1alpha1.ObjectReference{Namespace: ns, Name: name, UID: types.UID(uid)}
}

// known builds the state and returns the fixed clock: an hour after the
// last object was created, so every AGE reads 60m.
func known(t *testing.T) (*cluster.Cluster, map[string]string) {
	c := cluster.ForTest(t)
	ctx := t.Context()
	s := &state{t: t, c: c, uids: map[string]string{}}
	kube, ol := c.Client(), c.OpenLocalClient()

	create(t, func() error {
		_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		return err
	})
	t.Cleanup(func() { _ = kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	// Pods need the namespace's default ServiceAccount, which the
	// controller manager creates a moment later.
	if _, err := kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
		metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	wffc := storagev1.VolumeBindingWaitForFirstConsumer
	for name, params := range map[string]map[string]string{
		"kctl-lvm":  {"volumeType": "LVM"},
		"kctl-thin": {"volumeType": "LVM", "thinPool": "tp0"},
		"kctl-ssd":  {"volumeType": "Device", "mediaType": "ssd"},
	} {
		sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: "local.csi.aliyun.com",
			Parameters: params, VolumeBindingMode: &wffc}
		if _, err := kube.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = kube.StorageV1().StorageClasses().Delete(context.Background(), name, metav1.DeleteOptions{})
		})
	}

	// Claims and pods: app-0 uses data and thin; db-0 uses db; web-0 is
	// Pending with 80Gi + 1Gi that fit no node.
	data := s.pvc("data", "kctl-lvm", 10*gi)
	thin := s.pvc("thin", "kctl-thin", 15*gi)
	db := s.pvc("db", "kctl-ssd", 100*gi)
	s.pvc("web", "kctl-lvm", 80*gi)
	s.pvc("web-log", "kctl-lvm", gi)
	s.pod("app-0", "data", "thin")
	s.pod("db-0", "db")
	web := s.pod("web-0", "web", "web-log")

	lvm := func(node, vg string, size int64) v1alpha1.LocalVolumeSpec {
		return v1alpha1.LocalVolumeSpec{NodeName: node, VolumeType: v1alpha1.VolumeTypeLVM, VGName: vg, Size: qtyOf(size)}
	}
	ready := v1alpha1.LocalVolumeStatus{Phase: v1alpha1.PhaseReady}
	spec := lvm("kctl-a", "pool0", 10*gi)
	spec.ClaimRef = claimRef("data", string(data.UID))
	s.localVolume(&v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: "kctl-data"}, Spec: spec}, ready)
	spec = lvm("kctl-a", "pool0", 15*gi)
	spec.ThinPool, spec.ClaimRef = "tp0", claimRef("thin", string(thin.UID))
	s.localVolume(&v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: "kctl-thin"}, Spec: spec}, ready)
	spec = v1alpha1.LocalVolumeSpec{NodeName: "kctl-a", VolumeType: v1alpha1.VolumeTypeDevice, Device: "/dev/sdc", Size: qtyOf(100 * gi),
		ClaimRef: claimRef("db", string(db.UID))}
	s.localVolume(&v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: "kctl-db"}, Spec: spec}, ready)
	// Leaks: a claim deleted behind the volume's back, a re-created claim,
	// an inline volume whose pod is gone, a retained PV's volume, a
	// quarantined disk.
	spec = lvm("kctl-a", "pool0", 5*gi)
	spec.ClaimRef = claimRef("ghost", "")
	s.localVolume(&v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: "kctl-ghost"}, Spec: spec}, ready)
	spec = lvm("kctl-b", "pool0", 45*gi)
	spec.ClaimRef = claimRef("web-log", "00000000-0000-0000-0000-0000000000aa")
	s.localVolume(&v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: "kctl-stale-claim"}, Spec: spec}, ready)
	spec = lvm("kctl-a", "pool0", gi)
	spec.PodRef = &v1alpha1.ObjectReference{Namespace: ns, Name: "gone-pod"}
	s.localVolume(&v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: "kctl-inline"}, Spec: spec}, ready)
	spec = lvm("kctl-a", "pool0", 2*gi)
	spec.ClaimRef = claimRef("old-claim", "")
	s.localVolume(&v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: "kctl-retained"}, Spec: spec}, ready)
	spec = v1alpha1.LocalVolumeSpec{NodeName: "kctl-a", VolumeType: v1alpha1.VolumeTypeDevice, Device: "/dev/sdd", Size: qtyOf(100 * gi),
		ClaimRef: claimRef("scratch", "")}
	s.localVolume(&v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: "kctl-released"}, Spec: spec},
		v1alpha1.LocalVolumeStatus{Phase: v1alpha1.PhaseQuarantined, DeviceIdentity: "wwn-0x5000c500a1b2c3d4",
			Message: "released; the disk is quarantined until an operator wipes it (policy manual)"})
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "kctl-retained-pv"}, Spec: corev1.PersistentVolumeSpec{
		Capacity: corev1.ResourceList{corev1.ResourceStorage: qtyOf(2 * gi)}, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
		PersistentVolumeSource:        corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "local.csi.aliyun.com", VolumeHandle: "kctl-retained"}}}}
	create(t, func() error {
		_, err := kube.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
		return err
	})
	t.Cleanup(func() {
		_ = kube.CoreV1().PersistentVolumes().Delete(context.Background(), pv.Name, metav1.DeleteOptions{})
	})

	// Nodes: kctl-a reports 30s ago; kctl-b's agent went silent 20m ago.
	nlss := ol.CsiV1alpha1().NodeLocalStorages()
	for _, n := range []string{"kctl-a", "kctl-b"} {
		created, err := nlss.Create(ctx, &v1alpha1.NodeLocalStorage{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{label: "golden"}},
			Spec: v1alpha1.NodeLocalStorageSpec{NodeName: n}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.seen(created.ObjectMeta)
		t.Cleanup(func() { _ = nlss.Delete(context.Background(), n, metav1.DeleteOptions{}) })
	}
	var last time.Time
	for _, c := range s.created {
		if c.After(last) {
			last = c
		}
	}
	fixed := last.Add(time.Hour)
	now = func() time.Time { return fixed }
	t.Cleanup(func() { now = time.Now })
	heartbeat := func(ago time.Duration) *metav1.Time { return ptr.To(metav1.NewTime(fixed.Add(-ago))) }
	status := map[string]v1alpha1.NodeLocalStorageStatus{
		"kctl-a": {
			NodeStorageInfo: v1alpha1.NodeStorageInfo{
				State: v1alpha1.StorageState{Type: v1alpha1.StorageReady, Status: v1alpha1.ConditionTrue, LastHeartbeatTime: heartbeat(30 * time.Second)},
				VolumeGroups: []v1alpha1.VolumeGroup{{Name: "pool0", PhysicalVolumes: []string{"/dev/sda"}, Total: uint64(100 * gi),
					Available: uint64(60 * gi), Allocatable: uint64(90 * gi), ExtentSize: 4 << 20,
					LogicalVolumes: []v1alpha1.LogicalVolume{{Name: "leftover", VGName: "pool0", Total: uint64(gi), Orphan: true},
						{Name: "kctl-data", VGName: "pool0", Total: uint64(10 * gi)}},
					ThinPools: []v1alpha1.ThinPool{{Name: "tp0", Total: uint64(10 * gi), Used: uint64(9 * gi), DataPercent: ptr.To[int32](95),
						MetadataPercent: ptr.To[int32](10), OverprovisionRatio: resource.MustParse("2"), Allocatable: uint64(20 * gi)}}}},
				DeviceInfos: []v1alpha1.DeviceInfo{
					{Name: "/dev/sdb", MediaType: "hdd", Total: uint64(200 * gi), Condition: v1alpha1.StorageReady},
					{Name: "/dev/sdc", MediaType: "ssd", Total: uint64(100 * gi), Condition: v1alpha1.StorageReady},
					{Name: "/dev/sdd", MediaType: "ssd", Total: uint64(100 * gi), Condition: v1alpha1.StorageReady, Released: "kctl-released"},
					{Name: "/dev/sde", MediaType: "ssd", Total: uint64(50 * gi), Condition: v1alpha1.StorageReady},
				},
			},
			FilteredStorageInfo: v1alpha1.FilteredStorageInfo{VolumeGroups: []string{"pool0"}, Devices: []string{"/dev/sdb", "/dev/sdc", "/dev/sdd"}},
		},
		"kctl-b": {
			NodeStorageInfo: v1alpha1.NodeStorageInfo{
				State: v1alpha1.StorageState{Type: v1alpha1.StorageReady, Status: v1alpha1.ConditionTrue, LastHeartbeatTime: heartbeat(20 * time.Minute)},
				VolumeGroups: []v1alpha1.VolumeGroup{{Name: "pool0", PhysicalVolumes: []string{"/dev/vdb"}, Total: uint64(50 * gi),
					Available: uint64(5 * gi), Allocatable: uint64(50 * gi), ExtentSize: 4 << 20}},
			},
			FilteredStorageInfo: v1alpha1.FilteredStorageInfo{VolumeGroups: []string{"pool0"}},
		},
	}
	for n, st := range status {
		if _, err := cluster.Update(ctx, nlss.Get, nlss.UpdateStatus, n, func(cur *v1alpha1.NodeLocalStorage) { cur.Status = st }); err != nil {
			t.Fatal(err)
		}
	}

	// The pod's scheduling events, as the scheduler would have written them.
	for i, msg := range []string{
		"0/2 nodes are available: 1 node(s) had a stale NodeLocalStorage heartbeat (open-local agent not reporting), 1 node(s) had no VG with 80Gi free for pvc kctl-golden/web.",
		"0/2 nodes are available: 1 node(s) had a stale NodeLocalStorage heartbeat (open-local agent not reporting), 1 node(s) had no VG with 80Gi free for pvc kctl-golden/web. preemption: not eligible.",
	} {
		ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "web-0.golden-" + string(rune('a'+i))},
			InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: web.Name, UID: web.UID, APIVersion: "v1"},
			Reason:         "FailedScheduling", Message: msg, Type: corev1.EventTypeWarning, Count: int32(3 * (i + 1)),
			Source:         corev1.EventSource{Component: "open-local-scheduler"},
			FirstTimestamp: metav1.NewTime(fixed.Add(-10 * time.Minute)), LastTimestamp: metav1.NewTime(fixed.Add(-time.Duration(5-2*i) * time.Minute))}
		if _, err := kube.CoreV1().Events(ns).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return c, s.uids
}

// run runs `kubectl open-local args...` in-process against the cluster.
func run(t *testing.T, c *cluster.Cluster, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := NewRoot(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	root.SetArgs(append([]string{"--kubeconfig", c.Kubeconfig}, args...))
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

// TestGolden: every report of a known state, byte for byte
// (go test ./kubectl-open_local/cmd -run TestGolden -update rewrites them).
func TestGolden(t *testing.T) {
	c, uids := known(t)
	sel := label + "=golden"
	tests := []struct {
		golden string
		args   []string
	}{
		{"nodes.golden", []string{"nodes", "-l", sel}},
		{"nodes-wide.golden", []string{"nodes", "-l", sel, "-o", "wide"}},
		{"volumes.golden", []string{"volumes", "-n", ns, "-l", sel}},
		{"volumes-wide.golden", []string{"volumes", "-n", ns, "-l", sel, "-o", "wide"}},
		{"why.golden", []string{"why", "web-0", "-n", ns, "-l", sel}},
		{"orphans.golden", []string{"orphans", "-n", ns, "-l", sel}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			got, err := run(t, c, tt.args...)
			if err != nil {
				t.Fatalf("%v: %v", tt.args, err)
			}
			for uid, placeholder := range uids {
				got = strings.ReplaceAll(got, uid, placeholder)
			}
			path := filepath.Join("testdata", tt.golden)
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to write it)", err)
			}
			if got != string(want) {
				t.Errorf("kubectl open-local %s:\n--- got\n%s\n--- want (%s)\n%s", strings.Join(tt.args, " "), got, path, want)
			}
		})
	}

	// -o json and yaml carry the same reports.
	t.Run("json", func(t *testing.T) {
		out, err := run(t, c, "nodes", "-l", sel, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var rep []NodeReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("%v in %s", err, out)
		}
		if len(rep) != 2 || rep[0].VGs[0].Allocated != 10*gi+5*gi+gi+2*gi || rep[1].State != "Stale" {
			t.Fatalf("nodes -o json: %+v", rep)
		}
		out, err = run(t, c, "why", "web-0", "-n", ns, "-l", sel, "-o", "yaml")
		if err != nil || !strings.Contains(out, "closest:") {
			t.Fatalf("why -o yaml: %v\n%s", err, out)
		}
	})
}

// TestRefusals: bad flags and missing objects are clear errors.
func TestRefusals(t *testing.T) {
	c := cluster.ForTest(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown output", []string{"nodes", "-o", "table"}, `unknown output format "table"`},
		{"why with -A", []string{"why", "p", "-A"}, "name its namespace with -n"},
		{"why of a missing pod", []string{"why", "no-such-pod", "-n", "default"}, `pods "no-such-pod" not found`},
		{"why without a pod", []string{"why"}, "accepts 1 arg(s)"},
		{"volumes with an argument", []string{"volumes", "x"}, "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := run(t, c, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("%v: got %v, want an error containing %q", tt.args, err, tt.want)
			}
		})
	}
}

// TestWhyPinned: a pod pinned by a volume already allocated, with an
// inline volume, a missing claim, a class the parser refuses and another
// scheduler: the notes say what is not about capacity, the ledger decides
// the rest.
func TestWhyPinned(t *testing.T) {
	c := cluster.ForTest(t)
	ctx := t.Context()
	kube, ol := c.Client(), c.OpenLocalClient()
	const wns = "kctl-why"
	create(t, func() error {
		_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: wns}}, metav1.CreateOptions{})
		return err
	})
	t.Cleanup(func() { _ = kube.CoreV1().Namespaces().Delete(context.Background(), wns, metav1.DeleteOptions{}) })
	if _, err := kube.CoreV1().ServiceAccounts(wns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
		metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	wffc := storagev1.VolumeBindingWaitForFirstConsumer
	for name, params := range map[string]map[string]string{
		"kctl-why-lvm": {"volumeType": "LVM"},
		"kctl-why-bad": {"volumeType": "LVM", "vgname": "pool0"}, // the typo the parser refuses
	} {
		sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: "local.csi.aliyun.com", Parameters: params, VolumeBindingMode: &wffc}
		if _, err := kube.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = kube.StorageV1().StorageClasses().Delete(context.Background(), name, metav1.DeleteOptions{})
		})
	}
	uids := map[string]string{}
	pvc := func(name, class string, size int64) *corev1.PersistentVolumeClaim {
		p, err := kube.CoreV1().PersistentVolumeClaims(wns).Create(ctx, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: ptr.To(class), AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: qtyOf(size)}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		uids[string(p.UID)] = placeholder("pvc/" + name)
		return p
	}
	held := pvc("held", "kctl-why-lvm", 4*gi)
	pvc("fresh", "kctl-why-lvm", 2*gi)
	pvc("typo", "kctl-why-bad", gi)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0"}, Spec: corev1.PodSpec{SchedulerName: "default-scheduler",
		Containers: []corev1.Container{{Name: "c", Image: "none"}}}}
	for _, claim := range []string{"held", "fresh", "missing", "typo"} {
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: claim,
			VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}})
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
		Driver: "local.csi.aliyun.com", VolumeAttributes: map[string]string{"size": "3Gi"}}}})
	pod, err := kube.CoreV1().Pods(wns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	uids[string(pod.UID)] = placeholder("pod/db-0")
	inline := v1alpha1.InlineVolumeName(pod.UID, "scratch")
	uids[inline] = "csi-" + strings.Repeat(".", len(inline)-len("csi-"))

	lvs := ol.CsiV1alpha1().LocalVolumes()
	name := v1alpha1.PVCVolumeName(held.UID)
	if _, err := lvs.Create(ctx, &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.LocalVolumeSpec{NodeName: "kctl-c", VolumeType: v1alpha1.VolumeTypeLVM, VGName: "pool0", Size: qtyOf(4 * gi),
			ClaimRef: &v1alpha1.ObjectReference{Namespace: wns, Name: "held", UID: held.UID}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lvs.Delete(context.Background(), name, metav1.DeleteOptions{}) })
	nlss := ol.CsiV1alpha1().NodeLocalStorages()
	for _, n := range []string{"kctl-c", "kctl-d"} {
		if _, err := nlss.Create(ctx, &v1alpha1.NodeLocalStorage{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{label: "why"}},
			Spec: v1alpha1.NodeLocalStorageSpec{NodeName: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nlss.Delete(context.Background(), n, metav1.DeleteOptions{}) })
		// No heartbeat: an NLS written by hand, never judged stale.
		if _, err := cluster.Update(ctx, nlss.Get, nlss.UpdateStatus, n, func(cur *v1alpha1.NodeLocalStorage) {
			cur.Status = v1alpha1.NodeLocalStorageStatus{
				NodeStorageInfo: v1alpha1.NodeStorageInfo{State: v1alpha1.StorageState{Type: v1alpha1.StorageReady},
					VolumeGroups: []v1alpha1.VolumeGroup{{Name: "pool0", PhysicalVolumes: []string{"/dev/vdb"}, Total: uint64(20 * gi),
						Available: uint64(20 * gi), Allocatable: uint64(20 * gi), ExtentSize: 4 << 20}}},
				FilteredStorageInfo: v1alpha1.FilteredStorageInfo{VolumeGroups: []string{"pool0"}},
			}
		}); err != nil {
			t.Fatal(err)
		}
	}

	got, err := run(t, c, "why", "db-0", "-n", wns, "-l", label+"=why")
	if err != nil {
		t.Fatal(err)
	}
	for uid, p := range uids {
		got = strings.ReplaceAll(got, uid, p)
	}
	path := filepath.Join("testdata", "why-pinned.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if got != string(want) {
		t.Errorf("kubectl open-local why db-0:\n--- got\n%s\n--- want (%s)\n%s", got, path, want)
	}
}
