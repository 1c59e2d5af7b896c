"""A private libvirt for end-to-end tests: its own namespaces, config, socket and state.

Safe on a developer's real KVM host: the host's own libvirtd (default socket
/run/libvirt/libvirt-sock, config /etc/libvirt, state /var/lib/libvirt) is never
contacted, stopped or changed, and nothing is created, changed or deleted under
/etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/cache/libvirt or
/var/log/libvirt of the host (tests/e2e/test_libvirt_isolation.py checks this).

Usage (as root, no systemd needed)::

    with LibvirtHost() as h:                  # or h = LibvirtHost().start() ... h.stop()
        h.virsh("list", "--all")              # always the private daemon (h.uri)
        net = h.define_network(xml)           # isolated networks only (no <forward>)
        pool_dir = h.create_pool(h.name("pool"))
        ...

API (stable: other test tiers build on it)
-------------------------------------------
``LibvirtHost(netns=None, prefix=None, state_dir=None, start_timeout=60.0, log=[],
run_id=None, pool_root=None, keep_state=False)``; every argument is optional.

* ``run_id``: short random id of this run (6 hex digits unless given). Defaults
  derive from it: ``netns`` = ``pgha-<run_id>``, ``prefix`` = ``pgha-<run_id>``
  (libvirt domains, networks, pools and volumes of the tests must start with
  it), ``state_dir`` = ``/run/pgha-tests/<run_id>``, ``pool_root`` =
  ``<state_dir>/pools`` (``PGHA_E2E_POOL_ROOT=<dir>`` puts pools in
  ``<dir>/<run_id>`` instead, for hosts whose /run is a small tmpfs).
* ``uri``: ``qemu:///system?socket=<state_dir>/sock/libvirt-sock``. Use it for
  everything (``virsh -c``, pulumi-libvirt's provider ``uri``); never the plain
  ``qemu:///system``, which is the host's libvirtd.
* ``name(suffix)`` -> ``<prefix>-<suffix>``; ``bridge_name(index=0)`` ->
  ``pgha<run_id>br<index>`` (at most 15 characters, as Linux requires).
* ``start()`` / ``stop()`` / ``with LibvirtHost() as h``. ``stop()`` never raises
  (returns the errors met) and is safe after a partial start or twice.
* ``virsh(*args, check=True, timeout=120) -> stdout`` against ``uri``.
* ``ns(*argv) -> argv`` prefixed to run inside the network namespace (where the
  VMs' bridges are: ssh to VMs goes through it).
* ``define_network(xml) -> name`` (defines and starts; refuses <forward> and
  names without the prefix); ``dhcp_leases(network)``;
  ``wait_for_lease(network, mac, timeout=300) -> ip``.
* ``create_pool(name) -> Path``: a started ``dir`` pool in ``pool_root/<name>``.
* ``start_proxy(gateway_ip, port=3128, allowed_hosts=None) -> url`` and
  ``start_file_server(directory, bind_ip, port=8080) -> url``: see libvirt_relay.py.
* ``cleanup_prefixed(prefix=None)``: destroy/undefine the prefix's objects.
* ``status() -> dict``; ``private_dirs`` (host path of each private libvirt
  directory, e.g. ``private_dirs["/var/log/libvirt"] / "qemu" / "<dom>.log"``);
  ``qemu_user`` (user:group QEMU runs as, from the private qemu.conf).
* ``mark_kept()``: leave the run for a later ``sweep_stale(include_kept=True)``
  (what ``smoke_boot.py --keep`` / ``--stop`` use).
* ``LibvirtHost.sweep_stale(include_kept=False) -> list[str]``: tear down runs
  of earlier, dead processes (``start()`` does this itself).

How the isolation works
-----------------------
* ``start()`` creates ``/run/pgha-tests/<run_id>`` and holds an exclusive
  ``flock`` on its ``lock`` file for as long as the run lives; a run whose lock
  is free belongs to a dead process. Creating a run and sweeping stale ones
  happen under a global ``flock`` on ``/run/pgha-tests/.lock``, so concurrent
  runs on one machine never take each other's resources. The sweep only looks
  at directories there that hold a ``run.json`` written by this module, and
  kills only PIDs from their pidfiles that still are the recorded program with
  the recorded start time, and processes inside the run's own network
  namespace (checked by namespace inode); never anything by name.
* The daemons start as ``ip netns exec <netns> unshare --mount --propagation
  private -- python3 -c <launcher>``. In that private mount namespace the
  launcher bind-mounts the run's own directories over /etc/libvirt,
  /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt, and moves a fresh
  tmpfs over /run that holds only /run/libvirt (bound to the run's own
  directory: the host may have no /run/libvirt to bind over) and the run's
  state directory (bound back at the same path). Hiding the host's /run also
  hides its D-Bus and systemd sockets: the private libvirtd cannot register
  machines with systemd-machined or ask firewalld to change the host's
  firewall. ``ip netns exec`` mounts a namespace-private /sys without the
  cgroup tree, so no host cgroups are created either. Then ``virtlogd -d`` and
  ``libvirtd -d`` start; they and everything they spawn (dnsmasq, QEMU) live in
  both namespaces, and the mounts vanish with the last of them.
* The private /etc/libvirt is a copy of the host's ``*.conf`` files and stock
  nwfilter rules, without any object definitions, autostart links or hooks of
  the host (so neither its ``default`` NAT network nor its own VMs can start
  here), with ``unix_sock_dir`` pointing at ``<state_dir>/sock`` (outside the
  private mounts, so ``virsh -c <uri>`` reaches it from anywhere), root-only
  sockets, ``security_driver = "none"`` (no AppArmor/SELinux profiles written
  to the host's /etc/apparmor.d) and no lock manager (no virtlockd).
* The private cache starts from ``/run/pgha-tests/.qemu-capabilities`` (QEMU
  capabilities saved by earlier runs; libvirt re-probes when they no longer
  match its QEMU), so a start takes about 1 s instead of about 9.
* QEMU runs as the user of the private qemu.conf (Debian: libvirt-qemu);
  libvirt's dynamic ownership hands it the disk images at domain start. State
  and pool directories are created 0755 so that user can reach them; ``start()``
  checks this.

Its parts live beside it: host_processes.py (host programs, processes,
namespaces, mounts, locks), libvirt_relay.py (the package relay and the file
server) and libvirt_objects.py (networks, pools, leases, the prefix's cleanup),
the last two mixed into ``LibvirtHost``. Import everything from this module.

Domains must use ``type='qemu'`` (TCG): /dev/kvm on these machines is not
hardware KVM and crashes Debian kernels. Nothing here touches /dev/kvm.

No pytest dependency at import; installs nothing (``missing_tools()`` tells
what is absent).
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# host_processes, libvirt_objects and libvirt_relay sit beside this module and are
# imported by their own names, as its users import it (tests/e2e on sys.path); this
# finds them also when it is imported as tests.e2e.libvirt_host.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from host_processes import (  # noqa: E402
    TOOLS,
    LibvirtHostError,
    _alive,
    _flock,
    _mounts_below,
    _ns_id,
    _proc_exe_name,
    _proc_starttime,
    _run,
    _terminate,
    _try_flock,
    _unix_peer_pid,
    free_tcp_port,
    missing_tools,
)
from libvirt_objects import LibvirtObjectsMixin  # noqa: E402
from libvirt_relay import DEFAULT_ALLOWED_HOSTS, RelayMixin, host_apt_hosts  # noqa: E402

# The public names, those of its parts included: other code imports them from here.
__all__ = [
    "CAPS_CACHE",
    "DEFAULT_ALLOWED_HOSTS",
    "GLOBAL_LOCK",
    "HOST_LIBVIRT_DIRS",
    "HOST_URI",
    "RUN_ID_RE",
    "RUN_ROOT",
    "TOOLS",
    "LibvirtHost",
    "LibvirtHostError",
    "free_tcp_port",
    "host_apt_hosts",
    "missing_tools",
]

# Everything a run owns on the host lives below this directory.
RUN_ROOT = Path("/run/pgha-tests")
GLOBAL_LOCK = RUN_ROOT / ".lock"
# QEMU capabilities that earlier runs probed (libvirt re-probes when they no
# longer match the QEMU binary): saves libvirtd several seconds at start.
CAPS_CACHE = RUN_ROOT / ".qemu-capabilities"
RUN_ID_RE = re.compile(r"[a-z0-9]{3,10}")

# The host's libvirtd. LibvirtHost never uses it; tests may only look at it read-only.
HOST_URI = "qemu:///system"

# Host directories of the stock libvirt that a run must never touch, and the
# private directory (below state_dir) bound over each inside the run's mount
# namespace.
HOST_LIBVIRT_DIRS: tuple[str, ...] = (
    "/etc/libvirt",
    "/run/libvirt",
    "/var/lib/libvirt",
    "/var/cache/libvirt",
    "/var/log/libvirt",
)
_PRIVATE_SUBDIRS: dict[str, str] = {
    "/etc/libvirt": "etc",
    "/run/libvirt": "run",
    "/var/lib/libvirt": "lib",
    "/var/cache/libvirt": "cache",
    "/var/log/libvirt": "log",
}

# Environment the daemons must not inherit: systemd socket activation, D-Bus.
_DAEMON_ENV_DROP = (
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "DBUS_SYSTEM_BUS_ADDRESS",
    "DBUS_SESSION_BUS_ADDRESS",
    "XDG_RUNTIME_DIR",
    "LIBVIRT_DEFAULT_URI",
)

# Runs inside `ip netns exec NS unshare --mount --propagation private --`:
# private mounts, then the two daemons (which fork into the background).
_LAUNCHER = r"""
import ctypes, json, os, subprocess, sys
cfg = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 4096, 8192, 16384, 1 << 18
def mount(src, dst, fstype=None, flags=0, data=None):
    enc = lambda s: None if s is None else s.encode()
    if libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)) != 0:
        sys.exit("mount %s -> %s: %s" % (src, dst, os.strerror(ctypes.get_errno())))
