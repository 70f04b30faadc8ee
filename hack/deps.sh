#!/usr/bin/env bash
# Installs the Debian packages that make demo and make test use (lvm2 and the
# filesystem tools on loop devices, QEMU and busybox for the VM with
# device-mapper, fio for IO measurements, shellcheck for our scripts, prometheus
# and promtool for the alert rules and the dashboard queries).
# A no-op when they are all present.
set -euo pipefail
pkgs=(lvm2 xfsprogs e2fsprogs util-linux mount kmod thin-provisioning-tools fio
      qemu-system-x86 busybox-static cpio xz-utils curl ca-certificates shellcheck
      prometheus)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: apt-get install ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
