#!/usr/bin/env bash
# Bring a stack up on a local file state backend (no Pulumi Cloud account):
#   tools/up.sh [STACK] [extra `pulumi up` flags, e.g. --yes to skip the question]
# State goes to ~/.pgha/state; the passphrase that encrypts its secrets is generated once
# into ~/.pgha/passphrase (mode 0600). Keep both: without them the stack is unmanageable.
# Before anything is created it checks what `pulumi up` needs on this machine and prints
# one line per missing piece, with the command that fixes it.
set -euo pipefail
cd "$(dirname "$0")/.."
stack=${1:-dev}
shift || true

# Exact plugin versions this program is written against (requirements.txt pins the SDKs).
PLUGINS=(command:1.2.1 libvirt:0.5.4 random:4.21.4 tls:5.6.2)

problems=()
problem() { problems+=("$1"); }

stack_setting() {  # KEY DEFAULT: the stack file's value, else the default
  local value
  value=$(sed -n "s/^  pgha:$1: *//p" "Pulumi.$stack.yaml" 2>/dev/null | tr -d '"' | head -n 1)
  echo "${value:-$2}"
}

overlapping_route() {  # CIDR < `ip -o -4 route` lines: the first route that overlaps it
  python3 -c '
import ipaddress, sys
wanted = ipaddress.ip_network(sys.argv[1], strict=False)
for line in sys.stdin:
    fields = line.split()
    if not fields or fields[0] == "default":
        continue
    try:
        if ipaddress.ip_network(fields[0], strict=False).overlaps(wanted):
            print(" ".join(fields[:3]))
            break
    except ValueError:
        continue
' "$1"
}

host_checks() {  # URI: what only the libvirt host knows (its memory, its routes)
  local uri=$1 nodes memory wanted total_kib cidr network route
  nodes=$(stack_setting nodeCount 3)
  memory=$(stack_setting memoryMib 2048)
  if [[ $nodes =~ ^[0-9]+$ && $memory =~ ^[0-9]+$ ]]; then
    wanted=$((nodes * memory))
    if [ "$(stack_setting backups false)" = true ]; then
      wanted=$((wanted + $(stack_setting backupRepoMemoryMib 1024)))
    fi
    total_kib=$(virsh -c "$uri" nodeinfo 2>/dev/null | sed -n 's/^Memory size: *\([0-9]*\) KiB.*/\1/p')
    if [ -n "$total_kib" ] && [ $((wanted * 1024)) -gt "$total_kib" ]; then
      problem "the stack's VMs need ${wanted} MiB (pgha:nodeCount ${nodes} x pgha:memoryMib ${memory}, plus the backup repository's if on) but the libvirt host has $((total_kib / 1024)) MiB in all: lower pgha:memoryMib"
    fi
  fi
  # A created network must not overlap one this host already routes (a LAN, a VPN,
  # another libvirt network): only checkable where libvirt runs on this machine.
  if [ -n "$(stack_setting networkName '')" ] || [[ $uri != qemu:///* ]]; then
    return
  fi
  cidr=$(stack_setting networkCidr 192.168.130.0/24)
  network="pgha-$(stack_setting clusterName pg-raft)"
  if virsh -c "$uri" net-info "$network" >/dev/null 2>&1; then
    return  # the stack's own network, from an earlier up: its route is expected
  fi
  route=$(ip -o -4 route show 2>/dev/null | overlapping_route "$cidr" 2>/dev/null || true)
  if [ -n "$route" ]; then
    problem "pgha:networkCidr ${cidr} overlaps a network this host already routes (${route}): set pgha:networkCidr to a free private range"
  fi
}

preflight() {
  if ! command -v pulumi >/dev/null 2>&1; then
    problem "pulumi is not on PATH: install the Pulumi CLI (https://www.pulumi.com/docs/install/)"
  else
    local installed plugin name version
    installed=$(pulumi plugin ls 2>/dev/null || true)
    for plugin in "${PLUGINS[@]}"; do
      name=${plugin%%:*} version=${plugin##*:}
      if ! grep -Eq "^${name}[[:space:]]+resource[[:space:]]+${version}([[:space:]]|$)" <<<"$installed"; then
        problem "Pulumi plugin ${name} ${version} is not installed: pulumi plugin install resource ${name} v${version}"
      fi
    done
  fi
  if ! command -v mkisofs >/dev/null 2>&1 && ! command -v genisoimage >/dev/null 2>&1; then
    problem "mkisofs/genisoimage is missing (the libvirt provider builds cloud-init seeds with it): apt-get install genisoimage / dnf install genisoimage"
  fi
  if [ ! -f "Pulumi.$stack.yaml" ]; then
    problem "no stack file Pulumi.$stack.yaml: copy Pulumi.dev.yaml and edit it"
    return
  fi
  local uri pool
  uri=$(stack_setting libvirtUri qemu:///system)
  pool=$(stack_setting storagePool default)
  if ! command -v virsh >/dev/null 2>&1; then
    problem "virsh is missing (used here to check libvirt access): apt-get install libvirt-clients / dnf install libvirt-client"
  elif ! virsh -c "$uri" version >/dev/null 2>&1; then
    problem "cannot reach libvirt at $uri: is libvirtd running, and are you root or in the libvirt group (sudo usermod -aG libvirt \$USER, then log in again)?"
  elif ! virsh -c "$uri" pool-info "$pool" >/dev/null 2>&1; then
    problem "libvirt storage pool '$pool' does not exist at $uri: virsh -c $uri pool-define-as $pool dir --target /var/lib/libvirt/images && virsh -c $uri pool-build $pool && virsh -c $uri pool-start $pool && virsh -c $uri pool-autostart $pool"
  else
    host_checks "$uri"
  fi
}

preflight
if [ "${#problems[@]}" -gt 0 ]; then
  echo "tools/up.sh: not ready to bring up stack '$stack':" >&2
  printf '  - %s\n' "${problems[@]}" >&2
  exit 1
fi

state_home=${PGHA_HOME:-$HOME/.pgha}
install -d -m 0700 "$state_home" "$state_home/state"
if [ ! -s "$state_home/passphrase" ]; then
  (umask 077 && head -c 32 /dev/urandom | base64 > "$state_home/passphrase")
fi
export PULUMI_BACKEND_URL="file://$state_home/state"
export PULUMI_CONFIG_PASSPHRASE_FILE="$state_home/passphrase"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
pulumi stack select --create "$stack"
# As `pulumi up` itself: the preview first, then the question (unless you passed --yes).
pulumi up --stack "$stack" "$@"
