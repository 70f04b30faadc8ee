/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package iolimit

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// ErrNoController: this node offers no usable IO controller (or it was not
// found where the options say).
var ErrNoController = errors.New("no cgroup IO controller")

// DefaultCgroupMount is where nodes mount their cgroup hierarchies.
const DefaultCgroupMount = "/sys/fs/cgroup"

// Options configure a Manager.
type Options struct {
	// CgroupMount is the node's cgroup mount point as this process sees
	// it (default /sys/fs/cgroup).
	CgroupMount string
	// Layout is kubelet's cgroup driver and root.
	Layout Layout
	// StateDir keeps one record per throttled publication (target path →
	// pod cgroup, device, limits): NodeUnpublishVolume gets only the target
	// path, and a restarted plugin must keep throttling containers that
	// start later. It should survive restarts of the plugin (a hostPath).
	StateDir string
	// Hierarchy, when set, is used instead of detecting it under
	// CgroupMount (tests on a directory tree shaped like cgroupfs).
	Hierarchy *Hierarchy
	// PodCgroupWait is how long Apply waits for the pod's cgroup to appear
	// (default 10 s): kubelet's volume manager may mount a pod's volumes
	// before its pod worker created the pod cgroup (they run concurrently).
	PodCgroupWait time.Duration
	// Resync re-applies every record this often (default 30 s): on cgroup
	// v1, a safety net for container cgroups whose creation inotify did not
	// report (queue overflow); on both, it forgets records of pods whose
	// cgroup is gone.
	Resync time.Duration
}

// Request is one throttled publication of a volume to a pod.
type Request struct {
	VolumeID   string
	TargetPath string
	PodUID     types.UID
	// Device is where the volume's IO goes (see DeviceOf).
	Device Device
	Limits Limits
}

// record is a Request as applied, persisted in StateDir.
type record struct {
	VolumeID   string    `json:"volumeID"`
	TargetPath string    `json:"targetPath"`
	PodUID     types.UID `json:"podUID"`
	// Cgroup is the pod cgroup's directory.
	Cgroup  string  `json:"cgroup"`
	Version Version `json:"version"`
	Device  string  `json:"device"`
	Limits  Limits  `json:"limits"`
}

// Manager sets and removes IO limits in pod cgroups.
type Manager struct {
	opts    Options
	hier    Hierarchy
	hierErr error
	// inotify is read through the runtime poller (so Close ends a Read);
	// inotifyFD is its descriptor for add/rm watch calls (os.File.Fd would
	// switch the file to blocking mode).
	inotify   *os.File // nil without inotify: v1 then relies on Resync
	inotifyFD int
	mu        sync.Mutex
	records   map[string]*record // by target path
	watches   map[int]string     // inotify watch descriptor → directory
	watchDir  map[string]int
}

// New returns a Manager. A node without a usable IO controller still gets
// one: Apply then fails with ErrNoController and says why, while volumes
// without limits publish as usual.
func New(opts Options) (*Manager, error) {
	if opts.CgroupMount == "" {
		opts.CgroupMount = DefaultCgroupMount
	}
	if opts.Layout.Driver == "" {
		opts.Layout.Driver = DriverAuto
	}
	if _, err := ParseDriver(string(opts.Layout.Driver)); err != nil {
		return nil, err
	}
	if opts.Layout.Root == "" {
		opts.Layout.Root = "/"
	}
	if opts.StateDir == "" {
		return nil, errors.New("iolimit: StateDir is required")
	}
	if opts.Resync <= 0 {
		opts.Resync = 30 * time.Second
	}
	if opts.PodCgroupWait <= 0 {
		opts.PodCgroupWait = 10 * time.Second
	}
	m := &Manager{opts: opts, records: map[string]*record{}, watches: map[int]string{}, watchDir: map[string]int{}}
	if opts.Hierarchy != nil {
		m.hier = *opts.Hierarchy
	} else if m.hier, m.hierErr = DetectHierarchy(opts.CgroupMount); m.hierErr != nil {
		m.hierErr = fmt.Errorf("%w: %v", ErrNoController, m.hierErr)
	}
	if err := m.load(); err != nil {
		return nil, err
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		klog.ErrorS(err, "inotify unavailable: cgroup v1 containers created after publishing are throttled only at the next resync", "resync", opts.Resync)
	} else {
		m.inotify, m.inotifyFD = os.NewFile(uintptr(fd), "inotify"), fd
	}
	return m, nil
}

