"""The lab of several libvirt hosts (tests/vm/hosts_lab.py) without the cluster: three
private libvirtds in namespaces of their own, each host's bridge joined to one LAN. On
each host an address on its bridge and a tiny running domain stand for its VMs. Checked:
the LAN reaches every host and the hosts reach each other across it; a lost host drops
off the LAN, its libvirt stops answering and its domain stops, while the others go on;
restored, it is back on the LAN with its domain running; stop() leaves no namespace.

About 20-40 s (three daemons start, one restarts)."""
from __future__ import annotations

import os
import secrets
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.vm.hosts_lab import HOST_BRIDGE, HostsLab

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root (libvirtd, network namespaces)")

CIDR = "10.233.0.0/24"
HOSTS = ["hv1", "hv2", "hv3"]
STAND_IN = {"hv1": "10.233.0.51", "hv2": "10.233.0.52", "hv3": "10.233.0.53"}


# Reachability without ping (not on every machine): a TCP connection to a closed port is
# refused at once by a host that is there, and times out (or finds no route) otherwise.
PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 9), timeout=3).close()
except ConnectionRefusedError:
    pass
"""


def pings(netns: str, address: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", netns, "python3", "-c", PROBE, address],
                          capture_output=True).returncode == 0


def tiny_bridged_domain(name: str) -> str:
    # No disk: SeaBIOS idles. Enough for libvirt to spawn QEMU with a tap on br0.
    return textwrap.dedent(f"""\
        <domain type='qemu'>
          <name>{name}</name>
          <memory unit='MiB'>64</memory>
          <vcpu>1</vcpu>
          <os><type arch='x86_64' machine='pc'>hvm</type></os>
          <devices>
            <interface type='bridge'><source bridge='{HOST_BRIDGE}'/>
              <model type='virtio'/></interface>
            <video><model type='none'/></video>
            <memballoon model='none'/>
          </devices>
        </domain>
        """)


def test_hosts_share_one_lan_and_a_lost_host_leaves_it_until_it_comes_back(tmp_path: Path):
    lab = HostsLab(secrets.token_hex(3), CIDR, tmp_path, HOSTS)
    try:
        lab.start()
        for name, address in STAND_IN.items():
            site = lab.sites[name]
            subprocess.run(["ip", "-n", str(site.host.netns), "addr", "add",
                            f"{address}/24", "dev", HOST_BRIDGE], check=True)
            domain = f"{lab.prefix}-{name}-tiny"
            xml = tmp_path / f"{domain}.xml"
            xml.write_text(tiny_bridged_domain(domain))
            lab.virsh(name, "define", str(xml))
            lab.virsh(name, "start", domain)
            lab.placed[domain] = name
        assert all(pings(lab.netns, a) for a in STAND_IN.values())
        assert pings(str(lab.sites["hv1"].host.netns), STAND_IN["hv3"])  # across the LAN
        assert pings(str(lab.sites["hv1"].host.netns), lab.gateway)

        lab.lose_host("hv2")
        assert not pings(lab.netns, STAND_IN["hv2"])
        assert not pings(str(lab.sites["hv1"].host.netns), STAND_IN["hv2"])
        assert pings(lab.netns, STAND_IN["hv3"])
        assert subprocess.run(["virsh", "-c", lab.sites["hv2"].host.uri, "version"],
                              capture_output=True, timeout=20).returncode != 0
        assert lab.is_running(f"{lab.prefix}-hv3-tiny")

        assert lab.restore_host("hv2") == [f"{lab.prefix}-hv2-tiny"]
        assert pings(lab.netns, STAND_IN["hv2"])
        assert lab.is_running(f"{lab.prefix}-hv2-tiny")
    finally:
        errors = lab.stop()
    assert errors == []
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True,
                                text=True).stdout
    assert lab.prefix not in namespaces
