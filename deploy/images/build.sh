#!/usr/bin/env bash
# Builds open-local's images (node, controller, scheduler) from
# deploy/images/Dockerfile with docker; `make images` runs it.
#   REGISTRY (default open-local), TAG (default: the chart's appVersion),
#   PUSH=1 pushes them, GOPROXY is passed to the build.
# Needs a docker with a running engine (BuildKit): on a machine without one
# it says so and fails instead of pretending.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
REGISTRY=${REGISTRY:-open-local}
TAG=${TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' deploy/helm/open-local/Chart.yaml)}

if ! command -v docker >/dev/null 2>&1; then
  echo "images: docker is not installed; build the images on a machine with Docker (BuildKit)." >&2
  exit 2
fi
if ! docker info >/dev/null 2>&1; then
  echo "images: docker has no running engine here ('docker info' fails); build the images on a machine with a Docker engine." >&2
  exit 2
fi

for target in node controller scheduler; do
  image="$REGISTRY/open-local-$target:$TAG"
  echo "images: building $image"
  DOCKER_BUILDKIT=1 docker build -f deploy/images/Dockerfile --target "$target" \
    --build-arg VERSION="$(hack/version.sh ours)" \
    --build-arg GIT_DESC="$(git describe --always --dirty 2>/dev/null || echo unknown)" \
    --build-arg GIT_COMMIT="$(git rev-parse HEAD 2>/dev/null || echo unknown)" ${GOPROXY:+--build-arg GOPROXY="$GOPROXY"} -t "$image" .
  if [ "${PUSH:-0}" = 1 ]; then
    docker push "$image"
  fi
  echo "$image"
done
