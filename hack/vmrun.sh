#!/bin/bash
# vmrun.sh - run a command inside a throw-away QEMU VM whose kernel has real
# device-mapper (dm-mod, dm-snapshot, dm-thin-pool), xfs, loop and blk-throttle
# (cgroup v1 blkio.throttle.* and cgroup v2 io.max).
#  * guest root = the HOST root filesystem over 9p, read-only, under a tmpfs
#    overlay (guest writes are discarded); so every host tool (lvm2, e2fsprogs,
#    xfsprogs, thin-provisioning-tools, fio, go, ...) is available in the guest.
#  * /tmp, /run are fresh tmpfs in the guest: share what you need with -s.
#  * blank sparse virtio disks appear as /dev/vda, /dev/vdb, ...
#  * no udevd: DM_DISABLE_UDEV=1 makes libdevmapper/LVM create /dev/mapper/*
#    and /dev/VG/LV itself (run systemd-udevd yourself via VM_PRE if needed).
#
#   usage: vmrun.sh [-s HOSTDIR]... [-d SIZE]... [-w WORKDIR] -- COMMAND [ARGS...]
#     -s DIR    share DIR read-write at the same path in the guest (repeatable)
#     -d SIZE   add a blank sparse virtio disk (e.g. 4G); repeatable; default 4G + 2G
#     -w DIR    working directory of COMMAND in the guest (default: $PWD)
#   env: VM_CACHE   kernel/initramfs cache dir (default /var/cache/open-local/vm)
#        VM_MEM     guest MiB (default 2048)      VM_SMP  vCPUs (default nproc)
#        VM_ACCEL   kvm|tcg|auto (default auto)   VM_TIMEOUT seconds (default 3000)
#        VM_CONSOLE kernel console log (default $VM_CACHE/console.log)
#        VM_ENV     "NAME=VALUE ..." exported in the guest
#        VM_PRE     shell snippet run in the guest right before COMMAND
#        VM_APPEND  extra kernel command line (e.g. loglevel=7)
#        VM_NET=1   user-mode network: the guest is 10.0.2.15 and reaches the
#                   host's 127.0.0.1 services at 10.0.2.2
#        VM_HOSTFWD "ADDR:PORT ..." (with VM_NET=1): host ADDR:PORT (TCP)
#                   forwards to the guest's PORT; nothing else reaches in
#   One VM runs at a time per VM_CACHE (a second waits for the first): two
#   emulated guests on a small machine only slow each other to a crawl.
#   COMMAND's stdout+stderr are streamed to stdout. Exit status = COMMAND's;
#   124 = timeout; 125 = VM died without a result (see $VM_CONSOLE).
set -euo pipefail

SHARES=(); DISKS=(); WORKDIR=$PWD
while getopts "s:d:w:" o; do
  case $o in s) SHARES+=("$(realpath "$OPTARG")");; d) DISKS+=("$OPTARG");; w) WORKDIR=$OPTARG;; *) exit 2;; esac
