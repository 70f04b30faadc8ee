#!/usr/bin/env bash
# make demo / make demo-down: the open-local article's eight steps on this
# machine (test/demo does the work; bin/demo is its command).
#   hack/demo.sh up     # prints the step-by-step report; non-zero exit if any step failed
#   hack/demo.sh down   # removes processes, mounts, loop devices, cgroups, the VG and the dir
# DEMO_DIR (default /tmp/open-local/demo) holds everything the demo makes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEMO_DIR=${DEMO_DIR:-/tmp/open-local/demo}
cd "$ROOT"
case "${1:-}" in
  up)
    OPEN_LOCAL_TOOLS_DIR=$("$ROOT/hack/tools.sh")
    export OPEN_LOCAL_TOOLS_DIR
    exec "$ROOT/bin/demo" up --dir "$DEMO_DIR" ;;
  down)
    if [ -x "$ROOT/bin/demo" ]; then exec "$ROOT/bin/demo" down --dir "$DEMO_DIR"; fi
    exec go run ./hack/demo down --dir "$DEMO_DIR" ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
