#!/usr/bin/env bash
# Run the test tiers: unit (mocks, rendering, shellcheck), the real Patroni cluster in
# network namespaces, and the real `pulumi up` on libvirt VMs. Tiers the machine cannot
# run skip with the reason, unless PGHA_NO_SKIP=1 (CI), where a skip is a failure.
#
#   tools/test.sh                      every tier (the same as --all)
#   tools/test.sh --all [OPTIONS]      every tier, OPTIONS given to each pytest
#   tools/test.sh [PYTEST ARGS]        pytest itself: tools/test.sh tests/unit, -k power tests/vm
#
# Every tier: the unit tier first (its failures show within two minutes), then the VM
# tier, and the namespace tiers (tests/realcluster, tests/e2e) alongside it once its
# cluster is up. The VM tier keeps the host's cores busy with emulated CPUs for over an
# hour; one after the other the tiers took the sum of both. Started after its
# provisioning, the tier's most CPU-bound phase, the namespace tiers' native processes
# use what the scenarios' waits leave (docs/testing.md). Their lines are prefixed with
# [ns]; the VM tier's are not.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt

if [ "$#" -gt 0 ] && [ "$1" != "--all" ]; then
  exec .venv/bin/python -m pytest "$@"
fi
[ "$#" -gt 0 ] && shift

.venv/bin/python -m pytest "$@" tests/unit

# Both in the background, so that a signal to this script (the trap runs while `wait`
# waits) stops both pytests, each of which cleans up what it started.
pids=()
provisioned=$(mktemp -u /tmp/pgha-vm-provisioned.XXXXXX)

# The namespace tiers share one CPU group weighted as two VMs. Every process that starts
# a session of its own (each QEMU, each node's Patroni and its postmaster) is a scheduling
# group of its own when the kernel groups by session (autogroup), so a 3-node namespace
# cluster weighs six VMs against the VM tier's four: a VM then got so little CPU that its
# Patroni missed the watchdog's deadline and the node was reset (docs/testing.md). Kept
# in one group, they weigh two. Without a writable cgroup "cpu" controller (not root, or
# none mounted), nothing changes but a line that says so.
ns_group=""
make_cpu_group() {
  local base
  for base in /sys/fs/cgroup/cpu /sys/fs/cgroup; do
    [ -w "$base/cgroup.procs" ] || continue
    if [ -e "$base/cpu.shares" ] || grep -qw cpu "$base/cgroup.subtree_control" 2>/dev/null; then
      local group
      group=$base/pgha-tests-$$
      mkdir -p "$group" || continue
      if [ -e "$group/cpu.shares" ]; then
        echo 2048 > "$group/cpu.shares"   # one VM's session: 1024
      else
        echo 200 > "$group/cpu.weight"    # one VM's session: 100
      fi
      ns_group=$group
      return 0
    fi
  done
  echo "tools/test.sh: no writable cgroup cpu controller; the namespace tiers compete with the VMs per process" >&2
}
# Run "$@" inside group $1 (when there is one).
in_cpu_group() {
  local group=$1
  shift
  if [ -n "$group" ]; then
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$group" "$@"
  else
    "$@"
  fi
}
remove_cpu_group() {
  if [ -n "$ns_group" ] && ! rmdir "$ns_group" 2>/dev/null; then
    echo "tools/test.sh: $ns_group still holds processes; remove it with rmdir once they are gone" >&2
  fi
}
make_cpu_group

stop_tiers() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait
  rm -f "$provisioned"
  remove_cpu_group
  exit 143
}
trap stop_tiers INT TERM
PGHA_VM_PROVISIONED_FILE=$provisioned .venv/bin/python -m pytest "$@" tests/vm &
pids+=("$!")
# The VM tier's conftest creates the file once its cluster is up; a VM tier that ends
# first (nothing selected, a skip, a failed setup) lets the namespace tiers go too.
while [ ! -e "$provisioned" ] && kill -0 "${pids[0]}" 2>/dev/null; do
  sleep 5
done
# Line-buffered and prefixed, so both tiers' progress shows as it happens.
in_cpu_group "$ns_group" .venv/bin/python -u -m pytest "$@" tests/realcluster tests/e2e \
  > >(sed -u 's/^/[ns] /') 2>&1 &
pids+=("$!")
vm_status=0
wait "${pids[0]}" || vm_status=$?
ns_status=0
wait "${pids[1]}" || ns_status=$?
trap - INT TERM
rm -f "$provisioned"
remove_cpu_group
echo "tests/realcluster tests/e2e: exit status $ns_status; tests/vm: exit status $vm_status"
[ "$ns_status" -eq 0 ] && [ "$vm_status" -eq 0 ]
