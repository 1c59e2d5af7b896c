"""The libvirt objects a LibvirtHost (libvirt_host.py) makes and removes in its
private libvirtd: isolated networks (no ``<forward>``), ``dir`` storage pools in
``pool_root``, DHCP leases, and the teardown of every domain, network, pool and
volume whose name starts with the run's prefix.
"""

from __future__ import annotations

import os
import re
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from host_processes import LibvirtHostError, _run


class LibvirtObjectsMixin:
    """Networks, pools, leases and the prefix's cleanup of a LibvirtHost (its
    prefix, state_dir, pool_root, uri, virsh() and _note())."""

    def define_network(self, xml: str) -> str:
        """Define and start a network from XML; returns its name. Refuses
        networks with a <forward> element (they would route out)."""
        root = ET.fromstring(xml)
        if root.find("forward") is not None:
            raise LibvirtHostError("test networks must be isolated (no <forward>)")
        name = root.findtext("name") or ""
        if not name.startswith(str(self.prefix)):
            raise LibvirtHostError(f"network name {name!r} must start with {self.prefix!r}")
        bridge = root.find("bridge")
        if bridge is not None and len(bridge.get("name", "")) > 15:
            raise LibvirtHostError(f"bridge name {bridge.get('name')!r} is longer than 15 characters")
        path = self.state_dir / f"net-{name}.xml"  # type: ignore[operator]
        path.write_text(xml)
        self.virsh("net-define", str(path))
        self.virsh("net-start", name)
        return name

    def create_pool(self, name: str) -> Path:
        """Define and start a ``dir`` storage pool ``name`` in
        ``pool_root/<name>`` (removed at stop); returns its directory."""
        if not name.startswith(str(self.prefix)) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise LibvirtHostError(f"pool name {name!r} must start with {self.prefix!r}")
        assert self.pool_root is not None and self.state_dir is not None
        path = self.pool_root / name
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(path, 0o755)
        xml = textwrap.dedent(
            f"""\
            <pool type='dir'>
              <name>{name}</name>
              <target>
                <path>{path}</path>
                <permissions><mode>0755</mode></permissions>
              </target>
            </pool>
            """
        )
        f = self.state_dir / f"pool-{name}.xml"
        f.write_text(xml)
        self.virsh("pool-define", str(f))
        self.virsh("pool-start", name)
        return path

    def dhcp_leases(self, network: str) -> list[dict[str, str]]:
        """Leases of ``network`` as dicts (mac, ip, hostname, ...)."""
        out = _run(["virsh", "-c", self.uri, "net-dhcp-leases", network], check=False).stdout
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

    def cleanup_prefixed(self, prefix: str | None = None) -> list[str]:
        """Destroy/undefine domains, networks, pools and volumes named
        ``prefix*`` (best effort; returns what was removed)."""
        prefix = prefix or self.prefix
        removed: list[str] = []
        if not prefix:
            return removed

        def ok(*args: str) -> bool:
            return _run(["virsh", "-q", "-c", self.uri, *args], check=False, timeout=60).returncode == 0

        def names(*args: str) -> list[str]:
            p = _run(["virsh", "-q", "-c", self.uri, *args], check=False, timeout=60)
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
        p = _run(["virsh", "-q", "-c", self.uri, "vol-list", pool], check=False, timeout=60)
        out = []
        for line in p.stdout.splitlines():
            parts = line.split()
            if parts:
                out.append(parts[0])
        return out