mount(None, "/", None, MS_REC | MS_PRIVATE)
newrun = cfg["newrun"]
mount("pgha-tests-run", newrun, "tmpfs", 0, "mode=0755,size=64m")
for rel, mode in cfg["newrun_dirs"]:
    os.makedirs(os.path.join(newrun, rel), exist_ok=True)
    os.chmod(os.path.join(newrun, rel), mode)
for src, dst in cfg["binds"]:
    mount(src, dst, None, MS_BIND)
mount(newrun, "/run", None, MS_MOVE)
for argv, extra_env in cfg["daemons"]:
    p = subprocess.run(argv, env=dict(os.environ, **extra_env), stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        sys.exit("%s exited %d" % (argv[0], p.returncode))
"""


def _set_conf(path: Path, values: dict[str, str]) -> None:
    """Set ``key = value`` lines in a libvirt config file; earlier settings of
    those keys (also multi-line lists) are commented out, since libvirt uses the
    first one."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    out: list[str] = []
    in_list = False
    for line in lines:
        if in_list:
            out.append("#pgha-tests# " + line)
            in_list = "]" not in line
            continue
        m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)", line)
        if m and m.group(1) in values:
            out.append("#pgha-tests# " + line)
            in_list = "[" in m.group(2) and "]" not in m.group(2)
            continue
        out.append(line)
    out.append("")
    out.append("# Set by tests/e2e/libvirt_host.py for a private test libvirt:")
    out.extend(f"{k} = {v}" for k, v in values.items())
    path.write_text("\n".join(out) + "\n")



