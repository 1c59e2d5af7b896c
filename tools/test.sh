#!/usr/bin/env bash
# Run the test tiers: unit (mocks, rendering, shellcheck), the real Patroni cluster in
# network namespaces, and the real `pulumi up` on libvirt VMs. Tiers the machine cannot
# run skip with the reason, unless PGHA_NO_SKIP=1 (CI), where a skip is a failure.
#
#   tools/test.sh                      every tier (the same as --all)
#   tools/test.sh --all [OPTIONS]      every tier, OPTIONS given to each pytest
#   tools/test.sh [PYTEST ARGS]        pytest itself: tools/test.sh tests/unit, -k power tests/vm
#
# Every tier: the unit tier first (its failures show within two minutes), then the
# namespace tiers (tests/realcluster, tests/e2e) alongside the VM tier. The VM tier keeps
# the host's cores busy with emulated CPUs for most of an hour while the namespace tiers'
# native processes need a small share of one; one after the other they took the sum of
# both (docs/testing.md). Their lines are prefixed with [ns]; the VM tier's are not.
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
stop_tiers() {
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait
  exit 143
}
trap stop_tiers INT TERM
# Line-buffered and prefixed, so both tiers' progress shows as it happens.
.venv/bin/python -u -m pytest "$@" tests/realcluster tests/e2e \
  > >(sed -u 's/^/[ns] /') 2>&1 &
pids+=("$!")
.venv/bin/python -m pytest "$@" tests/vm &
pids+=("$!")
ns_status=0
wait "${pids[0]}" || ns_status=$?
vm_status=0
wait "${pids[1]}" || vm_status=$?
trap - INT TERM
echo "tests/realcluster tests/e2e: exit status $ns_status; tests/vm: exit status $vm_status"
[ "$ns_status" -eq 0 ] && [ "$vm_status" -eq 0 ]
