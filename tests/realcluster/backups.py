"""A pgBackRest repository host beside the real cluster, in a namespace of its own.

The nodes run the product's patroni.yml with what backups add to it
(components.backup.patroni_settings) and the product's pgbackrest.conf
(render_node_conf / render_repo_conf); as with patroni.yml, only paths differ from a VM:
each host's files live under the cluster's work directory and PGBACKREST_CONFIG points
pgBackRest at them. Every host runs `pgbackrest server` (TLS with client certificates
from a CA made here, shaped as the program makes them: CN = the name the peer admits,
the address as SAN).
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from components import backup, clone
from components.config import RestoreTarget, build_spec
from tests.certs import TestCa
from tests.pulumi_mocks import random_password
from tests.realcluster import harness as h

REPO_IP = "10.199.0.3"


class BackupCluster(h.Cluster):
    """The real cluster with backups on: a repository host and the product's configs."""

    def __init__(self, runtime: h.Runtime, node_count: int = 3, profile: str = "fast",
                 settings: dict[str, Any] | None = None, label: str = "backup",
                 **backup_changes: Any):
        bin_path = shutil.which("pgbackrest")
        if bin_path is None:
            raise h.HarnessError("pgbackrest is not installed (apt-get install pgbackrest)")
        self.bin = bin_path
        self.backup_changes = backup_changes
        self.restore_target: RestoreTarget | None = None
        # Set by become_clone: the source the cluster is cloned from, and the target.
        self.clone_source: tuple[clone.CloneSource, RestoreTarget] | None = None
        super().__init__(runtime, node_count, profile, settings, label)
        self.net.members["repo"] = REPO_IP
        self.repo_dir = self.workdir / "repo"
        self.cipher_pass = random_password()
        self.backup_ca = TestCa()
        self.ca = self.backup_ca.cert.encode()
        stanza = self.spec.cluster_name
        # What the stack exports for clones (backupCloneSource): a client identity.
        self.clone_identity = self._identity(backup.clone_client_name(stanza), REPO_IP)
        self.configs: dict[str, Path] = {}
        self.servers: dict[str, int] = {}  # host -> its `pgbackrest server`'s pid
        for name in self.nodes:
            self.add_backup_node(name)
        self.repo_paths = self._host_paths(
            self.repo_dir, self._identity(backup.repo_client_name(stanza), REPO_IP))
        self.write_repository_conf()

    def _identity(self, common_name: str, address: str) -> tuple[bytes, bytes]:
        """(key PEM, cert PEM) with the address as SAN; pgBackRest (2.45) matches the host
        it dials against DNS-type names only, so the address is there as both."""
        issued = self.backup_ca.issue(common_name, dns_names=[address],
                                      ip_addresses=[address],
                                      uses=("server_auth", "client_auth"))
        return issued.key.encode(), issued.cert.encode()

    def add_backup_node(self, name: str) -> None:
        """Node `name`'s pgBackRest identity and configuration (also for a node added by
        scaling out)."""
        n = self.nodes[name]
        paths = self._host_paths(n.dir / "pgbackrest", self._identity(
            backup.node_client_name(self.spec.cluster_name), n.ip))
        text = backup.render_node_conf(self.backup_spec, name, n.paths.data_dir,
                                       n.paths.socket_dir, paths)
        self.configs[name] = self._write(Path(paths.config), text)
        self.patroni_env[name] = {"PGBACKREST_CONFIG": paths.config}

    def write_repository_conf(self) -> None:
        """The repository host's configuration for the stack's nodes (self.addresses)."""
        text = backup.render_repo_conf(
            self.backup_spec, self.addresses,
            {n: self.nodes[n].paths.data_dir for n in self.addresses},
            {n: self.nodes[n].paths.socket_dir for n in self.addresses},
            self.cipher_pass, self.repo_paths)
        self.configs["repo"] = self._write(Path(self.repo_paths.config), text)

    @functools.cached_property
    def backup_spec(self) -> backup.BackupSpec:
        values = dict(stanza=self.spec.cluster_name, repo_address=REPO_IP, retention_full=2,
                      full_schedule="Sun *-*-* 01:00:00", diff_schedule="", encrypt=True,
                      compress_type="zst", compress_level=None, archive_push_queue_max="1GiB")
        return backup.BackupSpec(**{**values, **self.backup_changes})

    def backup_settings(self) -> dict[str, Any] | None:
        if self.clone_source is not None:
            return None  # the clone has no repository of its own here
        return backup.patroni_settings(self.backup_spec, self.node_backup_paths,
                                       restore=self.restore_target)

    @functools.cached_property
    def node_backup_paths(self) -> backup.BackupPaths:
        """The nodes' paths, with the scripts PostgreSQL and Patroni run for the backups
        written into the workdir as the configure step installs them."""
        paths = backup.BackupPaths(bin=self.bin,
                                   archive_push=str(self.workdir / "pgha-archive-push"),
                                   archive_get=str(self.workdir / "pgha-archive-get"),
                                   after_restore=str(self.workdir / "pgha-after-restore"))
        for path, text in backup.archive_wrappers(paths).items():
            Path(path).write_text(text)
            Path(path).chmod(0o755)
        return paths

    def bootstrap_settings(self, name: str) -> dict[str, Any] | None:
        if self.clone_source is None:
            return None
        source, target = self.clone_source
        return clone.bootstrap(source, target, self.clone_paths(name), bin_path=self.bin)

    def clone_paths(self, name: str) -> clone.ClonePaths:
        """Node `name`'s clone-source files (/etc/pgbackrest/clone-source on a VM)."""
        return clone.ClonePaths(dir=str(self.nodes[name].dir / "clone-source"))

    def _chown(self, path: Path) -> None:
        os.chown(path, self.pw.pw_uid, self.pw.pw_gid)

    def _write(self, path: Path, data: str | bytes, mode: int = 0o600) -> Path:
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        os.chmod(path, mode)
        self._chown(path)
        return path

    def _host_paths(self, root: Path, key_cert: tuple[bytes, bytes]) -> backup.BackupPaths:
        paths = backup.BackupPaths(config=str(root / "pgbackrest.conf"),
                                   tls_dir=str(root / "tls"), repo=str(root / "repository"),
                                   spool=str(root / "spool"), log=str(root / "log"),
                                   lock=str(root / "lock"), bin=self.bin)
        for d in (root, Path(paths.tls_dir), Path(paths.repo), Path(paths.spool),
                  Path(paths.log), Path(paths.lock)):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
            self._chown(d)
        self._write(Path(paths.ca), self.ca, 0o644)
        self._write(Path(paths.key), key_cert[0])
        self._write(Path(paths.cert), key_cert[1], 0o644)
        return paths

    # ---- pgBackRest ------------------------------------------------------------------
    def start_servers(self) -> None:
        """`pgbackrest server` on every node and on the repository host."""
        for host in self.configs:
            self.start_server(host)

    def start_server(self, host: str) -> None:
        """`pgbackrest server` on `host`; restarted (as the configure step's `systemctl
        restart` does) when it runs already, so that it reads its configuration again."""
        if host in self.servers:
            h.REGISTRY.kill_group(self.servers.pop(host))
        popen = self._spawn(self.net.ns(host), [self.bin, "server"],
                            self.workdir / f"pgbackrest-{host}.log",
                            f"pgbackrest server {host}",
                            env={"PGBACKREST_CONFIG": str(self.configs[host])})
        self.servers[host] = popen.pid

    def before_patroni(self) -> None:
        # As on VMs: the repository host exists before the database nodes are configured.
        self.start_servers()

    def pgbackrest(self, *args: str, host: str = "repo", timeout: float = 300,
                   check: bool = True) -> subprocess.CompletedProcess:
        cmd = ["ip", "netns", "exec", self.net.ns(host), "runuser", "-u", "postgres", "--",
               "env", f"PGBACKREST_CONFIG={self.configs[host]}", self.bin,
               f"--stanza={self.backup_spec.stanza}", *args]
        return h.run(cmd, check=check, timeout=timeout, cwd="/")

    def start_backups(self) -> None:
        """The stanza created and the archive proven to work."""

        last: list[str] = []

        def stanza_created() -> bool:
            p = self.pgbackrest("stanza-create", check=False, timeout=120)
            last[:] = [(p.stderr + p.stdout).strip()]
            return p.returncode == 0
        try:
            self.wait_for("stanza-create on the repository host", stanza_created, 120, 2)
        except h.HarnessError as e:
            raise h.HarnessError(f"{e}: {last[0] if last else ''}") from None
        self.pgbackrest("check", timeout=180)

    def info(self) -> dict:
        out = self.pgbackrest("--output=json", "info").stdout
        (stanza,) = json.loads(out)
        return stanza

    def backups(self) -> list[dict]:
        return self.info()["backup"]

    def restore_to(self, target: RestoreTarget) -> None:
        """Point-in-time recovery of the whole cluster, as the product does it: Patroni
        stopped everywhere, the DCS (Raft) and every data directory emptied, and the
        cluster bootstrapped again from the repository at `target` (patroni.yml's restore
        method); the other nodes become replicas."""
        for name in self.nodes:
            self.crash(name)
        for node in self.nodes.values():
            for d in (Path(node.paths.raft_dir), Path(node.paths.data_dir)):
                shutil.rmtree(d, ignore_errors=True)
                d.mkdir(mode=0o700)
                self._chown(d)
        self.restore_target = target
        for node in self.spec.nodes:
            self.nodes[node.name] = self._prepare_node(node)
        self.event(f"restore to {target.kind} {target.value}")
        for name in self.nodes:
            self.start_patroni(name)

    def become_clone(self, name: str, target: RestoreTarget) -> None:
        """The nodes become another stack, `name`, created from this one's repository as
        a stack with cloneFromStack is: every node loses its data and Raft state, gets the
        product's clone-source configuration (components.clone) with the client identity
        the source exports, and the cluster bootstraps from the source's backups. The
        source's repository host keeps running; the clone has no repository of its own."""
        for n in self.nodes:
            self.crash(n)
        source = clone.CloneSource(
            stack=f"organization/pgha/{self.spec.cluster_name}",
            stanza=self.spec.cluster_name, host=REPO_IP, port=backup.TLS_PORT,
            postgres_version=self.spec.postgres_version, ca_cert=self.ca.decode(),
            cert=self.clone_identity[1].decode(), key=self.clone_identity[0].decode())
        self.spec = build_spec({**self.raw_settings, "clusterName": name,
                                "cloneFromStack": source.stack,
                                "restoreTarget": target.text})
        self.clone_source = (source, target)
        for node in self.spec.nodes:
            n = self.nodes[node.name]
            for d in (Path(n.paths.raft_dir), Path(n.paths.data_dir)):
                shutil.rmtree(d, ignore_errors=True)
                d.mkdir(mode=0o700)
                self._chown(d)
            paths = self.clone_paths(node.name)
            own = n.dir / "pgbackrest"  # the node's log and lock directories
            bpaths = backup.BackupPaths(log=str(own / "log"), lock=str(own / "lock"),
                                        bin=self.bin)
            Path(paths.dir).mkdir(exist_ok=True)
            self._chown(Path(paths.dir))
            self._write(Path(paths.ca), source.ca_cert, 0o644)
            self._write(Path(paths.cert), source.cert, 0o644)
            self._write(Path(paths.key), source.key)
            self._write(Path(paths.config), clone.render_conf(
                source, n.paths.data_dir, paths, bpaths))
            self.nodes[node.name] = self._prepare_node(node)
        self.event(f"clone {name} of {source.stanza} at {target.text}")
        for n in self.nodes:
            self.start_patroni(n)

    def clone_pgbackrest(self, host: str, *args: str) -> subprocess.CompletedProcess:
        """pgBackRest on a clone's node through its clone-source configuration."""
        source, _ = self.clone_source
        cmd = ["ip", "netns", "exec", self.net.ns(host), "runuser", "-u", "postgres", "--",
               self.bin, f"--config={self.clone_paths(host).config}",
               f"--stanza={source.stanza}", *args]
        return h.run(cmd, timeout=120, cwd="/")

    def archive_queue(self, name: str) -> list[str]:
        """WAL segments node `name`'s PostgreSQL still has to archive."""
        status = Path(self.nodes[name].paths.data_dir) / "pg_wal" / "archive_status"
        return sorted(p.name[:-len(".ready")] for p in status.glob("*.ready")
                      if len(p.name) == 24 + len(".ready"))

    def repository_lock_held(self, kind: str = "archive") -> bool:
        """Whether a process on the repository host holds the stanza's `kind` lock (read
        from /proc/locks, so that looking never takes the lock itself)."""
        path = self.repo_dir / "lock" / f"{self.backup_spec.stanza}-{kind}.lock"
        try:
            inode = path.stat().st_ino
        except FileNotFoundError:
            return False  # pgBackRest removes the file when it releases the lock
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            # "1: FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF"
            if len(fields) > 5 and fields[1] == "FLOCK" and \
                    fields[5].rsplit(":", 1)[-1] == str(inode):
                return True
        return False

    def archived_segments(self) -> set[str]:
        """The WAL segments in the repository's archive (names only: file names are not
        encrypted)."""
        listing = self.pgbackrest("repo-ls", "--recurse",
                                  f"archive/{self.backup_spec.stanza}").stdout
        return set(re.findall(r"\b([0-9A-F]{24})-[0-9a-f]{40}\b", listing))

    def archive_get(self, name: str, via: str) -> bytes:
        """Fetch one file from the WAL archive as node `via`'s restore_command would."""
        dest = self.nodes[via].dir / "pgbackrest" / "spool" / f"fetched-{name}"
        self.pgbackrest("archive-get", name, str(dest), host=via, timeout=120)
        data = dest.read_bytes()
        dest.unlink()
        return data