@dataclass
class LibvirtHost(LibvirtObjectsMixin, RelayMixin):
    """A private libvirtd (+ virtlogd) in its own network and mount namespaces.

    See the module docstring for the API and how it is isolated.
    """

    netns: str | None = None
    prefix: str | None = None
    state_dir: Path | None = None
    start_timeout: float = 60.0
    log: list[str] = field(default_factory=list)
    run_id: str | None = None
    pool_root: Path | None = None
    keep_state: bool = False
    _lock_fd: int | None = field(default=None, init=False, repr=False)
    _netns_id: tuple[int, int] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.state_dir is not None:
            sd = Path(self.state_dir)
            if sd.parent != RUN_ROOT:
                raise ValueError(f"state_dir must be {RUN_ROOT}/<run_id>, not {sd}")
            if self.run_id is not None and self.run_id != sd.name:
                raise ValueError("state_dir and run_id disagree")
            self.run_id = sd.name
        if self.run_id is None:
            self.run_id = secrets.token_hex(3)
        if not RUN_ID_RE.fullmatch(self.run_id):
            raise ValueError(f"bad run id {self.run_id!r} (want {RUN_ID_RE.pattern})")
        self.netns = self.netns or f"pgha-{self.run_id}"
        self.prefix = self.prefix or f"pgha-{self.run_id}"
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", self.netns):
            raise ValueError(f"bad namespace name {self.netns!r}")
        self.state_dir = RUN_ROOT / self.run_id
        if self.pool_root is None:
            env_root = os.environ.get("PGHA_E2E_POOL_ROOT")
            self.pool_root = Path(env_root) / self.run_id if env_root else self.state_dir / "pools"
        self.pool_root = Path(self.pool_root)
        if self.pool_root.name != self.run_id and self.pool_root != self.state_dir / "pools":
            raise ValueError(f"pool_root must be <dir>/{self.run_id} (it is removed at stop)")
        if not self.pool_root.is_relative_to(self.state_dir) and Path("/run") in self.pool_root.parents:
            raise ValueError("pool_root outside state_dir must not be under /run (hidden from libvirtd)")
        if os.environ.get("PGHA_E2E_KEEP_STATE") == "1":
            self.keep_state = True

    # ------------------------------------------------------------ naming
    @property
    def uri(self) -> str:
        """The private libvirtd's URI: give it to virsh, pulumi-libvirt, ..."""
        return f"qemu:///system?socket={self.socket_path}"

    @property
    def socket_path(self) -> Path:
        assert self.state_dir is not None
        return self.state_dir / "sock" / "libvirt-sock"

    def name(self, suffix: str) -> str:
        """``<prefix>-<suffix>``: a libvirt object name that belongs to this run."""
        return f"{self.prefix}-{suffix}"

    def bridge_name(self, index: int = 0) -> str:
        name = f"pgha{self.run_id}br{index}"
        if len(name) > 15:
            raise ValueError(f"bridge name {name!r} is longer than 15 characters")
        return name

    @property
    def private_dirs(self) -> dict[str, Path]:
        """Host path of the private directory that stands in for each host
        libvirt directory inside the daemons' mount namespace."""
        assert self.state_dir is not None
        return {host: self.state_dir / sub for host, sub in _PRIVATE_SUBDIRS.items()}

    @property
    def qemu_user(self) -> str:
        """``user:group`` QEMU runs as, per the private (else the host's) qemu.conf."""
        conf = self.private_dirs["/etc/libvirt"] / "qemu.conf"
        if not conf.exists():
            conf = Path("/etc/libvirt/qemu.conf")
        vals: dict[str, str] = {}
        defaults: dict[str, str] = {}
        with contextlib.suppress(OSError):
            for line in conf.read_text().splitlines():
                m = re.match(r'(#?)(user|group)\s*=\s*"([^"]+)"', line)
                if m:
                    (defaults if m.group(1) else vals).setdefault(m.group(2), m.group(3))
        # Commented "#user = ..." without indentation is the built-in default.
        user = vals.get("user") or defaults.get("user") or "root"
        group = vals.get("group") or defaults.get("group") or user
        return f"{user}:{group}"

    # ------------------------------------------------------------ helpers
    def _note(self, msg: str) -> None:
        self.log.append(msg)

    def ns(self, *argv: str) -> list[str]:
        """``argv`` prefixed to run inside the network namespace."""
        return ["ip", "netns", "exec", str(self.netns), *argv]

    def virsh(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        """``virsh -q -c <uri> args...`` (the private libvirtd); returns stdout."""
        return _run(["virsh", "-q", "-c", self.uri, *args], check=check, timeout=timeout).stdout

    def pidfile(self, name: str) -> Path:
        assert self.state_dir is not None
        return self.state_dir / f"{name}.pid"

    def logfile(self, name: str) -> Path:
        assert self.state_dir is not None
        return self.state_dir / f"{name}.log"

    def _record_path(self) -> Path:
        assert self.state_dir is not None
        return self.state_dir / "run.json"

    def _write_record(self, **extra: object) -> None:
        try:
            rec = json.loads(self._record_path().read_text())
        except (OSError, ValueError):
            rec = {}
        rec.update(
            {
                "run_id": self.run_id,
                "netns": self.netns,
                "netns_id": list(self._netns_id) if self._netns_id else None,
                "prefix": self.prefix,
                "state_dir": str(self.state_dir),
                "pool_root": str(self.pool_root),
                "uri": self.uri,
                "keep_state": self.keep_state,
            }
        )
        rec.update(extra)
        tmp = self._record_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, indent=2) + "\n")
        tmp.replace(self._record_path())

    @classmethod
    def _from_record(cls, rec: dict[str, object]) -> LibvirtHost:
        h = cls(
            netns=str(rec["netns"]),
            prefix=str(rec["prefix"]),
            run_id=str(rec["run_id"]),
            pool_root=Path(str(rec["pool_root"])),
        )
        nid = rec.get("netns_id")
        h._netns_id = (int(nid[0]), int(nid[1])) if isinstance(nid, list) else None
        return h

    def _ns_exists(self) -> bool:
        return Path(f"/run/netns/{self.netns}").exists()

    def _ns_is_ours(self) -> bool:
        """The named netns exists and is the one this run created."""
        return self._netns_id is not None and _ns_id(f"/run/netns/{self.netns}") == self._netns_id

    def _libvirt_answers(self) -> bool:
        if not self.socket_path.exists():
            return False
        try:
            p = _run(["virsh", "-c", self.uri, "version"], check=False, timeout=15)
        except subprocess.TimeoutExpired:
            return False
        return p.returncode == 0

    def _read_pidfile(self, name: str) -> tuple[int, str | None] | None:
        f = self.pidfile(name)
        try:
            fields = f.read_text().split()
        except OSError:
            return None
        if not fields or not fields[0].isdigit():
            return None
        return int(fields[0]), (fields[1] if len(fields) > 1 else None)

    def _owned_pid(self, name: str, exe: str) -> int | None:
        """PID from our pidfile if that process still is ``exe`` with the
        recorded start time."""
        rec = self._read_pidfile(name)
        if rec is None:
            return None
        pid, start = rec
        if not _alive(pid) or _proc_exe_name(pid) != exe:
            return None
        if start is None or _proc_starttime(pid) != start:
            return None
        return pid

    def _stop_pidfile(self, name: str, exe: str) -> None:
        pid = self._owned_pid(name, exe)
        if pid is not None:
            self._note(f"stopping {name} (pid {pid})")
            _terminate(pid)
        with contextlib.suppress(FileNotFoundError):
            self.pidfile(name).unlink()

    def _spawn(self, name: str, argv: Sequence[str], *, in_ns: bool) -> int:
        """Start a foreground program, record ``pid starttime`` in a pidfile."""
        assert self.state_dir is not None
        if self._owned_pid(name, os.path.basename(argv[0])) is not None:
            raise LibvirtHostError(f"{name} already running (pidfile {self.pidfile(name)})")
        cmd = self.ns(*argv) if in_ns else list(argv)
        with open(self.logfile(name), "ab") as logf:
            # ip netns exec execs the program: the PID is the program's.
            p = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        time.sleep(0.2)
        start = _proc_starttime(p.pid) or ""
        self.pidfile(name).write_text(f"{p.pid} {start}\n")
        if p.poll() is not None:
            raise LibvirtHostError(
                f"{name} exited at once ({p.returncode}): {self.logfile(name).read_text()[-2000:]}"
            )
        self._note(f"started {name} (pid {p.pid}): {' '.join(cmd)}")
        return p.pid

    @staticmethod
    def _tail(path: Path, n: int = 3000) -> str:
        try:
            return path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    # ---------------------------------------------------------- lifecycle
    def start(self) -> LibvirtHost:
        if self._lock_fd is not None:
            return self
        missing = missing_tools(["ip", "unshare", "virsh", "libvirtd", "virtlogd", "qemu-system-x86_64", "dnsmasq"])
        if missing:
            raise LibvirtHostError("missing tools: " + ", ".join(missing))
        if os.geteuid() != 0:
            raise LibvirtHostError("LibvirtHost needs root")
        for d in ("/etc/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt"):
            if not Path(d).is_dir():
                # Only a mount point: never created here (install libvirt-daemon-system).
                raise LibvirtHostError(f"{d} is missing (package libvirt-daemon-system)")
        assert self.state_dir is not None and self.pool_root is not None

        RUN_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
        with _flock(GLOBAL_LOCK):
            for what in self._sweep_locked(skip={self.run_id}):
                self._note(f"swept stale run: {what}")
            if self.state_dir.exists():
                raise LibvirtHostError(f"{self.state_dir} already exists (run id {self.run_id} in use)")
            if self._ns_exists():
                raise LibvirtHostError(f"network namespace {self.netns} already exists")
            self.state_dir.mkdir(mode=0o755)
            os.chmod(self.state_dir, 0o755)
            fd = _try_flock(self.state_dir / "lock")
            if fd is None:
                raise LibvirtHostError(f"{self.state_dir}/lock is held by someone else")
            self._lock_fd = fd
            self._write_record(owner_pid=os.getpid(), owner_start=_proc_starttime(os.getpid()), kept=False)
            self._note(f"run {self.run_id}: state in {self.state_dir}")

            _run(["ip", "netns", "add", str(self.netns)])
            self._netns_id = _ns_id(f"/run/netns/{self.netns}")
            self._write_record()
        self._note(f"created netns {self.netns}")
        _run(["ip", "-n", str(self.netns), "link", "set", "lo", "up"])

        self._make_private_dirs()
        self._check_qemu_can_reach()
        self.start_daemons()
        self._refuse_default_network()
        return self

    def start_daemons(self) -> None:
        """Launch libvirtd and virtlogd (again, after stop_daemons) and wait until the
        daemon answers on our socket."""
        self._launch_daemons()
        deadline = time.monotonic() + self.start_timeout
        while not self._libvirt_answers():
            if time.monotonic() > deadline:
                raise LibvirtHostError(
                    f"libvirtd did not answer within {self.start_timeout:.0f} s; log: "
                    + self._tail(self.logfile("libvirtd"))
                )
            if self._owned_pid("libvirtd", "libvirtd") is None:
                raise LibvirtHostError("libvirtd exited; log: " + self._tail(self.logfile("libvirtd")))
            time.sleep(0.5)
        peer = _unix_peer_pid(self.socket_path)
        ours = self._owned_pid("libvirtd", "libvirtd")
        if peer is None or peer != ours:
            raise LibvirtHostError(f"{self.socket_path} is served by pid {peer}, not by our libvirtd ({ours})")

    def stop_daemons(self) -> None:
        """What a hypervisor losing power does to libvirt: every running VM gone at once
        (no shutdown), then libvirtd and virtlogd gone. Definitions, pools and disks
        stay for start_daemons (the host coming back)."""
        for name in self.virsh("list", "--name").split():
            self.virsh("destroy", name, check=False)
        self._stop_pidfile("libvirtd", "libvirtd")
        self._stop_pidfile("virtlogd", "virtlogd")

    def _make_private_dirs(self) -> None:
        """The run's own /etc/libvirt (a filtered copy), /run/libvirt,
        /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt, socket dir."""
        assert self.state_dir is not None and self.pool_root is not None
        for d in self.private_dirs.values():
            d.mkdir(mode=0o755, exist_ok=True)
        if CAPS_CACHE.is_dir():
            caps = self.private_dirs["/var/cache/libvirt"] / "qemu" / "capabilities"
            caps.mkdir(mode=0o755, parents=True, exist_ok=True)
            for f in CAPS_CACHE.glob("*.xml"):
                shutil.copy2(f, caps / f.name)
        (self.state_dir / "newrun").mkdir(mode=0o755, exist_ok=True)
        sock = self.socket_path.parent
        sock.mkdir(mode=0o700, exist_ok=True)
        self.pool_root.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(self.pool_root, 0o755)

        etc = self.private_dirs["/etc/libvirt"]
        host_etc = Path("/etc/libvirt")
        # Only settings: no object definitions (domains, networks, pools,
        # secrets), autostart links or hooks of the host.
        for f in sorted(host_etc.iterdir()):
            if f.is_file() and not f.is_symlink() and f.suffix == ".conf":
                shutil.copy2(f, etc / f.name)
        nwf = host_etc / "nwfilter"
        if nwf.is_dir():
            (etc / "nwfilter").mkdir(mode=0o755, exist_ok=True)
            for f in sorted(nwf.glob("*.xml")):
                if f.is_file() and not f.is_symlink():
                    shutil.copy2(f, etc / "nwfilter" / f.name)
        for sub in ("qemu/networks/autostart", "qemu/autostart", "storage/autostart", "hooks"):
            (etc / sub).mkdir(mode=0o755, parents=True, exist_ok=True)
        _set_conf(
            etc / "libvirtd.conf",
            {
                "unix_sock_dir": json.dumps(str(sock)),
                "unix_sock_group": '"root"',
                "unix_sock_ro_perms": '"0700"',
                "unix_sock_rw_perms": '"0700"',
                "unix_sock_admin_perms": '"0700"',
                "auth_unix_ro": '"none"',
                "auth_unix_rw": '"none"',
            },
        )
        _set_conf(etc / "qemu.conf", {"security_driver": '"none"', "lock_manager": '"nop"'})
        os.chmod(etc / "qemu.conf", 0o600)
        if not (etc / "virtlogd.conf").exists():
            (etc / "virtlogd.conf").write_text("")

    def _check_qemu_can_reach(self) -> None:
        """The QEMU user must be able to reach images in pool_root and files
        (serial console logs) in state_dir."""
        user = self.qemu_user.split(":")[0]
        try:
            pw = pwd.getpwnam(user) if not user.startswith("+") else pwd.getpwuid(int(user[1:]))
        except (KeyError, ValueError):
            self._note(f"QEMU user {user!r} unknown here; not checking directory access")
            return
        if pw.pw_uid == 0:
            return
        gids = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if pw.pw_name in g.gr_mem}
        assert self.state_dir is not None and self.pool_root is not None
        for target in (self.state_dir, self.pool_root):
            for d in [target, *target.parents]:
                st = d.stat()
                if st.st_uid == pw.pw_uid:
                    ok = bool(st.st_mode & stat.S_IXUSR)
                elif st.st_gid in gids:
                    ok = bool(st.st_mode & stat.S_IXGRP)
                else:
                    ok = bool(st.st_mode & stat.S_IXOTH)
                if not ok:
                    raise LibvirtHostError(f"QEMU user {pw.pw_name} cannot traverse {d} (mode {oct(st.st_mode)})")

    def _log_env(self, name: str) -> dict[str, str]:
        return {"LIBVIRT_LOG_OUTPUTS": f"3:file:{self.logfile(name)}"}

    def _daemon_env(self, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _DAEMON_ENV_DROP}
        env.update(self._log_env(name))
        return env

    def _launch_daemons(self) -> None:
        assert self.state_dir is not None
        sd = self.state_dir
        rel_state = os.path.relpath(sd, "/run")
        if rel_state.startswith(".."):
            raise LibvirtHostError(f"{sd} must be below /run")
        newrun = sd / "newrun"
        dirs = self.private_dirs
        cfg = {
            "newrun": str(newrun),
            "newrun_dirs": [["libvirt", 0o755], [rel_state, 0o755], ["lock", 0o1777]],
            "binds": [
                [str(dirs["/run/libvirt"]), str(newrun / "libvirt")],
                [str(sd), str(newrun / rel_state)],
                [str(dirs["/etc/libvirt"]), "/etc/libvirt"],
                [str(dirs["/var/lib/libvirt"]), "/var/lib/libvirt"],
                [str(dirs["/var/cache/libvirt"]), "/var/cache/libvirt"],
                [str(dirs["/var/log/libvirt"]), "/var/log/libvirt"],
            ],
            "daemons": [
                [["virtlogd", "-d", "-p", str(sd / "virtlogd.daemon-pid")], self._log_env("virtlogd")],
                [["libvirtd", "-d", "-p", str(sd / "libvirtd.daemon-pid")], self._log_env("libvirtd")],
            ],
        }
        argv = self.ns(
            "unshare", "--mount", "--propagation", "private", "--",
            "/usr/bin/python3", "-c", _LAUNCHER, json.dumps(cfg),
        )
        with open(self.logfile("launch"), "ab") as logf:
            p = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                env=self._daemon_env("launch"), timeout=90,
            )
        # Record whatever started, even on failure, so that stop() finds it.
        for name in ("virtlogd", "libvirtd"):
            self._adopt_daemon(name, wait=p.returncode == 0)
        if p.returncode != 0:
            raise LibvirtHostError(
                f"starting the private libvirt failed ({p.returncode}): {self._tail(self.logfile('launch'))}"
                f"\nlibvirtd log: {self._tail(self.logfile('libvirtd'), 1500)}"
            )

    def _adopt_daemon(self, name: str, *, wait: bool) -> None:
        """Turn the daemon's own pidfile into ours (pid + start time), after
        checking that the PID is that daemon inside our network namespace."""
        assert self.state_dir is not None
        src = self.state_dir / f"{name}.daemon-pid"
        deadline = time.monotonic() + (20 if wait else 0)
        while True:
            with contextlib.suppress(OSError, ValueError):
                pid = int(src.read_text().split()[0])
                if _alive(pid) and _proc_exe_name(pid) == name and _ns_id(f"/proc/{pid}/ns/net") == self._netns_id:
                    self.pidfile(name).write_text(f"{pid} {_proc_starttime(pid)}\n")
                    self._note(f"started {name} (pid {pid}) in netns {self.netns} and a private mount namespace")
                    return
            if time.monotonic() >= deadline:
                if wait:
                    raise LibvirtHostError(f"{name} wrote no usable pidfile {src}")
                return
            time.sleep(0.1)

    def _refuse_default_network(self) -> None:
        p = _run(["virsh", "-q", "-c", self.uri, "net-list", "--name"], check=False)
        if "default" in p.stdout.split():
            raise LibvirtHostError("libvirt's 'default' (NAT) network is active: refusing to go on")

    def __enter__(self) -> LibvirtHost:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def mark_kept(self) -> None:
        """Leave this run alive after the process exits, for
        ``sweep_stale(include_kept=True)`` (plain sweeps skip it while its
        libvirtd lives)."""
        self._write_record(kept=True)

    # ------------------------------------------------------------- cleanup
    def stop(self) -> list[str]:
        """Tear everything down; never raises (returns the errors met)."""
        errors: list[str] = []

        def step(what: str, fn, *a) -> None:  # type: ignore[no-untyped-def]
            try:
                fn(*a)
            except Exception as e:  # noqa: BLE001 - teardown must go on
                errors.append(f"{what}: {e}")

        if self._owned_pid("libvirtd", "libvirtd") is not None and self._libvirt_answers():
            step("cleanup libvirt objects", self.cleanup_prefixed)
        for name in self._relay_names():
            exe = "tinyproxy" if name == "tinyproxy" else ("python3" if name.startswith("http") else "socat")
            step(f"stop {name}", self._stop_pidfile, name, exe)
        step("stop libvirtd", self._stop_pidfile, "libvirtd", "libvirtd")
        step("stop virtlogd", self._stop_pidfile, "virtlogd", "virtlogd")
        step("kill leftovers in netns", self._kill_ns_leftovers)
        if self._ns_is_ours():
            step("delete netns", _run, ["ip", "netns", "del", str(self.netns)])
        elif self._ns_exists() and self._netns_id is not None:
            errors.append(f"netns {self.netns} exists but is not the one this run created: left alone")
        step("save QEMU capabilities", self._save_caps)
        if not self.keep_state:
            step("remove state", self._remove_state)
        else:
            with contextlib.suppress(OSError):
                (self.state_dir / "proxy.sock").unlink()  # type: ignore[operator]
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None
        for e in errors:
            self._note("teardown error: " + e)
        return errors

    def _save_caps(self) -> None:
        caps = self.private_dirs["/var/cache/libvirt"] / "qemu" / "capabilities"
        files = sorted(caps.glob("*.xml")) if caps.is_dir() else []
        if not files:
            return
        CAPS_CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
        for f in files:
            tmp = CAPS_CACHE / f".{f.name}.{os.getpid()}"
            shutil.copy2(f, tmp)
            tmp.replace(CAPS_CACHE / f.name)

    def _remove_state(self) -> None:
        assert self.state_dir is not None and self.pool_root is not None
        for d in (self.pool_root, self.state_dir):
            if not d.exists():
                continue
            if d == self.state_dir and d.parent != RUN_ROOT:
                raise LibvirtHostError(f"not removing {d}: not below {RUN_ROOT}")
            mounted = _mounts_below(d)
            if mounted:
                raise LibvirtHostError(f"not removing {d}: mounts below it: {mounted}")
            shutil.rmtree(d)
            self._note(f"removed {d}")

    def _kill_ns_leftovers(self) -> None:
        """Processes still inside *our* network namespace (dnsmasq, QEMU,
        relays that libvirt or we started) are ours: stop them by PID, each
        checked against the namespace's inode."""
        if not self._ns_is_ours():
            return
        for pid in self._pids_in_netns():
            self._note(f"stopping leftover pid {pid} ({_proc_exe_name(pid)}) in netns {self.netns}")
            if _ns_id(f"/proc/{pid}/ns/net") == self._netns_id:
                _terminate(pid, timeout=10)

    def _pids_in_netns(self) -> list[int]:
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) != os.getpid():
                if _ns_id(d / "ns" / "net") == self._netns_id:
                    pids.append(int(d.name))
        return pids

    # ---------------------------------------------------- stale-run sweep
    @classmethod
    def sweep_stale(cls, *, include_kept: bool = False) -> list[str]:
        """Tear down runs of these tests whose owner process is gone (their
        lock is free). Runs marked with ``mark_kept()`` whose libvirtd still
        lives are left alone unless ``include_kept``."""
        if not RUN_ROOT.is_dir():
            return []
        with _flock(GLOBAL_LOCK):
            return cls._sweep_locked(include_kept=include_kept)

    @classmethod
    def _sweep_locked(cls, *, skip: Iterable[str | None] = (), include_kept: bool = False) -> list[str]:
        done: list[str] = []
        skip = set(skip)
        for d in sorted(RUN_ROOT.iterdir()):
            if d.name in skip or not RUN_ID_RE.fullmatch(d.name) or d.is_symlink() or not d.is_dir():
                continue
            try:
                rec = json.loads((d / "run.json").read_text())
            except (OSError, ValueError):
                continue  # not written by this module: not ours to touch
            if rec.get("run_id") != d.name or rec.get("state_dir") != str(d):
                continue
            fd = _try_flock(d / "lock")
            if fd is None:
                continue  # a live run
            try:
                host = cls._from_record(rec)
                if rec.get("kept") and not include_kept and host._owned_pid("libvirtd", "libvirtd"):
                    continue
                host._lock_fd, fd = fd, None
                host.keep_state = False
                errs = host.stop()
                done.append(f"{d.name} (netns {host.netns})" + (f": {'; '.join(errs)}" if errs else ""))
            finally:
                if fd is not None:
                    os.close(fd)
        return done

    # -------------------------------------------------------- diagnostics
    def status(self) -> dict[str, object]:
        """What is running (for diagnostics)."""
        procs = {}
        for name in ["virtlogd", "libvirtd", *self._relay_names()]:
            rec = self._read_pidfile(name)
            procs[name] = rec[0] if rec and _alive(rec[0]) else None
        return {
            "run_id": self.run_id,
            "uri": self.uri,
            "state_dir": str(self.state_dir),
            "netns": self.netns,
            "netns_exists": self._ns_exists(),
            "processes": procs,
        }

    def __repr__(self) -> str:
        return f"LibvirtHost({json.dumps(self.status())})"


if __name__ == "__main__":  # pragma: no cover - manual use
    # python3 tests/e2e/libvirt_host.py sweep [--include-kept]
    if sys.argv[1:2] == ["sweep"]:
        for line in LibvirtHost.sweep_stale(include_kept="--include-kept" in sys.argv):
            print("swept", line)
