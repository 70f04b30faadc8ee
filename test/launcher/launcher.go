/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package launcher gives the suites and the demo the command lines of the
// chart's containers, so the processes they start on this machine run with
// the flags the chart deploys, changed only where a local process must
// differ (its socket, kubeconfig, loopback ports, no peer to elect with),
// each change written out by the caller. A copy of a chart's flag list
// drifts (the sidecars' --timeout once differed in four places).
package launcher

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Chart holds the containers of a rendered chart's Deployments and
// DaemonSets, by "<workload>/<container>".
type Chart struct {
	containers map[string]corev1.Container
}

// Parse reads `helm template` output.
func Parse(manifest []byte) (*Chart, error) {
	c := &Chart{containers: map[string]corev1.Container{}}
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
			c.containers[head.Metadata.Name+"/"+ctr.Name] = ctr
		}
	}
}

// Drop, as the value of a change, removes the flag.
const Drop = "\x00drop"

// Args is the container's command line after its binary (our images'
// command is the binary and its flags; the sidecars' is args), with
// changes applied: a flag of the chart named in changes ("--name") gets
// the new value (Drop removes it), a flag the chart does not set is
// appended in the order given (a value "" appends the bare flag).
func (c *Chart) Args(workload, container string, changes ...string) ([]string, error) {
	ctr, ok := c.containers[workload+"/"+container]
	if !ok {
		return nil, fmt.Errorf("the chart has no container %s in %s", container, workload)
	}
	if len(changes)%2 != 0 {
		return nil, fmt.Errorf("changes are flag, value pairs: %q", changes)
	}
	var args []string
	if len(ctr.Command) > 0 {
		args = append(args, ctr.Command[1:]...)
	}
	args = append(args, ctr.Args...)
	for i := 0; i < len(changes); i += 2 {
		name, value := changes[i], changes[i+1]
		if !strings.HasPrefix(name, "-") {
			return nil, fmt.Errorf("change %q: not a flag", name)
		}
		flag := name
		if value != "" && value != Drop {
			flag = name + "=" + value
		}
		at := slices.IndexFunc(args, func(a string) bool { return a == name || strings.HasPrefix(a, name+"=") })
		switch {
		case at >= 0 && value == Drop:
			args = slices.Delete(args, at, at+1)
		case at >= 0:
			args[at] = flag
		case value == Drop:
			return nil, fmt.Errorf("%s/%s: drop %s, which the chart does not set", workload, container, name)
		default:
			args = append(args, flag)
		}
	}
	return args, nil
}
