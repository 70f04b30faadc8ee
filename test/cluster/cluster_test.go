package cluster_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/test/cluster"
)

func TestMain(m *testing.M) { cluster.Main(m) }

func kubectl(t *testing.T, c *cluster.Cluster, args ...string) string {
	t.Helper()
	out, err := exec.Command(c.Tool("kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// An open-local user's NLSC applies unchanged (strict field validation) and
// reads back through our typed client and kubectl's short names.
func TestOpenLocalNLSCAppliesUnchanged(t *testing.T) {
	c := cluster.ForTest(t)
	ctx := context.Background()
	kubectl(t, c, "apply", "--validate=strict", "-f", "testdata/open-local-nlsc.yaml")

	got, err := c.OpenLocalClient().CsiV1alpha1().NodeLocalStorageInitConfigs().Get(ctx, "open-local", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g := got.Spec.GlobalConfig
	if want := []string{"open-local-pool-[0-9]+", "yoda-pool[0-9]+", "ackdistro-pool"}; strings.Join(g.ListConfig.VGs.Include, ",") != strings.Join(want, ",") {
		t.Errorf("globalConfig.listConfig.vgs.include = %v, want %v", g.ListConfig.VGs.Include, want)
	}
	if len(g.ResourceToBeInited.VGs) != 1 || g.ResourceToBeInited.VGs[0].Name != "open-local-pool-0" || g.ResourceToBeInited.VGs[0].Devices[0] != "/dev/vdb" {
		t.Errorf("globalConfig.resourceToBeInited.vgs = %+v", g.ResourceToBeInited.VGs)
	}
	if g.SpdkConfig.RpcSocket != "/var/tmp/spdk.sock" || g.ResourceToBeInited.MountPoints[0].Path != "/mnt/open-local/disk-0" {
		t.Errorf("spdkConfig/mountpoints lost: %+v %+v", g.SpdkConfig, g.ResourceToBeInited.MountPoints)
	}
	if len(got.Spec.NodesConfig) != 2 || got.Spec.NodesConfig[1].Selector.MatchLabels["kubernetes.io/hostname"] != "cn-hangzhou.10.0.95.236" {
		t.Errorf("nodesConfig = %+v", got.Spec.NodesConfig)
	}

	// A NodeLocalStorage with agent status shows in kubectl's printer columns.
	nls := &v1alpha1.NodeLocalStorage{ObjectMeta: metav1.ObjectMeta{Name: "crd-test-node"}, Spec: v1alpha1.NodeLocalStorageSpec{NodeName: "crd-test-node"}}
	nlsClient := c.OpenLocalClient().CsiV1alpha1().NodeLocalStorages()
	if _, err := nlsClient.Create(ctx, nls, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nlsClient.Delete(context.Background(), nls.Name, metav1.DeleteOptions{}) })
	now := metav1.Now()
	_, err = cluster.Update(ctx, nlsClient.Get, nlsClient.UpdateStatus, nls.Name, func(nls *v1alpha1.NodeLocalStorage) {
		nls.Status.NodeStorageInfo = v1alpha1.NodeStorageInfo{
			Phase: v1alpha1.NodeStorageRunning,
			State: v1alpha1.StorageState{Type: v1alpha1.StorageReady, Status: v1alpha1.ConditionTrue, LastHeartbeatTime: &now},
			VolumeGroups: []v1alpha1.VolumeGroup{{Name: "open-local-pool-0", PhysicalVolumes: []string{"/dev/vdb"},
				Total: 10 << 30, Available: 10 << 30, Allocatable: 10 << 30, Condition: v1alpha1.StorageReady}},
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	out := kubectl(t, c, "get", "nlsc,nls")
	for _, want := range []string{"nodelocalstorageinitconfig.csi.aliyun.com/open-local", "nodelocalstorage.csi.aliyun.com/crd-test-node", "DiskReady", "Running"} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl get nlsc,nls lacks %q:\n%s", want, out)
		}
	}
}

// The LocalVolume schema refuses incomplete or changed-under-foot allocations.
func TestLocalVolumeValidation(t *testing.T) {
	c := cluster.ForTest(t)
	ctx := context.Background()
	api := c.OpenLocalClient().CsiV1alpha1().LocalVolumes()
	lv := func(name string, mutate func(*v1alpha1.LocalVolumeSpec)) *v1alpha1.LocalVolume {
		spec := v1alpha1.LocalVolumeSpec{NodeName: "node-a", VolumeType: v1alpha1.VolumeTypeLVM, VGName: "pool0", Size: resource.MustParse("1Gi")}
		mutate(&spec)
		return &v1alpha1.LocalVolume{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
	}
	cases := []struct {
		name    string
		obj     *v1alpha1.LocalVolume
		wantErr string
	}{
		{"lvm ok", lv("val-lvm", func(*v1alpha1.LocalVolumeSpec) {}), ""},
		{"lvm without vg", lv("val-novg", func(s *v1alpha1.LocalVolumeSpec) { s.VGName = "" }), "vgName is required when volumeType is LVM"},
		{"device ok", lv("val-dev", func(s *v1alpha1.LocalVolumeSpec) {
			s.VolumeType, s.VGName, s.Device = v1alpha1.VolumeTypeDevice, "", "/dev/vdc"
		}), ""},
		{"device without path", lv("val-nodev", func(s *v1alpha1.LocalVolumeSpec) { s.VolumeType, s.VGName = v1alpha1.VolumeTypeDevice, "" }), "device is required when volumeType is Device"},
		{"snapshot without source", lv("val-snap", func(s *v1alpha1.LocalVolumeSpec) { s.Kind = v1alpha1.KindSnapshot }), "a Snapshot needs volumeType LVM and source.volume"},
		{"bad volume type", lv("val-type", func(s *v1alpha1.LocalVolumeSpec) { s.VolumeType = "MountPoint" }), "Unsupported value"},
		{"bad lv name", lv("val-lvname", func(s *v1alpha1.LocalVolumeSpec) { s.LVName = "-leading-dash" }), "spec.lvName"},
		{"read-only restore", lv("val-ro", func(s *v1alpha1.LocalVolumeSpec) {
			s.ReadOnly, s.Source = true, &v1alpha1.LocalVolumeSource{Snapshot: "snap-1"}
		}), ""},
		{"read-only without a snapshot", lv("val-rovol", func(s *v1alpha1.LocalVolumeSpec) { s.ReadOnly = true }),
			"readOnly is for a snapshot or a volume restored read-only from source.snapshot"},
		{"thin", lv("val-thin", func(s *v1alpha1.LocalVolumeSpec) { s.ThinPool = "tp" }), ""},
		{"thin device", lv("val-thindev", func(s *v1alpha1.LocalVolumeSpec) {
			s.VolumeType, s.VGName, s.Device, s.ThinPool = v1alpha1.VolumeTypeDevice, "", "/dev/vdc", "tp"
		}), "thinPool needs volumeType LVM"},
	}
	// spec.size is bounded (issue 13): a size that wraps int64 would count
	// as negative space.
	for i, size := range []string{"18446743858961186816", "9223372036854775808", "1e30", "2Ei", "0", "-1Gi", "0.5", "1m"} {
		cases = append(cases, struct {
			name    string
			obj     *v1alpha1.LocalVolume
			wantErr string
		}{"size " + size, lv(fmt.Sprintf("val-size-%d", i), func(s *v1alpha1.LocalVolumeSpec) { s.Size = resource.MustParse(size) }),
			"size must be a quantity from 1 byte to 1Ei"})
	}
	for i, size := range []string{"1", "1Ei", "1.5Gi"} {
		cases = append(cases, struct {
			name    string
			obj     *v1alpha1.LocalVolume
			wantErr string
		}{"size " + size, lv(fmt.Sprintf("val-size-ok-%d", i), func(s *v1alpha1.LocalVolumeSpec) { s.Size = resource.MustParse(size) }), ""})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := api.Create(ctx, tc.obj, metav1.CreateOptions{})
			if err == nil {
				t.Cleanup(func() { _ = api.Delete(context.Background(), tc.obj.Name, metav1.DeleteOptions{}) })
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("create: %v", err)
			case tc.wantErr != "" && (err == nil || !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("create error = %v, want Invalid containing %q", err, tc.wantErr)
			}
		})
	}

	t.Run("immutable placement", func(t *testing.T) {
		obj, err := api.Create(ctx, lv("val-immutable", func(*v1alpha1.LocalVolumeSpec) {}), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = api.Delete(context.Background(), obj.Name, metav1.DeleteOptions{}) })
		_, err = cluster.Update(ctx, api.Get, api.Update, obj.Name, func(obj *v1alpha1.LocalVolume) {
			obj.Spec.NodeName, obj.Spec.VGName, obj.Spec.ThinPool = "node-b", "pool1", "tp"
		})
		if err == nil || !strings.Contains(err.Error(), "nodeName is immutable") || !strings.Contains(err.Error(), "vgName is immutable") {
			t.Fatalf("update error = %v, want nodeName and vgName immutable", err)
		}
		// A thick volume does not become thin, nor a thin one thick.
		thin, err := api.Create(ctx, lv("val-thin-immutable", func(s *v1alpha1.LocalVolumeSpec) { s.ThinPool = "tp" }), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = api.Delete(context.Background(), thin.Name, metav1.DeleteOptions{}) })
		for _, pool := range []string{"other", ""} {
			_, err := cluster.Update(ctx, api.Get, api.Update, thin.Name, func(thin *v1alpha1.LocalVolume) { thin.Spec.ThinPool = pool })
			if err == nil || !strings.Contains(err.Error(), "thinPool is immutable") {
				t.Fatalf("update to pool %q: %v, want thinPool immutable", pool, err)
			}
		}
		_, err = cluster.Update(ctx, api.Get, api.Update, obj.Name, func(obj *v1alpha1.LocalVolume) { obj.Spec.ThinPool = "tp" })
		if err == nil || !strings.Contains(err.Error(), "thinPool is immutable") {
			t.Fatalf("thick to thin: %v, want thinPool immutable", err)
		}
	})

	t.Run("agents list their node's volumes by field selector", func(t *testing.T) {
		for _, n := range []string{"sel-node-1", "sel-node-2"} {
			obj := lv("sel-"+n, func(s *v1alpha1.LocalVolumeSpec) { s.NodeName = n })
			if _, err := api.Create(ctx, obj, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = api.Delete(context.Background(), obj.Name, metav1.DeleteOptions{}) })
		}
		list, err := api.List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=sel-node-2"})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) != 1 || list.Items[0].Name != "sel-sel-node-2" {
			t.Fatalf("field selector spec.nodeName=sel-node-2 returned %d items", len(list.Items))
		}
	})
}
