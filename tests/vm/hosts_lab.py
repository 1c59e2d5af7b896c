"""Several libvirt hosts on one LAN, for the stack's `hosts`: each host a private libvirtd
in a network namespace of its own (tests/e2e/libvirt_host.py), standing for a hypervisor
with a bridge `br0`; the LAN a bridge in one more namespace, joined to each host's `br0`
by a veth pair, as a switch joins hypervisors. The LAN's namespace also stands for the
site's network: the package relay and the wheelhouse listen on its gateway address, and
the tests' SSH and PostgreSQL clients run there.

A host can be lost at one instant (link cut, every VM gone, libvirtd gone) and come back
(link, libvirtd, its VMs started), which is what losing a hypervisor does to a cluster.
"""
from __future__ import annotations

import ipaddress
import subprocess
import textwrap
from pathlib import Path
from xml.sax.saxutils import quoteattr

from tests.vm.lab import POOL_ROOT, Lab, LibvirtHost

HOST_BRIDGE = "br0"  # the bridge each hypervisor has on the LAN (the stack's `bridge`)
HOST_UPLINK = "lan0"  # the host's end of its veth pair, a port of br0


def ip(netns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", netns, *args], check=True, capture_output=True, text=True)


class HostSite(Lab):
    """The VMs of one host: bridged onto the LAN (no libvirt network, no DHCP: the seeds
    give static addresses)."""

    def _interface_xml(self, nic: dict) -> str:
        return (f"<interface type='bridge'><mac address={quoteattr(nic['mac'])}/>"
                f"<source bridge='{HOST_BRIDGE}'/><model type='virtio'/></interface>")

    def _update_reservations(self, domain: dict, action: str) -> None:
        return None  # nothing to reserve on a bridged LAN


class HostsLab:
    def __init__(self, run_id: str, cidr: str, workdir: Path, host_names: list[str]):
        self.run_id = run_id
        self.prefix = f"pgha-vm{run_id}"
        net = ipaddress.ip_network(cidr)
        self.network_cidr = cidr
        self.gateway = str(net.network_address + 1)
        self.workdir = workdir
        self.lan_bridge = f"pgl{run_id}"
        self.lan = LibvirtHost(run_id=f"{run_id}lan", netns=f"{self.prefix}-lan",
                               prefix=self.prefix, pool_root=POOL_ROOT / f"{run_id}lan")
        self.sites: dict[str, HostSite] = {}
        for i, name in enumerate(host_names):
            host_id = f"{run_id}h{i + 1}"
            host = LibvirtHost(run_id=host_id, netns=f"{self.prefix}-{name}",
                               prefix=self.prefix, pool_root=POOL_ROOT / host_id)
            self.sites[name] = HostSite(run_id, cidr, workdir / name, host=host)
        self.placed: dict[str, str] = {}  # libvirt domain name -> host name

    @property
    def netns(self) -> str:
        """Where the tests' clients run: on the LAN."""
        return str(self.lan.netns)

    # ---- bring up and tear down --------------------------------------------------------
    def start(self) -> None:
        self.lan.start()
        net = ipaddress.ip_network(self.network_cidr)
        self.lan.define_network(textwrap.dedent(f"""\
            <network>
              <name>{self.prefix}-lan</name>
              <bridge name='{self.lan_bridge}' stp='off' delay='0'/>
              <dns enable='no'/>
              <ip address='{self.gateway}' netmask='{net.netmask}'/>
            </network>
            """))
        for name, site in self.sites.items():
            site.workdir.mkdir(parents=True, exist_ok=True)
            site.start()
            hostns = str(site.host.netns)
            ip(hostns, "link", "add", HOST_BRIDGE, "type", "bridge", "stp_state", "0")
            ip(hostns, "link", "set", HOST_BRIDGE, "up")
            ip(self.netns, "link", "add", name, "type", "veth", "peer", "name", HOST_UPLINK,
               "netns", hostns)
            ip(self.netns, "link", "set", name, "master", self.lan_bridge, "up")
            ip(hostns, "link", "set", HOST_UPLINK, "master", HOST_BRIDGE, "up")

    def serve_packages(self, wheelhouse: Path) -> dict[str, str]:
        proxy = self.lan.start_proxy(gateway_ip=self.gateway)
        self.lan.start_file_server(wheelhouse, bind_ip=self.gateway)
        return {"httpProxy": proxy, "pythonIndexUrl": f"http://{self.gateway}:8080/simple/"}

    def stop(self) -> list[str]:
        """Every host, then the LAN; never raises (returns the errors met)."""
        errors = [e for site in self.sites.values() for e in site.host.stop()]
        return errors + self.lan.stop()

    def mark_kept(self) -> None:
        for site in self.sites.values():
            site.host.mark_kept()
        self.lan.mark_kept()

    # ---- the program's objects, each on its host ---------------------------------------
    def site_of(self, domain_name: str) -> HostSite:
        return self.sites[self.placed[domain_name]]

    def create_node(self, host: str, domain: dict, seed: dict, disk: dict, base: Path,
                    data_disk: dict | None = None) -> None:
        self.placed[domain["name"]] = host
        self.sites[host].create_node(domain, seed, disk, base, data_disk)

    def remove_node(self, domain: dict, files: list[str]) -> None:
        self.site_of(domain["name"]).remove_node(domain, files)
        del self.placed[domain["name"]]

    def virsh(self, host: str, *args: str, check: bool = True, timeout: float = 120) -> str:
        return self.sites[host].virsh(*args, check=check, timeout=timeout)

    # ---- power -------------------------------------------------------------------------
    def power_off(self, domain_name: str) -> float:
        return self.site_of(domain_name).power_off(domain_name)

    def power_on(self, domain_name: str) -> float:
        return self.site_of(domain_name).power_on(domain_name)

    def is_running(self, domain_name: str) -> bool:
        return self.site_of(domain_name).is_running(domain_name)

    def lose_host(self, name: str) -> None:
        """The hypervisor `name` fails: its link to the LAN goes first (nothing it does
        afterwards reaches anyone), then every VM on it and its libvirt."""
        ip(self.netns, "link", "set", name, "down")
        self.sites[name].host.stop_daemons()

    def restore_host(self, name: str) -> list[str]:
        """The hypervisor comes back: link, libvirt, then the VMs that ran there (as its
        autostart would on boot). Returns their domain names."""
        ip(self.netns, "link", "set", name, "up")
        site = self.sites[name]
        site.host.start_daemons()
        domains = sorted(d for d, h in self.placed.items() if h == name)
        for domain in domains:
            site.power_on(domain)
        return domains
