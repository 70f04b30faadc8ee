/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Command demo is `make demo` / `make demo-down` (package test/demo): the
// open-local article's eight steps on this machine, with a real kubelet.
//
//	demo up   [--dir D]   # prints the report; exit status 1 if any step failed
//	demo down [--dir D]   # removes everything the demo made
//
// and, run by `demo up` inside the VM for step 4 on kernels without
// device-mapper (not meant to be typed): a node of the host's cluster
//
//	demo vm-node --dir D --cluster GUESTVIEW --disk /dev/vda --node-name N \
//	    --kubelet-port P --report-port Q --stop-file F [--binary NAME=PATH]...
//
// up expects our binaries next to this one (make build puts them all in
// bin/) and the pinned tools from hack/tools.sh ($OPEN_LOCAL_TOOLS_DIR, or
// it runs hack/tools.sh itself).
package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/open-local/open-local/test/cluster"
	"github.com/open-local/open-local/test/demo"
)

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "up" && os.Args[1] != "down" && os.Args[1] != "vm-node") {
		fmt.Fprintln(os.Stderr, "usage: demo up|down [--dir DIR]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("demo "+os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", "/tmp/open-local/demo", "directory for everything the demo makes")
	var vm demo.VMNodeOptions
	disk := fs.String("disk", "", "vm-node: the empty disk to use")
	fs.StringVar(&vm.ClusterDir, "cluster", "", "vm-node: the guest's view of the host's cluster")
	fs.StringVar(&vm.NodeName, "node-name", "", "vm-node: the node's name")
	fs.IntVar(&vm.KubeletPort, "kubelet-port", 0, "vm-node: the kubelet's port (forwarded from the host)")
	fs.IntVar(&vm.ReportPort, "report-port", 0, "vm-node: the port serving lvm reports (forwarded from the host)")
	fs.StringVar(&vm.StopFile, "stop-file", "", "vm-node: stop once this file exists")
	binaries := map[string]string{}
	fs.Func("binary", "NAME=PATH: where one of our programs is (default: next to this binary); repeatable", func(v string) error {
		name, path, ok := strings.Cut(v, "=")
		if !ok || name == "" || path == "" {
			return fmt.Errorf("want NAME=PATH, got %q", v)
		}
		binaries[name] = path
		return nil
	})
	_ = fs.Parse(os.Args[2:])
	abs, err := filepath.Abs(*dir)
	if err != nil {
		fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Args[1] == "down" {
		// Teardown must finish even when interrupted half-way.
		if err := demo.Down(context.WithoutCancel(ctx), abs, os.Stdout); err != nil {
			fail(err)
		}
		return
	}
	cfg, err := config(ctx, abs)
	if err != nil {
		fail(err)
	}
	maps.Copy(cfg.Binaries, binaries)
	if os.Args[1] == "vm-node" {
		cfg.Disk = *disk
		if err := demo.VMNode(ctx, cfg, vm); err != nil {
			fail(err)
		}
		return
	}
	rep, err := demo.Up(ctx, cfg)
	if err != nil {
		fail(err)
	}
	if !rep.Passed() {
		os.Exit(1)
	}
}

func config(ctx context.Context, dir string) (demo.Config, error) {
	root, err := cluster.RepoRoot()
	if err != nil {
		return demo.Config{}, err
	}
	tools, err := cluster.ToolsDir(ctx)
	if err != nil {
		return demo.Config{}, err
	}
	exe, err := os.Executable()
	if err != nil {
		return demo.Config{}, err
	}
	bins := map[string]string{}
	for _, p := range demo.Programs {
		bins[p] = filepath.Join(filepath.Dir(exe), p)
	}
	return demo.Config{Dir: dir, RepoRoot: root, ToolsDir: tools, Binaries: bins, Out: os.Stdout}, nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "demo:", err)
	os.Exit(1)
}
