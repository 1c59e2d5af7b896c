"""The running VM cluster as the tests see it: REST, SQL and SSH from the lab's namespace,
health judged by the program's own probe, waits with deadlines, and timings."""
from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psycopg

from components import health
from components.config import REPOSITORY_NAME, RESTAPI_PORT, build_spec
from components.tls import ca_file_name
from tests import netns, workload
from tests.conftest import REPO
from tests.vm.lab import Lab
from tests.vm.plan import Plan, Step
from tests.vm.remote import Ssh, StepFailed, StepResult, run_deletes, run_steps

# How often a wait for a rejoining node asks whether it streams (VmCluster.wait_streaming).
STREAMING_POLL_S = 3


@dataclass
class Timings:
    """Figures for the benchmark table printed at the end of the run."""
    rows: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    notes: list[str] = field(default_factory=list)

    def add(self, what: str, seconds: float) -> None:
        self.rows[what].append(round(seconds, 1))

    def table(self) -> str:
        lines = [f"{'what':58} {'n':>3} {'min':>7} {'median':>7} {'max':>7}"]
        for what, values in self.rows.items():
            v = sorted(values)
            lines.append(f"{what:58} {len(v):3d} {v[0]:7.1f} {v[len(v) // 2]:7.1f} "
                         f"{v[-1]:7.1f}")
        return "\n".join(lines)


