/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Command csi is open-local's CSI driver. In controller mode it serves the
// Identity and Controller services and talks only to the Kubernetes API; in
// node mode it serves Identity and Node on each node and reaches LVs through
// the LVM layer. Both listen on a unix socket only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/component-base/version"
	"k8s.io/klog/v2"

	"github.com/open-local/open-local/apis/client/clientset/versioned"
	"github.com/open-local/open-local/apis/storage/ledger"
	"github.com/open-local/open-local/apis/storage/parameters"
	"github.com/open-local/open-local/csi/controller"
	"github.com/open-local/open-local/csi/grpcserver"
	"github.com/open-local/open-local/csi/identity"
	csimetrics "github.com/open-local/open-local/csi/metrics"
	"github.com/open-local/open-local/csi/node"
	"github.com/open-local/open-local/csi/node/iolimit"
	"github.com/open-local/open-local/csi/registration"
	"github.com/open-local/open-local/lvm"
	"github.com/open-local/open-local/secureserving"
)

type options struct {
	mode, endpoint, driverName, nodeID, kubeconfig string
	maxVolumes                                     int64
	lvmSystemDir, activation, activationLock       string
	lvmEnv                                         []string
	kubeAPIQPS                                     float64
	kubeAPIBurst                                   int
	metricsAddr                                    string
	metricsAuth                                    string
	ioLimits                                       iolimit.Options
	// kubelet registration (what node-driver-registrar does), node mode
	kubeletRegistryDir, kubeletEndpoint string
	// thin pool fill thresholds, controller mode
	fill ledger.Fill
	// the scheduler's inline rules, node mode
	inlineStrategy    ledger.Strategy
	defaultInlineSize int64
}

func percentFlag(p *int32) func(string) error {
	return func(v string) error {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return err
		}
		*p = int32(n)
		return nil
	}
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("csi", flag.ContinueOnError)
	klog.InitFlags(fs)
	fs.StringVar(&o.mode, "mode", "", "controller or node")
	fs.StringVar(&o.endpoint, "endpoint", "unix:///csi/csi.sock", "CSI endpoint: a unix socket (unix:///path or /path)")
	fs.StringVar(&o.driverName, "driver-name", identity.DefaultDriverName, "CSI driver (provisioner) name")
	fs.StringVar(&o.nodeID, "node-id", os.Getenv("NODE_NAME"), "node mode: this node's name (default $NODE_NAME)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster config)")
	fs.Int64Var(&o.maxVolumes, "max-volumes-per-node", 0, "node mode: max_volumes_per_node reported to the scheduler (0: no limit)")
	fs.StringVar(&o.lvmSystemDir, "lvm-system-dir", "", "node mode: LVM_SYSTEM_DIR for lvm commands (default: lvm's own /etc/lvm)")
	fs.Func("lvm-env", "node mode: KEY=VALUE added to the environment of lvm commands (repeatable), e.g. DM_DISABLE_UDEV=1", func(s string) error {
		if !strings.Contains(s, "=") {
			return fmt.Errorf("want KEY=VALUE, got %q", s)
		}
		o.lvmEnv = append(o.lvmEnv, s)
		return nil
	})
	fs.StringVar(&o.activation, "activation", string(lvm.ModeAuto), "node mode: how LVs become block devices: auto, device-mapper or loop (kernels without device-mapper)")
	// Same flag and default as the agent's: both set up loop devices.
	fs.StringVar(&o.activationLock, "loop-lock-file", "/run/lock/open-local/loop-activator.lock", "node mode: lock file serialising loop-device setup with the agent (activation loop)")
	fs.Float64Var(&o.kubeAPIQPS, "kube-api-qps", 50, "QPS of the Kubernetes client")
	fs.IntVar(&o.kubeAPIBurst, "kube-api-burst", 100, "burst of the Kubernetes client")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", "", "address of the Prometheus /metrics endpoint (e.g. :10266); empty disables it")
	secureserving.AddFlag(fs, &o.metricsAuth)
	fs.StringVar(&o.ioLimits.CgroupMount, "cgroup-mount", iolimit.DefaultCgroupMount, "node mode: where the node's cgroup hierarchies are mounted (IO limits)")
	fs.StringVar((*string)(&o.ioLimits.Layout.Driver), "cgroup-driver", string(iolimit.DriverAuto), "node mode: kubelet's --cgroup-driver: cgroupfs, systemd, or auto (find the pod's cgroup in either layout)")
	fs.StringVar(&o.ioLimits.Layout.Root, "cgroup-root", "/", "node mode: kubelet's --cgroup-root (cgroupRoot), e.g. /kubelet on kind nodes")
	fs.StringVar(&o.ioLimits.StateDir, "io-limit-state-dir", "/var/lib/open-local/io-limits", "node mode: where the IO limits set per published volume are recorded (must survive plugin restarts)")
	fs.StringVar(&o.kubeletRegistryDir, "kubelet-registration-dir", "", "node mode: register with the kubelet through its plugin registry dir (e.g. /var/lib/kubelet/plugins_registry), as node-driver-registrar does; empty: do not register")
	fs.StringVar(&o.kubeletEndpoint, "kubelet-registration-path", "", "node mode: the CSI socket path as the kubelet sees it (default: the --endpoint path)")
	o.fill = ledger.DefaultFill
	fs.Func("thin-pool-data-fill-percent", fmt.Sprintf("controller mode: no new volume in a thin pool whose data space is fuller, 1-100 (the scheduler's thinPoolFillThresholds.dataPercent; default %d)", ledger.DefaultFill.DataPercent), percentFlag(&o.fill.DataPercent))
	fs.Func("thin-pool-metadata-fill-percent", fmt.Sprintf("controller mode: the same for metadata (thinPoolFillThresholds.metadataPercent; default %d)", ledger.DefaultFill.MetadataPercent), percentFlag(&o.fill.MetadataPercent))
	o.defaultInlineSize = parameters.DefaultInlineSize
	fs.Func("inline-strategy", "node mode: how an inline volume that names no VG gets one, binpack or spread: the scheduler's strategy (default binpack)", func(v string) (err error) {
		o.inlineStrategy, err = ledger.ParseStrategy(v)
		return err
	})
	fs.Func("default-inline-volume-size", "node mode: the size of an inline volume without a size attribute: the scheduler's defaultInlineVolumeSize (default 1Gi)", func(v string) (err error) {
		o.defaultInlineSize, err = parameters.ParseSizeString(v)
		return err
	})
	showVersion := fs.Bool("version", false, "print the version (hack/version.sh stamps it) and exit")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *showVersion {
		return nil, errShowVersion
	}
	if err := o.fill.Validate(); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	switch o.mode {
	case "controller":
	case "node":
		if o.nodeID == "" {
			return nil, errors.New("--node-id (or $NODE_NAME) is required in node mode")
		}
		if _, err := lvm.ParseMode(o.activation); err != nil {
			return nil, err
		}
		if _, err := iolimit.ParseDriver(string(o.ioLimits.Layout.Driver)); err != nil {
			return nil, fmt.Errorf("--cgroup-driver: %w", err)
		}
	default:
		return nil, fmt.Errorf("--mode must be controller or node, not %q", o.mode)
	}
	socket, err := grpcserver.SocketPath(o.endpoint)
	if err != nil {
		return nil, err
	}
	if o.kubeletEndpoint == "" {
		o.kubeletEndpoint = socket
	}
	return o, nil
}

