/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package capability

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/open-local/open-local/test/mountinfo"
)

// fakeTB records Skipf/Fatalf instead of stopping the goroutine. It embeds
// testing.TB only to satisfy the interface's unexported method; any other
// method would panic on the nil embedded value, which is what we want.
type fakeTB struct {
	testing.TB
	skipped, fatal string
}

func (f *fakeTB) Helper()                          {}
func (f *fakeTB) Skipf(format string, args ...any) { f.skipped = fmt.Sprintf(format, args...) }
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
}

func TestRequireDecision(t *testing.T) {
	// The fake machine has root and lvm but no device-mapper and no loop.
	machine := map[Capability]bool{Root: true, LVM: true}
	has := func(c Capability) (bool, string) {
		if machine[c] {
			return true, "present"
		}
		return false, string(c) + " is absent here"
	}
	tests := []struct {
		name      string
		env       string
		short     bool
		caps      []Capability
		wantSkip  []string // substrings of the skip message; nil = no skip
		wantFatal []string // substrings of the fatal message; nil = no fatal
		notFatal  string   // must not appear in the fatal message
	}{
		{name: "all present runs", caps: []Capability{Root, LVM}},
		{name: "nothing asked runs", caps: nil},
		{name: "missing skips with reason", caps: []Capability{Root, DeviceMapper},
			wantSkip: []string{"device-mapper", "device-mapper is absent here"}},
		{name: "every missing one is reported", caps: []Capability{DeviceMapper, LoopDevices},
			wantSkip: []string{"device-mapper (", "loop ("}},
		{name: "required missing fails", env: "device-mapper", caps: []Capability{DeviceMapper},
			wantFatal: []string{"OPEN_LOCAL_REQUIRE_CAPS", "device-mapper is absent here"}},
		{name: "required list with spaces", env: " root , device-mapper ", caps: []Capability{DeviceMapper},
			wantFatal: []string{"device-mapper"}},
		{name: "all makes every missing fatal", env: "all", caps: []Capability{LoopDevices},
			wantFatal: []string{"loop"}},
		{name: "required but present runs", env: "root,lvm", caps: []Capability{Root, LVM}},
		{name: "required others do not turn this skip fatal", env: "root,lvm", caps: []Capability{DeviceMapper},
			wantSkip: []string{"device-mapper"}},
		{name: "fatal names only the required missing one", env: "loop", caps: []Capability{DeviceMapper, LoopDevices},
			wantFatal: []string{"loop ("}, notFatal: "device-mapper"},
		{name: "unknown name in env fails even if nothing is missing", env: "root,devicemapper", caps: []Capability{Root},
			wantFatal: []string{`unknown capability "devicemapper"`}},
		{name: "empty items ignored", env: ",,", caps: []Capability{DeviceMapper},
			wantSkip: []string{"device-mapper"}},
		{name: "short skips a present machine capability", short: true, caps: []Capability{Root, LVM},
			wantSkip: []string{"-short", "lvm"}},
		{name: "short skips before a required one can fail", short: true, env: "loop", caps: []Capability{LoopDevices},
			wantSkip: []string{"-short", "loop"}},
		{name: "short keeps root-only tests", short: true, env: "all", caps: []Capability{Root}},
		{name: "short runs a test that asks nothing", short: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeTB{}
			require(f, tt.env, tt.short, has, tt.caps)
			check := func(kind, got string, want []string) {
				if want == nil {
					if got != "" {
						t.Errorf("unexpected %s: %q", kind, got)
					}
					return
				}
				if got == "" {
					t.Errorf("want %s containing %q, got none", kind, want)
				}
				for _, w := range want {
					if !strings.Contains(got, w) {
						t.Errorf("%s %q lacks %q", kind, got, w)
					}
				}
			}
			check("skip", f.skipped, tt.wantSkip)
			check("fatal", f.fatal, tt.wantFatal)
			if f.skipped != "" && f.fatal != "" {
				t.Errorf("both skip and fatal: %q / %q", f.skipped, f.fatal)
			}
			if tt.notFatal != "" && strings.Contains(f.fatal, tt.notFatal) {
				t.Errorf("fatal message names a capability that is not required: %q", f.fatal)
			}
		})
	}
}

func TestParseRequired(t *testing.T) {
	tests := []struct {
		env     string
		want    []Capability
		wantErr bool
	}{
		{env: "", want: nil},
		{env: "root", want: []Capability{Root}},
		{env: "device-mapper,root,loop,lvm", want: []Capability{DeviceMapper, Root, LoopDevices, LVM}},
		{env: "all", want: All()},
		{env: "root,bogus", wantErr: true},
		{env: "ROOT", wantErr: true}, // names are exact: CI lists them as documented
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			got, err := parseRequired(tt.env)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for _, c := range tt.want {
				if !got[c] {
					t.Errorf("missing %s in %v", c, got)
				}
			}
		})
	}
}

