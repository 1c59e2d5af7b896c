"""A private libvirt for end-to-end tests, inside a network namespace.

Everything here runs as root on a machine without systemd:

* ``LibvirtHost.start()`` creates a network namespace (loopback up) and starts
  ``virtlogd -d`` and ``libvirtd -d`` *inside* it (``ip netns exec``), with
  pidfiles in a state directory, and waits until ``virsh -c qemu:///system``
  answers. Bridges, taps, dnsmasq and QEMU processes that libvirt creates then
  live in that namespace: nothing the VMs do can reach the host's eth0.
* ``LibvirtHost.start_proxy(gateway_ip)`` starts a package relay: tinyproxy on
  127.0.0.1 in the *root* namespace with an allow-list of hosts, and two socat
  processes joined by a unix socket (the filesystem is shared across
  namespaces) so that VMs reach it at ``http://<gateway_ip>:3128``. No routing,
  no forwarding, no NAT.
* ``LibvirtHost.start_file_server(directory, bind_ip)`` serves a directory
  (e.g. a wheelhouse that the host filled with ``pip download``) over plain
  HTTP from inside the namespace.
* ``LibvirtHost.stop()`` removes libvirt objects whose names start with the
  given prefix, stops every process this module started (by the PID in its
  pidfile, after checking the PID still is that program), kills what is left
  inside the namespace (only children of our own daemons can be there) and
  deletes the namespace. It is safe to call after a partial start, twice, or
  from a fresh process after a crash (state is in pidfiles).

Domains must use ``type='qemu'`` (TCG): /dev/kvm on these machines is not
hardware KVM and crashes Debian kernels. Nothing here touches /dev/kvm.

No pytest dependency at import; installs nothing (``missing_tools()`` tells
what is absent).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable, Sequence

URI = "qemu:///system"

# Host programs and the Debian packages that carry them.
TOOLS: dict[str, str] = {
    "ip": "iproute2",
    "virsh": "libvirt-clients",
    "libvirtd": "libvirt-daemon-system",
    "virtlogd": "libvirt-daemon-system",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "dnsmasq": "dnsmasq-base",
    "genisoimage": "genisoimage",
    "tinyproxy": "tinyproxy-bin",
    "socat": "socat",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}

# Hosts the package relay lets through. apt.postgresql.org is not needed.
DEFAULT_ALLOWED_HOSTS: tuple[str, ...] = (
    "deb.debian.org",
    "pypi.org",
    "files.pythonhosted.org",
)

# The default network that libvirt-daemon-config-network ships NATs to the
# host's uplink. It must never start; this is where libvirtd looks for it.
DEFAULT_NET_AUTOSTART = Path("/etc/libvirt/qemu/networks/autostart/default.xml")


class LibvirtHostError(RuntimeError):
    pass


def missing_tools(tools: Iterable[str] = TOOLS) -> list[str]:
    """Programs from ``tools`` that are not on PATH (with their package)."""
    return [f"{t} ({TOOLS.get(t, '?')})" for t in tools if shutil.which(t) is None]


def host_apt_hosts() -> list[str]:
    """Host names of the Debian mirrors the host's apt uses."""
    hosts: list[str] = []
    files = [Path("/etc/apt/sources.list")]
    d = Path("/etc/apt/sources.list.d")
    if d.is_dir():
        files += sorted(d.glob("*.list")) + sorted(d.glob("*.sources"))
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("#"):
                continue
            if line.startswith("URIs:") or line.startswith("deb "):
                for m in re.finditer(r"\bhttps?://([^/\s:]+)", line):
                    if m.group(1) not in hosts:
                        hosts.append(m.group(1))
    return hosts


def _run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )
    if check and p.returncode != 0:
        raise LibvirtHostError(
            f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}"
        )
    return p


