/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Command procruntime is the demo's container runtime (package
// test/procruntime): a CRI server for a real kubelet on a machine without
// container images, running every container as a host process in its own
// mount namespace, with the host's root filesystem as the image, in the
// kubelet's pod cgroups.
//
//	procruntime --endpoint unix:///run/procruntime.sock --state-dir /tmp/state [--pod-ip 127.0.0.1]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/open-local/open-local/test/procruntime"
)

func main() {
	// The runtime re-executes this binary for each container's process side.
	if procruntime.ChildMain(os.Args[1:]) {
		return
	}
	fs := flag.NewFlagSet("procruntime", flag.ExitOnError)
	klog.InitFlags(fs)
	var opts procruntime.Options
	fs.StringVar(&opts.Endpoint, "endpoint", "", "CRI socket (unix:///path or /path)")
	fs.StringVar(&opts.StateDir, "state-dir", "", "directory for container specs and root mount points")
	fs.StringVar(&opts.PodIP, "pod-ip", "127.0.0.1", "address reported for every pod (containers share the host's network)")
	_ = fs.Parse(os.Args[1:])
	if opts.Endpoint == "" || opts.StateDir == "" || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: procruntime --endpoint unix:///path --state-dir DIR [--pod-ip IP]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	r, err := procruntime.New(opts)
	if err == nil {
		err = r.Serve(ctx)
	}
	if err != nil {
		klog.ErrorS(err, "procruntime failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}
