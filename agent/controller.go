/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/open-local/open-local/agent/adoption"
	agentmetrics "github.com/open-local/open-local/agent/metrics"
	"github.com/open-local/open-local/agent/nlscontroller"
	"github.com/open-local/open-local/agent/nodeloss"
	"github.com/open-local/open-local/agent/orphanvolumes"
	"github.com/open-local/open-local/apis/client/clientset/versioned"
	"github.com/open-local/open-local/apis/client/informers/externalversions"
)

// runController runs the NodeLocalStorage controller, while holding the
// leader Lease when --leader-elect is on.
func runController(ctx context.Context, o *options) error {
	host, err := os.Hostname()
	if err != nil {
		return err
	}
	id := host + "_" + string(uuid.NewUUID())
	cfg, err := restConfig(o, "open-local-nls-controller/"+id)
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
	workqueue.SetProvider(agentmetrics.NewWorkqueues(o.metrics))
	recorder, stopEvents := newRecorder(ctx, kube, nlscontroller.FieldManager, host)
	defer stopEvents()
	recorder = agentmetrics.CountWarnings(o.metrics, recorder)

	selector, err := labels.Parse(o.nodeSelector)
	if err != nil {
		return err
	}
	gcMetrics := orphanvolumes.NewMetrics(o.metrics)
	nodeLossMetrics := nodeloss.NewMetrics(o.metrics)
	run := func(ctx context.Context) error {
		kf := informers.NewSharedInformerFactory(kube, 0)
		of := externalversions.NewSharedInformerFactory(ol, 0)
		c, err := nlscontroller.New(ol, kf.Core().V1().Nodes(), of.Csi().V1alpha1().NodeLocalStorages(),
			of.Csi().V1alpha1().NodeLocalStorageInitConfigs(), recorder,
			nlscontroller.Options{InitConfig: o.initConfig, UpdateSpecs: o.updateNLS, Workers: o.workers, NodeSelector: selector})
		if err != nil {
			return err
		}
		var gc *orphanvolumes.Collector
		if o.orphanGrace > 0 {
			gc, err = orphanvolumes.New(ol, kube, of.Csi().V1alpha1().LocalVolumes(), kf.Core().V1().PersistentVolumeClaims(),
				kf.Core().V1().PersistentVolumes(), recorder, orphanvolumes.Options{Grace: o.orphanGrace, Metrics: gcMetrics})
			if err != nil {
				return err
			}
		}
		runs := []func(context.Context) error{c.Run}
		if gc != nil {
			runs = append(runs, gc.Run)
		}
		if o.nodeLossGrace > 0 {
			nl, err := nodeloss.New(ol, kube, kf.Core().V1().Nodes(), of.Csi().V1alpha1().LocalVolumes(),
				kf.Core().V1().PersistentVolumeClaims(), kf.Core().V1().PersistentVolumes(), recorder,
				nodeloss.Options{Grace: o.nodeLossGrace, Cleanup: o.nodeLossClean, Metrics: nodeLossMetrics})
			if err != nil {
				return err
			}
			runs = append(runs, nl.Run)
		}
		if o.adoptOpenLocal {
			im, err := adoption.New(ol, kube, of.Csi().V1alpha1().LocalVolumes(), kf.Core().V1().PersistentVolumes(), recorder)
			if err != nil {
				return err
			}
			runs = append(runs, im.Run)
		}
		kf.Start(ctx.Done())
		of.Start(ctx.Done())
		defer kf.Shutdown()
		defer of.Shutdown()
		// All under the same lease; any failing ends the term.
		ctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		done := make(chan error, len(runs))
		for _, r := range runs {
			go func() {
				err := r(ctx)
				if err != nil {
					cancel(err)
				}
				done <- err
			}()
		}
		var errs []error
		for range runs {
			errs = append(errs, <-done)
		}
		return errors.Join(errs...)
	}
	if !o.leaderElect {
		if err := serveHealthz(ctx, o, kube, nil, agentmetrics.Handler(o.metrics)); err != nil {
			return err
		}
		return run(ctx)
	}

	klog.InfoS("leader election", "identity", id, "lease", o.leaseNS+"/"+o.leaseName)
	watchdog := leaderelection.NewLeaderHealthzAdaptor(o.renewDeadline)
	if err := serveHealthz(ctx, o, kube, func(r *http.Request) error { return watchdog.Check(r) }, agentmetrics.Handler(o.metrics)); err != nil {
		return err
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: o.leaseNS, Name: o.leaseName},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id, EventRecorder: recorder},
	}
	// A failing controller ends the process (the Lease is released).
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   o.leaseDuration,
		RenewDeadline:   o.renewDeadline,
		RetryPeriod:     o.retryPeriod,
		ReleaseOnCancel: true,
		Name:            o.leaseName,
		WatchDog:        watchdog,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				klog.InfoS("started leading", "identity", id)
				if err := run(ctx); err != nil && ctx.Err() == nil {
					cancel(err)
				}
			},
			OnStoppedLeading: func() { klog.InfoS("stopped leading", "identity", id) },
			OnNewLeader: func(leader string) {
				if leader != id {
					klog.InfoS("following", "leader", leader)
				}
			},
		},
	})
	if err != nil {
		return err
	}
	watchdog.SetLeaderElection(le)
	le.Run(ctx)
	if cause := context.Cause(ctx); ctx.Err() != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	if ctx.Err() == nil {
		// Lost the lease while running: exit, so a restart campaigns anew
		// instead of running without it.
		return fmt.Errorf("lost the leader lease %s/%s", o.leaseNS, o.leaseName)
	}
	return nil
}
