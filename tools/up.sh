#!/usr/bin/env bash
# Bring a stack up on a local file state backend (no Pulumi Cloud account):
#   tools/up.sh [STACK] [extra `pulumi up` flags]
# State goes to ~/.pgha/state; the passphrase that encrypts its secrets is generated once
# into ~/.pgha/passphrase (mode 0600). Keep both: without them the stack is unmanageable.
set -euo pipefail
cd "$(dirname "$0")/.."
stack=${1:-dev}
shift || true

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
pulumi up --yes --stack "$stack" "$@"
