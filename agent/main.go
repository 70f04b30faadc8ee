/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// The agent binary has two modes:
//
//	agent --node-name=N            (default mode, one per node, a DaemonSet)
//	agent --mode=controller        (cluster-wide, leader-elected)
//
// In agent mode it runs the per-node controllers (nodeControllers) with one
// shared environment: API clients, the lvm client configured by
// --lvm-system-dir, and the Activator chosen by --activation. In controller
// mode it runs the NodeLocalStorage controller and the orphan LocalVolume
// collector (agent/orphanvolumes) and the node-loss controller (agent/nodeloss).
package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/component-base/logs"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/component-base/version/verflag"
	"k8s.io/klog/v2"

	"github.com/open-local/open-local/agent/discovery"
	"github.com/open-local/open-local/agent/inline"
	agentmetrics "github.com/open-local/open-local/agent/metrics"
	"github.com/open-local/open-local/agent/nodeagent"
	"github.com/open-local/open-local/agent/nodeloss"
	"github.com/open-local/open-local/agent/nodestorage"
	"github.com/open-local/open-local/agent/orphanvolumes"
	"github.com/open-local/open-local/agent/volumes"
	"github.com/open-local/open-local/apis/client/clientset/versioned"
	olscheme "github.com/open-local/open-local/apis/client/clientset/versioned/scheme"
	"github.com/open-local/open-local/apis/storage/v1alpha1"
	"github.com/open-local/open-local/blockdev"
	"github.com/open-local/open-local/lvm"
	lvmmetrics "github.com/open-local/open-local/lvm/metrics"
	"github.com/open-local/open-local/secureserving"
)

// Modes of the binary.
const (
	modeAgent      = "agent"
	modeController = "controller"
)

// nodeControllers are the agent's per-node loops, all run with the same Env
// until shutdown. To add one, append an entry; its constructor gets the Env
// (API clients, node name, lvm client, Activator, event recorder), e.g.
//
//	{"volumes", func(env *nodeagent.Env, _ *options) (nodeagent.Controller, error) { return volumes.New(env) }},
var nodeControllers = []struct {
	name string
	new  func(env *nodeagent.Env, o *options) (nodeagent.Controller, error)
}{
	{"nodestorage", func(env *nodeagent.Env, o *options) (nodeagent.Controller, error) {
		return nodestorage.New(env, nodestorage.Options{
			Interval:          o.interval,
			HeartbeatInterval: o.heartbeatInterval,
			Sysfs:             o.sysfs,
			DeviceRegexp:      o.deviceRegexp,
			Ownership:         discovery.Ownership{LegacyPrefix: o.legacyLVPrefix},
			Metrics:           o.metrics,
		})
	}},
	{"volumes", func(env *nodeagent.Env, o *options) (nodeagent.Controller, error) {
		return volumes.New(volumes.Options{NodeName: env.NodeName, Client: env.OpenLocal, Kube: env.Kube,
			LVM: env.LVM, Activator: env.Activator, Recorder: env.Recorder, SnapshotCheck: o.snapshotCheck, ZeroNewLVs: o.zeroNewLVs,
			Sysfs: o.sysfs, DeviceWipe: o.deviceWipe})
	}},
	{"inline", func(env *nodeagent.Env, _ *options) (nodeagent.Controller, error) {
		return inline.New(inline.Options{NodeName: env.NodeName, Client: env.OpenLocal, Kube: env.Kube, Recorder: env.Recorder})
	}},
	{"metrics", func(env *nodeagent.Env, o *options) (nodeagent.Controller, error) {
		return agentmetrics.NewNode(o.metrics, agentmetrics.NodeOptions{NodeName: env.NodeName, Client: env.OpenLocal,
			LVM: env.LVM, SysFS: o.sysfs})
	}},
}

type options struct {
	mode        string
	kubeconfig  string
	qps         float32
	burst       int
	healthzAddr string
	metricsAuth string

	// agent mode
	nodeName          string
	sysfs             string
	deviceRegexpText  string
	deviceRegexp      *regexp.Regexp
	legacyLVPrefix    string
	interval          time.Duration
	heartbeatInterval time.Duration
	lvmSystemDir      string
	activation        string
	loopLockFile      string
	snapshotCheck     time.Duration
	zeroNewLVs        bool
	deviceWipeText    string
	deviceWipe        blockdev.Policy

	// controller mode
	initConfig    string
	nodeSelector  string
	updateNLS     bool
	workers       int
	leaderElect   bool
	leaseNS       string
	leaseName     string
	leaseDuration time.Duration
	renewDeadline time.Duration
	retryPeriod   time.Duration
	orphanGrace   time.Duration
	nodeLossGrace time.Duration
	// adoptOpenLocal runs the importer of alibaba/open-local's PVs.
	adoptOpenLocal bool
	nodeLossClean  bool

	// metrics is the registry /metrics serves (set at start, not a flag).
	metrics *prometheus.Registry
}