// Hierarchy returns the detected IO controller hierarchy, or why there is none.
func (m *Manager) Hierarchy() (Hierarchy, error) { return m.hier, m.hierErr }

// Applied says where a Request's limits went.
type Applied struct {
	Cgroup  string
	Version Version
}

// Apply sets req.Limits on req.Device in the pod's cgroup (on v1: and in
// every cgroup below it, now and as they appear). It is idempotent; a
// Request with zero Limits removes what an earlier one for the same target
// set.
func (m *Manager) Apply(ctx context.Context, req Request) (Applied, error) {
	if req.Limits.IsZero() {
		return Applied{}, m.Remove(ctx, req.TargetPath)
	}
	if req.TargetPath == "" {
		return Applied{}, errors.New("iolimit: target path is required")
	}
	if m.hierErr != nil {
		return Applied{}, m.hierErr
	}
	dir, err := m.findPod(ctx, req.PodUID)
	if err != nil {
		return Applied{}, err
	}
	rec := &record{VolumeID: req.VolumeID, TargetPath: req.TargetPath, PodUID: req.PodUID, Cgroup: dir,
		Version: m.hier.Version, Device: req.Device.String(), Limits: req.Limits}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old := m.records[req.TargetPath]; old != nil && (old.Cgroup != rec.Cgroup || old.Device != rec.Device) {
		// The target now belongs to another pod or device: the old limit
		// must not stay behind.
		if err := m.removeLocked(ctx, old); err != nil {
			return Applied{}, err
		}
	}
	// Persisted first: a crash after the cgroup writes must leave a record
	// for NodeUnpublishVolume to find.
	if err := m.save(rec); err != nil {
		return Applied{}, err
	}
	m.records[req.TargetPath] = rec
	if err := m.enforceLocked(ctx, rec); err != nil {
		return Applied{}, err
	}
	klog.FromContext(ctx).V(2).Info("Set IO limits", "volume", req.VolumeID, "pod", req.PodUID, "cgroup", dir,
		"device", rec.Device, "limits", req.Limits.String(), "cgroupVersion", m.hier.Version)
	return Applied{Cgroup: dir, Version: m.hier.Version}, nil
}

