"""The relays a LibvirtHost (libvirt_host.py) runs for its VMs.

``start_proxy(gateway_ip)`` starts a package relay: tinyproxy on 127.0.0.1 in
the *root* namespace with an allow-list of hosts, and two socat processes joined
by a unix socket (the filesystem is shared across network namespaces) so that
VMs reach it at ``http://<gateway_ip>:3128``. No routing, no forwarding, no NAT.
``start_file_server(directory, bind_ip)`` serves a directory (e.g. a wheelhouse)
over plain HTTP from inside the network namespace.

Each relay is a foreground program with a pidfile in the run's state directory;
``LibvirtHost.stop()`` stops every one that ``_relay_names()`` finds.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

from host_processes import LibvirtHostError, _run, free_tcp_port, missing_tools

# Hosts the package relay lets through. apt.postgresql.org is not needed.
DEFAULT_ALLOWED_HOSTS: tuple[str, ...] = (
    "deb.debian.org",
    "pypi.org",
    "files.pythonhosted.org",
)


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


class RelayMixin:
    """The package relay and the file server of a LibvirtHost (its state_dir,
    ns(), _spawn() and _note())."""

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

    def _relay_names(self) -> list[str]:
        assert self.state_dir is not None
        if not self.state_dir.is_dir():
            return []
        return sorted(
            p.stem
            for p in self.state_dir.glob("*.pid")
            if p.stem not in ("libvirtd", "virtlogd")
        )