func TestHasUnknown(t *testing.T) {
	if ok, reason := Has("no-such-thing"); ok || !strings.Contains(reason, "unknown") {
		t.Fatalf("Has(unknown) = %v, %q", ok, reason)
	}
}

func TestEveryCapabilityHasADetector(t *testing.T) {
	for _, c := range All() {
		if detectors[c] == nil {
			t.Errorf("no detector for %s", c)
		}
	}
	if len(detectors) != len(All()) {
		t.Errorf("%d detectors for %d capabilities", len(detectors), len(All()))
	}
}

func TestHasIsCached(t *testing.T) {
	ok1, r1 := Has(Root)
	ok2, r2 := Has(Root)
	if ok1 != ok2 || r1 != r2 {
		t.Fatalf("Has(Root) changed between calls: %v %q / %v %q", ok1, r1, ok2, r2)
	}
}

func TestHasEffectiveCap(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		bit     uint
		want    bool
		wantErr bool
	}{
		// This CI host: everything but CAP_SYS_RESOURCE (bit 24).
		{name: "host without sys_resource", status: "Name:\tx\nCapEff:\t000001fffeffffff\n", bit: 24, want: false},
		{name: "full set", status: "CapEff:\t000001ffffffffff\n", bit: 24, want: true},
		{name: "other bit set", status: "CapEff:\t000001fffeffffff\n", bit: 21, want: true},
		{name: "empty set", status: "CapEff:\t0000000000000000\n", bit: 24, want: false},
		{name: "no line", status: "Name:\tx\n", bit: 24, wantErr: true},
		{name: "garbage", status: "CapEff:\tzz\n", bit: 24, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := hasEffectiveCap(tt.status, tt.bit)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("got %v, %v; want %v, err=%v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestProcListsName(t *testing.T) {
	const devices = "Character devices:\n  1 mem\n 10 misc\n\nBlock devices:\n  7 loop\n253 device-mapper\n"
	tests := []struct {
		content, name string
		want          bool
	}{
		{devices, "device-mapper", true},
		{devices, "loop", true},
		{devices, "device", false},
		{"236 device-mapper\n", "device-mapper", true},
		{" 58 network_throughput\n", "device-mapper", false},
		{"", "device-mapper", false},
	}
	for _, tt := range tests {
		if got := procListsName(tt.content, tt.name); got != tt.want {
			t.Errorf("procListsName(%q, %q) = %v, want %v", tt.content, tt.name, got, tt.want)
		}
	}
}

// mountinfo of this CI host (hybrid cgroups) plus a pure-v2 guest line.
const hostMountinfo = `24 1 0:22 / / rw,relatime - overlay overlay rw
31 24 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 24 0:40 / /mnt/with\040space rw - ext4 /dev/loop3 rw
`

func TestParseMountinfo(t *testing.T) {
	ms := mountinfo.Parse(hostMountinfo)
	if len(ms) != 6 {
		t.Fatalf("parsed %d mounts, want 6: %+v", len(ms), ms)
	}
	if ms[2].Point != "/sys/fs/cgroup/blkio" || ms[2].FSType != "cgroup" || ms[2].SuperOptions[1] != "blkio" {
		t.Errorf("blkio mount parsed as %+v", ms[2])
	}
	if ms[5].Point != "/mnt/with space" {
		t.Errorf("escaped mount point parsed as %q", ms[5].Point)
	}
}

func TestCgroupV1BlkioIn(t *testing.T) {
	ms := mountinfo.Parse(hostMountinfo)
	tests := []struct {
		name   string
		ms     []mountinfo.Mount
		exists bool
		want   bool
	}{
		{"blkio with throttle", ms, true, true},
		{"blkio without throttle files", ms, false, false},
		{"no blkio hierarchy", ms[3:], true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := cgroupV1BlkioIn(tt.ms, func(string) bool { return tt.exists })
			if got != tt.want {
				t.Fatalf("got %v (%s), want %v", got, reason, tt.want)
			}
		})
	}
}

func TestCgroupV2IOIn(t *testing.T) {
	ms := mountinfo.Parse(hostMountinfo)
	tests := []struct {
		name        string
		controllers string
		readErr     error
		want        bool
	}{
		{"hybrid host: cgroup2 without io", "hugetlb\n", nil, false},
		{"guest: io offered", "cpuset cpu io memory hugetlb pids rdma misc\n", nil, true},
		{"iommu is not io", "iommu\n", nil, false},
		{"unreadable", "", errors.New("permission denied"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := cgroupV2IOIn(ms, func(string) ([]byte, error) { return []byte(tt.controllers), tt.readErr })
			if got != tt.want {
				t.Fatalf("got %v (%s), want %v", got, reason, tt.want)
			}
		})
	}
	if ok, _ := cgroupV2IOIn(ms[:3], nil); ok {
		t.Error("no cgroup2 mount must mean no io")
	}
}

func TestFilesystemParsers(t *testing.T) {
	const fss = "nodev\tsysfs\nnodev\ttmpfs\n\text3\n\text4\n\txfs\n"
	if !filesystemsList(fss, "xfs") || !filesystemsList(fss, "ext4") || filesystemsList(fss, "btrfs") || filesystemsList(fss, "nodev") {
		t.Error("filesystemsList misparses /proc/filesystems")
	}
	const dep = "kernel/fs/xfs/xfs.ko.xz: kernel/lib/libcrc32c.ko.xz\nkernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\nkernel/fs/xfsx.ko:\n"
	tests := []struct {
		name string
		want bool
	}{{"xfs", true}, {"ext4", true}, {"jbd2", false}, {"btrfs", false}, {"xfsx", true}}
	for _, tt := range tests {
		if got := moduleListed(dep, tt.name); got != tt.want {
			t.Errorf("moduleListed(%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// The tests below check detection against the real machine, where the right
// answer can be established independently of the detector.

func TestDetectRootMatchesEuid(t *testing.T) {
	ok, reason := Has(Root)
	if ok != (os.Geteuid() == 0) {
		t.Fatalf("Has(Root) = %v (%s) with euid %d", ok, reason, os.Geteuid())
	}
}

func TestDetectDeviceMapperMatchesKernel(t *testing.T) {
	// Independent check: the control node opens only if the driver is there.
	// (On the CI host /dev/mapper/control is missing, and creating it would
	// not help: opening it gives ENODEV.)
	f, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0)
	works := err == nil
	if works {
		f.Close()
	}
	ok, reason := Has(DeviceMapper)
	t.Logf("device-mapper: %v (%s); control opens: %v (%v)", ok, reason, works, err)
	if os.Geteuid() != 0 {
		t.Skip("opening /dev/mapper/control needs root")
	}
	if ok != works {
		t.Fatalf("Has(DeviceMapper) = %v but /dev/mapper/control opens: %v", ok, works)
	}
	if InVM() && !ok {
		t.Fatal("the test VM always has device-mapper")
	}
}

func TestDetectCapSysResourceMatchesStatus(t *testing.T) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	var capEff string
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			capEff = strings.TrimSpace(v)
		}
	}
	// Bit 24 is the 7th hex digit from the right: its value 0x1 means set.
	want := len(capEff) >= 7 && strings.ContainsRune("13579bdf", rune(capEff[len(capEff)-7]))
	if ok, reason := Has(CapSysResource); ok != want {
		t.Fatalf("Has(CapSysResource) = %v (%s), CapEff %s", ok, reason, capEff)
	}
}

func TestDetectToolsMatchPath(t *testing.T) {
	tests := []struct {
		c    Capability
		tool string
	}{{LVM, "lvm"}, {XFS, "mkfs.xfs"}, {Ext4, "mkfs.ext4"}, {VM, "qemu-system-x86_64"}}
	for _, tt := range tests {
		t.Run(string(tt.c), func(t *testing.T) {
			_, err := exec.LookPath(tt.tool)
			ok, reason := Has(tt.c)
			if err != nil && ok {
				t.Fatalf("Has(%s) = true (%s) without %s", tt.c, reason, tt.tool)
			}
			if tt.c == LVM && err == nil && !ok {
				t.Fatalf("lvm is installed but Has(LVM) = false: %s", reason)
			}
		})
	}
}

func TestDetectCgroupV1BlkioMatchesFile(t *testing.T) {
	_, err := os.Stat("/sys/fs/cgroup/blkio/blkio.throttle.write_bps_device")
	ok, reason := Has(CgroupV1Blkio)
	if err == nil && !ok {
		t.Fatalf("throttle file exists but Has(CgroupV1Blkio) = false: %s", reason)
	}
}

func TestReport(t *testing.T) {
	// Not an assertion: the CI log shows what this machine can do.
	t.Logf("capabilities (%s=%q, in VM: %v):\n%s", EnvRequire, os.Getenv(EnvRequire), InVM(), Report())
}
