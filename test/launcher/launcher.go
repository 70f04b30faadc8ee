/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package launcher gives the suites and the demo the command lines and
// environments of the chart's containers, so the processes they start on
// this machine run with the flags the chart deploys, changed only where a
// local process must differ (its socket, kubeconfig, loopback ports, no peer
// to elect with), each change written out by the caller. A copy of a
// chart's flag list drifts (the sidecars' --timeout once differed in four
// places).
package launcher

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Container names one container of the chart: its workload (Deployment or
// DaemonSet, as the release "open-local" names it) and its name.
type Container struct{ Workload, Name string }

func (c Container) String() string { return c.Workload + "/" + c.Name }

// The chart's containers the suites and the demo start.
var (
	Agent              = Container{"open-local-agent", "agent"}
	CSINode            = Container{"open-local-agent", "csi-plugin"}
	CSIController      = Container{"open-local-controller", "csi-controller"}
	NLSController      = Container{"open-local-controller", "nls-controller"}
	Provisioner        = Container{"open-local-controller", "csi-provisioner"}
	Resizer            = Container{"open-local-controller", "csi-resizer"}
	Snapshotter        = Container{"open-local-controller", "csi-snapshotter"}
	SnapshotController = Container{"open-local-controller", "snapshot-controller"}
	Scheduler          = Container{"open-local-scheduler", "scheduler"}
)

// Chart holds the containers of a rendered chart's Deployments and
// DaemonSets.
type Chart struct {
	containers map[Container]corev1.Container
}

// Parse reads `helm template` output.
func Parse(manifest []byte) (*Chart, error) {
	c := &Chart{containers: map[Container]corev1.Container{}}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifest)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return c, nil
		}
		if err != nil {
			return nil, err
		}
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			return nil, err
		}
		var spec corev1.PodSpec
		switch head.Kind {
		case "Deployment":
			var d appsv1.Deployment
			if err := yaml.Unmarshal(doc, &d); err != nil {
				return nil, fmt.Errorf("Deployment %s: %w", head.Metadata.Name, err)
			}
			spec = d.Spec.Template.Spec
		case "DaemonSet":
			var d appsv1.DaemonSet
			if err := yaml.Unmarshal(doc, &d); err != nil {
				return nil, fmt.Errorf("DaemonSet %s: %w", head.Metadata.Name, err)
			}
			spec = d.Spec.Template.Spec
		default:
			continue
		}
		for _, ctr := range spec.Containers {
			c.containers[Container{head.Metadata.Name, ctr.Name}] = ctr
		}
	}
}

// Values of a change: Drop removes the chart's flag, Bare writes the flag
// without a value ("" writes --name=, an empty value).
const (
	Drop = "\x00drop"
	Bare = "\x00bare"
)

// Pod is what the container's environment reads from its pod (fieldRef):
// a process on this machine has no pod, so the caller says what it would
// be. A field the chart reads and Pod leaves empty is an error.
type Pod struct {
	Name, Namespace, NodeName string
}

func (p Pod) field(path string) (string, error) {
	v := map[string]string{"metadata.name": p.Name, "metadata.namespace": p.Namespace, "spec.nodeName": p.NodeName}[path]
	if v == "" {
		return "", fmt.Errorf("the chart reads the pod's %s: set it in Pod", path)
	}
	return v, nil
}

// Process is a container's process: its command line after the binary and
// its environment (KEY=VALUE).
type Process struct {
	Args, Env []string
}

// Process is the container's process as the pod would run it: the
// environment with pod's fields, the command line (our images' command is
// the binary and its flags; the sidecars' is args) with $(VAR) expanded
// from that environment, as the kubelet does; then changes applied: a flag
// of the chart named in changes ("--name") gets the new value (Drop removes
// it), a flag the chart does not set is appended in the order given.
func (c *Chart) Process(ctr Container, pod Pod, changes ...string) (*Process, error) {
	spec, ok := c.containers[ctr]
	if !ok {
		return nil, fmt.Errorf("the chart has no container %s", ctr)
	}
	if len(changes)%2 != 0 {
		return nil, fmt.Errorf("changes are flag, value pairs: %q", changes)
	}
	p := &Process{}
	vars := map[string]string{}
	for _, e := range spec.Env {
		v := e.Value
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			var err error
			if v, err = pod.field(e.ValueFrom.FieldRef.FieldPath); err != nil {
				return nil, fmt.Errorf("%s: env %s: %w", ctr, e.Name, err)
			}
		case e.ValueFrom != nil:
			return nil, fmt.Errorf("%s: env %s: only values and fieldRefs can be given to a local process", ctr, e.Name)
		}
		vars[e.Name] = v
		p.Env = append(p.Env, e.Name+"="+v)
	}
	var args []string
	if len(spec.Command) > 0 {
		args = append(args, spec.Command[1:]...)
	}
	args = append(args, spec.Args...)
	for i, a := range args {
		var err error
		if args[i], err = expand(a, vars); err != nil {
			return nil, fmt.Errorf("%s: %w", ctr, err)
		}
	}
	for i := 0; i < len(changes); i += 2 {
		name, value := changes[i], changes[i+1]
		if !strings.HasPrefix(name, "-") {
			return nil, fmt.Errorf("change %q: not a flag", name)
		}
		flag := name + "=" + value
		if value == Bare {
			flag = name
		}
		at := slices.IndexFunc(args, func(a string) bool { return a == name || strings.HasPrefix(a, name+"=") })
		switch {
		case at >= 0 && value == Drop:
			args = slices.Delete(args, at, at+1)
		case at >= 0:
			args[at] = flag
		case value == Drop:
			return nil, fmt.Errorf("%s: drop %s, which the chart does not set", ctr, name)
		default:
			args = append(args, flag)
		}
	}
	p.Args = args
	return p, nil
}

var varRef = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expand replaces $(VAR) by the container's variable, $$ by $ (the
// kubelet's rules); a reference to a variable the container lacks is an
// error here (the kubelet would pass it on verbatim).
func expand(s string, vars map[string]string) (string, error) {
	var err error
	out := varRef.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		name := m[2 : len(m)-1]
		v, ok := vars[name]
		if !ok {
			err = fmt.Errorf("%q refers to $(%s), which the container's env does not set", s, name)
		}
		return v
	})
	return out, err
}
