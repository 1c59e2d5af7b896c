"""The VM lab: the program's libvirt objects, built in a private libvirtd.

The libvirt provider is not available to the tests, so this module builds what the
program declares (read from its registrations, tests/vm/plan.py) in the shape that
terraform-provider-libvirt 0.8.1 gives it:

* the network: isolated (mode "none"), DHCP on the declared CIDR with the declared MAC
  -> address reservations (the provider adds a <host> for each interface's `addresses`);
* volumes: the base image, a qcow2 overlay per node of the declared size;
* the seed: an ISO9660 "cidata" volume holding user-data and meta-data, attached as the
  provider attaches `cloudinit` (IDE CD-ROM `hdd`, serial "cloudinit", machine "pc");
* domains: the declared type, memory and vCPUs, the overlay as a virtio disk, one virtio
  NIC with the declared MAC, a serial console (logged to a file for diagnosis).

Everything lives in the private libvirtd of tests/e2e/libvirt_host.py, inside a network
namespace; packages reach the VMs through its relay, Python wheels from a wheelhouse it
serves on the bridge.
"""
from __future__ import annotations

import ipaddress
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "e2e"))
from libvirt_host import LibvirtHost  # noqa: E402

PROXY_PORT = 3128
WHEELHOUSE_PORT = 8080


# Disks grow by gigabytes: keep them off /run (a tmpfs on most hosts).
POOL_ROOT = Path("/var/tmp/pgha-tests")