func (o *options) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.mode, "mode", modeAgent, "agent: the per-node agent; controller: the cluster-wide NodeLocalStorage controller")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; in-cluster configuration when empty")
	fs.Float32Var(&o.qps, "kube-api-qps", 20, "API client queries per second")
	fs.IntVar(&o.burst, "kube-api-burst", 30, "API client burst")
	fs.StringVar(&o.healthzAddr, "healthz-bind-address", ":10265", "address of the /healthz and /metrics endpoints; empty disables them")
	secureserving.AddFlag(fs, &o.metricsAuth)

	fs.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "[agent] the node this agent serves (default $NODE_NAME)")
	fs.StringVar(&o.sysfs, "sysfs", "/sys", "[agent] where sysfs is mounted (open-local's --path.sysfs)")
	fs.StringVar(&o.deviceRegexpText, "regexp", discovery.DefaultDeviceRegexp, "[agent] block devices whose name matches this Go regexp are reported, with their partitions")
	fs.StringVar(&o.legacyLVPrefix, "lvname", discovery.DefaultLegacyLVPrefix, "[agent] LVs whose name starts with this prefix (or csi-) look like open-local's even without the "+lvm.OwnedTag+" tag: when no LocalVolume names them they are reported as orphans (all LVs no LocalVolume names are kept out of allocatable); empty disables")
	o.interval = nodestorage.DefaultInterval
	fs.Var((*secondsOrDuration)(&o.interval), "interval", "[agent] time between discovery passes: a duration (90s, 2m) or integer seconds as open-local's --interval took them")
	fs.DurationVar(&o.heartbeatInterval, "heartbeat-interval", nodestorage.DefaultHeartbeatInterval, "[agent] NodeLocalStorage status is written at least this often, otherwise only when it changes")
	fs.StringVar(&o.lvmSystemDir, "lvm-system-dir", "", "[agent] LVM_SYSTEM_DIR for every lvm command (a directory with lvm.conf); lvm's default when empty")
	fs.StringVar(&o.activation, "activation", string(lvm.ModeAuto), "[agent] how LVs become block devices: device-mapper (/dev/<vg>/<lv>), loop (a loop device over the LV's extents, for kernels without device-mapper) or auto")
	fs.StringVar(&o.loopLockFile, "loop-lock-file", "/run/lock/open-local/loop-activator.lock", "[agent] lock file serialising loop-device setup between processes (loop activation only)")
	fs.BoolVar(&o.zeroNewLVs, "zero-new-lvs", true, "[agent] zero all of a new thick LV before it is Ready, so a raw block volume cannot read the data of the LV that used its extents before (lvcreate zeroes only 4 KiB); the kernel offloads it where the device can (WRITE ZEROES), else it costs a full write of the LV")
	fs.StringVar(&o.deviceWipeText, "device-wipe", string(blockdev.WipeSignatures), fmt.Sprintf("[agent] how a released Device volume's disk is wiped before it is offered again, one of %v: signatures (wipefs --all: the next tenant finds a blank disk; raw blocks stay readable), discard (BLKDISCARD), zero (BLKZEROOUT, a full write), manual (quarantined until an operator annotates the LocalVolume %s=<status.deviceIdentity>)", blockdev.Policies, blockdev.ReleasedAnnotation))
	fs.DurationVar(&o.snapshotCheck, "snapshot-check-interval", 30*time.Second, "[agent] how often a snapshot's copy-on-write usage is compared with its expansion threshold (open-local's Expand_Snapshot_Interval)")

	fs.StringVar(&o.initConfig, "initconfig", "open-local", "[controller] name of the NodeLocalStorageInitConfig")
	fs.StringVar(&o.nodeSelector, "node-selector", "", "[controller] label selector of the nodes that get a NodeLocalStorage; all nodes when empty")
	fs.BoolVar(&o.updateNLS, "update-nls", true, "[controller] rewrite the spec of existing NodeLocalStorages when the config changes it (open-local's UpdateNLS gate)")
	fs.IntVar(&o.workers, "workers", 2, "[controller] parallel syncs")
	fs.BoolVar(&o.leaderElect, "leader-elect", true, "[controller] run only while holding the leader Lease")
	fs.StringVar(&o.leaseNS, "leader-elect-namespace", "kube-system", "[controller] namespace of the leader Lease")
	fs.StringVar(&o.leaseName, "leader-elect-name", "open-local-nls-controller", "[controller] name of the leader Lease")
	fs.DurationVar(&o.leaseDuration, "leader-elect-lease-duration", 15*time.Second, "[controller] how long a non-renewed lease is honoured")
	fs.DurationVar(&o.renewDeadline, "leader-elect-renew-deadline", 10*time.Second, "[controller] how long the leader retries renewing before giving up")
	fs.DurationVar(&o.orphanGrace, "orphan-volume-grace", orphanvolumes.DefaultGrace, "[controller] a LocalVolume whose PVC is gone (or has another UID) and that no PV names is deleted after it has been so this long; 0 disables the collector")
	fs.BoolVar(&o.adoptOpenLocal, "adopt-open-local", true, "[controller] write a LocalVolume (label "+v1alpha1.AdoptedLabel+") for each PV alibaba/open-local provisioned (local-<uuid>, drivers local.csi.aliyun.com and yodaplugin.csi.alibabacloud.com) that has none, so the scheduler counts it and the node agent verifies its LV (docs/migrating-from-open-local.md)")
	fs.DurationVar(&o.nodeLossGrace, "node-loss-grace", nodeloss.DefaultGrace, "[controller] a node whose Node object has been gone this long (re-checked live) has its LocalVolumes marked NodeGone, with Events on their PVs and PVCs; a NotReady node is never gone; 0 disables")
	fs.BoolVar(&o.nodeLossClean, "node-loss-cleanup", false, "[controller] once a node is gone (--node-loss-grace), remove the finalizer of its LocalVolumes being deleted and delete their PVCs annotated "+v1alpha1.NodeLossAnnotation+"=true, so StatefulSets recreate them elsewhere, empty")
	fs.DurationVar(&o.retryPeriod, "leader-elect-retry-period", 2*time.Second, "[controller] time between acquire/renew attempts")
}

