#!/usr/bin/env bash
# Regenerates everything derived from apis/: deepcopy, CRD YAML (into the Helm
# chart, the one copy every test and install uses), and the typed clientset,
# listers and informers. Tools come from go.mod's tool directives, so the
# versions are pinned by the repo. `make verify-generate` (and a test) fail when
# the checked-in output is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
MOD=github.com/open-local/open-local
API_PKG=$MOD/apis/storage/v1alpha1
CRD_DIR=deploy/helm/open-local/crds
HDR=hack/boilerplate.go.txt
OUT=${OUT:-.}   # verify mode regenerates into a scratch copy of the repo

cd "$OUT"
go tool controller-gen object:headerFile="$HDR" paths=./apis/... paths=./config/...
rm -rf "$CRD_DIR" && mkdir -p "$CRD_DIR"
go tool controller-gen crd:allowDangerousTypes=false paths=./apis/... output:crd:artifacts:config="$CRD_DIR"
# The VolumeSnapshot CRDs the chart ships (as open-local's does), at the version
# of the snapshot-controller we build (hack/tools/external-snapshotter).
SNAP_CLIENT=$(cd hack/tools/external-snapshotter && go list -m -f '{{.Dir}}' github.com/kubernetes-csi/external-snapshotter/client/v8)
cp "$SNAP_CLIENT"/config/crd/snapshot.storage.k8s.io_*.yaml "$CRD_DIR"/
chmod 644 "$CRD_DIR"/snapshot.storage.k8s.io_*.yaml

rm -rf apis/client
go tool client-gen --go-header-file "$HDR" --clientset-name versioned \
  --input-base "" --input "$API_PKG" \
  --output-dir apis/client/clientset --output-pkg "$MOD/apis/client/clientset"
go tool lister-gen --go-header-file "$HDR" \
  --output-dir apis/client/listers --output-pkg "$MOD/apis/client/listers" "$API_PKG"
go tool informer-gen --go-header-file "$HDR" \
  --versioned-clientset-package "$MOD/apis/client/clientset/versioned" \
  --listers-package "$MOD/apis/client/listers" \
  --output-dir apis/client/informers --output-pkg "$MOD/apis/client/informers" "$API_PKG"