class Lab:
    """One libvirt host: its private libvirtd, the program's network there (DHCP
    reservations), and the VMs on it."""

    def __init__(self, run_id: str, cidr: str, workdir: Path,
                 host: LibvirtHost | None = None):
        self.run_id = run_id
        self.prefix = f"pgha-vm{run_id}"
        self.network_cidr = cidr
        net = ipaddress.ip_network(cidr)
        self.gateway = str(net.network_address + 1)
        self.workdir = workdir
        self.host = host or LibvirtHost(run_id=run_id, netns=f"pgha-vm{run_id}",
                                        prefix=self.prefix, pool_root=POOL_ROOT / run_id)
        self.pool_dir: Path | None = None
        self.network_name = ""
        self.reserved: set[str] = set()  # MACs with a DHCP host entry in the network

    @property
    def netns(self) -> str:
        return self.host.netns

    def virsh(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        return self.host.virsh(*args, check=check, timeout=timeout)

    def start(self) -> None:
        self.host.start()
        self.pool_dir = self.host.create_pool(f"{self.prefix}-pool")

    def serve_packages(self, wheelhouse: Path) -> dict[str, str]:
        """The relay and the wheelhouse, on the bridge (the network must exist)."""
        proxy = self.host.start_proxy(gateway_ip=self.gateway, port=PROXY_PORT)
        self.host.start_file_server(wheelhouse, bind_ip=self.gateway, port=WHEELHOUSE_PORT)
        return {"httpProxy": proxy,
                "pythonIndexUrl": f"http://{self.gateway}:{WHEELHOUSE_PORT}/simple/"}

    def stop(self) -> list[str]:
        """Everything torn down; never raises (returns the errors met)."""
        return self.host.stop()

    def mark_kept(self) -> None:
        self.host.mark_kept()  # until tests/e2e/smoke_boot.py --stop sweeps it

    def domain_names(self) -> list[str]:
        return self.virsh("list", "--all", "--name").split()

    def dumpxml(self, domain_name: str) -> str:
        return self.virsh("dumpxml", domain_name)

    # ---- the program's objects ---------------------------------------------------------
    def create_network(self, network: dict, domains: dict[str, dict]) -> None:
        assert network["mode"] == "none", "the lab network must be isolated"
        (cidr,) = network["addresses"]
        net = ipaddress.ip_network(cidr)
        hosts = "\n".join("      " + self._dhcp_host(nic)
                           for d in domains.values() for nic in d["networkInterfaces"])
        self.network_name = network["name"]
        self.reserved = {nic["mac"] for d in domains.values()
                         for nic in d["networkInterfaces"]}
        self.host.define_network(textwrap.dedent(f"""\
            <network>
              <name>{escape(network['name'])}</name>
              <bridge name='pgvm{self.run_id}' stp='off' delay='0'/>
              <dns enable='no'/>
              <ip address='{net.network_address + 1}' netmask='{net.netmask}'>
                <dhcp>
                  <range start='{net.network_address + 100}' end='{net.network_address + 200}'/>
            """) + hosts + "\n    </dhcp>\n  </ip>\n</network>\n")

    @staticmethod
    def _dhcp_host(nic: dict) -> str:
        return (f"<host mac={quoteattr(nic['mac'])} name={quoteattr(nic['hostname'])} "
                f"ip={quoteattr(nic['addresses'][0])}/>")

    def _update_reservations(self, domain: dict, action: str) -> None:
        """What the libvirt provider does for an interface with fixed addresses when its
        domain is created or destroyed: the network's DHCP host entry added or deleted,
        live and in its configuration."""
        for nic in domain["networkInterfaces"]:
            if (action == "add") == (nic["mac"] in self.reserved):
                continue
            self.virsh("net-update", self.network_name, action, "ip-dhcp-host",
                       self._dhcp_host(nic), "--live", "--config")
            if action == "add":
                self.reserved.add(nic["mac"])
            else:
                self.reserved.discard(nic["mac"])

    def create_base_volume(self, volume: dict, image: Path) -> Path:
        """The base image as a pool volume (QEMU may not read the caller's cache)."""
        assert self.pool_dir is not None
        base = self.pool_dir / volume["name"]
        subprocess.run(["cp", "--reflink=auto", str(image), str(base)], check=True)
        base.chmod(0o644)
        return base

    def create_nodes(self, plan, names) -> None:
        """`names`' domains as `plan` (tests/vm/plan.py) declares them, each with its disk
        over the base volume (already in the pool), its data disk if any, and its seed;
        started."""
        # One base volume per host, under the same name in each host's pool.
        base = next(v for v in plan.volumes if "source" in v)
        disks = {v["name"]: v for v in plan.volumes if "source" not in v}
        for name in names:
            domain = plan.domains[name]
            self.create_node(domain, plan.seeds[name], disks[f"{domain['name']}.qcow2"],
                             self.pool_dir / base["name"],
                             disks.get(f"{domain['name']}-data.qcow2"))

    def create_node(self, domain: dict, seed: dict, disk: dict, base: Path,
                    data_disk: dict | None = None) -> None:
        assert self.pool_dir is not None
        overlay = self.pool_dir / disk["name"]
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                        "-b", str(base), str(overlay), str(disk["size"])], check=True)
        data = None
        if data_disk is not None:
            data = self.pool_dir / data_disk["name"]
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(data),
                            str(data_disk["size"])], check=True)
        seed_path = self.pool_dir / seed["name"]
        self._seed_iso(seed_path, seed["userData"], seed.get("metaData") or "",
                       seed.get("networkConfig"))
        self.virsh("pool-refresh", f"{self.prefix}-pool")
        xml_path = self.workdir / f"{domain['name']}.xml"
        xml_path.write_text(self._domain_xml(domain, overlay, seed_path, data))
        self._update_reservations(domain, "add")
        self.virsh("define", str(xml_path))
        if domain.get("autostart"):
            self.virsh("autostart", domain["name"])
        self.virsh("start", domain["name"])

    def remove_node(self, domain: dict, files: list[str]) -> None:
        """What destroying a node's Domain and volumes does: the VM gone, its address
        reservation released, its disks and seed deleted."""
        assert self.pool_dir is not None
        self.virsh("destroy", domain["name"], check=False)
        self.virsh("undefine", domain["name"])
        self._update_reservations(domain, "delete")
        for name in files:
            (self.pool_dir / name).unlink()
        self.virsh("pool-refresh", f"{self.prefix}-pool")

    def _seed_iso(self, path: Path, user_data: str, meta_data: str,
                  network_config: str | None = None) -> None:
        """The NoCloud seed as the provider writes it: user-data, meta-data and, when
        declared, network-config."""
        src = self.workdir / f"{path.name}.d"
        src.mkdir(parents=True, exist_ok=True)
        files = {"user-data": user_data, "meta-data": meta_data}
        if network_config:
            files["network-config"] = network_config
        for name, text in files.items():
            (src / name).write_text(text)
        subprocess.run(["genisoimage", "-quiet", "-output", str(path), "-volid", "cidata",
                        "-joliet", "-rock", *[str(src / name) for name in files]],
                       check=True)
        path.chmod(0o644)

    def console_log(self, domain_name: str) -> Path:
        return self.workdir / f"{domain_name}.console.log"

    def _domain_xml(self, domain: dict, overlay: Path, seed: Path,
                    data: Path | None = None) -> str:
        nic = domain["networkInterfaces"][0]
        # A second declared disk follows the first on the virtio bus, as the provider
        # attaches it.
        data_xml = "" if data is None else (
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file={quoteattr(str(data))}/><target dev='vdb' bus='virtio'/></disk>")
        cpu = domain.get("cpu", {}).get("mode")
        log = self.console_log(domain["name"])
        return textwrap.dedent(f"""\
            <domain type={quoteattr(domain['type'])}>
              <name>{escape(domain['name'])}</name>
              <memory unit='MiB'>{int(domain['memory'])}</memory>
              <vcpu>{int(domain['vcpu'])}</vcpu>
              <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
              <features><acpi/><apic/><pae/></features>
              {f"<cpu mode={quoteattr(cpu)}/>" if cpu else ""}
              <clock offset='utc'/>
              <on_poweroff>destroy</on_poweroff>
              <on_reboot>restart</on_reboot>
              <on_crash>destroy</on_crash>
              <devices>
                <disk type='file' device='disk'>
                  <driver name='qemu' type='qcow2'/>
                  <source file={quoteattr(str(overlay))}/>
                  <target dev='vda' bus='virtio'/>
                </disk>
                {data_xml}
                <disk type='file' device='cdrom'>
                  <driver name='qemu' type='raw'/>
                  <source file={quoteattr(str(seed))}/>
                  <target dev='hdd' bus='ide'/>
                  <serial>cloudinit</serial>
                </disk>
                {self._interface_xml(nic)}
                <serial type='file'>
                  <source path={quoteattr(str(log))} append='on'/>
                  <target port='0'/>
                </serial>
                <console type='file'>
                  <source path={quoteattr(str(log))} append='on'/>
                  <target type='serial' port='0'/>
                </console>
                <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
                <video><model type='none'/></video>
                <memballoon model='none'/>
              </devices>
            </domain>
            """)

    def _interface_xml(self, nic: dict) -> str:
        return (f"<interface type='network'><mac address={quoteattr(nic['mac'])}/>"
                f"<source network={quoteattr(self.network_name)}/>"
                "<model type='virtio'/></interface>")

    # ---- power -------------------------------------------------------------------------
    def power_off(self, domain_name: str) -> float:
        """Pull the plug (virsh destroy: no shutdown, no flush). Returns the time."""
        self.virsh("destroy", domain_name)
        return time.time()

    def power_on(self, domain_name: str) -> float:
        self.virsh("start", domain_name)
        return time.time()

    def is_running(self, domain_name: str) -> bool:
        return self.virsh("domstate", domain_name, check=False).strip() == "running"