func (o *options) validate() error {
	var errs []error
	switch o.mode {
	case modeAgent:
		if o.nodeName == "" {
			errs = append(errs, errors.New("--node-name (or $NODE_NAME) is required in agent mode"))
		}
		if p, err := blockdev.ParsePolicy(o.deviceWipeText); err != nil {
			errs = append(errs, fmt.Errorf("--device-wipe: %w", err))
		} else {
			o.deviceWipe = p
		}
		re, err := regexp.Compile(o.deviceRegexpText)
		if err != nil {
			errs = append(errs, fmt.Errorf("--regexp: %w", err))
		}
		o.deviceRegexp = re
		if o.interval <= 0 || o.heartbeatInterval <= 0 {
			errs = append(errs, errors.New("--interval and --heartbeat-interval must be positive"))
		}
		if _, err := lvm.ParseMode(o.activation); err != nil {
			errs = append(errs, fmt.Errorf("--activation: %w", err))
		}
	case modeController:
		if o.initConfig == "" {
			errs = append(errs, errors.New("--initconfig must not be empty"))
		}
		if _, err := labels.Parse(o.nodeSelector); err != nil {
			errs = append(errs, fmt.Errorf("--node-selector: %w", err))
		}
		if o.orphanGrace < 0 {
			errs = append(errs, errors.New("--orphan-volume-grace must not be negative"))
		}
		if o.nodeLossGrace < 0 {
			errs = append(errs, errors.New("--node-loss-grace must not be negative"))
		}
		if o.nodeLossClean && o.nodeLossGrace == 0 {
			errs = append(errs, errors.New("--node-loss-cleanup needs --node-loss-grace > 0"))
		}
		if o.leaderElect && !(o.leaseDuration > o.renewDeadline && o.renewDeadline > o.retryPeriod && o.retryPeriod > 0) {
			errs = append(errs, errors.New("want --leader-elect-lease-duration > --leader-elect-renew-deadline > --leader-elect-retry-period > 0"))
		}
	default:
		errs = append(errs, fmt.Errorf("--mode=%q: want %s or %s", o.mode, modeAgent, modeController))
	}
	return errors.Join(errs...)
}

func main() {
	o := &options{}
	fs := pflag.NewFlagSet(os.Args[0], pflag.ExitOnError)
	o.addFlags(fs)
	logCfg := logsapi.NewLoggingConfiguration()
	logsapi.AddFlags(logCfg, fs)
	verflag.AddFlags(fs)
	_ = fs.Parse(os.Args[1:])
	verflag.PrintAndExitIfRequested()
	logs.InitLogs()
	defer logs.FlushLogs()
	if err := logsapi.ValidateAndApply(logCfg, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := o.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "%v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	if o.mode == modeController {
		err = runController(ctx, o)
	} else {
		err = runAgent(ctx, o)
	}
	if err != nil {
		klog.ErrorS(err, "exiting")
		logs.FlushLogs()
		os.Exit(1)
	}
}