done
shift $((OPTIND-1)); [ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: $0 [-s dir]... [-d size]... [-w dir] -- cmd..." >&2; exit 2; }
[ ${#DISKS[@]} -gt 0 ] || DISKS=(4G 2G)

VM_CACHE=${VM_CACHE:-${OPEN_LOCAL_CACHE:-/var/cache/open-local}/vm}
VM_MEM=${VM_MEM:-2048}; VM_SMP=${VM_SMP:-$(nproc)}; VM_TIMEOUT=${VM_TIMEOUT:-3000}
VM_CONSOLE=${VM_CONSOLE:-$VM_CACHE/console.log}
mkdir -p "$VM_CACHE"

# ---------------------------------------------------------------- 1. host packages
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
{ [ -x /bin/busybox ] && /bin/busybox --list | grep -qx switch_root; } || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
command -v lvm >/dev/null || need+=(lvm2)                      # guest tools come from the host root
command -v thin_check >/dev/null || need+=(thin-provisioning-tools)
command -v mkfs.xfs >/dev/null || need+=(xfsprogs)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
  echo "vmrun: apt-get install ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

# Serialise cache preparation (steps 2 and 3): two first runs at once (e.g. two
# `go test` packages booting VMs) would otherwise unpack into the same directory.
# The lock is released before the VM boots, so VMs themselves still run in parallel.
exec 9>"$VM_CACHE/.lock"; flock 9

# ---------------------------------------------------------------- 2. kernel: Debian generic flavour (has 9p; the -cloud flavour does not)
if [ ! -f "$VM_CACHE/kver" ]; then
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
  (cd "$VM_CACHE" && rm -f linux-image-*.deb && apt-get download "$pkg" >&2)
  rm -rf "$VM_CACHE/k" && dpkg-deb -x "$VM_CACHE"/linux-image-*.deb "$VM_CACHE/k"
  kver=$(ls "$VM_CACHE/k/lib/modules")
  depmod -b "$VM_CACHE/k" "$kver"
  # uncompressed ELF vmlinux for PVH direct boot (skips SeaBIOS + in-guest decompression: ~4-6 s faster under TCG)
  off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$VM_CACHE/k/boot/vmlinuz-$kver" | head -1 | cut -d: -f1 || true)
  if [ -n "$off" ]; then tail -c +$((off+1)) "$VM_CACHE/k/boot/vmlinuz-$kver" | xz -dcq > "$VM_CACHE/vmlinux" 2>/dev/null || true; fi
  [ "$(head -c 4 "$VM_CACHE/vmlinux" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ] || rm -f "$VM_CACHE/vmlinux"
  rm -f "$VM_CACHE"/linux-image-*.deb "$VM_CACHE"/initrd*.gz
  echo "$kver" > "$VM_CACHE/kver"
fi
KVER=$(cat "$VM_CACHE/kver"); KDIR=$VM_CACHE/k
VMLINUZ=$KDIR/boot/vmlinuz-$KVER; [ -f "$VM_CACHE/vmlinux" ] && VMLINUZ=$VM_CACHE/vmlinux
VMLINUZ=${VM_KERNEL:-$VMLINUZ}

# ---------------------------------------------------------------- 3. initramfs: busybox + virtio/9p/overlay modules + guest init
# Keyed by this script's content: a changed guest init must not boot a stale initramfs.
INITRD=$VM_CACHE/initrd-$(sha256sum "$0" | cut -c1-12).gz
if [ ! -f "$INITRD" ]; then
  W=$(mktemp -d)
  mkdir -p $W/{bin,dev,proc,sys,mnt/host,mnt/upper,newroot,lib/modules}
  cp /bin/busybox $W/bin/
  for a in sh mount umount mkdir insmod switch_root cat sed poweroff cp chmod; do ln -s busybox $W/bin/$a; done
  for f in $(modprobe -d "$KDIR" -S "$KVER" -a --show-depends virtio_pci virtio_blk 9pnet_virtio 9p overlay \
             | awk '$1=="insmod"{print $2}' | awk '!seen[$0]++'); do
    cp "$f" $W/lib/modules/; basename "$f" >> $W/modlist
  done
  cat > $W/init <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modlist); do insmod /lib/modules/$m || echo "vm: insmod $m failed"; done
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
MODSRC=$(arg vm.moddir); KVER=$(cat /proc/sys/kernel/osrelease)
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /mnt/host || { echo "vm: 9p root failed"; poweroff -f; }
mount -t tmpfs -o size=50% tmpfs /mnt/upper; mkdir -p /mnt/upper/u /mnt/upper/w
mount -t overlay -o lowerdir=/mnt/host,upperdir=/mnt/upper/u,workdir=/mnt/upper/w overlay /newroot || { echo "vm: overlay failed"; poweroff -f; }
mkdir -p /newroot/lib/modules/$KVER && mount --bind /mnt/host$MODSRC /newroot/lib/modules/$KVER
cp /guest-init /newroot/.vm-init && chmod +x /newroot/.vm-init
echo "vmrun: initramfs done, switch_root" > /dev/kmsg
umount /proc /sys /dev
exec switch_root /newroot /.vm-init
INIT
  cat > $W/guest-init <<'GINIT'
#!/bin/bash
# PID 1 of the guest, running on the overlay of the host root.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/go/bin HOME=/root
export DM_DISABLE_UDEV=1   # no udevd: libdevmapper/LVM create /dev/mapper/* and /dev/VG/LV themselves
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /tmp; mount -t cgroup2 cgroup2 /sys/fs/cgroup
ln -sf /proc/self/fd /dev/fd; ln -sf /proc/self/fd/0 /dev/stdin; ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr
mark() { echo "vmrun: $*" > /dev/kmsg; }; mark "guest init: mounts done"
hostname vmrun; ip link set lo up 2>/dev/null
if grep -q 'vm.net=1' /proc/cmdline; then
  modprobe virtio_net 2>/dev/null; nic=$(ls /sys/class/net | grep -v '^lo$' | head -1)
  ip link set "$nic" up && ip addr add 10.0.2.15/24 dev "$nic" && ip route add default via 10.0.2.2
  echo "nameserver 10.0.2.3" > /etc/resolv.conf
fi
modprobe -a dm-mod dm-snapshot dm-thin-pool xfs loop 2>/dev/null; mark "modules loaded"
mkdir -p /vmctl; mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none vmctl /vmctl
for i in $(seq 0 31); do
  p=$(sed -n "s/.*vm.share$i=\([^ ]*\).*/\1/p" /proc/cmdline); [ -n "$p" ] || break
  mkdir -p "$p"; mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none share$i "$p"
done
set -a; . /vmctl/env; set +a
cd "$(cat /vmctl/workdir)" || cd /
mark "starting command"
bash /vmctl/cmd >> /vmctl/out 2>&1 < /dev/null
echo $? > /vmctl/rc; mark "command finished rc=$(cat /vmctl/rc)"
sync; umount /vmctl
/bin/busybox poweroff -f; echo o > /proc/sysrq-trigger
GINIT
  chmod +x $W/init $W/guest-init
  # write then rename: an interrupted run must not leave a truncated initrd.gz that later runs trust
  (cd $W && find . | cpio -o -H newc --quiet | gzip -1) > "$INITRD.tmp"
  mv "$INITRD.tmp" "$INITRD"
  rm -rf "$W"
fi
flock -u 9; exec 9>&-

# ---------------------------------------------------------------- 4. per-run state: command, disks, shares
RUN=$(mktemp -d "$VM_CACHE/run.XXXXXX")
QPID=; TPID=
cleanup() { [ -n "$QPID" ] && kill "$QPID" 2>/dev/null; [ -n "$TPID" ] && kill "$TPID" 2>/dev/null; rm -rf "$RUN"; }
trap cleanup EXIT; trap 'exit 130' INT TERM
{ printf '%s\n' "${VM_PRE:-}"; printf '%q ' "$@"; echo; } > "$RUN/cmd"
echo "$WORKDIR" > "$RUN/workdir"; : > "$RUN/env"; : > "$RUN/out"
for kv in ${VM_ENV:-}; do printf '%s\n' "$kv" >> "$RUN/env"; done
ARGS=(); i=0
for sz in "${DISKS[@]}"; do
  truncate -s "$sz" "$RUN/disk$i.img"
  ARGS+=(-drive "file=$RUN/disk$i.img,if=virtio,format=raw,cache=unsafe,aio=threads"); i=$((i+1))
done
APPEND="console=ttyS0 quiet loglevel=3 panic=-1 vm.moddir=$KDIR/lib/modules/$KVER ${VM_APPEND:-}"
i=0
for d in "${SHARES[@]}"; do
  ARGS+=(-virtfs "local,path=$d,mount_tag=share$i,security_model=none,multidevs=remap"); APPEND+=" vm.share$i=$d"; i=$((i+1))
done

if [ "${VM_NET:-0}" = 1 ]; then
  NETDEV=user,id=n0
  for fwd in ${VM_HOSTFWD:-}; do NETDEV+=",hostfwd=tcp:$fwd-:${fwd##*:}"; done
  ARGS+=(-netdev "$NETDEV" -device virtio-net-pci,netdev=n0); APPEND+=" vm.net=1"
fi

ACCEL=${VM_ACCEL:-auto}
if [ "$ACCEL" = auto ]; then
  # /dev/kvm backed by PVM (kvm_pvm module) cannot run a stock
  # kernel (bzImage: stuck in the decompressor for 8+ min; PVH vmlinux: "KVM internal error.
  # Suberror: 1 emulation failure" on lock cmpxchg16b). Use TCG there.
  if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]; then ACCEL=kvm; else ACCEL=tcg; fi
fi
case $ACCEL in kvm) ACC=(-accel kvm -cpu host);; *) ACC=(-accel tcg,thread=multi,tb-size=512 -cpu max);; esac

