"""A new cluster created from another stack's backup repository (a clone, for testing a
migration on real data, say): pure rendering, spec in, text out.

The source stack exports `backupCloneSource` (a secret): its repository's address and
stanza, its CA, and a client certificate that its repository's TLS server admits
(components.repository). The clone's nodes keep what they need for it apart from their
own pgBackRest configuration, in a file of its own that only the bootstrap's restore and
its WAL replay read. So nothing the clone does ever archives into, or expires from, the
source's repository: its own archive (with backups on) goes to its own repository.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Mapping

from components import backup
from components.config import ClusterSpec, CloneSpec, RestoreTarget
from components.rendering import _env, node_paths

# The stack output a source exports and a clone reads (StackReference).
SOURCE_OUTPUT = "backupCloneSource"


@dataclass(frozen=True)
class ClonePaths:
    dir: str = "/etc/pgbackrest/clone-source"

    @property
    def config(self) -> str:
        return f"{self.dir}/pgbackrest.conf"

    @property
    def ca(self) -> str:
        return f"{self.dir}/ca.crt"

    @property
    def cert(self) -> str:
        return f"{self.dir}/client.crt"

    @property
    def key(self) -> str:
        return f"{self.dir}/client.key"


@dataclass(frozen=True)
class CloneSource:
    """What a source stack exports for its clones (all of it one secret output)."""
    stack: str
    stanza: str
    host: str
    port: int
    postgres_version: int
    ca_cert: str
    cert: str
    key: str


def source_output(stanza: str, host: str, postgres_version: int, ca_cert: str, cert: str,
                  key: str) -> dict[str, Any]:
    """The source stack's `backupCloneSource` output."""
    return {"stanza": stanza, "host": host, "port": backup.TLS_PORT,
            "postgresVersion": postgres_version, "caCert": ca_cert, "cert": cert,
            "key": key}


def parse_source(spec: ClusterSpec, value: Mapping[str, Any] | None) -> CloneSource:
    """The clone's view of the source stack's output, checked against this stack."""
    clone = _clone(spec)
    if not value:
        raise ValueError(
            f"pgha:cloneFromStack = {clone.stack!r}: that stack has no {SOURCE_OUTPUT} "
            "output (it needs backups: true and one successful `pulumi up`)")
    source = CloneSource(stack=clone.stack, stanza=value["stanza"], host=value["host"],
                         port=int(value["port"]),
                         postgres_version=int(value["postgresVersion"]),
                         ca_cert=value["caCert"], cert=value["cert"], key=value["key"])
    if source.postgres_version != spec.postgres_version:
        raise ValueError(
            f"pgha:postgresVersion = {spec.postgres_version}: the clone source "
            f"{clone.stack!r} runs PostgreSQL {source.postgres_version}, and a restore "
            f"needs the same major version (set postgresVersion: {source.postgres_version})")
    return source


def _clone(spec: ClusterSpec) -> CloneSpec:
    if spec.clone is None:
        raise ValueError("the stack does not clone (cloneFromStack is empty)")
    return spec.clone


def _command(source: CloneSource, paths: ClonePaths, bin_path: str, *args: str) -> str:
    return backup.command_line(bin_path, source.stanza, *args, config=paths.config)


def render_conf(source: CloneSource, data_dir: str, paths: ClonePaths | None = None,
                bpaths: backup.BackupPaths | None = None) -> str:
    """The clone's view of the source repository: a TLS remote, read by restore and
    archive-get only (no spool, no archive-push settings, no server)."""
    paths, bpaths = paths or ClonePaths(), bpaths or backup.BackupPaths()
    return _env.get_template("pgbackrest-clone.conf.j2").render(
        source=source, paths=paths, bpaths=bpaths, data_dir=data_dir,
        session=backup.SESSION_LIMITS)


def bootstrap(source: CloneSource, target: RestoreTarget, paths: ClonePaths | None = None,
              bin_path: str = backup.BackupPaths.bin) -> dict[str, Any]:
    """patroni.yml's bootstrap method: restore the source's backup at `target`, and
    replay the source's WAL up to it through the clone's own configuration file (the
    restore_command given explicitly, so it never falls back to the node's own)."""
    paths = paths or ClonePaths()
    restore_command = _command(source, paths, bin_path, "archive-get", "%f", '"%p"')
    args = [*backup.restore_args(target), f"--recovery-option=restore_command={restore_command}"]
    command = _command(source, paths, bin_path, "--delta",
                       *(shlex.quote(arg) for arg in args), "restore")
    return {"method": backup.RESTORE_METHOD,
            backup.RESTORE_METHOD: {"command": command,
                                    "keep_existing_recovery_conf": True, "no_params": True}}


def render_configure_script(spec: ClusterSpec, source: CloneSource,
                            paths: ClonePaths | None = None,
                            bpaths: backup.BackupPaths | None = None) -> str:
    """On every node of the clone: the source's configuration and client identity, then
    proof that the source repository answers and holds a backup that can serve the
    target. Carries the client key: a secret script."""
    paths, bpaths = paths or ClonePaths(), bpaths or backup.BackupPaths()
    target = _clone(spec).target
    config = render_conf(source, node_paths(spec).data_dir, paths, bpaths)
    return _env.get_template("configure-clone-source.sh.j2").render(
        source=source, paths=paths, config=config, user=backup.DB_USER, target=target,
        target_epoch=backup.target_epoch(target), stanza=source.stanza,
        info=_command(source, paths, bpaths.bin, "--output=json", "info"))
