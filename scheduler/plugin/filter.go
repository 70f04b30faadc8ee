package plugin

import (
	"context"
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"

	"github.com/open-local/open-local/apis/storage/ledger"
)

// SignPod lets pods share cached scheduling results only when our answer
// cannot differ between them: the same volumes (PVC names differ per pod,
// so PVC pods never batch). CSI inline volumes of ours are allocated per
// pod, so such pods are not signed at all.
func (pl *OpenLocal) SignPod(_ context.Context, pod *v1.Pod) ([]fwk.SignFragment, *fwk.Status) {
	for i := range pod.Spec.Volumes {
		if c := pod.Spec.Volumes[i].CSI; c != nil && pl.ours[c.Driver] {
			return nil, fwk.NewStatus(fwk.Unschedulable, "pod has node-local inline volumes")
		}
	}
	return []fwk.SignFragment{{Key: fwk.VolumesSignerName, Value: fwk.VolumesSigner(pod)}}, nil
}

// PreFilter computes the pod's local-volume needs once. Pods without local
// volumes of ours are skipped (Filter does not run for them).
func (pl *OpenLocal) PreFilter(ctx context.Context, cs fwk.CycleState, pod *v1.Pod, _ []fwk.NodeInfo) (*fwk.PreFilterResult, *fwk.Status) {
	st, err := pl.podNeeds(pod)
	if err != nil {
		observeDecision(err.code.String())
		return nil, fwk.NewStatus(err.code, err.msg)
	}
	if st == nil {
		cs.Write(stateKey, &podState{})
		return nil, fwk.NewStatus(fwk.Skip)
	}
	cs.Write(stateKey, st)
	klog.FromContext(ctx).V(5).Info("Local volume needs", "pod", klog.KObj(pod), "volumes", len(st.req.Volumes), "node", st.node)
	return nil, nil
}

// PreFilterExtensions: the needs do not depend on other pods.
func (pl *OpenLocal) PreFilterExtensions() fwk.PreFilterExtensions { return nil }

// Filter checks that all the pod's unallocated volumes fit the node
// together (alibaba/open-local#158), with every reservation in flight counted. The reason is
// node-independent so the FailedScheduling event aggregates it; PostFilter
// adds the specific near miss.
func (pl *OpenLocal) Filter(_ context.Context, cs fwk.CycleState, _ *v1.Pod, nodeInfo fwk.NodeInfo) *fwk.Status {
	st, err := getState(cs)
	if err != nil {
		return fwk.AsStatus(err)
	}
	if !st.hasLocal {
		return nil
	}
	name := nodeInfo.Node().Name
	if st.node != "" && name != st.node {
		filterWrongNode.Inc()
		return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, "node(s) were not "+st.node+": "+st.why)
	}
	if st.req.Empty() {
		return nil
	}
	if sf := pl.ledger.Fit(name, st.req, pl.strategy); sf != nil {
		observeShortfall(sf)
		// Preempting pods does not free PVC-backed volumes: unresolvable.
		return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, sf.Reason())
	}
	filterFit.Inc()
	return nil
}

// PostFilter runs when no node fits. It preempts nothing: it adds the
// closest near miss ("VG pool0 on node-3: need 30Gi, free 12Gi") to the
// pod's event and remembers the pod, so freed space retries it at once.
func (pl *OpenLocal) PostFilter(ctx context.Context, cs fwk.CycleState, pod *v1.Pod, statuses fwk.NodeToStatusReader) (*fwk.PostFilterResult, *fwk.Status) {
	st, err := getState(cs)
	if err != nil || st.req.Empty() {
		return nil, fwk.NewStatus(fwk.Unschedulable)
	}
	pl.waiting.add(pod)
	if released := pl.releaseInterrupted(ctx, pod, st); len(released) > 0 {
		return nil, fwk.NewStatus(fwk.Unschedulable, fmt.Sprintf("%s: released the partial allocation %s that an interrupted scheduling cycle left on node %s; retrying once it is gone.",
			Name, strings.Join(released, ", "), st.node))
	}
	nodes, lerr := pl.handle.SnapshotSharedLister().NodeInfos().List()
	if lerr != nil {
		return nil, fwk.NewStatus(fwk.Unschedulable)
	}
	var ours []string
	for _, ni := range nodes {
		name := ni.Node().Name
		if s := statuses.Get(name); s != nil && s.Plugin() == Name && (st.node == "" || st.node == name) {
			ours = append(ours, name)
		}
	}
	if sf := pl.ledger.Closest(ours, st.req, pl.strategy); sf != nil {
		return nil, fwk.NewStatus(fwk.Unschedulable, fmt.Sprintf("%s: closest fit: %s.", Name, sf.Detail()))
	}
	return nil, fwk.NewStatus(fwk.Unschedulable)
}

// PreScore skips scoring for pods with nothing to place, unless storage-free
// pods are to be kept off storage nodes.
func (pl *OpenLocal) PreScore(_ context.Context, cs fwk.CycleState, _ *v1.Pod, _ []fwk.NodeInfo) *fwk.Status {
	st, err := getState(cs)
	if err != nil {
		return fwk.AsStatus(err)
	}
	if !st.req.Empty() || (!st.hasLocal && pl.args.StorageFreePodAntiAffinityWeight > 0) {
		return nil
	}
	return fwk.NewStatus(fwk.Skip)
}

// Score rates the node for the pod: post-allocation VG utilisation (binpack
// high, spread low) and device fit; for storage-free pods, the
// anti-affinity weight on nodes without local storage.
func (pl *OpenLocal) Score(_ context.Context, cs fwk.CycleState, _ *v1.Pod, nodeInfo fwk.NodeInfo) (int64, *fwk.Status) {
	st, err := getState(cs)
	if err != nil {
		return 0, fwk.AsStatus(err)
	}
	name := nodeInfo.Node().Name
	if st.req.Empty() {
		if !st.hasLocal && !pl.ledger.HasStorage(name) {
			return int64(pl.args.StorageFreePodAntiAffinityWeight), nil
		}
		return 0, nil
	}
	score, _ := pl.ledger.Score(name, st.req, pl.strategy, pl.weights)
	return score, nil
}

// ScoreExtensions adds NormalizeScore.
func (pl *OpenLocal) ScoreExtensions() fwk.ScoreExtensions { return pl }

// NormalizeScore stretches storage pods' scores over [0, 100] (min-max),
// so the strategy decides between nodes however close they are; the
// anti-affinity scores are already absolute.
func (pl *OpenLocal) NormalizeScore(_ context.Context, cs fwk.CycleState, _ *v1.Pod, scores fwk.NodeScoreList) *fwk.Status {
	st, err := getState(cs)
	if err != nil {
		return fwk.AsStatus(err)
	}
	if st.req.Empty() || len(scores) == 0 {
		return nil
	}
	lo, hi := scores[0].Score, scores[0].Score
	for _, s := range scores {
		lo, hi = min(lo, s.Score), max(hi, s.Score)
	}
	if hi == lo {
		return nil
	}
	for i := range scores {
		scores[i].Score = (scores[i].Score - lo) * fwk.MaxNodeScore / (hi - lo)
	}
	return nil
}

// observeShortfall counts a Filter rejection by kind.
func observeShortfall(sf *ledger.Shortfall) {
	if c := filterShortfall[sf.Kind]; c != nil {
		c.Inc()
	}
}