// findPod finds the pod's cgroup, waiting up to PodCgroupWait for it.
func (m *Manager) findPod(ctx context.Context, uid types.UID) (string, error) {
	deadline := time.Now().Add(m.opts.PodCgroupWait)
	for {
		dir, err := m.hier.FindPod(m.opts.Layout, uid)
		if !errors.Is(err, ErrPodCgroupNotFound) || time.Now().After(deadline) {
			return dir, err
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w (%v)", err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Remove takes back what Apply set for targetPath, unless another
// publication to the same pod cgroup and device still needs it. A target
// without limits is not an error.
func (m *Manager) Remove(ctx context.Context, targetPath string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec := m.records[targetPath]
	if rec == nil {
		return nil
	}
	return m.removeLocked(ctx, rec)
}

func (m *Manager) removeLocked(ctx context.Context, rec *record) error {
	shared := false
	for t, o := range m.records {
		if t != rec.TargetPath && o.Cgroup == rec.Cgroup && o.Device == rec.Device {
			shared = true
		}
	}
	if !shared {
		dev, err := ParseDevice(rec.Device)
		if err != nil {
			return err
		}
		err = m.forTree(rec, func(dir string) error { return writeLines(dir, Lines(rec.Version, dev, Limits{})) })
		if err != nil {
			return fmt.Errorf("remove IO limits of %s from %s: %w", rec.Device, rec.Cgroup, err)
		}
		klog.FromContext(ctx).V(2).Info("Removed IO limits", "volume", rec.VolumeID, "cgroup", rec.Cgroup, "device", rec.Device)
	}
	delete(m.records, rec.TargetPath)
	if err := os.Remove(m.recordPath(rec.TargetPath)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	m.unwatchUnusedLocked()
	return nil
}

// enforceLocked writes rec's limits where they belong: the pod cgroup on
// v2 (io.max is hierarchical); on v1 the pod cgroup and all below it,
// watching each directory for new children.
func (m *Manager) enforceLocked(ctx context.Context, rec *record) error {
	dev, err := ParseDevice(rec.Device)
	if err != nil {
		return err
	}
	lines := Lines(rec.Version, dev, rec.Limits)
	if rec.Version == V2 {
		return writeLines(rec.Cgroup, lines)
	}
	return m.forTree(rec, func(dir string) error {
		// Watch before writing: a child created in between is then
		// reported, not missed.
		m.watchLocked(ctx, dir)
		return writeLines(dir, lines)
	})
}

// forTree calls fn for the pod cgroup and, on v1, each cgroup below it.
// Directories that vanish meanwhile (a container exiting) are skipped.
func (m *Manager) forTree(rec *record, fn func(dir string) error) error {
	if rec.Version == V2 {
		return ignoreGone(fn(rec.Cgroup))
	}
	return filepath.WalkDir(rec.Cgroup, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return ignoreGone(err)
		}
		if !d.IsDir() {
			return nil
		}
		if err := fn(p); err != nil && !gone(err) {
			return err
		}
		return nil
	})
}

// writeLines writes each line with one write(2): the kernel parses every
// write as one complete setting.
func writeLines(dir string, lines []FileLine) error {
	for _, l := range lines {
		p := filepath.Join(dir, l.File)
		// O_TRUNC is what runc uses on cgroup files; it keeps plain files
		// (tests) equal to the last setting.
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			return err
		}
		_, werr := f.WriteString(l.Line)
		cerr := f.Close()
		if err := errors.Join(werr, cerr); err != nil {
			return fmt.Errorf("write %q to %s: %w", l.Line, p, err)
		}
	}
	return nil
}

// gone: the cgroup (ENOENT) or the device (ENODEV: its limits went with it)
// no longer exists.
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENODEV)
}

func ignoreGone(err error) error {
	if err != nil && gone(err) {
		return nil
	}
	return err
}

// recordPath is the record file of a target path; hashed, since target
// paths are long and full of slashes.
func (m *Manager) recordPath(target string) string {
	sum := sha256.Sum256([]byte(target))
	return filepath.Join(m.opts.StateDir, hex.EncodeToString(sum[:16])+".json")
}

