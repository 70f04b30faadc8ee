/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package demo

import (
	"fmt"
	"strings"
)

// The workloads of the article (alibaba/open-local's example/lvm/*.yaml),
// adapted to procruntime: the image name is kept for the reader, but every
// image is this host's root filesystem, so each container says what it
// runs in command:.

// statefulSet renders a one-replica StatefulSet (and its headless Service)
// with a volumeClaimTemplate "html" of class, 5Gi, used as a filesystem at
// /data or as a raw block device at /dev/sdd.
func statefulSet(name, class string, block bool, command string) string {
	volume := `        volumeMounts:
        - {name: html, mountPath: /data}`
	mode := ""
	if block {
		volume = `        volumeDevices:
        - {name: html, devicePath: /dev/sdd}`
		mode = "\n      volumeMode: Block"
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: %[1]s
  labels: {app: %[1]s}
spec:
  clusterIP: None
  selector: {app: %[1]s}
  ports: [{name: web, port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: %[1]s
  labels: {app: %[1]s}
spec:
  serviceName: %[1]s
  replicas: 1
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
    spec:
      # The open-local scheduler places the pod where its volumes fit.
      schedulerName: open-local-scheduler
      terminationGracePeriodSeconds: 2
      containers:
      - name: nginx
        # procruntime: every image is this host's root filesystem (read-only).
        image: nginx:1.14.2
        command: [sh, -c, %[4]q]
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
%[5]s
  volumeClaimTemplates:
  - metadata:
      name: html
      labels: {app: %[1]s}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: %[2]s%[3]s
      resources:
        requests: {storage: 5Gi}
`, name, class, mode, command, volume)
}

// writeOnce writes the page once per volume (a restarted pod keeps it),
// shows the filesystem and stays up.
const writeOnce = `[ -f /data/index.html ] || echo "written by $POD_NAME at $(date -u +%FT%TZ)" > /data/index.html; cat /data/index.html; df -hT /data; exec sleep infinity`

// showDevice shows the raw block device and stays up.
const showDevice = `ls -l /dev/sdd; exec sleep infinity`

// ephemeralPod is the article's file-server with a CSI ephemeral inline volume.
func ephemeralPod() string {
	return `apiVersion: v1
kind: Pod
metadata:
  name: file-server
spec:
  schedulerName: open-local-scheduler
  terminationGracePeriodSeconds: 2
  containers:
  - name: file-server
    # procruntime: every image is this host's root filesystem (read-only).
    image: filebrowser/filebrowser:latest
    command: [sh, -c, 'echo served > /srv/index.html; df -hT /srv; exec sleep infinity']
    volumeMounts:
    - {name: webroot, mountPath: /srv}
  volumes:
  - name: webroot
    csi:
      driver: local.csi.aliyun.com
      volumeAttributes:
        vgName: open-local-pool-0
        size: 2Gi
`
}

// indent prefixes every line of s.
func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n")
}
