/*
Copyright The open-local authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
*/

// Package orphanvolumes collects LocalVolumes whose claim is gone: the
// scheduler's PreBind (or CreateVolume) wrote a LocalVolume for a PVC, and
// the PVC was deleted before a PV existed — while CreateVolume failed or ran,
// after a PreBind cut short, after a class refused past allocation. No PV
// means csi-provisioner never calls DeleteVolume, so nothing else would ever
// free the space the ledger counts for it. It runs in the leader-elected
// controller (agent --mode=controller).
package orphanvolumes

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/open-local/open-local/apis/storage/v1alpha1"
)

// Verdict is what the collector does with one LocalVolume.
type Verdict int

const (
	// Keep: the volume is not an orphan (or cannot be judged one).
	Keep Verdict = iota
	// Wait: an orphan, within its grace period; look again After.
	Wait
	// Collect: an orphan past its grace period: delete it.
	Collect
)

func (v Verdict) String() string {
	return [...]string{"Keep", "Wait", "Collect"}[v]
}

// Reasons an orphan is collected (the metric's reason label, Event text).
const (
	ReasonClaimDeleted  = "ClaimDeleted"  // no PVC of the ClaimRef's namespace/name
	ReasonClaimReplaced = "ClaimReplaced" // a PVC of that name with another UID
)

// Facts are what the collector knows of a LocalVolume's claim.
type Facts struct {
	// Claim is the PVC of the ClaimRef's namespace and name; nil when
	// there is none.
	Claim *corev1.PersistentVolumeClaim
	// PVNamed: a PV of our driver has the LocalVolume as volumeHandle.
	PVNamed bool
	// OrphanSince is when the collector first saw the volume orphaned.
	OrphanSince time.Time
}

// Decision is Decide's answer.
type Decision struct {
	Verdict Verdict
	// Reason: ReasonClaimDeleted or ReasonClaimReplaced for Wait and
	// Collect; why it is kept otherwise.
	Reason string
	// After: for Wait, when the grace period ends.
	After time.Duration
}

// Decide says whether lv is an orphan to collect at now: a LocalVolume with
// a ClaimRef (so not an inline volume nor a snapshot) whose claim UID no
// longer exists and that no PV names, for at least grace since both its
// creation and the first time it was seen orphaned — the later one, so a
// collector that just took over with fresh caches waits a full grace
// period again instead of acting on what it only now sees.
func Decide(lv *v1alpha1.LocalVolume, f Facts, now time.Time, grace time.Duration) Decision {
	ref := lv.Spec.ClaimRef
	switch {
	case lv.DeletionTimestamp != nil:
		return Decision{Verdict: Keep, Reason: "being deleted"}
	case ref == nil:
		return Decision{Verdict: Keep, Reason: "no claimRef"}
	case lv.Spec.PodRef != nil:
		return Decision{Verdict: Keep, Reason: "an inline volume (the inline collector's)"}
	case lv.Labels[v1alpha1.AdoptedLabel] == "true":
		// Its PV came first and decides (reclaim policy, DeleteVolume); a
		// PV of open-local's legacy driver name is not in our PV index.
		return Decision{Verdict: Keep, Reason: "adopted from open-local: its PV decides"}
	case ref.UID == "":
		// Without the UID a new claim of the same name cannot be told
		// from the one the volume was made for.
		return Decision{Verdict: Keep, Reason: "claimRef has no UID"}
	case f.PVNamed:
		return Decision{Verdict: Keep, Reason: "a PV names it"}
	case f.Claim != nil && f.Claim.UID == ref.UID:
		return Decision{Verdict: Keep, Reason: "its claim exists"}
	}
	reason := ReasonClaimDeleted
	if f.Claim != nil {
		reason = ReasonClaimReplaced
	}
	since := lv.CreationTimestamp.Time
	if f.OrphanSince.After(since) {
		since = f.OrphanSince
	}
	if left := since.Add(grace).Sub(now); left > 0 {
		return Decision{Verdict: Wait, Reason: reason, After: left}
	}
	return Decision{Verdict: Collect, Reason: reason}
}

// describe is the Event text of a collected volume.
func describe(lv *v1alpha1.LocalVolume, d Decision, f Facts, grace time.Duration) string {
	ref := lv.Spec.ClaimRef
	claim := fmt.Sprintf("PVC %s/%s (uid %s)", ref.Namespace, ref.Name, ref.UID)
	what := "no longer exists"
	if d.Reason == ReasonClaimReplaced {
		what = fmt.Sprintf("was replaced by a PVC of that name with uid %s", f.Claim.UID)
	}
	return fmt.Sprintf("%s %s and no PV names volume %s: deleted it after %s so node %s frees its space (%s)",
		claim, what, lv.Name, grace, lv.Spec.NodeName, lv.Spec.Size.String())
}
