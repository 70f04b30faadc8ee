#!/usr/bin/env bash
# make demo / make demo-down: the article's walkthrough on the local cluster.
#
# What exists today: the local control plane (etcd, kube-apiserver,
# kube-controller-manager, kwok) with our CRDs, and step 0 below. The
# walkthrough's eight steps need the agent, scheduler and CSI driver; each step
# is added here as it lands, and the script exits non-zero while any is missing,
# so it never reports success it did not earn.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEMO_DIR=${DEMO_DIR:-/tmp/open-local/demo}
BIN=$ROOT/bin
KUBECONFIG=$DEMO_DIR/cluster/kubeconfig
export KUBECONFIG
t0=$(date +%s.%N)
step() { printf '\n== %s\n' "$*"; }
ok() { printf '   PASS %s (%.1fs)\n' "$*" "$(awk "BEGIN{print $(date +%s.%N)-$t0}")"; }
fail() { printf '   FAIL %s\n' "$*"; exit 1; }

up() {
  mkdir -p "$DEMO_DIR"
  TOOLS=$("$ROOT/hack/tools.sh")
  KUBECTL=$TOOLS/kubectl
  step "0. local control plane from source (etcd, kube-apiserver, kube-controller-manager, kwok) with our CRDs"
  "$BIN/localcluster" down --dir "$DEMO_DIR/cluster"
  "$BIN/localcluster" up --dir "$DEMO_DIR/cluster" >/dev/null
  "$KUBECTL" get crd nodelocalstorages.csi.aliyun.com nodelocalstorageinitconfigs.csi.aliyun.com localvolumes.csi.aliyun.com \
    >/dev/null || fail "CRDs not installed"
  ok "control plane up, CRDs established; kubeconfig: $KUBECONFIG"

  missing=(
    "1. initial configuration (NLSC → agent turns a loop device into open-local-pool-0): needs the agent (issue 3)"
    "2. dynamic provisioning: needs the scheduler (issue 4) and CSI driver (issue 5)"
    "3. expansion: needs the CSI driver (issue 5)"
    "4. snapshot and restore: issue 6"
    "5. raw block: issue 5"
    "6. IO throttling: issue 6"
    "7. ephemeral inline volume: issue 6"
    "8. monitoring: issue 7"
  )
  step "not implemented yet"
  for m in "${missing[@]}"; do echo "   TODO $m"; done
  echo
  echo "The cluster stays up for you: export KUBECONFIG=$KUBECONFIG; $KUBECTL get nlsc,nls,lvol"
  echo "make demo-down removes everything."
  exit 1
}

down() {
  if [ -x "$BIN/localcluster" ]; then "$BIN/localcluster" down --dir "$DEMO_DIR/cluster"; fi
  if [ -x "$BIN/loopvg" ] && [ -d "$DEMO_DIR/node" ]; then "$BIN/loopvg" down --dir "$DEMO_DIR/node"; fi
  rm -rf "$DEMO_DIR"
  echo "demo removed"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