func restConfig(o *options, userAgent string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if o.kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = o.qps, o.burst
	cfg.UserAgent = userAgent
	return cfg, nil
}

// eventScheme knows core and open-local types, so Events can reference both.
func eventScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = olscheme.AddToScheme(s)
	return s
}

func newRecorder(ctx context.Context, kube kubernetes.Interface, component, host string) (record.EventRecorder, func()) {
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartStructuredLogging(4)
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	return b.NewRecorder(eventScheme(), corev1.EventSource{Component: component, Host: host}), b.Shutdown
}

func runAgent(ctx context.Context, o *options) error {
	cfg, err := restConfig(o, "open-local-agent/"+o.nodeName)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ol, err := versioned.NewForConfig(cfg)
	if err != nil {
		return err
	}
	o.metrics = agentmetrics.NewRegistry()
	// Before any controller creates its queue: queues take the provider
	// when they are made.
	workqueue.SetProvider(agentmetrics.NewWorkqueues(o.metrics))
	commands := lvmmetrics.NewCommands(o.metrics)
	mode, _ := lvm.ParseMode(o.activation)
	if mode == lvm.ModeAuto {
		mode = lvm.DetectMode()
	}
	var lvmOpts []lvm.Option
	if mode == lvm.ModeLoop {
		// Only single-segment LVs can be exposed as loop devices.
		lvmOpts = append(lvmOpts, lvm.WithAlloc(lvm.AllocContiguous))
	}
	client := lvm.New(&lvm.ExecRunner{SystemDir: o.lvmSystemDir, Observe: commands.Observe}, lvmOpts...)
	act, err := lvm.NewActivator(mode, client, o.loopLockFile)
	if err != nil {
		return err
	}
	recorder, stopEvents := newRecorder(ctx, kube, "open-local-agent", o.nodeName)
	defer stopEvents()
	recorder = agentmetrics.CountWarnings(o.metrics, recorder)
	env := &nodeagent.Env{NodeName: o.nodeName, Kube: kube, OpenLocal: ol, LVM: client, Activator: act, Recorder: recorder}
	klog.InfoS("agent starting", "node", o.nodeName, "activation", mode, "lvmSystemDir", o.lvmSystemDir)

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan error, len(nodeControllers))
	for _, nc := range nodeControllers {
		ctrl, err := nc.new(env, o)
		if err != nil {
			return fmt.Errorf("%s: %w", nc.name, err)
		}
		go func() {
			err := ctrl.Run(ctx)
			if err != nil && ctx.Err() == nil {
				cancel(fmt.Errorf("%s: %w", nc.name, err))
			}
			done <- err
		}()
	}
	if err := serveHealthz(ctx, o, kube, nil, agentmetrics.Handler(o.metrics)); err != nil {
		cancel(err)
	}
	for range nodeControllers {
		<-done
	}
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// serveHealthz serves /healthz and /metrics until ctx is done; check (may be
// nil) adds a condition, e.g. leader election's watchdog. /metrics (every
// tenant's volumes) is behind --metrics-auth; /healthz answers the kubelet
// without a token, so it says only ok or not (the reason goes to the log).
func serveHealthz(ctx context.Context, o *options, kube kubernetes.Interface, check func(*http.Request) error, metrics http.Handler) error {
	if o.healthzAddr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if check != nil {
			if err := check(r); err != nil {
				klog.ErrorS(err, "Unhealthy")
				http.Error(w, "unhealthy", http.StatusInternalServerError)
				return
			}
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.Handle("/metrics", metrics)
	if _, err := secureserving.ServeHTTP(ctx, o.healthzAddr, o.metricsAuth, kube, []string{"/healthz"}, mux); err != nil {
		return fmt.Errorf("--healthz-bind-address %s: %w", o.healthzAddr, err)
	}
	return nil
}

// secondsOrDuration is a duration flag that also takes a bare integer as
// seconds: open-local's agent had --interval=60, and its DaemonSets keep
// working unchanged after the switch.
type secondsOrDuration time.Duration

func (d *secondsOrDuration) String() string { return time.Duration(*d).String() }

func (d *secondsOrDuration) Type() string { return "duration" }

func (d *secondsOrDuration) Set(s string) error {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 || n > int64(math.MaxInt64/time.Second) {
			return fmt.Errorf("%d seconds is out of range", n)
		}
		*d = secondsOrDuration(time.Duration(n) * time.Second)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration (90s, 2m) or integer seconds: %w", err)
	}
	*d = secondsOrDuration(v)
	return nil
}
