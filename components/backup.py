"""Backups and point-in-time recovery with pgBackRest: pure rendering, spec in, text out.

Topology (pgBackRest's "dedicated repository host"): the repository lives on its own
host, which runs `pgbackrest server` (TLS, client certificates) for the database nodes'
archive-push/archive-get, and runs the scheduled backups itself. Every database node
runs `pgbackrest server` too, so that the repository host can take a backup from it
(from a replica where it can: backup-standby). No SSH and no password between them:
each side proves itself with a certificate signed by the cluster's own CA, and a server
admits only the certificate names listed in its tls-server-auth.

The repository's encryption passphrase exists only on the repository host: with a remote
repository pgBackRest encrypts there, so a database node never holds it.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any, Mapping

from components.config import BackupSettings, ClusterSpec, RestoreTarget, parse_target_time
from components.rendering import (TEMPLATES_DIR, USERS, _env,  # one Jinja environment
                                  node_paths, restore_marker)

TLS_PORT = 8432
# How soon a pgBackRest session whose peer vanished ends, in seconds: an idle one after
# idle + interval * count (TCP keepalives), any one after protocol_timeout. Every config
# carries the same values (_pgbackrest-session.conf.j2): a client's no-ops to its remote
# follow its own protocol-timeout, and must come more often than the remote's.
SESSION_LIMITS = {"idle": 20, "interval": 5, "count": 4, "protocol_timeout": 240}
# How long a standby's restore_command waits for the backup repository to accept a TCP
# connection before it tells PostgreSQL "not there yet" (templates/pgha-archive-get.sh
# says why). A live host answers within one round trip, but the bound also covers
# starting the probe, and a node starved of CPU (nine runnable tasks on the host's two
# cores) found a live repository silent for 2 s: so 5.
REPOSITORY_PROBE_SECONDS = 5
# A standby's archive-get keeps pgBackRest's own waits. PostgreSQL takes "not found" as
# the archive's word: asked for a segment of its newest timeline and told no, it reads the
# same segment of an older timeline if the archive has it, and replays that history past
# the fork. A call that gave up on the background fetch early would say "not found" for a
# segment that is there. A repository that has vanished is the probe's to answer.

# After a restore, the leader's post_bootstrap waits this long, in seconds, for the new
# timeline's first segment to be archived before any replica restores from the repository
# (templates/pgha-after-restore.sh says why: in the VM tier a replica found it missing,
# replayed the old timeline and needed pg_rewind).
AFTER_RESTORE_ARCHIVE_SECONDS = 120
# How far a restore replays WAL: pgBackRest's --type for each kind of target.
RECOVERY_TARGET_TYPES = {"latest": "default", "time": "time", "name": "name", "lsn": "lsn"}
RESTORE_METHOD = "pgbackrest_restore"
# On the repository host: the point-in-time recovery whose new history has its full
# backup (templates/init-backups.sh.j2).
RESTORE_BACKUP_MARKER = "/var/lib/pgha/backup-after-restore"


@dataclass(frozen=True)
class BackupSpec:
    stanza: str  # the cluster's name: one stanza per cluster
    repo_address: str
    retention_full: int  # full backups kept (with the WAL they need)
    full_schedule: str  # systemd OnCalendar
    diff_schedule: str  # systemd OnCalendar; empty: no differential backups
    encrypt: bool  # aes-256-cbc with a generated passphrase
    compress_type: str
    compress_level: int | None
    # Asynchronous archive-push queues WAL on the primary while the repository is away;
    # beyond this the queue is dropped (the primary keeps running, the archive has a gap
    # until the next full backup) instead of filling the disk.
    archive_push_queue_max: str
    process_max: int = 2
    # The point-in-time recovery the stack asks for (its restoreTarget), or "": once it is
    # done, the repository takes one full backup of the new history.
    restore_request: str = ""


def backup_spec(settings: BackupSettings, stanza: str, repo_address: str) -> BackupSpec:
    """The stack's backup settings with the repository host's address."""
    return BackupSpec(stanza=stanza, repo_address=repo_address,
                      retention_full=settings.retention_full,
                      full_schedule=settings.full_schedule,
                      diff_schedule=settings.diff_schedule, encrypt=settings.encrypt,
                      compress_type=settings.compress_type,
                      compress_level=settings.compress_level,
                      archive_push_queue_max=settings.archive_push_queue_max,
                      restore_request=(settings.restore_target.text
                                       if settings.restore_target is not None else ""))


@dataclass(frozen=True)
class BackupPaths:
    config: str = "/etc/pgbackrest/pgbackrest.conf"
    tls_dir: str = "/etc/pgbackrest/tls"
    repo: str = "/var/lib/pgbackrest"
    spool: str = "/var/spool/pgbackrest"
    log: str = "/var/log/pgbackrest"
    lock: str = "/tmp/pgbackrest"  # pgBackRest creates it; every command shares it
    bin: str = "/usr/bin/pgbackrest"
    # archive_command's wrapper on database nodes (templates/pgha-archive-push.sh).
    archive_push: str = "/usr/local/sbin/pgha-archive-push"
    # restore_command's wrapper on database nodes (templates/pgha-archive-get.sh).
    archive_get: str = "/usr/local/sbin/pgha-archive-get"
    # Patroni's post_bootstrap after a restore (templates/pgha-after-restore.sh).
    after_restore: str = "/usr/local/sbin/pgha-after-restore"

    @property
    def ca(self) -> str:
        return f"{self.tls_dir}/ca.crt"

    @property
    def cert(self) -> str:
        return f"{self.tls_dir}/server.crt"

    @property
    def key(self) -> str:
        return f"{self.tls_dir}/server.key"


def repo_client_name(stanza: str) -> str:
    """The certificate name (CN) the repository host presents to database nodes."""
    return f"{stanza}-repository"


def node_client_name(stanza: str) -> str:
    """The certificate name (CN) every database node presents to the repository host
    (each node's certificate still names its own address). One name for all, not one per
    node: while nodeCount shrinks, Pulumi rewrites the repository's configuration before
    it runs the departing nodes' delete steps, and a departing node that still leads, or
    still has WAL to archive when it hands over, must go on archiving until it stops. A
    name per node would be refused from that moment, leaving a gap in the archive."""
    return f"{stanza}-database"


def clone_client_name(stanza: str) -> str:
    """The certificate name (CN) another stack's clone presents to read this repository
    (components.clone)."""
    return f"{stanza}-clone"


def command_line(bin_path: str, stanza: str, *args: str, config: str | None = None) -> str:
    """A pgBackRest command line. Without `config`, pgBackRest reads its default file
    (BackupPaths.config; PGBACKREST_CONFIG moves it)."""
    return " ".join([bin_path, *([f"--config={config}"] if config else []),
                     f"--stanza={stanza}", *args])


def _command(backup: BackupSpec, paths: BackupPaths, *args: str) -> str:
    return command_line(paths.bin, backup.stanza, *args)


def patroni_settings(backup: BackupSpec, paths: BackupPaths,
                     restore: RestoreTarget | None = None) -> dict[str, Any]:
    """What backups add to patroni.yml: WAL archiving (cluster-wide, through the DCS),
    restore_command for replicas and recovery, and replicas created from the repository
    when it has a backup, else by pg_basebackup from the leader. With `restore`, a new
    cluster is bootstrapped from the repository at that target."""
    return {
        "bootstrap": restore_bootstrap(backup, paths, restore) if restore else None,
        "parameters": {
            "archive_mode": "on",
            # %p is relative to the data directory, which is archive_command's cwd.
            "archive_command": f"{paths.archive_push} "
                               + _command(backup, paths, "archive-push", '"%p"'),
            "archive_timeout": "60s",
        },
        "restore_command": (
            f"{paths.archive_get} {backup.repo_address} {TLS_PORT} {REPOSITORY_PROBE_SECONDS} "
            + _command(backup, paths, "archive-get", "%f", '"%p"')),
        "create_replica_methods": ["pgbackrest", "basebackup"],
        "pgbackrest": {
            # --delta reuses what a former member's data directory still holds.
            "command": _command(backup, paths, "--delta", "restore"),
            "keep_data": True,
            "no_params": True,
        },
    }


def restore_args(target: RestoreTarget) -> list[str]:
    """pgBackRest restore options that stop replay at `target`."""
    args = [f"--type={RECOVERY_TARGET_TYPES[target.kind]}"]
    if target.kind != "latest":
        # Stop at the target, then promote: the restored node becomes the leader of a new
        # timeline; without this PostgreSQL would pause at the target.
        args += [f"--target={target.value}", "--target-action=promote"]
    return args


def restore_bootstrap(backup: BackupSpec, paths: BackupPaths,
                      target: RestoreTarget) -> dict[str, Any]:
    """patroni.yml's bootstrap method that creates the cluster from the repository at
    `target` instead of running initdb (point-in-time recovery, or a clone of another
    stack's repository). Patroni runs it on the one node that wins the initialize key;
    the others then become replicas (from the repository). pgBackRest writes the
    recovery settings, and Patroni is told to keep them."""
    # Quoted: a time target has a space, and Patroni splits the command like a shell.
    command = _command(backup, paths, "--delta",
                       *(shlex.quote(arg) for arg in restore_args(target)), "restore")
    return {"method": RESTORE_METHOD,
            RESTORE_METHOD: {"command": command,
                             "keep_existing_recovery_conf": True, "no_params": True},
            # patroni.yml.j2 adds the node's psql; Patroni adds a connection string.
            "post_bootstrap": f"{paths.after_restore} {AFTER_RESTORE_ARCHIVE_SECONDS}"}


def render_node_conf(backup: BackupSpec, node: str, data_dir: str, socket_dir: str,
                     paths: BackupPaths | None = None) -> str:
    """pgbackrest.conf on a database node: its own PostgreSQL, the repository as a TLS
    remote, and its TLS server for the repository host's backups."""
    paths = paths or BackupPaths()
    return _env.get_template("pgbackrest-node.conf.j2").render(
        backup=backup, paths=paths, node=node, data_dir=data_dir, socket_dir=socket_dir,
        port=TLS_PORT, superuser=USERS["superuser"],
        repo_client=repo_client_name(backup.stanza), session=SESSION_LIMITS)


def render_repo_conf(backup: BackupSpec, members: Mapping[str, str],
                     data_dir: str | Mapping[str, str], socket_dir: str | Mapping[str, str],
                     cipher_pass: str, paths: BackupPaths | None = None) -> str:
    """pgbackrest.conf on the repository host: the repository, retention, encryption and
    every database node (pg1..pgN) reached through its TLS server. `members` maps node
    name to address, in node order; the data and socket directories are the same on
    every node, or given per node. Holds the passphrase: root:pgbackrest, 0640."""
    paths = paths or BackupPaths()
    if backup.encrypt and not cipher_pass:
        raise ValueError("an encrypted repository needs its passphrase")

    def per_node(value: str | Mapping[str, str]) -> dict[str, str]:
        return {n: value if isinstance(value, str) else value[n] for n in members}
    return _env.get_template("pgbackrest-repo.conf.j2").render(
        backup=backup, paths=paths, members=dict(members), data_dirs=per_node(data_dir),
        socket_dirs=per_node(socket_dir), port=TLS_PORT, cipher_pass=cipher_pass,
        node_client=node_client_name(backup.stanza),
        clone_client=clone_client_name(backup.stanza), session=SESSION_LIMITS)


def render_server_unit(paths: BackupPaths | None = None, user: str = "postgres") -> str:
    """systemd unit for `pgbackrest server` (on database nodes as postgres, on the
    repository host as pgbackrest)."""
    paths = paths or BackupPaths()
    return _env.get_template("pgbackrest-server.service.j2").render(paths=paths, user=user)


def render_backup_units(backup: BackupSpec, paths: BackupPaths | None = None
                        ) -> dict[str, str]:
    """Scheduled backups on the repository host: a service + timer per backup type.
    pgBackRest expires backups beyond the retention after each backup."""
    paths = paths or BackupPaths()
    schedules = {"full": backup.full_schedule, "diff": backup.diff_schedule}
    units = {}
    for kind, schedule in schedules.items():
        if not schedule:
            continue
        name = f"pgha-backup-{kind}"
        units[f"{name}.service"] = _env.get_template("pgha-backup.service.j2").render(
            backup=backup, kind=kind,
            command=_command(backup, paths, f"--type={kind}", "backup"))
        units[f"{name}.timer"] = _env.get_template("pgha-backup.timer.j2").render(
            backup=backup, kind=kind, schedule=schedule)
    return units


def info_command(stanza: str, paths: BackupPaths | None = None) -> str:
    """What a user runs on the repository host to list backups and the WAL archive."""
    paths = paths or BackupPaths()
    return f"sudo -u {REPO_USER} " + shlex.join([paths.bin, f"--stanza={stanza}", "info"])


# ---- provisioning scripts (run as pulumi-command runs them: `sudo bash -s`, on stdin) ---
REPO_USER = "pgbackrest"
DB_USER = "postgres"


def _user(role: str) -> str:
    if role not in ("repository", "database"):
        raise ValueError(f"role must be repository or database, not {role!r}")
    return REPO_USER if role == "repository" else DB_USER


def render_install_script(spec: ClusterSpec, role: str, paths: BackupPaths | None = None
                          ) -> str:
    """pgBackRest's package, its user (repository host) and directories. Every host
    installs it from the same source as PostgreSQL (pgBackRest talks only to its own
    exact version), so the repository host gets PGDG's repository when the nodes do."""
    return _env.get_template("install-pgbackrest.sh.j2").render(
        layout=spec.layout, pgdg=spec.postgres_source == "pgdg", role=role,
        user=_user(role), paths=paths or BackupPaths())


def render_repository_disk_script(disk: str, paths: BackupPaths | None = None) -> str:
    """Format (only when blank) and mount the repository host's data disk."""
    return _env.get_template("prepare-repository-disk.sh.j2").render(
        disk=disk, user=REPO_USER, paths=paths or BackupPaths())


def archive_push_wrapper() -> str:
    """The database nodes' archive_command wrapper: pgBackRest's archive-push, except a
    duplicate of an ancestor timeline's segment (the file says why)."""
    return (TEMPLATES_DIR / "pgha-archive-push.sh").read_text()


def archive_get_wrapper() -> str:
    """The database nodes' restore_command wrapper: pgBackRest's archive-get, asked only
    when the repository accepts a connection (the file says why)."""
    return (TEMPLATES_DIR / "pgha-archive-get.sh").read_text()


def after_restore_script() -> str:
    """Patroni's post_bootstrap after a restore: the new timeline's first segment archived
    before the replicas restore (the file says why)."""
    return (TEMPLATES_DIR / "pgha-after-restore.sh").read_text()


def archive_wrappers(paths: BackupPaths) -> dict[str, str]:
    """Where a database node's configure-pgbackrest step installs each script PostgreSQL
    or Patroni runs for the backups."""
    return {paths.archive_push: archive_push_wrapper(),
            paths.archive_get: archive_get_wrapper(),
            paths.after_restore: after_restore_script()}


def render_configure_script(role: str, host: str, config: str, ca_cert: str, cert: str,
                            key: str, backup: BackupSpec | None = None,
                            paths: BackupPaths | None = None) -> str:
    """pgbackrest.conf, the host's TLS identity and the server unit (plus the backup
    timers on the repository host). Carries the private key (and on the repository host
    the passphrase, inside `config`): a secret script."""
    paths = paths or BackupPaths()
    user = _user(role)
    units = {"pgbackrest-server.service": render_server_unit(paths, user)}
    if role == "repository":
        if backup is None:
            raise ValueError("the repository host's script needs the backup settings")
        units.update(render_backup_units(backup, paths))
    enable = ["pgbackrest-server.service"] + [u for u in units if u.endswith(".timer")]
    return _env.get_template("configure-pgbackrest.sh.j2").render(
        role=role, host=host, user=user, paths=paths, config=config, ca_cert=ca_cert,
        cert=cert, key=key, units=units, enable=enable,
        wrappers=archive_wrappers(paths) if role == "database" else {})


def render_init_backups_script(backup: BackupSpec) -> str:
    """Stanza, archive check and the first full backup, on the repository host."""
    return _env.get_template("init-backups.sh.j2").render(
        backup=backup, user=REPO_USER, restore_marker=RESTORE_BACKUP_MARKER)


# ---- point-in-time recovery of the whole cluster (spec.backups.restore_target) ----------
def target_epoch(target: RestoreTarget) -> int:
    """Seconds since the epoch of a time target; 0 for the other kinds."""
    if target.kind != "time":
        return 0
    return int(parse_target_time(target.value).timestamp())


def render_restore_check_script(backup: BackupSpec, target: RestoreTarget) -> str:
    """On the repository host, before anything is stopped: a backup that can serve
    `target` exists."""
    return _env.get_template("restore-check.sh.j2").render(
        stanza=backup.stanza, target=target, target_epoch=target_epoch(target),
        user=REPO_USER)


def render_restore_reset_script(spec: ClusterSpec) -> str:
    """On every database node: Patroni stopped, data directory and Raft state emptied,
    once per restore the stack requests (a point-in-time recovery or a clone; see the
    template)."""
    if spec.restore_request is None:
        raise ValueError("the stack requests no restore")
    paths = node_paths(spec)
    return _env.get_template("restore-reset.sh.j2").render(
        request=spec.restore_request, paths=paths, marker=restore_marker(paths))
