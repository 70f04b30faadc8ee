#!/usr/bin/env bash
# Builds the stock kube-scheduler from the k8s.io/kubernetes module pinned in
# go.mod, for `make bench` to compare ours against. Same version ldflags as
# the control plane in hack/tools.sh (the scheduler derives its feature gates
# from its version). Kept apart from hack/tools.sh so that script's cache key
# does not change. Cached under $OPEN_LOCAL_CACHE/stock-scheduler/<key>, keyed
# by the Go version and the exact module versions it is built from. Prints the
# binary's path on stdout.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CACHE=${OPEN_LOCAL_CACHE:-/var/cache/open-local}
PKG=k8s.io/kubernetes/cmd/kube-scheduler
KEY=$( { go version; cat hack/stock-scheduler.sh
  go list -deps -f '{{with .Module}}{{.Path}}@{{.Version}}{{with .Replace}}=>{{.Path}}@{{.Version}}{{end}}{{end}}' "$PKG" | sort -u
} | sha256sum | cut -c1-16)
DIR=$CACHE/stock-scheduler/$KEY
[ -f "$DIR/.complete" ] && { echo "$DIR/kube-scheduler"; exit 0; }

mkdir -p "$CACHE/stock-scheduler"
exec 9>"$CACHE/stock-scheduler/.lock"
flock 9   # two callers at once: one builds, the other waits
[ -f "$DIR/.complete" ] && { echo "$DIR/kube-scheduler"; exit 0; }

KVER=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
KMINOR=$(echo "$KVER" | cut -d. -f2)
VPKG=k8s.io/component-base/version
LDFLAGS="-s -w -X $VPKG.gitVersion=$KVER -X $VPKG.gitMajor=1 -X $VPKG.gitMinor=$KMINOR"
TMP=$DIR.tmp
rm -rf "$TMP" && mkdir -p "$TMP"
t0=$(date +%s)
echo "stock-scheduler: building kube-scheduler $KVER" >&2
go build -ldflags "$LDFLAGS" -o "$TMP/kube-scheduler" "$PKG" >&2
touch "$TMP/.complete"
rm -rf "$DIR" && mv "$TMP" "$DIR"
# Keep the newest three builds only.
ls -1dt "$CACHE"/stock-scheduler/*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf
echo "stock-scheduler: done in $(( $(date +%s) - t0 ))s: $DIR" >&2
echo "$DIR/kube-scheduler"