class VmCluster:
    def __init__(self, plan: Plan, lab: Lab, ssh: Ssh, timings: Timings, workdir: Path):
        self.plan, self.lab, self.ssh, self.timings = plan, lab, ssh, timings
        self.workdir = workdir
        self.spec = build_spec(plan.settings)
        self.addresses = plan.addresses
        self.names = list(self.addresses)
        self.pool = netns.executor(lab.netns, workers=6)
        # With TLS on, the lab saves the stack's caCertificate output as a user would,
        # and every REST and SQL client verifies the nodes against it.
        self.ca_file: Path | None = None
        self.tls_context: ssl.SSLContext | None = None
        if "caCertificate" in plan.outputs:
            self.ca_file = workdir / ca_file_name(self.spec)
            self.ca_file.write_text(plan.outputs["caCertificate"])
            self.tls_context = ssl.create_default_context(cafile=str(self.ca_file))

    # ---- plumbing ----------------------------------------------------------------------
    def in_ns(self, fn: Callable, *args, timeout: float = 60) -> Any:
        return self.pool.submit(fn, *args).result(timeout=timeout)

    def domain(self, name: str) -> str:
        return self.plan.domains[name]["name"]

    def login(self, name: str) -> Step:
        """Any of the host's steps carries its SSH connection (a node, or the backup
        repository)."""
        return next(s for s in self.plan.steps.values()
                    if s.host == self.plan.hosts[name])

    def sh(self, name: str, command: str, timeout: float = 120,
           dial_deadline: float = 30) -> subprocess.CompletedProcess:
        return self.ssh.run(self.login(name), command, timeout=timeout,
                            dial_deadline=dial_deadline)

    def run_steps(self, only=None) -> dict[str, StepResult]:
        try:
            results = run_steps(self.ssh, self.plan.steps, only)
        except StepFailed as failure:
            raise StepFailed(f"{failure}\n(each node's state when it failed: "
                             f"{self.save_diagnostics('failed-step')})") from None
        for result in results.values():
            step = result.name.replace(self.spec.cluster_name + "-", "")
            kind = step.split("-provision-")[-1] if "-provision-" in step else step
            self.timings.add(f"step {kind}", result.seconds)
        return results

    def save_diagnostics(self, tag: str) -> Path:
        """What a DBA would look at first, from every node that answers, into one file in
        the run's directory (kept after the run, unlike the VMs): the members as Patroni
        sees them, Patroni's last log lines (PostgreSQL's own among them) and pgBackRest's."""
        out = self.workdir / f"diagnostics-{tag}-{time.strftime('%H%M%S')}.txt"
        command = (
            "sudo -u postgres patronictl -c /etc/patroni/patroni.yml list 2>&1 || true; "
            "sudo journalctl -u patroni -n 120 --no-pager 2>&1 || true; "
            "sudo sh -c 'tail -n 40 /var/log/pgbackrest/*.log' 2>&1 || true")
        with open(out, "w") as report:
            for name in [*self.names, *([REPOSITORY_NAME] if REPOSITORY_NAME in self.plan.hosts
                                       else [])]:
                report.write(f"===== {name}\n")
                try:
                    result = self.sh(name, command, timeout=60, dial_deadline=10)
                    report.write(result.stdout + result.stderr)
                except Exception as error:  # noqa: BLE001 - a node that is down says so
                    report.write(f"(no answer: {error})\n")
        return out

    # ---- a changed stack (what `pulumi up` does with it) ---------------------------------
    def adopt(self, plan: Plan) -> None:
        """The stack now says `plan`'s settings, as a user's would after `pulumi up`."""
        self.plan, self.spec = plan, build_spec(plan.settings)
        self.addresses = plan.addresses
        self.names = list(self.addresses)

    def apply(self, plan: Plan) -> dict[str, StepResult]:
        """`pulumi up` from the running plan to `plan`: new domains, then the new and
        changed steps in dependency order, then the removed steps' deletes in reverse
        order, then the removed domains and their volumes."""
        before = self.plan
        self.lab.create_nodes(plan, [n for n in plan.domains if n not in before.domains])
        changed = plan.steps_changed_since(before)
        self.adopt(plan)
        results = self.run_steps(changed)
        results.update(run_deletes(self.ssh, plan.steps_removed_since(before)))
        volumes = {v["name"] for v in plan.volumes} | {s["name"] for s in plan.seeds.values()}
        for name in [n for n in before.domains if n not in plan.domains]:
            domain = before.domains[name]
            gone = [v["name"] for v in before.volumes if v["name"] not in volumes
                    and v["name"].startswith(domain["name"])]
            gone += [before.seeds[name]["name"]]
            self.lab.remove_node(domain, gone)
        return results

    # ---- Patroni and PostgreSQL --------------------------------------------------------
    def rest(self, name: str, path: str, timeout: float = 3) -> Any:
        def get():
            scheme = "https" if self.tls_context else "http"
            url = f"{scheme}://{self.addresses[name]}:{RESTAPI_PORT}{path}"
            with urllib.request.urlopen(url, timeout=timeout,
                                        context=self.tls_context) as response:
                return json.load(response)
        return self.in_ns(get, timeout=timeout + 5)

    def cluster_view(self) -> dict | None:
        for name in self.names:
            try:
                return self.rest(name, "/cluster")
            except Exception:  # noqa: BLE001 - try the next node
                continue
        return None

    def members(self) -> dict[str, dict]:
        view = self.cluster_view() or {}
        return {m["name"]: m for m in view.get("members", [])}

    def streaming(self, name: str) -> bool:
        """`name` itself says it streams from a primary (its /patroni), and the leader's
        view of the DCS agrees. A node's own /cluster can be a stale copy right after it
        boots, showing it as it was before the power went."""
        if self.rest(name, "/patroni").get("replication_state") != "streaming":
            return False
        leader = self.leader()
        if leader is None:
            return False
        members = {m["name"]: m for m in self.rest(leader, "/cluster").get("members", [])}
        return members.get(name, {}).get("state") == "streaming"

    def wait_streaming(self, name: str, timeout: float) -> None:
        """Wait until `name` streams (see `streaming`), asking every STREAMING_POLL_S: each
        ask is three HTTPS requests to the nodes' REST APIs, and on the VMs each costs
        50-80 ms of a host core (TLS handshake, Patroni asking PostgreSQL), taken from the
        very node that is rejoining."""
        self.wait_for(f"{name} streaming", lambda: self.streaming(name), timeout,
                      STREAMING_POLL_S)

    def wait_writable(self, name: str, timeout: float) -> None:
        """Wait until `name` is out of recovery: a leader that took the lock may still be
        promoting (the end of recovery, a new timeline), 30 s on an emulated CPU under load."""
        def writable() -> bool:
            return self.sql(self.node_dsn(name), "SELECT NOT pg_is_in_recovery()")[0][0]
        self.wait_for(f"{name} writable", writable, timeout, 1)

    def leader(self) -> str | None:
        leaders = [n for n, m in self.members().items()
                   if m.get("role") == "leader" and m.get("state") == "running"]
        return leaders[0] if len(leaders) == 1 else None

    def wait_new_leader(self, old: str, timeout: float) -> str:
        """Wait until a running leader other than `old` exists; return its name."""
        def new_leader() -> str | None:
            leader = self.leader()
            return leader if leader not in (None, old) else None
        return self.wait_for(f"a leader other than {old}", new_leader, timeout, 0.5)

    def archive_backlog(self, name: str) -> str:
        """WAL segments waiting for archive_command on `name` (.ready files), what
        pg_stat_archiver says there, and how many segments pg_wal holds: the first two
        are what Patroni archives before pg_rewind, the last what pg_rewind copies."""
        wal = f"{self.spec.layout.pg_data_dir}/pg_wal"
        counts = self.sh(name, f"sudo find {wal} -maxdepth 1 -regex '.*/[0-9A-F]*' "
                               f"-type f | wc -l; sudo find {wal}/archive_status "
                               "-name '*.ready' | wc -l").stdout.split()
        try:
            stats = self.sql(self.node_dsn(name), "SELECT archived_count, failed_count, "
                             "last_archived_wal, last_failed_wal FROM pg_stat_archiver")[0]
        except Exception as error:  # noqa: BLE001 - the figure is a diagnosis, not a verdict
            stats = f"unavailable: {error}"
        return f"pg_wal holds {counts[0]} segments, {counts[1]} ready to archive; " \
               f"pg_stat_archiver (archived, failed, last, last failed) = {stats}"

    def rejoin_log(self, name: str) -> str:
        """What Patroni did on `name` since it booted: the lines that tell where a slow
        rejoin spent its time (archiving ready WAL, crash recovery, pg_rewind, replay)."""
        pattern = ("archiv|rewind|recovery|single-user|starting|bootstrap|following|"
                   "waiting|Lock owner|failed|error|demot|promot|replica|pgbackrest|"
                   "remov|clone|timeline|restor")
        return self.sh(name, "sudo journalctl -b -u patroni -o short-precise --no-pager "
                             f"| grep -E -i '{pattern}' | tail -n 80").stdout

    def served_serials(self, name: str) -> tuple[int, int]:
        """The serial numbers of the certificates `name` serves now: PostgreSQL's (after
        its SSLRequest, as libpq asks) and the REST API's, seen from the lab."""
        from cryptography import x509  # noqa: PLC0415 - the TLS tests only
        ip = self.addresses[name]
        shown = subprocess.run(
            ["ip", "netns", "exec", self.lab.netns, "openssl", "s_client", "-starttls",
             "postgres", "-connect", f"{ip}:5432", "-CAfile", str(self.ca_file),
             "-verify_return_error"], input="", text=True, capture_output=True, timeout=30)
        pem = shown.stdout[shown.stdout.index("-----BEGIN CERTIFICATE-----"):
                           shown.stdout.index("-----END CERTIFICATE-----") + 25]
        rest = self.in_ns(ssl.get_server_certificate, (ip, RESTAPI_PORT))
        return (x509.load_pem_x509_certificate(pem.encode()).serial_number,
                x509.load_pem_x509_certificate(rest.encode()).serial_number)

    # ---- the backup repository (backups on) ----------------------------------------------
    def pgbackrest(self, *args: str, timeout: float = 120) -> str:
        """A pgBackRest command on the repository host, as its admin would run it."""
        command = " ".join(["sudo -u pgbackrest pgbackrest",
                            f"--stanza={self.spec.cluster_name}", *args])
        p = self.sh(REPOSITORY_NAME, command, timeout=timeout)
        assert p.returncode == 0, (command, p.stdout, p.stderr)
        return p.stdout

    def repository_info(self) -> dict:
        (stanza,) = json.loads(self.pgbackrest("--output=json", "info"))
        return stanza

    def wait_archived(self, leader: str) -> str:
        """Switch WAL on the leader and wait until that segment is in the repository."""
        dsn = self.node_dsn(leader)
        segment = self.sql(dsn, "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
        self.wait_for(f"{segment} archived", lambda: (self.sql(
            dsn, "SELECT last_archived_wal FROM pg_stat_archiver")[0][0] or "") >= segment,
            timeout=180, interval=2)
        return segment

    def patroni_pids(self) -> dict[str, str]:
        """Patroni's main PID on every node: unchanged means Patroni was not restarted."""
        return {n: self.sh(n, "systemctl show -p MainPID --value patroni").stdout.strip()
                for n in self.names}

    def health(self) -> tuple[list[str], str]:
        """The program's own verdict: its probe (the invoke it runs on every up and
        preview), run from the lab's namespace, judged by components/health.py."""
        p = subprocess.run(["ip", "netns", "exec", self.lab.netns, "python3", "-"],
                           input=self.plan.health_probe, text=True, capture_output=True,
                           timeout=60)
        return health.health_findings(self.spec, self.addresses, p.stdout)

    def wait_for(self, what: str, predicate: Callable[[], Any], timeout: float,
                 interval: float = 1.0) -> Any:
        deadline = time.monotonic() + timeout
        last_error = None
        while time.monotonic() < deadline:
            try:
                value = predicate()
                if value:
                    return value
            except Exception as error:  # noqa: BLE001 - keep waiting, report the last
                last_error = error
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                             + (f" (last error: {last_error})" if last_error else "")
                             + f"; health: {self.health()}")

    def wait_healthy(self, timeout: float = 600) -> str:
        """Wait until the program's probe finds nothing wrong and then the leader read
        back is the one it named; return that leader."""
        def healthy_leader() -> str | None:
            warnings, summary = self.health()
            leader = None if warnings else self.leader()
            return leader if leader and summary.startswith(
                f"cluster healthy: leader {leader},") else None
        return self.wait_for("a healthy cluster", healthy_leader, timeout, 3)

    def password(self) -> str:
        return self.plan.outputs["passwords"]["superuser_password"]

    def sql(self, dsn: str, query: str, params: tuple = ()) -> list[tuple]:
        def run():
            with psycopg.connect(dsn, password=self.password(), autocommit=True) as conn:
                cur = conn.execute(query, params)
                return cur.fetchall() if cur.description else []
        return self.in_ns(run)

    def dsn(self, output: str) -> str:
        """The stack's DSN output `output` as a client uses it: its sslrootcert is where
        the lab saved caCertificate."""
        dsn = self.plan.outputs[output]
        if self.ca_file is not None:
            dsn = dsn.replace(f"sslrootcert={self.ca_file.name}", f"sslrootcert={self.ca_file}")
        return dsn

    def node_dsn(self, name: str) -> str:
        tls = (f" sslmode=verify-full sslrootcert={self.ca_file}" if self.ca_file else "")
        return (f"host={self.addresses[name]} port=5432 dbname=postgres user=postgres "
                f"connect_timeout=5{tls}")

    # ---- the writer (workload) and its verdict ------------------------------------------
    def start_writer(self, tag: str) -> "Writer":
        self.sql(self.dsn("dsnReadWrite"),
                 f"CREATE TABLE IF NOT EXISTS {workload.WRITES_TABLE} "
                 f"(id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
        first = self.sql(self.dsn("dsnReadWrite"),
                         f"SELECT coalesce(max(id), 0) + 1 FROM {workload.WRITES_TABLE}")[0][0]
        out = self.workdir / f"writer-{tag}.jsonl"
        dsn = self.dsn("dsnReadWrite") + "&" + workload.CLIENT_TCP
        popen = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.netns, str(REPO / ".venv/bin/python"),
             str(workload.SCRIPT), "writer", "--dsn", dsn, "--out", str(out),
             "--first-id", str(first), "--interval", "0.2"],
            env={"PGPASSWORD": self.password(), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        return Writer(popen, out)

    def lost_writes(self, acknowledged: set[int]) -> set[int]:
        leader = self.leader()
        assert leader, "no leader to read the writes from"
        rows = self.sql(self.node_dsn(leader), f"SELECT id FROM {workload.WRITES_TABLE}")
        return acknowledged - {r[0] for r in rows}


@dataclass
class Writer:
    popen: subprocess.Popen
    out: Path

    def stop(self) -> set[int]:
        """Stop writing; the ids the server acknowledged."""
        self.popen.terminate()
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)
        return workload.acknowledged_ids(self.records())

    def records(self) -> list[dict]:
        """Every attempt so far: id, when (t), whether acknowledged (ok)."""
        return [json.loads(line) for line in self.out.read_text().splitlines()
                if line.strip()]
