#!/usr/bin/env bash
# Builds the third-party binaries the local cluster, tests and demo run, all
# from Go modules pinned by this repo (no downloads from elsewhere, no images):
#   main module (go.mod tool directives): etcd, kube-apiserver,
#     kube-controller-manager, kubectl, kwok, kubelet (the demo's real node)
#   nested modules (hack/tools/*): csi-provisioner, csi-resizer,
#     csi-snapshotter, snapshot-controller, helm
# Output goes to a cache directory keyed by everything that determines the
# result, so a warm run is instant. Prints that directory on stdout.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CACHE=${OPEN_LOCAL_CACHE:-/var/cache/open-local}
# etcd last: it is built on its own below.
MAIN_TOOLS=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
  k8s.io/kubernetes/cmd/kubectl sigs.k8s.io/kwok/cmd/kwok k8s.io/kubernetes/cmd/kubelet go.etcd.io/etcd/server/v3)
# Keyed by the exact module versions the tools are built from (not by go.mod as
# a whole), so adding a dependency of our own does not force a rebuild.
KEY=$( { go version; cat hack/tools.sh hack/tools/*/go.mod hack/tools/*/go.sum
  go list -deps -f '{{with .Module}}{{.Path}}@{{.Version}}{{with .Replace}}=>{{.Path}}@{{.Version}}{{end}}{{end}}' "${MAIN_TOOLS[@]}" | sort -u
} | sha256sum | cut -c1-16)
DIR=$CACHE/tools/$KEY
[ -f "$DIR/.complete" ] && { echo "$DIR"; exit 0; }

mkdir -p "$CACHE/tools"
exec 9>"$CACHE/tools/.lock"
flock 9   # two test packages may ask at once: one builds, the other waits
[ -f "$DIR/.complete" ] && { echo "$DIR"; exit 0; }

TMP=$DIR.tmp
rm -rf "$TMP" && mkdir -p "$TMP"
log() { echo "tools: $*" >&2; }
t0=$(date +%s)
KVER=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
KMINOR=$(echo "$KVER" | cut -d. -f2)
VPKG=k8s.io/component-base/version
LDFLAGS="-s -w -X $VPKG.gitVersion=$KVER -X $VPKG.gitMajor=1 -X $VPKG.gitMinor=$KMINOR"
log "building control plane $KVER (cold: ~10 min on 2 cores)"
go build -ldflags "$LDFLAGS" -o "$TMP/" "${MAIN_TOOLS[@]:0:${#MAIN_TOOLS[@]}-1}" >&2
# etcd's root package is the server; `go install etcd@…` fails on replace directives.
go build -ldflags "-s -w" -o "$TMP/etcd" go.etcd.io/etcd/server/v3 >&2

nested() { # module-dir output-name package
  log "building $2"
  (cd "hack/tools/$1" && go build -ldflags "-s -w" -o "$TMP/$2" "$3") >&2
}
nested external-provisioner csi-provisioner github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner
nested external-resizer csi-resizer github.com/kubernetes-csi/external-resizer/v2/cmd/csi-resizer
nested external-snapshotter csi-snapshotter github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter
nested external-snapshotter snapshot-controller github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller
nested helm helm helm.sh/helm/v3/cmd/helm
touch "$TMP/.complete"
rm -rf "$DIR" && mv "$TMP" "$DIR"
# Keep the cache from growing without bound: drop tool sets other than the newest three.
ls -1dt "$CACHE"/tools/*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf
log "done in $(( $(date +%s) - t0 ))s: $DIR"
echo "$DIR"
