// Package ledger is the account of node-local storage: the scheduler keeps
// one for all nodes, the CSI controller builds a one-node ledger per call.
// It imports only apimachinery and the storage API, so both can share it.
//
// Capacity of a VG is its allocatable in the node's NodeLocalStorage status
// (only VGs listed in filteredStorageInfo count); devices listed there are
// whole, exclusive units. Usage is what LocalVolume objects say (volumes and
// snapshots, including those being deleted, until they are gone) plus the
// in-flight reservations of pods between Reserve and the moment their
// LocalVolumes are seen. LocalVolumes are the source of truth, so a
// restarted scheduler rebuilds the same ledger from the API alone.
//
// One mutex guards everything: informer events, Filter/Score reads and
// Reserve/Unreserve writes see one consistent state, and Reserve re-checks
// and holds capacity in the same critical section.
package ledger
