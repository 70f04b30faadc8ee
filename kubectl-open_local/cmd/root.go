/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package cmd is `kubectl open-local`: reports read from the API (NodeLocalStorage,
// LocalVolume, PVCs, pods, events) and accounted with apis/storage/ledger, the
// code the scheduler and the CSI controller use, so what it prints is what
// they decide.
package cmd

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/component-base/version"
	"sigs.k8s.io/yaml"

	olclient "github.com/open-local/open-local/apis/client/clientset/versioned"
)

// now is the clock of ages and heartbeats (tests fix it).
var now = time.Now

// options are the flags every subcommand shares, named as kubectl names them.
type options struct {
	config        *genericclioptions.ConfigFlags
	allNamespaces bool
	output        string
	selector      string
	streams       genericiooptions.IOStreams

	kube kubernetes.Interface
	ol   olclient.Interface
	// namespace is -n, or the kubeconfig context's; "" with -A.
	namespace string
}

// NewRoot returns the `kubectl open-local` command.
func NewRoot(streams genericiooptions.IOStreams) *cobra.Command {
	o := &options{config: genericclioptions.NewConfigFlags(true), streams: streams}
	root := &cobra.Command{
		Use:           "kubectl-open_local",
		Short:         "Inspect open-local: node capacity, LocalVolumes, why a pod is Pending, leaked storage",
		SilenceUsage:  true,
		SilenceErrors: false,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl open-local"},
		Version:       pluginVersion(),
	}
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	o.config.AddFlags(root.PersistentFlags())
	root.PersistentFlags().BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "all namespaces (volumes, orphans)")
	root.PersistentFlags().StringVarP(&o.output, "output", "o", "", "output format: wide, json or yaml")
	root.PersistentFlags().StringVarP(&o.selector, "selector", "l", "", "label selector on NodeLocalStorages (nodes, why, orphans) and LocalVolumes (volumes, orphans)")
	// --version without -v: kubectl's -v is the log level.
	root.Flags().Bool("version", false, "print the version")
	root.AddCommand(o.nodesCommand(), o.volumesCommand(), o.whyCommand(), o.orphansCommand(), o.convertValuesCommand())
	return root
}

// pluginVersion is the version make build stamps, else the module version
// `go install …@version` records.
func pluginVersion() string {
	v := version.Get().GitVersion
	if strings.HasPrefix(v, "v0.0.0-master") {
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
			return bi.Main.Version
		}
	}
	return v
}

// complete validates the shared flags and makes the clients.
func (o *options) complete() error {
	switch o.output {
	case "", "wide", "json", "yaml":
	default:
		return fmt.Errorf("unknown output format %q: want wide, json or yaml", o.output)
	}
	cfg, err := o.config.ToRESTConfig()
	if err != nil {
		return err
	}
	if o.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	if o.ol, err = olclient.NewForConfig(cfg); err != nil {
		return err
	}
	if !o.allNamespaces {
		if o.namespace, _, err = o.config.ToRawKubeConfigLoader().Namespace(); err != nil {
			return err
		}
	}
	return nil
}

// structured prints v as JSON or YAML when -o asks for it.
func (o *options) structured(v any) (bool, error) {
	switch o.output {
	case "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return true, err
		}
		_, err = fmt.Fprintf(o.streams.Out, "%s\n", b)
		return true, err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return true, err
		}
		_, err = o.streams.Out.Write(b)
		return true, err
	}
	return false, nil
}

// table prints rows under header the way kubectl does (three-space gaps);
// wide columns are marked with a leading "+" in header and kept only with
// -o wide.
func (o *options) table(w io.Writer, header []string, rows [][]string) error {
	keep := make([]bool, len(header))
	for i, h := range header {
		keep[i] = !strings.HasPrefix(h, "+") || o.output == "wide"
		header[i] = strings.TrimPrefix(h, "+")
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	line := func(cells []string) {
		var out []string
		for i, c := range cells {
			if keep[i] {
				out = append(out, c)
			}
		}
		fmt.Fprintln(tw, strings.Join(out, "\t"))
	}
	line(header)
	for _, r := range rows {
		line(r)
	}
	return tw.Flush()
}

// qty prints a size the way Kubernetes quantities read (30Gi).
func qty(b int64) string {
	return resource.NewQuantity(b, resource.BinarySI).String()
}

// age is kubectl's AGE column.
func age(t time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now().Sub(t))
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
