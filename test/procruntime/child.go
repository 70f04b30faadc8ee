/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package procruntime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Commands of the runtime's binary that run the process side of a container
// (ChildMain). They are arguments of the runtime's own binary, never typed
// by a user.
const (
	InitCommand  = "procruntime-init"
	EnterCommand = "procruntime-enter"
)

// statusFD is the pipe on which a child reports a setup failure to the
// runtime; it is close-on-exec, so EOF without a message means the
// container's command was executed.
const statusFD = 3

// initSpec is what the init child needs to start one container.
type initSpec struct {
	// Rootfs is an empty directory; a tmpfs mounted on it becomes the root.
	Rootfs string `json:"rootfs"`
	// Cgroups are joined before anything else.
	Cgroups []string      `json:"cgroups"`
	Mounts  []mountSpec   `json:"mounts"`
	Devices []deviceSpec  `json:"devices"`
	Args    []string      `json:"args"`
	Env     []string      `json:"env"`
	WorkDir string        `json:"workDir"`
	Image   imageRootSpec `json:"image"`
}

type mountSpec struct {
	HostPath      string `json:"hostPath"`
	ContainerPath string `json:"containerPath"`
	ReadOnly      bool   `json:"readOnly"`
	// Propagation: "private", "rslave" (HostToContainer) or "rshared" (Bidirectional).
	Propagation string `json:"propagation"`
}

type deviceSpec struct {
	HostPath      string `json:"hostPath"`
	ContainerPath string `json:"containerPath"`
	Permissions   string `json:"permissions"`
}

// imageRootSpec is what of the host's root becomes the container's image.
type imageRootSpec struct {
	// ReadOnly are host directories bound read-only at the same path
	// (symlinks, like Debian's /bin → usr/bin, are copied as symlinks).
	ReadOnly []string `json:"readOnly"`
	// Tmpfs are fresh empty tmpfs mounts (the container's own /tmp, /run).
	Tmpfs []string `json:"tmpfs"`
	// Empty are empty directories of the root tmpfs (writable).
	Empty []string `json:"empty"`
}

// hostImage is the "image" every container runs: the host's programs,
// libraries and configuration, read-only; nothing of its state (/var,
// /home, /root, /tmp, /run, the kubelet's directories).
var hostImage = imageRootSpec{
	ReadOnly: []string{"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/usr", "/etc", "/opt"},
	Tmpfs:    []string{"/tmp", "/run", "/var/tmp"},
	Empty:    []string{"/root", "/home", "/var", "/mnt", "/srv"},
}

// enterSpec is what the enter child needs to run a command in a running
// container.
type enterSpec struct {
	// Nsenter is util-linux's nsenter (resolved by the runtime: the
	// child's environment is empty).
	Nsenter string   `json:"nsenter"`
	Pid     int      `json:"pid"`
	Cgroups []string `json:"cgroups"`
	Args    []string `json:"args"`
	Env     []string `json:"env"`
}

// ChildMain runs the process side of the runtime when args (os.Args[1:])
// name one of its commands, and never returns then; otherwise it returns
// false. Call it first thing in main (and in TestMain of tests that start
// containers).
func ChildMain(args []string) bool {
	if len(args) != 2 || (args[0] != InitCommand && args[0] != EnterCommand) {
		return false
	}
	status := os.NewFile(statusFD, "status")
	unix.CloseOnExec(statusFD)
	var err error
	if args[0] == InitCommand {
		err = containerInit(args[1])
	} else {
		err = containerEnter(args[1])
	}
	// Only reached when the command could not be executed.
	fmt.Fprintf(status, "%v", err)
	os.Exit(127)
	return true
}

func readSpec(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

// containerInit runs in the new mount namespace the runtime cloned it into:
// it joins the container's cgroups, builds the root, pivots into it and
// executes the container's command.
func containerInit(specPath string) error {
	var spec initSpec
	if err := readSpec(specPath, &spec); err != nil {
		return err
	}
	if err := joinCgroups(spec.Cgroups); err != nil {
		return err
	}
	// Nothing we mount may propagate back to the host; the host's later
	// mounts still propagate in where the host shares them.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make / rslave: %w", err)
	}
	if err := buildRoot(&spec); err != nil {
		return err
	}
	if err := pivotRoot(spec.Rootfs); err != nil {
		return err
	}
	return execIn(spec.Args, spec.Env, spec.WorkDir)
}

func buildRoot(spec *initSpec) error {
	root := spec.Rootfs
	if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=755"); err != nil {
		return fmt.Errorf("root tmpfs on %s: %w", root, err)
	}
	in := func(p string) string { return filepath.Join(root, p) }
	for _, p := range spec.Image.ReadOnly {
		fi, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, in(p)); err != nil {
				return err
			}
			continue
		}
		if err := bindMount(p, in(p), true, "private"); err != nil {
			return err
		}
	}
	for _, p := range spec.Image.Empty {
		if err := os.MkdirAll(in(p), 0o755); err != nil {
			return err
		}
	}
	for _, p := range spec.Image.Tmpfs {
		if err := os.MkdirAll(in(p), 0o1777); err != nil {
			return err
		}
		if err := unix.Mount("tmpfs", in(p), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
			return fmt.Errorf("tmpfs on %s: %w", p, err)
		}
	}
	if err := os.MkdirAll(in("/proc"), 0o555); err != nil {
		return err
	}
	if err := unix.Mount("proc", in("/proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount proc: %w", err)
	}
	if err := bindMount("/sys", in("/sys"), false, "private"); err != nil {
		return err
	}
	if err := buildDev(in("/dev")); err != nil {
		return err
	}
	for _, m := range spec.Mounts {
		if err := bindMount(m.HostPath, in(m.ContainerPath), m.ReadOnly, m.Propagation); err != nil {
			return err
		}
	}
	for _, d := range spec.Devices {
		if err := makeDevice(d, in(d.ContainerPath)); err != nil {
			return err
		}
	}
	return nil
}

