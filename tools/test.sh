#!/usr/bin/env bash
# Run every test tier: unit (mocks, rendering, shellcheck), the real Patroni cluster in
# network namespaces, and the real `pulumi up` on libvirt VMs. Tiers the machine cannot
# run skip with the reason, unless PGHA_NO_SKIP=1 (CI), where a skip is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
exec .venv/bin/python -m pytest "$@"
