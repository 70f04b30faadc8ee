#!/usr/bin/env bash
# open-local end to end on kind: loop-device disks on the host, a kind
# cluster (kind-config.yaml), our images built and loaded, the Helm chart
# installed, then: a PVC binds on a node with room, a pod using it runs,
# the volume expands online, the agent's metrics count it.
#
#   kind-test/e2e.sh              run everything, delete the cluster after
#   KEEP=1 kind-test/e2e.sh       keep the cluster (kind delete cluster --name open-local)
#   kind-test/e2e.sh values DEV1 DEV2   print the Helm values for two disks (no side effects)
#
# Needs: root (losetup), docker with an engine, kind, a kernel with
# device-mapper (dm-mod), and network access to registry.k8s.io for the
# sidecar images. kubectl and helm come from hack/tools.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORKDIR=${WORKDIR:-/tmp/open-local-kind}
CLUSTER=open-local
TAG=${TAG:-e2e}
DISK_SIZE=${DISK_SIZE:-10G}
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.37.2}
NS=kube-system

log() { echo "e2e: $*" >&2; }
die() { log "$*"; exit 1; }

# values prints the chart values for the kind cluster: our images as
# loaded, and per worker a VG made from its loop device.
values() {
  cat <<VALUES
images:
  pullPolicy: Never
  node: {tag: "$TAG"}
  controller: {tag: "$TAG"}
  scheduler: {tag: "$TAG"}
initConfig:
  device: ""
  nodesConfig:
    - selector:
        matchLabels: {open-local.io/e2e-disk: "1"}
      listConfig:
        vgs: {include: ["open-local-pool-[0-9]+"]}
      resourceToBeInited:
        vgs: [{name: open-local-pool-1, devices: ["$1"]}]
    - selector:
        matchLabels: {open-local.io/e2e-disk: "2"}
      listConfig:
        vgs: {include: ["open-local-pool-[0-9]+"]}
      resourceToBeInited:
        vgs: [{name: open-local-pool-2, devices: ["$2"]}]
agent:
  interval: 10s
VALUES
}

# lvm_conf prints a worker's lvm.conf: it sees only its own disk.
lvm_conf() {
  cat <<CONF
devices {
  global_filter = [ "a|^$1\$|", "r|.*|" ]
  obtain_device_list_from_udev = 0
}
CONF
}

if [ "${1:-}" = values ]; then
  values "$2" "$3"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "run as root (loop devices)"
for tool in docker kind losetup; do command -v "$tool" >/dev/null || die "$tool is not installed"; done
docker info >/dev/null 2>&1 || die "docker has no running engine"
[ -e /dev/mapper/control ] || die "the kernel has no device-mapper (modprobe dm-mod)"
TOOLS=$("$ROOT/hack/tools.sh")
export PATH=$TOOLS:$PATH

DEVS=()
cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    for d in "${DEVS[@]}"; do
      # The host's lvm may have activated the VG: deactivate it, then let go of the disk.
      vgchange -an "$(pvs --noheadings -o vg_name "$d" 2>/dev/null | tr -d ' ')" >/dev/null 2>&1 || true
      losetup -d "$d" || true
    done
    rm -rf "$WORKDIR"
  fi
}
trap cleanup EXIT

log "disks"
mkdir -p "$WORKDIR"
for i in 1 2; do
  mkdir -p "$WORKDIR/worker$i/lvm" "$WORKDIR/worker$i/kubelet"
  truncate -s "$DISK_SIZE" "$WORKDIR/disk$i.img"
  dev=$(losetup -f --show "$WORKDIR/disk$i.img")
  DEVS+=("$dev")
  lvm_conf "$dev" >"$WORKDIR/worker$i/lvm/lvm.conf"
done

log "cluster"
sed -e "s|__WORKDIR__|$WORKDIR|g" "$ROOT/kind-test/kind-config.yaml" >"$WORKDIR/kind-config.yaml"
kind create cluster --name "$CLUSTER" --config "$WORKDIR/kind-config.yaml" --image "$KIND_NODE_IMAGE" --wait 5m
export KUBECONFIG=$WORKDIR/kubeconfig
kind get kubeconfig --name "$CLUSTER" >"$KUBECONFIG"

log "images"
REGISTRY=open-local TAG=$TAG "$ROOT/deploy/images/build.sh"
for target in node controller scheduler; do
  kind load docker-image --name "$CLUSTER" "open-local/open-local-$target:$TAG"
done

log "install"
values "${DEVS[0]}" "${DEVS[1]}" >"$WORKDIR/values.yaml"
helm install open-local "$ROOT/deploy/helm/open-local" -n "$NS" -f "$WORKDIR/values.yaml" --wait --timeout 5m
kubectl -n "$NS" rollout status daemonset/open-local-agent --timeout=3m
for w in $(kubectl get nodes -l open-local.io/e2e-disk -o name | cut -d/ -f2); do
  log "waiting for $w's VG"
  for _ in $(seq 60); do
    kubectl get nls "$w" -o jsonpath='{.status.filteredStorageInfo.volumeGroups}' 2>/dev/null | grep -q open-local-pool && break
    sleep 5
  done
  kubectl get nls "$w" -o jsonpath='{.status.filteredStorageInfo.volumeGroups}' | grep -q open-local-pool ||
    die "node $w did not report its VG: $(kubectl get nls "$w" -o yaml)"
done

log "PVC + pod"
kubectl apply -f "$ROOT/kind-test/testdata/pvc-pod.yaml"
kubectl wait --for=condition=Ready pod/open-local-e2e --timeout=3m
[ "$(kubectl get pvc open-local-e2e -o jsonpath='{.status.phase}')" = Bound ] || die "PVC not Bound"
lv=$(kubectl get pvc open-local-e2e -o jsonpath='{.spec.volumeName}')
[ "$(kubectl get lvol "$lv" -o jsonpath='{.status.phase}')" = Ready ] || die "LocalVolume $lv not Ready"
kubectl exec open-local-e2e -- sh -c 'echo hello >/data/file && sync && cat /data/file' | grep -q hello

log "expansion"
kubectl patch pvc open-local-e2e -p '{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}'
for _ in $(seq 60); do
  [ "$(kubectl get pvc open-local-e2e -o jsonpath='{.status.capacity.storage}')" = 2Gi ] && break
  sleep 5
done
[ "$(kubectl get pvc open-local-e2e -o jsonpath='{.status.capacity.storage}')" = 2Gi ] || die "PVC did not grow to 2Gi"
size=$(kubectl exec open-local-e2e -- df -k /data | awk 'NR==2 {print $2}')
[ "$size" -gt 1800000 ] || die "filesystem is $size KiB after expansion"

log "metrics"
node=$(kubectl get pod open-local-e2e -o jsonpath='{.spec.nodeName}')
agent=$(kubectl -n "$NS" get pod -l app.kubernetes.io/component=agent --field-selector "spec.nodeName=$node" -o name | cut -d/ -f2)
kubectl get --raw "/api/v1/namespaces/$NS/pods/$agent:10265/proxy/metrics" | grep -q "^local_local_pv{.*pv_name=\"$lv\"" ||
  die "the agent's metrics do not show $lv"

log "cleanup of the volume"
kubectl delete -f "$ROOT/kind-test/testdata/pvc-pod.yaml" --wait
for _ in $(seq 60); do kubectl get lvol "$lv" >/dev/null 2>&1 || break; sleep 2; done
! kubectl get lvol "$lv" >/dev/null 2>&1 || die "LocalVolume $lv was not removed"
log "PASS"
