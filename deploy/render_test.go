/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/open-local/open-local/deploy"
	"github.com/open-local/open-local/test/cluster"
)

// The Kubernetes version the chart is rendered for (the one this repository
// pins and runs in the local cluster).
const kubeVersion = "1.37.2"

const namespace = "kube-system"

// helm runs the helm binary built from the pinned module (hack/tools.sh).
func helm(t testing.TB, args ...string) []byte {
	t.Helper()
	tools := cluster.ToolsForTest(t)
	cmd := exec.CommandContext(t.Context(), filepath.Join(tools, "helm"), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.Bytes()
}

// manifests is a rendered chart.
type manifests struct {
	objs []*unstructured.Unstructured
	raw  []byte
}

// render runs helm template with --set values (name=value).
func render(t testing.TB, set ...string) *manifests {
	t.Helper()
	args := []string{"template", "open-local", deploy.ChartDir, "--namespace", namespace, "--kube-version", kubeVersion}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	return parseManifests(t, helm(t, args...))
}

// parseManifests splits helm template's output into objects.
func parseManifests(t testing.TB, raw []byte) *manifests {
	t.Helper()
	m := &manifests{raw: raw}
	dec := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	for {
		doc, err := dec.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatalf("rendered document is not YAML: %v\n%s", err, doc)
		}
		m.objs = append(m.objs, u)
	}
	return m
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// get returns the one object of kind and name, failing the test when absent.
func (m *manifests) get(t testing.TB, kind, name string) *unstructured.Unstructured {
	t.Helper()
	if u := m.find(kind, name); u != nil {
		return u
	}
	t.Fatalf("no %s %s in the rendered chart", kind, name)
	return nil
}

func (m *manifests) find(kind, name string) *unstructured.Unstructured {
	for _, u := range m.objs {
		if u.GetKind() == kind && u.GetName() == name {
			return u
		}
	}
	return nil
}

func (m *manifests) ofKind(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, u := range m.objs {
		if u.GetKind() == kind {
			out = append(out, u)
		}
	}
	return out
}

// typed converts a rendered object into a typed one, strictly: a field the
// type does not know (a typo in a template) fails the test.
func typed[T any](t testing.TB, u *unstructured.Unstructured) *T {
	t.Helper()
	var out T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, &out, true); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return &out
}
