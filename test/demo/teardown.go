/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package demo

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"

	"github.com/open-local/open-local/test/cluster"
)

var volumeSnapshots = schema.GroupVersionResource{Group: "snapshot.storage.k8s.io", Version: "v1", Resource: "volumesnapshots"}

// removeWorkloads deletes the demo's workloads while everything still runs,
// so the kubelet unmounts the volumes through the CSI driver and the agent
// removes the LVs the proper way; it waits for both.
func removeWorkloads(ctx context.Context, c *cluster.Cluster, report func(string)) error {
	kube := c.Client()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	all := metav1.ListOptions{}
	del := metav1.DeleteOptions{}
	if err := kube.AppsV1().StatefulSets(ns).DeleteCollection(ctx, del, all); err != nil {
		return err
	}
	if err := kube.CoreV1().Pods(ns).DeleteCollection(ctx, del, all); err != nil {
		return err
	}
	if err := dyn.Resource(volumeSnapshots).Namespace(ns).DeleteCollection(ctx, del, all); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if err := kube.CoreV1().PersistentVolumeClaims(ns).DeleteCollection(ctx, del, all); err != nil {
		return err
	}
	report("deleted the demo's StatefulSets, pods, snapshots and claims; waiting for the volumes to be unmounted and removed")
	err = wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		pods, err := kube.CoreV1().Pods(ns).List(ctx, all)
		if err != nil {
			return false, nil
		}
		pvs, err := kube.CoreV1().PersistentVolumes().List(ctx, all)
		if err != nil {
			return false, nil
		}
		lvs, err := c.OpenLocalClient().CsiV1alpha1().LocalVolumes().List(ctx, all)
		if err != nil {
			return false, nil
		}
		return len(pods.Items)+len(pvs.Items)+len(lvs.Items) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("pods, volumes or LocalVolumes left: %w", err)
	}
	report("every pod, PV and LocalVolume is gone")
	return nil
}
