package cluster

import (
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	nodefast "sigs.k8s.io/kwok/kustomize/stage/node/fast"
	nodelease "sigs.k8s.io/kwok/kustomize/stage/node/heartbeat-with-lease"
	podfast "sigs.k8s.io/kwok/kustomize/stage/pod/fast"
)

// kwokStages is kwok's own stage set for nodes (initialize, heartbeat with
// lease) and pods (ready, complete, delete). Deliberately not its volume
// stages: those fake provisioning, which is what we test for real.
func kwokStages() string {
	return strings.Join([]string{
		nodefast.DefaultNodeInit, nodelease.DefaultNodeHeartbeatWithLease,
		podfast.DefaultPodReady, podfast.DefaultPodComplete, podfast.DefaultPodDelete,
	}, "\n---\n")
}

// kwokManageFlags says which Nodes kwok manages: all of them, or only those
// matching selector (an invalid selector is refused by Start before kwok
// runs, since kwok would only log it and manage nothing).
func kwokManageFlags(selector string) []string {
	if selector == "" {
		return []string{"--manage-all-nodes=true"}
	}
	return []string{"--manage-all-nodes=false", "--manage-nodes-with-label-selector=" + selector}
}

func validKwokSelector(selector string) error {
	if selector == "" {
		return nil
	}
	_, err := labels.Parse(selector)
	return err
}
