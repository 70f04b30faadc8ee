/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

package deploy_test

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	rbacv1 "k8s.io/api/rbac/v1"
)

// access is what a role grants: "group/resource" ("resource" for the core
// group; "[name]" appended for rules restricted by resourceNames) → verbs.
type access map[string][]string

// The expected rules of every role the chart renders, derived from the API
// calls of the component that uses it. A verb the code does not use, or a
// missing one, fails TestRBAC: change the table together with the code.
var (
	// monitoring.metricsReader: what our endpoints' SubjectAccessReview
	// asks of a scraper (secureserving), and nothing else.
	metricsReaderRules = access{"/metrics": {"get"}}

	// agent (agent mode) + CSI node plugin: one pod, one ServiceAccount.
	agentRules = access{
		// agent/nodestorage: informer on its NLS (metadata.name=<node>);
		// agent/metrics: the same informer; csi/node: Get (room for an
		// inline volume the node allocates).
		"csi.aliyun.com/nodelocalstorages": {"get", "list", "watch"},
		// agent/nodestorage: UpdateStatus.
		"csi.aliyun.com/nodelocalstorages/status": {"update"},
		// agent/volumes: informer (spec.nodeName=<node>), Get+Update of
		// finalizers and of a snapshot's spec.size when its copy-on-write
		// space grows; csi/node: Get (also of a read-only restore's
		// snapshot), List and Watch (room in the VG; awaitvolume.Ready for an
		// inline volume), Create (inline
		// volume of a pod another scheduler placed), Delete (inline volume
		// unpublished); agent/inline: informer, Delete; agent/metrics:
		// informer.
		"csi.aliyun.com/localvolumes": {"get", "list", "watch", "update", "create", "delete"},
		// agent/inline: informer on its node's pods (spec.nodeName), Get of
		// an inline volume's pod not bound there.
		"pods": {"get", "list", "watch"},
		// agent/volumes: UpdateStatus.
		"csi.aliyun.com/localvolumes/status": {"update"},
		// client-go's event recorder (agent main, agent/volumes).
		"events": {"create", "patch"},
	}
	// csi/controller.
	csiControllerRules = access{
		// Get (validate, expand, delete, snapshots), List (placement, a
		// volume's snapshots, ListSnapshots), Watch (awaitvolume.Until's ListWatch),
		// Create (CreateVolume, CreateSnapshot), Update (expansion), Delete
		// (DeleteVolume, DeleteSnapshot). Snapshot class parameters come in
		// the CSI request: no snapshot.storage.k8s.io access.
		"csi.aliyun.com/localvolumes": {"get", "list", "watch", "create", "update", "delete"},
		// placement.go: Get of the selected node's NLS, List when none is selected.
		"csi.aliyun.com/nodelocalstorages": {"get", "list"},
		// controller.go: the PVC named by csi-provisioner's extra metadata;
		// clones.go: a clone source's PVC and PV (its volume mode, fsType).
		"persistentvolumeclaims": {"get"},
		"persistentvolumes":      {"get"},
		// DeleteVolume: whether the volume's node still exists.
		"nodes": {"get"},
	}
	// agent --mode=controller (agent/nlscontroller, agent/orphanvolumes,
	// agent/controller.go).
	nlsControllerRules = access{
		// agent/nodeloss: Get, the live check that a node is gone.
		"nodes": {"get", "list", "watch"},
		"csi.aliyun.com/nodelocalstorageinitconfigs": {"list", "watch"},
		"csi.aliyun.com/nodelocalstorages":           {"list", "watch", "create", "update", "delete"},
		// agent/orphanvolumes: informer, Delete (UID precondition) of a
		// volume whose claim is gone.
		"csi.aliyun.com/localvolumes": {"list", "watch", "delete"},
		// agent/nodeloss: UpdateStatus, the NodeGone condition.
		"csi.aliyun.com/localvolumes/status": {"update"},
		// agent/orphanvolumes: informers, and Gets confirming an orphan
		// before the delete.
		"persistentvolumeclaims": {"get", "list", "watch"},
		"persistentvolumes":      {"get", "list", "watch"},
		"events":                 {"create", "patch"},
	}
	// agent/adoption with controller.adoptOpenLocal (default): Create of
	// an adopted LocalVolume, Patch of its PV's adopted-as annotation.
	adoptionRules = access{
		"csi.aliyun.com/localvolumes": {"create"},
		"persistentvolumes":           {"patch"},
	}
	// agent/nodeloss with controller.nodeLoss.cleanup: Update (the
	// finalizer of a gone node's volume), Delete of an opted-in PVC.
	nodeLossCleanupRules = access{
		"csi.aliyun.com/localvolumes": {"update"},
		"persistentvolumeclaims":      {"delete"},
	}
	// Upstream sidecars: their own RBAC files at the versions we run
	// (hack/tools), less Events list/watch/update (the recorder creates
	// and patches), group snapshots (disabled by flag), csi-resizer's
	// Pods (--handle-volume-inuse-error=false) and VolumeAttributesClasses
	// (our driver has no MODIFY_VOLUME).
	provisionerRules = access{
		"persistentvolumes":                              {"get", "list", "watch", "create", "patch", "delete"},
		"persistentvolumeclaims":                         {"get", "list", "watch", "update"},
		"storage.k8s.io/storageclasses":                  {"get", "list", "watch"},
		"events":                                         {"create", "patch"},
		"snapshot.storage.k8s.io/volumesnapshots":        {"get", "list", "watch", "update"},
		"snapshot.storage.k8s.io/volumesnapshotcontents": {"get", "list"},
		"storage.k8s.io/csinodes":                        {"get", "list", "watch"},
		"nodes":                                          {"get", "list", "watch"},
		"storage.k8s.io/volumeattachments":               {"get", "list", "watch"},
	}
	resizerRules = access{
		"persistentvolumes":             {"get", "list", "watch", "patch"},
		"persistentvolumeclaims":        {"get", "list", "watch"},
		"persistentvolumeclaims/status": {"patch"},
		"events":                        {"create", "patch"},
	}
	snapshotterRules = access{
		"events": {"create", "patch"},
		"snapshot.storage.k8s.io/volumesnapshotclasses":         {"get", "list", "watch"},
		"snapshot.storage.k8s.io/volumesnapshotcontents":        {"get", "list", "watch", "update", "patch"},
		"snapshot.storage.k8s.io/volumesnapshotcontents/status": {"update", "patch"},
	}
	snapshotControllerRules = access{
		"persistentvolumes":      {"get", "list", "watch"},
		"persistentvolumeclaims": {"get", "list", "watch", "update"},
		"events":                 {"create", "patch"},
		"snapshot.storage.k8s.io/volumesnapshotclasses":         {"get", "list", "watch"},
		"snapshot.storage.k8s.io/volumesnapshotcontents":        {"create", "get", "list", "watch", "update", "delete", "patch"},
		"snapshot.storage.k8s.io/volumesnapshotcontents/status": {"patch"},
		"snapshot.storage.k8s.io/volumesnapshots":               {"get", "list", "watch", "update", "patch"},
		"snapshot.storage.k8s.io/volumesnapshots/status":        {"update", "patch"},
	}
	// Namespaced, for the controller pod.
	controllerNamespaceRules = access{
		// csi-provisioner --enable-capacity (capacity.go: informer, Create,
		// Update, Delete).
		"storage.k8s.io/csistoragecapacities": {"list", "watch", "create", "update", "delete"},
		// --capacity-ownerref-level=2: pod → ReplicaSet → Deployment.
		"pods":             {"get"},
		"apps/replicasets": {"get"},
	}
	// Leader election (client-go's LeaseLock: Get, Create, Update).
	leaseRules = access{"coordination.k8s.io/leases": {"get", "create", "update"}}
	// scheduler/plugin, on top of the built-in kube-scheduler roles.
	schedulerRules = access{
		// plugin.go informer; bind.go Create, Get (existing), Delete (Unreserve).
		"csi.aliyun.com/localvolumes": {"get", "list", "watch", "create", "delete"},
		// plugin.go informer.
		"csi.aliyun.com/nodelocalstorages": {"list", "watch"},
		// snapshots.go informers.
		"snapshot.storage.k8s.io/volumesnapshots":        {"list", "watch"},
		"snapshot.storage.k8s.io/volumesnapshotcontents": {"list", "watch"},
	}
	schedulerLeaseRules = access{"coordination.k8s.io/leases[open-local-scheduler]": {"get", "update"}}
)

