#!/usr/bin/env bash
# Build a Debian 12 (bookworm) cloud image for the pgha libvirt VMs.
#
# Output: ${PGHA_IMAGE_DIR:-$HOME/.cache/pgha/images}/debian12-cloud.qcow2
#
# Layout (like Debian's own genericcloud images):
#   - MBR partition table, one bootable ext4 partition labelled "rootfs"
#     starting at 1 MiB; GRUB (i386-pc) in the MBR gap, so libvirt boots it
#     from disk like any cloud image (no direct kernel boot);
#   - kernel and GRUB console on ttyS0 (115200n8) as well as tty0;
#   - cloud-init with the NoCloud datasource (seed ISO labelled "cidata"),
#     network rendered by cloud-init to ifupdown (/etc/network/interfaces.d);
#   - the root partition and filesystem grow on first boot to the size of
#     the disk (cloud-init growpart + resizefs), so an overlay volume that is
#     larger than this image gets all of its space;
#   - empty /etc/machine-id and no SSH host keys: every clone gets its own.
#   - nothing PostgreSQL-specific: the product installs that.
#
# The image is rebuilt only when it is missing or when this script changed
# (a stamp file next to the image holds the sha256 of this script + settings).
#
# Environment:
#   PGHA_IMAGE_DIR       output directory (default $HOME/.cache/pgha/images)
#   PGHA_IMAGE_SIZE      virtual disk size (default 3G)
#   PGHA_DEBIAN_MIRROR   Debian mirror (default: the one the host's apt uses)
#   PGHA_DEBIAN_SECURITY Debian security mirror (default: from the host's apt)
#   PGHA_IMAGE_FORCE=1   rebuild even if the stamp matches
#
# Needs root (debootstrap, loop devices, chroot). Installs its own tools
# with apt-get when they are missing.
set -euo pipefail

SUITE=bookworm
IMAGE_DIR=${PGHA_IMAGE_DIR:-$HOME/.cache/pgha/images}
IMAGE_NAME=debian12-cloud.qcow2
IMAGE=$IMAGE_DIR/$IMAGE_NAME
STAMP=$IMAGE.stamp
IMAGE_SIZE=${PGHA_IMAGE_SIZE:-3G}

# Packages inside the image. python3-cffi-backend: debootstrap's resolver
# fails on bookworm's cloud-init dependency chain without it.
GUEST_PACKAGES=(
  systemd-sysv udev dbus kmod
  linux-image-cloud-amd64 grub-pc
  cloud-init cloud-guest-utils
  ifupdown isc-dhcp-client iproute2 netbase
  openssh-server sudo qemu-guest-agent
  python3 python3-cffi-backend python3-venv
  ca-certificates gnupg curl procps less
)

