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
        self.lan_network = ""

    @property
    def netns(self) -> str:
        """Where the tests' clients run: on the LAN."""
        return str(self.lan.netns)

    # ---- bring up and tear down --------------------------------------------------------
    def start(self) -> None:
        """The LAN (with DHCP for a build VM: the nodes' addresses are static, below its
        range), then every host with its pool, bridge and link to the LAN."""
        self.lan.start()
        net = ipaddress.ip_network(self.network_cidr)
        self.lan_network = self.lan.define_network(textwrap.dedent(f"""\
            <network>
              <name>{self.prefix}-lan</name>
              <bridge name='{self.lan_bridge}' stp='off' delay='0'/>
              <dns enable='no'/>
              <ip address='{self.gateway}' netmask='{net.netmask}'>
                <dhcp><range start='{net.network_address + 200}'
                             end='{net.network_address + 250}'/></dhcp>
              </ip>
            </network>
            """))
        self.lan.create_pool(f"{self.prefix}-pool")  # the node image build's
        for i, (name, site) in enumerate(self.sites.items()):
            site.workdir.mkdir(parents=True, exist_ok=True)
            site.start()
            hostns = str(site.host.netns)
            ip(hostns, "link", "add", HOST_BRIDGE, "type", "bridge", "stp_state", "0")
            # The hypervisor's own address on the LAN, as the README's bridge has it: with
            # none, getaddrinfo finds no IPv4 here and QEMU cannot open the graphics
            # listener libvirt's provider gives every domain (127.0.0.1:5900).
            ip(hostns, "addr", "add", f"{net.network_address + 2 + i}/{net.prefixlen}",
               "dev", HOST_BRIDGE)
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

    def create_base_volume(self, volume: dict, image: Path) -> None:
        """The node image in every host's pool (the program declares one per host)."""
        for site in self.sites.values():
            site.create_base_volume(volume, image)

    def create_nodes(self, plan, names) -> None:
        """`names`' domains, each on the host the plan places it on."""
        placement = plan.placement
        for name in names:
            self.placed[plan.domains[name]["name"]] = placement[name]
            self.sites[placement[name]].create_nodes(plan, [name])

    def domain_names(self) -> list[str]:
        return sorted(self.placed)

    def dumpxml(self, domain_name: str) -> str:
        return self.site_of(domain_name).dumpxml(domain_name)

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

    def replace_host(self, name: str) -> list[str]:
        """A lost hypervisor replaced by a new machine prepared as the README says (its
        bridge on the LAN, libvirt, the same storage pool, empty): nothing of the stack's
        on it. Returns the domain names it held, which are gone."""
        site = self.sites[name]
        definitions = site.host.private_dirs["/etc/libvirt"] / "qemu"
        gone = sorted(d for d, h in self.placed.items() if h == name)
        for domain in gone:
            (definitions / f"{domain}.xml").unlink(missing_ok=True)
            (definitions / "autostart" / f"{domain}.xml").unlink(missing_ok=True)
            del self.placed[domain]
        assert site.pool_dir is not None
        for volume in site.pool_dir.iterdir():
            volume.unlink()
        site.host.start_daemons()
        site.virsh("pool-start", f"{self.prefix}-pool", check=False)  # not autostarted
        site.virsh("pool-refresh", f"{self.prefix}-pool")
        ip(self.netns, "link", "set", name, "up")
        return gone