func merge(as ...access) access {
	out := access{}
	for _, a := range as {
		for k, v := range a {
			out[k] = append(out[k], v...)
		}
	}
	return out
}

type binding struct {
	roleRef string // "ClusterRole/name" or "Role/name"
	subject string // "namespace/serviceaccount"
}

func TestRBAC(t *testing.T) {
	const sa = namespace + "/"
	for _, tc := range []struct {
		name     string
		set      []string
		roles    map[string]access // "ClusterRole/name" or "Role/ns/name"
		bindings map[string]binding
	}{{
		name: "default",
		roles: map[string]access{
			"ClusterRole/open-local-agent":                          agentRules,
			"ClusterRole/open-local-metrics-reader":                 metricsReaderRules,
			"ClusterRole/open-local-csi-controller":                 csiControllerRules,
			"ClusterRole/open-local-nls-controller":                 merge(nlsControllerRules, adoptionRules),
			"ClusterRole/open-local-csi-provisioner":                provisionerRules,
			"ClusterRole/open-local-csi-resizer":                    resizerRules,
			"ClusterRole/open-local-csi-snapshotter":                snapshotterRules,
			"ClusterRole/open-local-snapshot-controller":            snapshotControllerRules,
			"Role/kube-system/open-local-controller":                merge(controllerNamespaceRules, leaseRules),
			"ClusterRole/open-local-scheduler":                      schedulerRules,
			"Role/kube-system/open-local-scheduler-leader-election": schedulerLeaseRules,
		},
		bindings: map[string]binding{
			"ClusterRoleBinding/open-local-agent":                                {"ClusterRole/open-local-agent", sa + "open-local-agent"},
			"ClusterRoleBinding/open-local-agent-auth-delegator":                 {"ClusterRole/system:auth-delegator", sa + "open-local-agent"},
			"ClusterRoleBinding/open-local-controller-auth-delegator":            {"ClusterRole/system:auth-delegator", sa + "open-local-controller"},
			"ClusterRoleBinding/open-local-csi-controller":                       {"ClusterRole/open-local-csi-controller", sa + "open-local-controller"},
			"ClusterRoleBinding/open-local-nls-controller":                       {"ClusterRole/open-local-nls-controller", sa + "open-local-controller"},
			"ClusterRoleBinding/open-local-csi-provisioner":                      {"ClusterRole/open-local-csi-provisioner", sa + "open-local-controller"},
			"ClusterRoleBinding/open-local-csi-resizer":                          {"ClusterRole/open-local-csi-resizer", sa + "open-local-controller"},
			"ClusterRoleBinding/open-local-csi-snapshotter":                      {"ClusterRole/open-local-csi-snapshotter", sa + "open-local-controller"},
			"ClusterRoleBinding/open-local-snapshot-controller":                  {"ClusterRole/open-local-snapshot-controller", sa + "open-local-controller"},
			"RoleBinding/kube-system/open-local-controller":                      {"Role/open-local-controller", sa + "open-local-controller"},
			"ClusterRoleBinding/open-local-scheduler-open-local-scheduler":       {"ClusterRole/open-local-scheduler", sa + "open-local-scheduler"},
			"ClusterRoleBinding/open-local-scheduler-kube-scheduler":             {"ClusterRole/system:kube-scheduler", sa + "open-local-scheduler"},
			"ClusterRoleBinding/open-local-scheduler-volume-scheduler":           {"ClusterRole/system:volume-scheduler", sa + "open-local-scheduler"},
			"RoleBinding/kube-system/open-local-scheduler-leader-election":       {"Role/open-local-scheduler-leader-election", sa + "open-local-scheduler"},
			"RoleBinding/kube-system/open-local-scheduler-authentication-reader": {"Role/extension-apiserver-authentication-reader", sa + "open-local-scheduler"},
		},
	}, {
		name: "replicas 2",
		set:  []string{"controller.replicas=2", "scheduler.enabled=false", "snapshot.enabled=false", "snapshotController.enabled=false"},
		roles: map[string]access{
			"ClusterRole/open-local-agent":           agentRules,
			"ClusterRole/open-local-metrics-reader":  metricsReaderRules,
			"ClusterRole/open-local-csi-controller":  csiControllerRules,
			"ClusterRole/open-local-nls-controller":  merge(nlsControllerRules, adoptionRules),
			"ClusterRole/open-local-csi-provisioner": provisionerRules,
			"ClusterRole/open-local-csi-resizer":     resizerRules,
			"Role/kube-system/open-local-controller": merge(controllerNamespaceRules, leaseRules),
		},
		bindings: map[string]binding{
			"ClusterRoleBinding/open-local-agent":                     {"ClusterRole/open-local-agent", sa + "open-local-agent"},
			"ClusterRoleBinding/open-local-agent-auth-delegator":      {"ClusterRole/system:auth-delegator", sa + "open-local-agent"},
			"ClusterRoleBinding/open-local-controller-auth-delegator": {"ClusterRole/system:auth-delegator", sa + "open-local-controller"},
			"ClusterRoleBinding/open-local-csi-controller":            {"ClusterRole/open-local-csi-controller", sa + "open-local-controller"},
			"ClusterRoleBinding/open-local-nls-controller":            {"ClusterRole/open-local-nls-controller", sa + "open-local-controller"},
			"ClusterRoleBinding/open-local-csi-provisioner":           {"ClusterRole/open-local-csi-provisioner", sa + "open-local-controller"},
			"ClusterRoleBinding/open-local-csi-resizer":               {"ClusterRole/open-local-csi-resizer", sa + "open-local-controller"},
			"RoleBinding/kube-system/open-local-controller":           {"Role/open-local-controller", sa + "open-local-controller"},
		},
	}, {
		name: "node-loss cleanup",
		set:  []string{"controller.nodeLoss.cleanup=true", "scheduler.enabled=false", "snapshot.enabled=false", "snapshotController.enabled=false"},
		roles: map[string]access{
			"ClusterRole/open-local-agent":           agentRules,
			"ClusterRole/open-local-metrics-reader":  metricsReaderRules,
			"ClusterRole/open-local-csi-controller":  csiControllerRules,
			"ClusterRole/open-local-nls-controller":  merge(nlsControllerRules, adoptionRules, nodeLossCleanupRules),
			"ClusterRole/open-local-csi-provisioner": provisionerRules,
			"ClusterRole/open-local-csi-resizer":     resizerRules,
			"Role/kube-system/open-local-controller": merge(controllerNamespaceRules, leaseRules),
		},
		bindings: map[string]binding{
			"ClusterRoleBinding/open-local-agent":                     {"ClusterRole/open-local-agent", sa + "open-local-agent"},
			"ClusterRoleBinding/open-local-agent-auth-delegator":      {"ClusterRole/system:auth-delegator", sa + "open-local-agent"},
			"ClusterRoleBinding/open-local-controller-auth-delegator": {"ClusterRole/system:auth-delegator", sa + "open-local-controller"},
			"ClusterRoleBinding/open-local-csi-controller":            {"ClusterRole/open-local-csi-controller", sa + "open-local-controller"},
			"ClusterRoleBinding/open-local-nls-controller":            {"ClusterRole/open-local-nls-controller", sa + "open-local-controller"},
			"ClusterRoleBinding/open-local-csi-provisioner":           {"ClusterRole/open-local-csi-provisioner", sa + "open-local-controller"},
			"ClusterRoleBinding/open-local-csi-resizer":               {"ClusterRole/open-local-csi-resizer", sa + "open-local-controller"},
			"RoleBinding/kube-system/open-local-controller":           {"Role/open-local-controller", sa + "open-local-controller"},
		},
	}, {
		name: "adoption off",
		set:  []string{"controller.adoptOpenLocal=false", "scheduler.enabled=false", "snapshot.enabled=false", "snapshotController.enabled=false"},
		roles: map[string]access{
			"ClusterRole/open-local-agent":           agentRules,
			"ClusterRole/open-local-metrics-reader":  metricsReaderRules,
			"ClusterRole/open-local-csi-controller":  csiControllerRules,
			"ClusterRole/open-local-nls-controller":  nlsControllerRules,
			"ClusterRole/open-local-csi-provisioner": provisionerRules,
			"ClusterRole/open-local-csi-resizer":     resizerRules,
			"Role/kube-system/open-local-controller": merge(controllerNamespaceRules, leaseRules),
		},
		bindings: map[string]binding{
			"ClusterRoleBinding/open-local-agent":                     {"ClusterRole/open-local-agent", sa + "open-local-agent"},
			"ClusterRoleBinding/open-local-agent-auth-delegator":      {"ClusterRole/system:auth-delegator", sa + "open-local-agent"},
			"ClusterRoleBinding/open-local-controller-auth-delegator": {"ClusterRole/system:auth-delegator", sa + "open-local-controller"},
			"ClusterRoleBinding/open-local-csi-controller":            {"ClusterRole/open-local-csi-controller", sa + "open-local-controller"},
			"ClusterRoleBinding/open-local-nls-controller":            {"ClusterRole/open-local-nls-controller", sa + "open-local-controller"},
			"ClusterRoleBinding/open-local-csi-provisioner":           {"ClusterRole/open-local-csi-provisioner", sa + "open-local-controller"},
			"ClusterRoleBinding/open-local-csi-resizer":               {"ClusterRole/open-local-csi-resizer", sa + "open-local-controller"},
			"RoleBinding/kube-system/open-local-controller":           {"Role/open-local-controller", sa + "open-local-controller"},
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			m := render(t, tc.set...)
			got := map[string]access{}
			for _, u := range m.ofKind("ClusterRole") {
				got["ClusterRole/"+u.GetName()] = rulesOf(typed[rbacv1.ClusterRole](t, u).Rules)
			}
			for _, u := range m.ofKind("Role") {
				got["Role/"+u.GetNamespace()+"/"+u.GetName()] = rulesOf(typed[rbacv1.Role](t, u).Rules)
			}
			want := map[string]access{}
			for k, v := range tc.roles {
				want[k] = normalise(v)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("roles differ from the expected access (-want +got):\n%s", diff)
			}

			gotB := map[string]binding{}
			for _, u := range m.ofKind("ClusterRoleBinding") {
				b := typed[rbacv1.ClusterRoleBinding](t, u)
				gotB["ClusterRoleBinding/"+b.Name] = bindingOf(t, b.RoleRef, b.Subjects)
			}
			for _, u := range m.ofKind("RoleBinding") {
				b := typed[rbacv1.RoleBinding](t, u)
				gotB["RoleBinding/"+b.Namespace+"/"+b.Name] = bindingOf(t, b.RoleRef, b.Subjects)
			}
			if diff := cmp.Diff(tc.bindings, gotB, cmp.AllowUnexported(binding{})); diff != "" {
				t.Errorf("bindings (-want +got):\n%s", diff)
			}

			// Each workload runs as its own ServiceAccount.
			for kind, names := range map[string][]string{
				"DaemonSet":  {"open-local-agent"},
				"Deployment": {"open-local-controller", "open-local-scheduler"},
			} {
				for _, name := range names {
					u := m.find(kind, name)
					if u == nil {
						continue
					}
					spec, _ := u.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
					if spec["serviceAccountName"] != name {
						t.Errorf("%s %s runs as %v, want %s", kind, name, spec["serviceAccountName"], name)
					}
				}
			}
		})
	}
}