func (m *Manager) save(rec *record) error {
	if err := os.MkdirAll(m.opts.StateDir, 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	p := m.recordPath(rec.TargetPath)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// load reads the records a previous run left.
func (m *Manager) load() error {
	entries, err := os.ReadDir(m.opts.StateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("iolimit: state directory: %w", err)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		p := filepath.Join(m.opts.StateDir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rec := &record{}
		if err := json.Unmarshal(b, rec); err != nil || rec.TargetPath == "" || m.recordPath(rec.TargetPath) != p {
			klog.ErrorS(err, "Ignoring a corrupt IO limit record", "file", p)
			continue
		}
		m.records[rec.TargetPath] = rec
	}
	return nil
}

// Run keeps limits in force until ctx ends: it re-applies the records of a
// previous run at once, on cgroup v1 throttles container cgroups created
// below a throttled pod as inotify reports them, and every Resync re-applies
// everything and forgets records whose pod cgroup is gone.
func (m *Manager) Run(ctx context.Context) error {
	m.resync(ctx)
	if m.inotify != nil {
		go func() {
			<-ctx.Done()
			_ = m.inotify.Close() // ends the read below
		}()
		go m.readEvents(ctx)
	}
	t := time.NewTicker(m.opts.Resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			m.resync(ctx)
		}
	}
}

func (m *Manager) resync(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	logger := klog.FromContext(ctx)
	for target, rec := range m.records {
		if _, err := os.Stat(rec.Cgroup); errors.Is(err, fs.ErrNotExist) {
			// The pod is gone, and its limits with its cgroup.
			logger.V(2).Info("Forgetting IO limits of a pod cgroup that is gone", "volume", rec.VolumeID, "cgroup", rec.Cgroup)
			delete(m.records, target)
			_ = os.Remove(m.recordPath(target))
			continue
		}
		if err := m.enforceLocked(ctx, rec); err != nil {
			logger.Error(err, "Re-applying IO limits failed", "volume", rec.VolumeID, "cgroup", rec.Cgroup)
		}
	}
	m.unwatchUnusedLocked()
}

// watchLocked adds an inotify watch for new subdirectories of dir.
func (m *Manager) watchLocked(ctx context.Context, dir string) {
	if m.inotify == nil {
		return
	}
	if _, ok := m.watchDir[dir]; ok {
		return
	}
	wd, err := unix.InotifyAddWatch(m.inotifyFD, dir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_ONLYDIR)
	if err != nil {
		if !gone(err) {
			klog.FromContext(ctx).Error(err, "Cannot watch cgroup for new containers; relying on resync", "cgroup", dir)
		}
		return
	}
	m.watches[wd] = dir
	m.watchDir[dir] = wd
}

// unwatchUnusedLocked drops watches on directories no record covers.
func (m *Manager) unwatchUnusedLocked() {
	for dir, wd := range m.watchDir {
		if m.recordFor(dir) == nil {
			if m.inotify != nil {
				_, _ = unix.InotifyRmWatch(m.inotifyFD, uint32(wd))
			}
			delete(m.watchDir, dir)
			delete(m.watches, wd)
		}
	}
}

// recordsUnder returns the records whose pod cgroup contains dir.
func (m *Manager) recordsUnder(dir string) []*record {
	var out []*record
	for _, r := range m.records {
		if r.Version == V1 && (dir == r.Cgroup || strings.HasPrefix(dir, r.Cgroup+"/")) {
			out = append(out, r)
		}
	}
	return out
}

func (m *Manager) recordFor(dir string) *record {
	if rs := m.recordsUnder(dir); len(rs) > 0 {
		return rs[0]
	}
	return nil
}

// readEvents applies limits to cgroups created below throttled pods.
func (m *Manager) readEvents(ctx context.Context) {
	logger := klog.FromContext(ctx)
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := m.inotify.Read(buf)
		if err != nil {
			if ctx.Err() == nil {
				logger.Error(err, "Reading inotify events failed; relying on resync")
			}
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			// struct inotify_event: wd, mask, cookie, len, name[len].
			wd := int(int32(binary.NativeEndian.Uint32(buf[off:])))
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
			start := off + unix.SizeofInotifyEvent
			off = start + nameLen
			if off > n {
				break
			}
			name := strings.TrimRight(string(buf[start:off]), "\x00")
			switch {
			case mask&unix.IN_Q_OVERFLOW != 0:
				m.resync(ctx)
			case mask&unix.IN_IGNORED != 0:
				m.mu.Lock()
				if dir, ok := m.watches[wd]; ok {
					delete(m.watches, wd)
					delete(m.watchDir, dir)
				}
				m.mu.Unlock()
			case mask&unix.IN_ISDIR != 0 && name != "":
				m.childCreated(ctx, wd, name)
			}
		}
	}
}

// childCreated throttles a new cgroup (a container's) below a throttled pod.
func (m *Manager) childCreated(ctx context.Context, wd int, name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	parent, ok := m.watches[wd]
	if !ok {
		return
	}
	dir := filepath.Join(parent, name)
	for _, rec := range m.recordsUnder(dir) {
		dev, err := ParseDevice(rec.Device)
		if err != nil {
			continue
		}
		lines := Lines(rec.Version, dev, rec.Limits)
		sub := *rec
		sub.Cgroup = dir
		err = m.forTree(&sub, func(d string) error {
			m.watchLocked(ctx, d)
			return writeLines(d, lines)
		})
		if err != nil {
			klog.FromContext(ctx).Error(err, "Throttling a new cgroup below a throttled pod failed", "cgroup", dir, "volume", rec.VolumeID)
			continue
		}
		klog.FromContext(ctx).V(3).Info("Throttled new cgroup below a throttled pod", "cgroup", dir, "volume", rec.VolumeID, "device", rec.Device)
	}
}
