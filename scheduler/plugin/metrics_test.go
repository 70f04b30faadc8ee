package plugin

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/component-base/metrics/testutil"

	"github.com/open-local/open-local/apis/storage/ledger"
	v1alpha1 "github.com/open-local/open-local/apis/storage/v1alpha1"
)

// The scheduler reports each agent's heartbeat age and the nodes it
// places nothing on, so an alert sees what Filter sees (an agent can
// answer /metrics and still not write its NodeLocalStorage).
func TestNodeHealthMetrics(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(-d)); return &t }
	l := ledger.New()
	l.SetClock(func() time.Time { return now }, ledger.DefaultStaleAfter)
	for name, st := range map[string]v1alpha1.StorageState{
		"fresh": {Type: v1alpha1.StorageReady, LastHeartbeatTime: at(30 * time.Second)},
		"stale": {Type: v1alpha1.StorageReady, LastHeartbeatTime: at(10 * time.Minute)},
		"fault": {Type: v1alpha1.StorageFault, Reason: "DiscoveryFailed", LastHeartbeatTime: at(time.Second)},
		"never": {},
	} {
		l.SetNodeStorage(&v1alpha1.NodeLocalStorage{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.NodeLocalStorageSpec{NodeName: name},
			Status: v1alpha1.NodeLocalStorageStatus{NodeStorageInfo: v1alpha1.NodeStorageInfo{State: st}}})
	}
	metricsLedger.Store(l)
	t.Cleanup(func() { metricsLedger.Store(nil) })
	want := `
# HELP open_local_scheduler_node_heartbeat_age_seconds [ALPHA] Age of a node's NodeLocalStorage heartbeat (status.nodeStorageInfo.state.lastHeartbeatTime) as the scheduler sees it; nodes without one are not reported.
# TYPE open_local_scheduler_node_heartbeat_age_seconds gauge
open_local_scheduler_node_heartbeat_age_seconds{node="fault"} 1
open_local_scheduler_node_heartbeat_age_seconds{node="fresh"} 30
open_local_scheduler_node_heartbeat_age_seconds{node="stale"} 600
# HELP open_local_scheduler_node_unavailable [ALPHA] 1 for a node the scheduler places no new local volumes on, by reason: stale (heartbeat older than three agent intervals) or DiskFault (the NodeLocalStorage state).
# TYPE open_local_scheduler_node_unavailable gauge
open_local_scheduler_node_unavailable{node="fault",reason="DiskFault"} 1
open_local_scheduler_node_unavailable{node="stale",reason="stale"} 1
`
	if err := testutil.CustomCollectAndCompare(&ledgerCollector{}, strings.NewReader(want),
		"open_local_scheduler_node_heartbeat_age_seconds", "open_local_scheduler_node_unavailable"); err != nil {
		t.Error(err)
	}
}