// TestNoSecretsNoWildcards: whatever the values, no role of the chart reads
// Secrets or grants "*"; the one non-resource URL granted is get /metrics,
// by the metrics-reader role alone.
func TestNoSecretsNoWildcards(t *testing.T) {
	for name, set := range valueSets {
		m := render(t, set...)
		for _, kind := range []string{"ClusterRole", "Role"} {
			for _, u := range m.ofKind(kind) {
				rules := typed[rbacv1.ClusterRole](t, u).Rules
				for _, r := range rules {
					all := slices.Concat(r.APIGroups, r.Resources, r.Verbs)
					reader := strings.HasSuffix(u.GetName(), "-metrics-reader") && kind == "ClusterRole" &&
						slices.Equal(r.NonResourceURLs, []string{"/metrics"}) && slices.Equal(r.Verbs, []string{"get"}) && len(r.Resources) == 0
					if slices.Contains(all, "*") || slices.Contains(r.Resources, "secrets") || (len(r.NonResourceURLs) > 0 && !reader) {
						t.Errorf("%s: %s %s grants %+v", name, kind, u.GetName(), r)
					}
				}
			}
		}
	}
}

func rulesOf(rules []rbacv1.PolicyRule) access {
	a := access{}
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				key := res
				if g != "" {
					key = g + "/" + res
				}
				if len(r.ResourceNames) > 0 {
					key += "[" + strings.Join(r.ResourceNames, ",") + "]"
				}
				a[key] = append(a[key], r.Verbs...)
			}
		}
		for _, u := range r.NonResourceURLs {
			a[u] = append(a[u], r.Verbs...)
		}
	}
	return normalise(a)
}

func normalise(a access) access {
	out := access{}
	for k, v := range a {
		v = slices.Clone(v)
		sort.Strings(v)
		out[k] = slices.Compact(v)
	}
	return out
}

func bindingOf(t *testing.T, ref rbacv1.RoleRef, subjects []rbacv1.Subject) binding {
	t.Helper()
	if len(subjects) != 1 || subjects[0].Kind != rbacv1.ServiceAccountKind {
		t.Errorf("binding of %s: subjects %+v, want one ServiceAccount", ref.Name, subjects)
		return binding{}
	}
	ns := subjects[0].Namespace
	return binding{roleRef: ref.Kind + "/" + ref.Name, subject: fmt.Sprintf("%s/%s", ns, subjects[0].Name)}
}
