package plugin

import (
	"context"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
)

// activateDelay coalesces bursts of freed space (a namespace deleted) into
// one activation.
const activateDelay = 100 * time.Millisecond

// waitingPods are the pods no node had room for. When the ledger frees
// space they are activated, whatever the order in which the scheduler's
// dynamic informers (queueing hints) and ours (the ledger) see the same
// LocalVolume deletion: a hint that fires first retries the pod against a
// ledger that may not yet know, and this second trigger covers that race.
type waitingPods struct {
	activator fwk.PodActivator
	mu        sync.Mutex
	pods      map[types.UID]*v1.Pod
	kickCh    chan struct{}
}

func newWaitingPods(a fwk.PodActivator) *waitingPods {
	return &waitingPods{activator: a, pods: map[types.UID]*v1.Pod{}, kickCh: make(chan struct{}, 1)}
}

func (w *waitingPods) add(pod *v1.Pod) {
	w.mu.Lock()
	w.pods[pod.UID] = pod
	w.mu.Unlock()
}

func (w *waitingPods) remove(pod *v1.Pod) {
	w.mu.Lock()
	delete(w.pods, pod.UID)
	w.mu.Unlock()
}

func (w *waitingPods) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pods)
}

// kick is the ledger's freed hook: it must not block.
func (w *waitingPods) kick() {
	select {
	case w.kickCh <- struct{}{}:
	default:
	}
}

func (w *waitingPods) run(ctx context.Context) {
	logger := klog.FromContext(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kickCh:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(activateDelay):
		}
		w.mu.Lock()
		batch := make(map[string]*v1.Pod, len(w.pods))
		for _, p := range w.pods {
			batch[p.Namespace+"/"+p.Name] = p
		}
		w.mu.Unlock()
		if len(batch) > 0 {
			logger.V(4).Info("Space freed, activating waiting pods", "count", len(batch))
			w.activator.Activate(logger, batch)
			activations.Add(float64(len(batch)))
		}
	}
}
