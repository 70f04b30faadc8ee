/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package procruntime is a small CRI container runtime for the demo's real
// kubelet on a machine without container images: every image is the host's
// root filesystem, and every container is a host process:
//
//   - in a private mount namespace whose root is a tmpfs holding read-only
//     binds of the host's /usr, /etc, /bin, /lib… (the "image"), a fresh /tmp,
//     /run and /dev, the CRI mounts the kubelet asks for (volumes, /etc/hosts,
//     the termination log) at their container paths, and the CRI devices (raw
//     block volumes) as device nodes at their container paths;
//   - in the cgroups the kubelet made for its pod: like runc with the
//     cgroupfs driver, a per-container cgroup <sandbox cgroup_parent>/<container
//     ID> in every cgroup hierarchy, so the kubelet's pod cgroups and the
//     CSI driver's IO limits apply exactly as they would under containerd;
//   - with stdout/stderr written in the CRI log format to the path the
//     kubelet gives (kubectl logs works), and its real exit code reported
//     (pods go Running → Succeeded/Failed).
//
// `kubectl exec` works (non-TTY) through the CRI streaming server; exec
// probes through ExecSync. There is no network namespace: containers share
// the host's network, and the sandbox reports --pod-ip as its address. There
// is no image content, so a container must set command: in its pod spec.
//
// The runtime re-executes its own binary for the process side (see
// ChildMain): "init" sets up a container's mount namespace and execs its
// command; "enter" joins a running container's cgroups and execs nsenter
// into its mount namespace for exec.
package procruntime
