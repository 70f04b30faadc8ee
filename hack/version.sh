#!/usr/bin/env bash
# The one source of the versions stamped into our binaries, used by `make build`
# and the image build (deploy/images/build.sh) alike:
#   hack/version.sh ldflags ours       -ldflags for agent and csi (our version)
#   hack/version.sh ldflags scheduler  -ldflags for the scheduler (Kubernetes' version, see below)
#   hack/version.sh ours|scheduler     the bare version
# component-base's version package carries it (--version, metrics, CSI
# GetPluginInfo); it must start with vMAJOR.MINOR.PATCH. The scheduler is
# kube-scheduler with our plugin: it carries the Kubernetes version it is built
# from, because kube-scheduler derives its feature gates from its own version.
# VERSION and GIT_DESC may be set by the caller (the image build has no .git).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
desc=${GIT_DESC:-$(git describe --always --dirty 2>/dev/null || echo unknown)}
commit=${GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
kube=$(sed -n 's/^\(require \)\{0,1\}[[:space:]]*k8s.io\/kubernetes \(v[0-9.]*\)$/\2/p' go.mod)  # a one-line require or inside a require block
case "${1:-}/${2:-}" in
  ours/) echo "${VERSION:-v0.1.0-$desc}" ;;
  scheduler/) echo "$kube-open-local.$desc" ;;
  ldflags/ours|ldflags/scheduler)
    v=$("$0" "$2")
    major=$(echo "${v#v}" | cut -d. -f1) minor=$(echo "$v" | cut -d. -f2)
    pkg=k8s.io/component-base/version
    echo "-X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitCommit=$commit" ;;
  *) echo "usage: $0 [ldflags] ours|scheduler" >&2; exit 2 ;;
esac