def _proc_starttime(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    rest = stat[stat.rindex(")") + 2 :].split()
    return rest[19]


def _proc_exe_name(pid: int) -> str | None:
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return None
    return os.path.basename(argv0.decode(errors="replace"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _terminate(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL one PID."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        if not _alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pid):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class LibvirtHost:
    """A libvirtd (+ virtlogd) running inside network namespace ``netns``.

    ``prefix`` names the libvirt objects (domains, networks, pools, volumes)
    that belong to the tests: ``stop()`` and ``start()`` remove leftovers
    with that prefix.
    """

    netns: str = "pgha-e2e"
    prefix: str = "pgha-e2e"
    state_dir: Path | None = None
    start_timeout: float = 60.0
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", self.netns):
            raise ValueError(f"bad namespace name {self.netns!r}")
        if self.state_dir is None:
            self.state_dir = Path("/run/pgha-e2e") / self.netns
        self.state_dir = Path(self.state_dir)

    # ------------------------------------------------------------ helpers
    def _note(self, msg: str) -> None:
        self.log.append(msg)

    def ns(self, *argv: str) -> list[str]:
        """``argv`` prefixed to run inside the namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def virsh(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        return _run(["virsh", "-q", "-c", URI, *args], check=check, timeout=timeout).stdout

    def pidfile(self, name: str) -> Path:
        assert self.state_dir is not None
        return self.state_dir / f"{name}.pid"

    def logfile(self, name: str) -> Path:
        assert self.state_dir is not None
        return self.state_dir / f"{name}.log"

    def _ns_exists(self) -> bool:
        return Path(f"/run/netns/{self.netns}").exists()

    def _libvirt_answers(self) -> bool:
        try:
            p = _run(["virsh", "-c", URI, "version"], check=False, timeout=15)
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
        """PID from our pidfile if that process still is ``exe`` (and, when
        recorded, has the same start time)."""
        rec = self._read_pidfile(name)
        if rec is None:
            return None
        pid, start = rec
        if not _alive(pid) or _proc_exe_name(pid) != exe:
            return None
        if start is not None and _proc_starttime(pid) != start:
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

    # ---------------------------------------------------------- lifecycle
    def start(self) -> LibvirtHost:
        missing = missing_tools(["ip", "virsh", "libvirtd", "virtlogd", "qemu-system-x86_64", "dnsmasq"])
        if missing:
            raise LibvirtHostError("missing tools: " + ", ".join(missing))
        if os.geteuid() != 0:
            raise LibvirtHostError("LibvirtHost needs root")
        assert self.state_dir is not None
        self.state_dir.mkdir(parents=True, exist_ok=True)

        ours = self._owned_pid("libvirtd", "libvirtd")
        if ours is None and self._libvirt_answers():
            raise LibvirtHostError(
                "a libvirtd that these tests did not start is already answering on "
                f"{URI}; refusing to use or stop it"
            )
        if DEFAULT_NET_AUTOSTART.exists() or DEFAULT_NET_AUTOSTART.is_symlink():
            # Would NAT VMs to the uplink; libvirtd starts autostart networks.
            self._note(f"removing {DEFAULT_NET_AUTOSTART} (the default network must not start)")
            DEFAULT_NET_AUTOSTART.unlink()

        if not self._ns_exists():
            _run(["ip", "netns", "add", self.netns])
            self._note(f"created netns {self.netns}")
        _run(["ip", "-n", self.netns, "link", "set", "lo", "up"])

        env_log = {
            "LIBVIRT_LOG_OUTPUTS": f"3:file:{self.logfile('libvirtd')}",
        }
        if self._owned_pid("virtlogd", "virtlogd") is None:
            self._daemon("virtlogd", ["virtlogd", "-d", "-p", str(self.pidfile("virtlogd"))], {})
        if ours is None:
            self._daemon("libvirtd", ["libvirtd", "-d", "-p", str(self.pidfile("libvirtd"))], env_log)

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
        self._refuse_default_network()
        self.cleanup_prefixed()
        return self

    def _daemon(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        """Start a self-daemonizing libvirt daemon inside the namespace."""
        full_env = dict(os.environ)
        full_env.update(env)
        with contextlib.suppress(FileNotFoundError):
            self.pidfile(name).unlink()
        with open(self.logfile(name + "-start"), "ab") as logf:
            p = subprocess.run(
                self.ns(*argv),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=full_env,
                timeout=60,
            )
        if p.returncode != 0:
            raise LibvirtHostError(f"{name} -d failed ({p.returncode}): " + self._tail(self.logfile(name + "-start")))
        deadline = time.monotonic() + 20
        while self._read_pidfile(name) is None:
            if time.monotonic() > deadline:
                raise LibvirtHostError(f"{name} wrote no pidfile {self.pidfile(name)}")
            time.sleep(0.1)
        rec = self._read_pidfile(name)
        assert rec is not None
        self._note(f"started {name} (pid {rec[0]}) in netns {self.netns}")

    def _refuse_default_network(self) -> None:
        p = _run(["virsh", "-q", "-c", URI, "net-list", "--name"], check=False)
        if "default" in p.stdout.split():
            raise LibvirtHostError("libvirt's 'default' (NAT) network is active: refusing to go on")

    @staticmethod
    def _tail(path: Path, n: int = 3000) -> str:
        try:
            return path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> LibvirtHost:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------- cleanup
    def cleanup_prefixed(self, prefix: str | None = None) -> list[str]:
        """Destroy/undefine domains, networks, pools and volumes named
        ``prefix*`` (best effort; returns what was removed)."""
        prefix = prefix or self.prefix
        removed: list[str] = []
        if not prefix:
            return removed

        def ok(*args: str) -> bool:
            return _run(["virsh", "-q", "-c", URI, *args], check=False).returncode == 0

        def names(*args: str) -> list[str]:
            p = _run(["virsh", "-q", "-c", URI, *args], check=False)
            return [n.strip() for n in p.stdout.splitlines() if n.strip()]

        for dom in names("list", "--all", "--name"):
            if dom.startswith(prefix):
                ok("destroy", dom)
                if not ok("undefine", dom, "--nvram"):
                    ok("undefine", dom)
                removed.append(f"domain {dom}")
        for net in names("net-list", "--all", "--name"):
            if net.startswith(prefix):
                ok("net-destroy", net)
                ok("net-undefine", net)
                removed.append(f"network {net}")
        for pool in names("pool-list", "--all", "--name"):
            ok("pool-refresh", pool)
            for vol in self._vol_names(pool):
                if vol.startswith(prefix) or pool.startswith(prefix):
                    if ok("vol-delete", vol, "--pool", pool):
                        removed.append(f"volume {pool}/{vol}")
            if pool.startswith(prefix):
                ok("pool-destroy", pool)
                ok("pool-delete", pool)
                ok("pool-undefine", pool)
                removed.append(f"pool {pool}")
        if removed:
            self._note("removed " + ", ".join(removed))
        return removed

    def _vol_names(self, pool: str) -> list[str]:
        p = _run(["virsh", "-q", "-c", URI, "vol-list", pool], check=False)
        out = []
        for line in p.stdout.splitlines():
            parts = line.split()
            if parts:
                out.append(parts[0])
        return out

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
        if self._ns_exists():
            step("delete netns", _run, ["ip", "netns", "del", self.netns])
        with contextlib.suppress(OSError):
            (self.state_dir / "proxy.sock").unlink()  # type: ignore[operator]
        for e in errors:
            self._note("teardown error: " + e)
        return errors

    def _relay_names(self) -> list[str]:
        assert self.state_dir is not None
        if not self.state_dir.is_dir():
            return []
        return sorted(
            p.stem
            for p in self.state_dir.glob("*.pid")
            if p.stem not in ("libvirtd", "virtlogd")
        )

    def _kill_ns_leftovers(self) -> None:
        """Processes still inside *our* namespace (dnsmasq, qemu, relays that
        libvirt or we started) are ours: stop them by PID."""
        if not self._ns_exists():
            return
        p = _run(["ip", "netns", "pids", self.netns], check=False)
        pids = [int(x) for x in p.stdout.split() if x.isdigit() and int(x) != os.getpid()]
        for pid in pids:
            self._note(f"stopping leftover pid {pid} ({_proc_exe_name(pid)}) in netns {self.netns}")
            _terminate(pid, timeout=10)

    # -------------------------------------------------------------- relays
    def start_proxy(
        self,
        gateway_ip: str = "0.0.0.0",
        port: int = 3128,
        allowed_hosts: Iterable[str] | None = None,
        proxy_port: int | None = None,
    ) -> str:
        """Package relay for the VMs; returns the proxy URL the VMs use.

        tinyproxy listens on 127.0.0.1:<proxy_port> in the root namespace and
        only lets through ``allowed_hosts`` (default: the host's Debian mirror
        hosts, deb.debian.org, pypi.org, files.pythonhosted.org). Inside the
        namespace socat listens on ``gateway_ip:port`` (the libvirt bridge's
        address, which exists only once the libvirt network is started) and
        forwards through a unix socket to a second socat in the root namespace
        that connects to tinyproxy.
        """
        missing = missing_tools(["tinyproxy", "socat"])
        if missing:
            raise LibvirtHostError("missing tools: " + ", ".join(missing))
        assert self.state_dir is not None
        hosts = list(dict.fromkeys([*host_apt_hosts(), *(allowed_hosts or DEFAULT_ALLOWED_HOSTS)]))
        proxy_port = proxy_port or free_tcp_port()
        filt = self.state_dir / "tinyproxy.filter"
        filt.write_text("".join("^" + re.escape(h) + "$\n" for h in hosts))
        conf = self.state_dir / "tinyproxy.conf"
        conf.write_text(
            "\n".join(
                [
                    "User nobody",
                    "Group nogroup",
                    f"Port {proxy_port}",
                    "Listen 127.0.0.1",
                    "Timeout 600",
                    "MaxClients 64",
                    "Allow 127.0.0.1",
                    f'Filter "{filt}"',
                    "FilterURLs Off",
                    "FilterType ere",
                    "FilterDefaultDeny Yes",
                    "ConnectPort 443",
                    "DisableViaHeader Yes",
                    "LogLevel Info",
                ]
            )
            + "\n"
        )
        os.chmod(filt, 0o644)
        os.chmod(conf, 0o644)
        self._spawn("tinyproxy", ["tinyproxy", "-d", "-c", str(conf)], in_ns=False)
        self._wait_tcp("127.0.0.1", proxy_port, in_ns=False)

        sock = self.state_dir / "proxy.sock"
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        self._spawn(
            "socat-proxy-root",
            ["socat", f"UNIX-LISTEN:{sock},fork,mode=600,unlink-early", f"TCP:127.0.0.1:{proxy_port}"],
            in_ns=False,
        )
        deadline = time.monotonic() + 10
        while not sock.exists():
            if time.monotonic() > deadline:
                raise LibvirtHostError(f"socat did not create {sock}")
            time.sleep(0.1)
        self._spawn(
            "socat-proxy-ns",
            ["socat", f"TCP-LISTEN:{port},bind={gateway_ip},fork,reuseaddr", f"UNIX-CONNECT:{sock}"],
            in_ns=True,
        )
        self._wait_tcp("127.0.0.1" if gateway_ip == "0.0.0.0" else gateway_ip, port, in_ns=True)
        host = gateway_ip if gateway_ip != "0.0.0.0" else "<gateway-ip>"
        self._note(f"package relay for {', '.join(hosts)} at http://{host}:{port}")
        return f"http://{host}:{port}"

    def start_file_server(self, directory: str | os.PathLike[str], bind_ip: str = "0.0.0.0", port: int = 8080) -> str:
        """Serve ``directory`` over plain HTTP inside the namespace."""
        d = Path(directory).resolve()
        if not d.is_dir():
            raise LibvirtHostError(f"{d} is not a directory")
        self._spawn(
            "http-files",
            ["/usr/bin/python3", "-m", "http.server", str(port), "--bind", bind_ip, "--directory", str(d)],
            in_ns=True,
        )
        self._wait_tcp("127.0.0.1" if bind_ip == "0.0.0.0" else bind_ip, port, in_ns=True)
        return f"http://{bind_ip}:{port}/"

    def _wait_tcp(self, host: str, port: int, *, in_ns: bool, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        probe = [
            "/usr/bin/python3",
            "-c",
            "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2).close()",
            host,
            str(port),
        ]
        while True:
            p = _run(self.ns(*probe) if in_ns else probe, check=False, timeout=10)
            if p.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise LibvirtHostError(f"nothing listens on {host}:{port} ({'netns' if in_ns else 'root ns'})")
            time.sleep(0.2)

    # ------------------------------------------------------- VM utilities
    def define_network(self, xml: str) -> str:
        """Define and start a network from XML; returns its name. Refuses
        networks with a <forward> element (they would route out)."""
        root = ET.fromstring(xml)
        if root.find("forward") is not None:
            raise LibvirtHostError("test networks must be isolated (no <forward>)")
        name = root.findtext("name") or ""
        if not name.startswith(self.prefix):
            raise LibvirtHostError(f"network name {name!r} must start with {self.prefix!r}")
        path = self.state_dir / f"net-{name}.xml"  # type: ignore[operator]
        path.write_text(xml)
        self.virsh("net-define", str(path))
        self.virsh("net-start", name)
        return name

    def dhcp_leases(self, network: str) -> list[dict[str, str]]:
        """Leases of ``network`` as dicts (mac, ip, hostname, ...)."""
        out = _run(["virsh", "-c", URI, "net-dhcp-leases", network], check=False).stdout
        leases = []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 6 and re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", parts[2]):
                leases.append(
                    {
                        "expiry": f"{parts[0]} {parts[1]}",
                        "mac": parts[2],
                        "protocol": parts[3],
                        "ip": parts[4].split("/")[0],
                        "hostname": parts[5],
                    }
                )
        return leases

    def wait_for_lease(self, network: str, mac: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        mac = mac.lower()
        while time.monotonic() < deadline:
            for lease in self.dhcp_leases(network):
                if lease["mac"] == mac:
                    return lease["ip"]
            time.sleep(1)
        raise LibvirtHostError(f"no DHCP lease for {mac} on {network} within {timeout:.0f} s")

    def status(self) -> dict[str, object]:
        """What is running (for diagnostics)."""
        procs = {}
        for name in ["virtlogd", "libvirtd", *self._relay_names()]:
            rec = self._read_pidfile(name)
            procs[name] = rec[0] if rec and _alive(rec[0]) else None
        return {"netns": self.netns, "netns_exists": self._ns_exists(), "processes": procs}

    def __repr__(self) -> str:
        return f"LibvirtHost({json.dumps(self.status())})"