# ---------------------------------------------------------------- 5. boot, stream output, collect exit status
# One VM at a time (the lock is held until this script exits).
exec 8>"$VM_CACHE/.run-lock"
if ! flock -n 8; then echo "vmrun: another VM runs (lock $VM_CACHE/.run-lock): waiting for it" >&2; flock 8; fi
timeout -k 10 "$VM_TIMEOUT" qemu-system-x86_64 "${ACC[@]}" -m "$VM_MEM" -smp "$VM_SMP" \
  -nodefaults -display none -no-reboot -monitor none -serial "file:$VM_CONSOLE" \
  -kernel "$VMLINUZ" -initrd "$INITRD" -append "$APPEND" \
  -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
  -virtfs "local,path=$RUN,mount_tag=vmctl,security_model=none,multidevs=remap" \
  "${ARGS[@]}" < /dev/null &
QPID=$!
tail -n +1 -f --pid=$QPID "$RUN/out" &      # live output; tail exits once qemu is gone
TPID=$!
set +e; wait $QPID; qrc=$?; set -e
QPID=; wait $TPID 2>/dev/null; TPID=
[ $qrc -eq 124 ] && { echo "vmrun: timeout after ${VM_TIMEOUT}s" >&2; exit 124; }
if [ -s "$RUN/rc" ]; then exit "$(cat "$RUN/rc")"; fi
echo "vmrun: VM exited (qemu rc=$qrc) without a result; console log: $VM_CONSOLE" >&2
tail -n 30 "$VM_CONSOLE" >&2
exit 125