// buildDev makes a minimal /dev: the usual character devices bound from the
// host, a devpts and shm, and the /proc/self/fd links.
func buildDev(dev string) error {
	if err := os.MkdirAll(dev, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID, "mode=755"); err != nil {
		return fmt.Errorf("/dev tmpfs: %w", err)
	}
	for _, n := range []string{"null", "zero", "full", "random", "urandom", "tty"} {
		if err := bindMount("/dev/"+n, filepath.Join(dev, n), false, "private"); err != nil {
			return err
		}
	}
	for _, d := range []string{"pts", "shm"} {
		if err := os.Mkdir(filepath.Join(dev, d), 0o755); err != nil {
			return err
		}
	}
	if err := unix.Mount("devpts", filepath.Join(dev, "pts"), "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620"); err != nil {
		return fmt.Errorf("devpts: %w", err)
	}
	if err := unix.Mount("shm", filepath.Join(dev, "shm"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777"); err != nil {
		return fmt.Errorf("/dev/shm: %w", err)
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
		"stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return err
		}
	}
	return nil
}

// bindMount binds src (a directory or a file; recursively, so mounts below
// src come along) onto dst, creating dst like src.
func bindMount(src, dst string, readOnly bool, propagation string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	if fi.IsDir() {
		err = os.MkdirAll(dst, 0o755)
	} else {
		err = ensureFile(dst)
	}
	if err != nil {
		return fmt.Errorf("bind %s: target %s: %w", src, dst, err)
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, dst, err)
	}
	if readOnly {
		// A bind mount becomes read-only only by remounting it.
		if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("remount %s read-only: %w", dst, err)
		}
	}
	flag := map[string]uintptr{"rslave": unix.MS_SLAVE, "rshared": unix.MS_SHARED}[propagation]
	if flag == 0 {
		flag = unix.MS_PRIVATE
	}
	if err := unix.Mount("", dst, "", unix.MS_REC|flag, ""); err != nil {
		return fmt.Errorf("propagation %s of %s: %w", propagation, dst, err)
	}
	return nil
}

func ensureFile(p string) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// makeDevice creates a device node at dst with the major:minor of the
// device src resolves to (the kubelet passes a symlink to the published
// raw block volume), as runc does for CRI devices.
func makeDevice(d deviceSpec, dst string) error {
	var st unix.Stat_t
	if err := unix.Stat(d.HostPath, &st); err != nil {
		return fmt.Errorf("device %s: %w", d.HostPath, err)
	}
	typ := st.Mode & unix.S_IFMT
	if typ != unix.S_IFBLK && typ != unix.S_IFCHR {
		return fmt.Errorf("device %s is not a block or character device", d.HostPath)
	}
	mode := uint32(0o660)
	if !strings.Contains(d.Permissions, "w") {
		mode = 0o440
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := unix.Mknod(dst, typ|mode, int(st.Rdev)); err != nil {
		return fmt.Errorf("mknod %s for %s: %w", dst, d.HostPath, err)
	}
	return nil
}

// pivotRoot makes root the root of this mount namespace and lazily
// unmounts the old one: the host's mounts (other pods' volumes among them)
// must not stay referenced from here, or they could never be unmounted.
func pivotRoot(root string) error {
	if err := os.Chdir(root); err != nil {
		return err
	}
	if err := os.Mkdir(".oldroot", 0o700); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", ".oldroot"); err != nil {
		return fmt.Errorf("pivot_root to %s: %w", root, err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Unmount("/.oldroot", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount the old root: %w", err)
	}
	return os.Remove("/.oldroot")
}

// execIn replaces this process with args, with env as its whole
// environment, in workDir (created if missing, as runc does).
func execIn(args, env []string, workDir string) error {
	if len(args) == 0 {
		return errors.New("no command")
	}
	os.Clearenv()
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			os.Setenv(k, v)
		}
	}
	if workDir == "" {
		workDir = "/"
	}
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return fmt.Errorf("working directory %s: %w", workDir, err)
	}
	if err := os.Chdir(workDir); err != nil {
		return err
	}
	path, err := exec.LookPath(args[0]) // the container's PATH, set above
	if err != nil {
		return fmt.Errorf("command %q: %w", args[0], err)
	}
	if err := unix.Exec(path, args, env); err != nil {
		return fmt.Errorf("exec %s: %w", path, err)
	}
	return nil
}

// containerEnter runs a command in a running container (kubectl exec, exec
// probes): it joins the container's cgroups, then becomes nsenter, which
// enters the container's mount namespace and root (a Go program cannot
// setns(CLONE_NEWMNT): it is multithreaded).
func containerEnter(specPath string) error {
	var spec enterSpec
	if err := readSpec(specPath, &spec); err != nil {
		return err
	}
	if err := joinCgroups(spec.Cgroups); err != nil {
		return err
	}
	argv := append([]string{"nsenter", fmt.Sprintf("--target=%d", spec.Pid), "--mount", "--root", "--wd", "--"}, spec.Args...)
	return unix.Exec(spec.Nsenter, argv, spec.Env)
}
