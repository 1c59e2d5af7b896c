#!/usr/bin/env bash
# Build the Pulumi CLI from the Go module proxy into a cache outside the repo.
#
#   BIN=$(tools/build-pulumi-toolchain.sh | tail -1); export PATH="$BIN:$PATH"
#
# Why build at all: the official installer and the npm `pulumi` package both
# download a prebuilt binary, and only package registries are reachable here.
#
# What is NOT built, and why (checked against the proxy; a refusal is final):
#   - pulumi-language-python: its module
#     github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3 is
#     refused by the proxy (403), and it is a separate module, so the sdk/v3
#     zip does not contain it either.
#   - pulumi-resource-command (github.com/pulumi/pulumi-command/provider) and
#     pulumi-resource-libvirt (github.com/pulumi/pulumi-libvirt/provider):
#     upstream only tags the repo roots (v1.2.1 / v0.5.4), never provider/vX,
#     so the proxy has no such module version (404; other versions 403).
# What IS installed besides `pulumi`: two scripts shipped inside sdk/v3 --
# the dynamic-provider plugin `pulumi-resource-pulumi-python` and
# `pulumi-language-python-exec` -- which the CLI normally ships beside itself.
#
# Env: PGHA_TOOLCHAIN_DIR overrides the cache dir. Progress goes to stderr;
# the bin dir is the last line of stdout.
set -euo pipefail

PULUMI_VERSION=v3.274.1
# A recipe change (new version, new binary) must land in a new dir rather than
# being mistaken for a complete old one, so the dir name carries a hash of it.
RECIPE="pulumi=${PULUMI_VERSION};extras=pulumi-resource-pulumi-python,pulumi-language-python-exec"
KEY="pulumi-${PULUMI_VERSION}-$(printf '%s' "$RECIPE" | sha256sum | cut -c1-8)"
TOOLCHAIN_DIR=${PGHA_TOOLCHAIN_DIR:-$HOME/.cache/pgha/toolchain/$KEY}
BIN_DIR=$TOOLCHAIN_DIR/bin
EXTRAS=(pulumi-resource-pulumi-python pulumi-language-python-exec)

# No update check or plugin download: there is no internet besides registries.
export PULUMI_SKIP_UPDATE_CHECK=1

log() { printf '[build-pulumi-toolchain] %s\n' "$*" >&2; }

complete() {
    local f
    [[ -x $BIN_DIR/pulumi ]] || return 1
    [[ $("$BIN_DIR/pulumi" version 2>/dev/null) == "$PULUMI_VERSION" ]] || return 1
    for f in "${EXTRAS[@]}"; do [[ -x $BIN_DIR/$f ]] || return 1; done
}

if complete; then
    log "up to date: $BIN_DIR"
    echo "$BIN_DIR"
    exit 0
fi

command -v go >/dev/null || { log "go is not installed"; exit 1; }
mkdir -p "$BIN_DIR"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# pkg/v3's go.mod has replace directives, which `go install pkg@version`
# refuses; a throwaway main module that requires it builds it fine. Replace
# directives of dependencies are ignored, so the one that changes code
# (clipboard) is copied from pkg/v3's go.mod to build what upstream builds.
log "resolving github.com/pulumi/pulumi/pkg/v3@$PULUMI_VERSION in $work"
(
    cd "$work"
    go mod init pgha.local/pulumi-toolchain >/dev/null 2>&1
    go mod edit -replace \
        github.com/atotto/clipboard=github.com/tgummerer/clipboard@v0.0.0-20241001131231-d02d263e614e
    go get "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi@$PULUMI_VERSION" \
        "github.com/pulumi/pulumi/sdk/v3@$PULUMI_VERSION"
) >&2

# The engine compares plugin/CLI versions, so the CLI must report the real
# one; without the ldflag it reports v3.0.0-dev-ish strings.
log "building pulumi $PULUMI_VERSION (~5 min cold on 2 cores, seconds with a warm GOCACHE)"
start=$SECONDS
(
    cd "$work"
    CGO_ENABLED=0 go build -p 2 -trimpath -o "$BIN_DIR/.pulumi.tmp" \
        -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_VERSION" \
        github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
) >&2
mv -f "$BIN_DIR/.pulumi.tmp" "$BIN_DIR/pulumi"
log "built pulumi in $((SECONDS - start))s"

# The module cache is read-only; copies get their own mode.
sdk_dir=$(cd "$work" && go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)
install -m 0755 "$sdk_dir/python/dist/pulumi-resource-pulumi-python" "$BIN_DIR/"
install -m 0755 "$sdk_dir/python/cmd/pulumi-language-python-exec" "$BIN_DIR/"

complete || { log "toolchain in $BIN_DIR failed its self-check"; exit 1; }
log "done: $BIN_DIR"
echo "$BIN_DIR"