// errShowVersion: --version was given.
var errShowVersion = errors.New("version requested")

func main() {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if errors.Is(err, errShowVersion) {
		fmt.Println(version.Get().GitVersion)
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "csi:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		klog.ErrorS(err, "csi driver failed")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func run(ctx context.Context, o *options) error {
	cfg, err := restConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = float32(o.kubeAPIQPS), o.kubeAPIBurst
	cfg.UserAgent = "open-local-csi-" + o.mode
	client, err := versioned.NewForConfig(cfg)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}

	m := csimetrics.New()
	srv := grpcserver.New(m.UnaryServerInterceptor())
	csi.RegisterIdentityServer(srv, identity.New(o.driverName, version.Get().GitVersion))
	switch o.mode {
	case "controller":
		ctl := controller.New(client, kube)
		if err := ctl.SetFill(o.fill); err != nil {
			return err
		}
		csi.RegisterControllerServer(srv, ctl)
	case "node":
		mode, _ := lvm.ParseMode(o.activation)
		if mode == lvm.ModeAuto {
			mode = lvm.DetectMode()
		}
		var lvmOpts []lvm.Option
		if mode == lvm.ModeLoop {
			lvmOpts = append(lvmOpts, lvm.WithAlloc(lvm.AllocContiguous))
		}
		lvmClient := lvm.New(&lvm.ExecRunner{SystemDir: o.lvmSystemDir, Env: o.lvmEnv, Observe: m.Commands().Observe}, lvmOpts...)
		if err := os.MkdirAll(filepath.Dir(o.activationLock), 0o755); err != nil {
			return err
		}
		act, err := lvm.NewActivator(mode, lvmClient, o.activationLock)
		if err != nil {
			return err
		}
		limits, err := iolimit.New(o.ioLimits)
		if err != nil {
			return err
		}
		go func() { _ = limits.Run(ctx) }()
		ns, err := node.New(node.Options{NodeID: o.nodeID, MaxVolumes: o.maxVolumes,
			InlineStrategy: o.inlineStrategy, DefaultInlineSize: o.defaultInlineSize, Client: client, Activator: act, IOLimits: limits})
		if err != nil {
			return err
		}
		csi.RegisterNodeServer(srv, ns)
		h, herr := limits.Hierarchy()
		klog.InfoS("Node service", "node", o.nodeID, "activation", mode, "cgroupVersion", h.Version, "ioController", h.Dir,
			"cgroupDriver", o.ioLimits.Layout.Driver, "cgroupRoot", o.ioLimits.Layout.Root, "ioLimitsUnavailable", herr)
	}

	m.Initialize(srv)
	if o.metricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", m.Handler())
		if _, err := secureserving.ServeHTTP(ctx, o.metricsAddr, o.metricsAuth, kube, nil, mux); err != nil {
			return fmt.Errorf("--metrics-bind-address: %w", err)
		}
	}

	lis, err := grpcserver.Listen(o.endpoint)
	if err != nil {
		return err
	}
	klog.InfoS("Serving CSI", "mode", o.mode, "driver", o.driverName, "endpoint", o.endpoint, "version", version.Get().GitVersion)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	var refused <-chan error // nil (never ready) without registration
	if o.mode == "node" && o.kubeletRegistryDir != "" {
		// Registered only once the CSI socket serves: the kubelet dials it right away.
		reg, err := registration.Start(registration.Options{RegistryDir: o.kubeletRegistryDir, DriverName: o.driverName, Endpoint: o.kubeletEndpoint})
		if err != nil {
			srv.Stop()
			return err
		}
		defer reg.Stop()
		refused = reg.Refused()
	}
	select {
	case err := <-errc:
		return err
	case err := <-refused:
		srv.GracefulStop()
		return err
	case <-ctx.Done():
		klog.InfoS("Shutting down")
		srv.GracefulStop()
		return nil
	}
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	return rest.InClusterConfig()
}