log() { printf '[build-debian-image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

script_path() {
  local src=${BASH_SOURCE[0]}
  readlink -f -- "$src"
}

stamp_value() {
  {
    sha256sum -- "$(script_path)" | cut -d' ' -f1
    printf 'size=%s\n' "$IMAGE_SIZE"
  } | sha256sum | cut -d' ' -f1
}

# First URI of a "deb" source on the host whose suites include $1.
host_apt_uri() {
  local suite=$1 f uri=""
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    uri=$(awk -v s="$suite" '
      $1 == "deb" {
        u = ""; hit = 0
        for (i = 2; i <= NF; i++) {
          if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; continue }
          if (u == "" && $i ~ /^(https?|file):/) { u = $i; continue }
          if (u != "" && $i == s) hit = 1
        }
        if (hit) { print u; exit }
      }' "$f")
    [[ -n $uri ]] && { printf '%s\n' "${uri%/}"; return 0; }
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    uri=$(awk -v s="$suite" '
      BEGIN { RS = ""; FS = "\n" }
      {
        types = ""; uris = ""; suites = ""; enabled = "yes"
        for (i = 1; i <= NF; i++) {
          line = $i
          if (line ~ /^#/) continue
          if (line ~ /^Types:/)   { sub(/^Types:[ \t]*/, "", line); types = line }
          if (line ~ /^URIs:/)    { sub(/^URIs:[ \t]*/, "", line); uris = line }
          if (line ~ /^Suites:/)  { sub(/^Suites:[ \t]*/, "", line); suites = line }
          if (line ~ /^Enabled:/) { sub(/^Enabled:[ \t]*/, "", line); enabled = line }
        }
        if (enabled == "no" || types !~ /(^| )deb( |$)/) next
        n = split(suites, a, /[ \t]+/)
        for (j = 1; j <= n; j++) if (a[j] == s) { split(uris, u, /[ \t]+/); print u[1]; exit }
      }' "$f")
    [[ -n $uri ]] && { printf '%s\n' "${uri%/}"; return 0; }
  done
  return 1
}

ensure_tools() {
  local -a missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v qemu-img >/dev/null || missing+=(qemu-utils)
  command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
  command -v sfdisk >/dev/null || missing+=(fdisk)
  command -v partx >/dev/null || missing+=(util-linux)
  command -v losetup >/dev/null || missing+=(mount)
  command -v fstrim >/dev/null || missing+=(util-linux)
  command -v gpgv >/dev/null || missing+=(gpgv)
  [[ -r /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)
  if ((${#missing[@]})); then
    log "installing host tools: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

# ---------------------------------------------------------------- cleanup
WORK=""
LOOP=""
MNT=""
cleanup() {
  local rc=$?
  set +e
  if [[ -n $MNT ]]; then
    local m
    for m in run sys proc dev/pts dev; do
      mountpoint -q "$MNT/$m" && umount -l "$MNT/$m"
    done
    mountpoint -q "$MNT" && umount "$MNT"
  fi
  [[ -n $LOOP ]] && losetup -d "$LOOP" 2>/dev/null
  [[ -n $WORK && -d $WORK ]] && rm -rf -- "$WORK"
  exit "$rc"
}

# A build killed outright (SIGKILL, a dead session) runs no cleanup: its work directory
# (hundreds of MB) and its loop device stay behind. Called with the lock held, when no
# other build can be running; the mounts died with the build's private mount namespace.
sweep_stale_builds() {
  local dir dev
  for dir in "$IMAGE_DIR"/.build.*/; do
    [[ -d $dir ]] || continue
    dir=${dir%/}
    while read -r dev; do
      [[ -n $dev ]] && losetup -d "$dev"
    done < <(losetup --list --noheadings --output NAME --associated "$dir/disk.raw" 2>/dev/null)
    rm -rf --one-file-system -- "$dir"
    log "removed what an interrupted build left: $dir"
  done
}

# Block device of partition 1 of $LOOP; creates the node if the kernel
# knows the partition but no node showed up (no udev here).
partition_device() {
  local dev=${LOOP}p1 name sysdev i
  name=$(basename "$LOOP")
  for i in $(seq 1 50); do
    [[ -b $dev ]] && { printf '%s\n' "$dev"; return 0; }
    if ((i == 10)); then partx -a "$LOOP" 2>/dev/null || partx -u "$LOOP" 2>/dev/null || true; fi
    sleep 0.1
  done
  sysdev=/sys/block/$name/${name}p1/dev
  if [[ -r $sysdev ]]; then
    local mm
    mm=$(<"$sysdev")
    mknod "$dev" b "${mm%%:*}" "${mm##*:}"
    printf '%s\n' "$dev"
    return 0
  fi
  return 1
}

in_chroot() { LANG=C.UTF-8 chroot "$MNT" /usr/bin/env DEBIAN_FRONTEND=noninteractive "$@"; }

configure_guest() {
  local mirror=$1 security=$2

  # --- identity: every clone gets its own
  : >"$MNT/etc/machine-id"
  rm -f "$MNT/var/lib/dbus/machine-id"
  ln -s /etc/machine-id "$MNT/var/lib/dbus/machine-id"
  rm -f "$MNT"/etc/ssh/ssh_host_*
  echo localhost >"$MNT/etc/hostname"
  cat >"$MNT/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
EOF

  # --- filesystems
  cat >"$MNT/etc/fstab" <<'EOF'
# <file system>	<mount point>	<type>	<options>			<dump>	<pass>
LABEL=rootfs	/		ext4	defaults,errors=remount-ro	0	1
EOF

  # --- sshd: keys only (set here rather than by cloud-init's ssh_pwauth,
  #     which restarts sshd after it first answered)
  cat >"$MNT/etc/ssh/sshd_config.d/50-pgha.conf" <<'EOF'
PasswordAuthentication no
KbdInteractiveAuthentication no
EOF

  # --- locale: minbase has no "locales" package; C.UTF-8 is built into libc
  printf 'LANG=C.UTF-8\n' >"$MNT/etc/default/locale"

  # --- apt: same mirror as the host's, plain sources (a proxy can be set by
  #     cloud-init's apt: proxy: or an apt.conf.d drop-in)
  rm -f "$MNT/etc/apt/sources.list"
  cat >"$MNT/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # Smaller, faster installs on slow (emulated) VMs.
  cat >"$MNT/etc/apt/apt.conf.d/90pgha" <<'EOF'
APT::Install-Recommends "false";
Acquire::Languages "none";
EOF

  # --- networking: cloud-init renders ifupdown config into interfaces.d
  cat >"$MNT/etc/network/interfaces" <<'EOF'
# Interfaces are configured by cloud-init in /etc/network/interfaces.d/.
auto lo
iface lo inet loopback

source /etc/network/interfaces.d/*
EOF
  mkdir -p "$MNT/etc/network/interfaces.d"

  # --- cloud-init: NoCloud (seed ISO "cidata") only, no slow probing
  cat >"$MNT/etc/cloud/cloud.cfg.d/90_pgha_datasource.cfg" <<'EOF'
datasource_list: [ NoCloud, None ]
EOF
  cat >"$MNT/etc/cloud/cloud.cfg.d/91_pgha_image.cfg" <<'EOF'
# Image defaults for pgha. User data may override any of these.
# The image has no "locales" package: keep the built-in C.UTF-8.
locale: C.UTF-8
# Grow the root partition and filesystem to the size of the disk.
growpart:
  mode: auto
  devices: ['/']
resize_rootfs: true
# Put the hostname into /etc/hosts (the test networks have no DNS; without
# it sudo warns "unable to resolve host").
manage_etc_hosts: true
# No DSA host key (OpenSSH 9.2 no longer uses it); saves boot time under TCG.
ssh_genkeytypes: [rsa, ecdsa, ed25519]
# Render network config for ifupdown.
system_info:
  network:
    renderers: ['eni']
EOF

  # --- serial console + GRUB
  cat >"$MNT/etc/default/grub" <<'EOF'
GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_TIMEOUT_STYLE=menu
GRUB_DISTRIBUTOR="Debian"
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1"
GRUB_DISABLE_OS_PROBER=true
GRUB_DISABLE_RECOVERY=true
EOF

  # --- softdog is a module in the cloud kernel; nothing is loaded by default
  #     (the product loads it with its own config)

  # --- boot time under emulation: e2scrub_reap (13 s under TCG) is useless
  #     here (no LVM snapshots)
  in_chroot systemctl disable e2scrub_reap.service e2scrub_all.timer >/dev/null 2>&1 ||
    die "systemctl disable e2scrub_reap failed in the chroot"

  # --- quiet journald size on small disks
  mkdir -p "$MNT/etc/systemd/journald.conf.d"
  cat >"$MNT/etc/systemd/journald.conf.d/90-pgha.conf" <<'EOF'
[Journal]
SystemMaxUse=64M
EOF
}

# A private /dev for the chroot: the few nodes GRUB needs, plus the
# /dev/disk/by-uuid link that udev would make (without it grub-mkconfig
# writes root=/dev/loopNp1 instead of root=UUID=...).
make_chroot_dev() {
  local part=$1 uuid n
  mount -t tmpfs -o mode=755,size=1m tmpfs "$MNT/dev"
  mknod -m 666 "$MNT/dev/null" c 1 3
  mknod -m 666 "$MNT/dev/zero" c 1 5
  mknod -m 666 "$MNT/dev/full" c 1 7
  mknod -m 666 "$MNT/dev/random" c 1 8
  mknod -m 666 "$MNT/dev/urandom" c 1 9
  mknod -m 666 "$MNT/dev/tty" c 5 0
  for n in "$LOOP" "$part"; do
    # stat prints major/minor in hex
    mknod -m 660 "$MNT$n" b "$((16#$(stat -c '%t' "$n")))" "$((16#$(stat -c '%T' "$n")))"
  done
  mkdir -p "$MNT/dev/pts" "$MNT/dev/disk/by-uuid" "$MNT/dev/disk/by-label"
  uuid=$(blkid -s UUID -o value "$part")
  ln -s "../../$(basename "$part")" "$MNT/dev/disk/by-uuid/$uuid"
  ln -s "../../$(basename "$part")" "$MNT/dev/disk/by-label/rootfs"
}

install_grub() {
  local part=$1 m
  make_chroot_dev "$part"
  mount -t devpts -o newinstance devpts "$MNT/dev/pts"
  mount -t proc proc "$MNT/proc"
  mount -t sysfs sysfs "$MNT/sys"
  mount -t tmpfs tmpfs "$MNT/run"
  # A device map so GRUB names the loop disk (hd0), like vda at boot.
  mkdir -p "$MNT/boot/grub"
  printf '(hd0) %s\n' "$LOOP" >"$MNT/boot/grub/device.map"
  in_chroot grub-install --target=i386-pc --no-floppy \
    --modules="part_msdos ext2 biosdisk" "$LOOP"
  rm -f "$MNT/boot/grub/device.map"
  in_chroot update-grub
  # Future grub-pc upgrades inside the VM reinstall to the virtio disk.
  echo "grub-pc grub-pc/install_devices multiselect /dev/vda" |
    in_chroot debconf-set-selections
  grep -Eq '^\s*linux\s.*root=(UUID|LABEL)=' "$MNT/boot/grub/grub.cfg" ||
    die "grub.cfg boots no root=UUID=: $(grep -E -m1 '^\s*linux\s' "$MNT/boot/grub/grub.cfg")"
  for m in run sys proc dev/pts dev; do umount "$MNT/$m"; done
}

# Processes started from the chroot (should be none: debootstrap diverts
# start-stop-daemon). Fail loudly instead of leaving a busy mount.
check_no_chroot_processes() {
  local p root found=0
  for p in /proc/[0-9]*; do
    root=$(readlink "$p/root" 2>/dev/null) || continue
    if [[ $root == "$MNT" || $root == "$MNT/"* ]]; then
      log "process ${p#/proc/} runs in the chroot: $(tr '\0' ' ' <"$p/cmdline")"
      found=1
    fi
  done
  ((found == 0)) || die "processes left running in the image chroot"
}

# Diagnostics: which processes (in any mount namespace) still mount $1.
holders_of() {
  local dev=$1 mm f pid
  mm=$(("16#$(stat -c '%t' "$dev")")):$(("16#$(stat -c '%T' "$dev")"))
  for f in /proc/[0-9]*/mountinfo; do
    if awk -v mm="$mm" '$3 == mm { found = 1 } END { exit !found }' "$f" 2>/dev/null; then
      pid=${f#/proc/}
      pid=${pid%%/*}
      log "still mounted ($mm) in the mount namespace of pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-200)"
    fi
  done
  log "holders: $(ls "/sys/class/block/$(basename "$dev")/holders" 2>/dev/null)"
}

# e2fsck exit status: 0 clean, 1 errors fixed, >= 2 trouble (8: could not
# open the device, e.g. still busy right after umount: retry a few times).
check_fs() {
  local part=$1 rc i
  for i in 1 2 3 4 5; do
    rc=0
    e2fsck -fy "$part" >"$WORK/e2fsck.log" 2>&1 || rc=$?
    ((rc <= 1)) && return 0
    log "e2fsck exit $rc (try $i): $(tail -n 3 "$WORK/e2fsck.log" | tr '\n' ' ')"
    ((rc == 8)) || break
    sleep 2
  done
  cat "$WORK/e2fsck.log" >&2
  holders_of "$part"
  die "e2fsck failed on the image (exit $rc)"
}

main() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, loop devices)"
  # Mount nothing in the shared mount namespace: a namespace created
  # meanwhile by anyone else (every `ip netns exec` makes one) would get a
  # copy of our mounts, keep the loop device busy (e2fsck then fails with
  # "Cannot continue, aborting") and hold it until its processes exit. In a
  # private mount namespace our mounts are invisible to others and vanish
  # with this process even if it is killed.
  if [[ ${_PGHA_IMAGE_PRIVATE_MNT:-} != 1 ]]; then
    export _PGHA_IMAGE_PRIVATE_MNT=1
    exec unshare --mount --propagation private -- bash "$(script_path)" "$@"
  fi
  mkdir -p "$IMAGE_DIR"
  local want
  want=$(stamp_value)

  exec 9>"$IMAGE_DIR/.build.lock"
  flock 9
  sweep_stale_builds

  if [[ ${PGHA_IMAGE_FORCE:-0} != 1 && -s $IMAGE && -r $STAMP && $(<"$STAMP") == "$want" ]]; then
    log "up to date: $IMAGE"
    printf '%s\n' "$IMAGE"
    return 0
  fi

  ensure_tools
  local mirror security
  mirror=${PGHA_DEBIAN_MIRROR:-$(host_apt_uri "$SUITE" || echo http://deb.debian.org/debian)}
  security=${PGHA_DEBIAN_SECURITY:-$(host_apt_uri "$SUITE-security" || echo http://deb.debian.org/debian-security)}
  log "mirror: $mirror  security: $security  size: $IMAGE_SIZE"

  trap cleanup EXIT
  WORK=$(mktemp -d "$IMAGE_DIR/.build.XXXXXX")
  MNT=$WORK/mnt
  mkdir -p "$MNT"
  local raw=$WORK/disk.raw start=$SECONDS

  truncate -s "$IMAGE_SIZE" "$raw"
  printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$raw"
  LOOP=$(losetup --find --show --partscan "$raw")
  local part
  part=$(partition_device) || die "no partition device for $LOOP (partition scan failed)"
  mkfs.ext4 -q -L rootfs -O '^metadata_csum_seed' "$part"
  mount "$part" "$MNT"

  log "debootstrap $SUITE (minbase) ..."
  local inc
  inc=$(IFS=,; printf '%s' "${GUEST_PACKAGES[*]}")
  debootstrap --variant=minbase --include="$inc" \
    --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    "$SUITE" "$MNT" "$mirror" >"$WORK/debootstrap.log" 2>&1 || {
      tail -n 40 "$WORK/debootstrap.log" >&2
      [[ -r $MNT/debootstrap/debootstrap.log ]] && tail -n 40 "$MNT/debootstrap/debootstrap.log" >&2
      die "debootstrap failed"
    }
  log "debootstrap done after $((SECONDS - start)) s"

  configure_guest "$mirror" "$security"
  install_grub "$part"

  # Trim: no package lists/caches/logs in the image; docs are not needed.
  in_chroot apt-get clean
  rm -rf "$MNT"/var/lib/apt/lists/* "$MNT"/var/cache/apt/*.bin \
    "$MNT"/var/log/*.log "$MNT"/var/log/apt/* "$MNT"/tmp/* "$MNT"/var/tmp/*
  rm -rf "$MNT"/var/lib/cloud/* "$MNT"/usr/share/doc/* "$MNT"/usr/share/man/* \
    "$MNT"/usr/share/info/*
  mkdir -p "$MNT/var/lib/apt/lists/partial"
  check_no_chroot_processes

  # Blocks freed in the running journal transaction are not trimmed: sync
  # first, so the qcow2 holds only live data (~0.5 GB instead of ~0.75 GB).
  sync -f "$MNT"
  fstrim "$MNT" || log "fstrim failed (image will be larger)"
  umount "$MNT"
  check_fs "$part"
  losetup -d "$LOOP"
  LOOP=""

  log "converting to qcow2 ..."
  qemu-img convert -f raw -O qcow2 -o compat=1.1 "$raw" "$WORK/$IMAGE_NAME"
  mv -f "$WORK/$IMAGE_NAME" "$IMAGE"
  printf '%s\n' "$want" >"$STAMP"
  log "built $IMAGE in $((SECONDS - start)) s ($(du -h "$IMAGE" | cut -f1) on disk)"
  printf '%s\n' "$IMAGE"
}

main "$@"
