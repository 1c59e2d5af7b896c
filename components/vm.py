"""Everything libvirt: the host's shared pieces (provider, network, base image) and each
node's virtual machine (overlay disk, cloud-init seed, domain). pulumi-libvirt is
deprecated upstream; no other module imports it, so a successor replaces this one file."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_libvirt as libvirt

from components.config import ClusterSpec, NodeSpec
from components.hosts import HostSpec, jump_of
from components.rendering import render_cloud_init, render_network_config

GIB = 1024 ** 3
# Disks are virtio, attached in the order declared: system disk, then the data disk.
DATA_DISK_DEVICE = "/dev/vdb"
# Provisioning a VM under emulation can take many minutes; libvirt's default is 5. The
# Domain resource has no update timeout (setting one only earns a warning on every run).
DOMAIN_TIMEOUTS = pulumi.CustomTimeouts(create="30m", delete="10m")


@dataclass
class LibvirtHost:
    """What every VM of the stack on one libvirt host shares there."""
    options: pulumi.ResourceOptions  # the host's provider, for its VMs' resources
    network_id: Optional[pulumi.Output[str]]  # None on a network the program does not own
    base_volume_id: pulumi.Output[str]
    storage_pool: str
    lan: Optional[HostSpec] = None  # a listed host: its VMs' static LAN attachment


def libvirt_hosts(name: str, spec: ClusterSpec,
                  parent: pulumi.Resource) -> dict[str, LibvirtHost]:
    """Each libvirt host the stack uses, by the name its nodes give (NodeSpec.host): the
    listed hosts, or the single host of libvirtUri under the name ""."""
    if not spec.hosts:
        return {"": _single_host(name, spec, parent)}
    return {host.name: _listed_host(name, spec, host, parent) for host in spec.hosts}


def _single_host(name: str, spec: ClusterSpec, parent: pulumi.Resource) -> LibvirtHost:
    """The provider for spec.libvirt_uri, the network the program creates (unless the
    stack names an existing one) and the base image volume the nodes' disks overlay."""
    provider = libvirt.Provider(f"{name}-libvirt", uri=spec.libvirt_uri,
                                opts=pulumi.ResourceOptions(parent=parent))
    infra = pulumi.ResourceOptions(parent=parent, provider=provider)
    network_id = None
    if spec.creates_network:
        network = libvirt.Network(
            f"{name}-network", name=spec.libvirt_prefix, mode=spec.network_mode,
            addresses=[spec.network_cidr], autostart=True,
            dhcp=libvirt.NetworkDhcpArgs(enabled=True),
            dns=libvirt.NetworkDnsArgs(enabled=True, local_only=True), opts=infra)
        network_id = network.id
    base_volume = libvirt.Volume(
        f"{name}-base-image", name=f"{spec.libvirt_prefix}-base.qcow2",
        pool=spec.storage_pool, source=spec.image_source, format="qcow2", opts=infra)
    return LibvirtHost(options=infra, network_id=network_id, base_volume_id=base_volume.id,
                       storage_pool=spec.storage_pool)


def _listed_host(name: str, spec: ClusterSpec, host: HostSpec,
                 parent: pulumi.Resource) -> LibvirtHost:
    """A provider for one listed host and the base image in its pool; its VMs attach to
    the LAN the hosts share (no libvirt network of the program's)."""
    provider = libvirt.Provider(f"{name}-{host.name}-libvirt", uri=host.uri,
                                opts=pulumi.ResourceOptions(parent=parent))
    infra = pulumi.ResourceOptions(parent=parent, provider=provider)
    base_volume = libvirt.Volume(
        f"{name}-{host.name}-base-image", name=f"{spec.libvirt_prefix}-base.qcow2",
        pool=host.storage_pool, source=spec.image_source, format="qcow2", opts=infra)
    return LibvirtHost(options=infra, network_id=None, base_volume_id=base_volume.id,
                       storage_pool=host.storage_pool, lan=host)


@dataclass
class LibvirtNodeArgs:
    spec: ClusterSpec
    node: NodeSpec
    host: LibvirtHost  # the VM's resources go under host.options (its provider)
    ssh_public_key: pulumi.Input[str]
    host_private_key: pulumi.Input[str]
    host_public_key: pulumi.Input[str]
    # The cluster's per-node sizes unless given (the backup repository's VM is smaller).
    vcpus: Optional[int] = None
    memory_mib: Optional[int] = None
    # A second, empty disk (DATA_DISK_DEVICE in the guest): the backup repository keeps
    # its backups there, apart from the system disk.
    data_disk_gib: int = 0
    # What must be done before the VM's resources are made (or replaced): a node that
    # moves to this host leaves the cluster first (components/moves.py).
    after: Sequence[pulumi.Resource] = ()


class LibvirtNode(pulumi.ComponentResource):
    """A VM that boots a cloud image with our user, key and pinned SSH host key."""

    domain: libvirt.Domain
    ip: pulumi.Output[str]
    # The SSH server its steps reach it through (a listed host's sshJump), or None.
    jump: Optional[HostSpec] = None

    def __init__(self, name: str, args: LibvirtNodeArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("pgha:index:LibvirtNode", name, None, opts)
        spec, node, host = args.spec, args.node, args.host
        self.jump = jump_of(host.lan)
        child = _child_options(self, host, args.after)
        libvirt_name = f"{spec.libvirt_prefix}-{node.name}"

        disk = libvirt.Volume(
            f"{name}-disk", name=f"{libvirt_name}.qcow2", pool=host.storage_pool,
            base_volume_id=host.base_volume_id, format="qcow2", size=spec.disk_gib * GIB,
            opts=child)
        disks = [libvirt.DomainDiskArgs(volume_id=disk.id)]
        if args.data_disk_gib:
            data_disk = libvirt.Volume(
                f"{name}-data-disk", name=f"{libvirt_name}-data.qcow2",
                pool=host.storage_pool, format="qcow2", size=args.data_disk_gib * GIB,
                opts=child)
            disks.append(libvirt.DomainDiskArgs(volume_id=data_disk.id))
        user_data = pulumi.Output.all(
            args.ssh_public_key, args.host_private_key, args.host_public_key,
        ).apply(lambda keys: render_cloud_init(spec, node, *keys))
        network_config = render_network_config(spec, node)
        # cloud-init reads the seed once, at the VM's first boot. A later change of what
        # it would say (a newer template of this program) must not rebuild the seed: the
        # domain refers to it, so a new seed would replace the VM and wipe its data.
        seed = libvirt.CloudInitDisk(
            f"{name}-seed", name=f"{libvirt_name}-seed.iso", pool=host.storage_pool,
            user_data=user_data, network_config=network_config,
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(ignore_changes=[
                "userData", *(["networkConfig"] if network_config else [])])))

        interface = _interface(spec, node, host)
        self.domain = libvirt.Domain(
            f"{name}-domain", name=libvirt_name, type=spec.domain_type,
            vcpu=args.vcpus or spec.vcpus, memory=args.memory_mib or spec.memory_mib,
            cpu=libvirt.DomainCpuArgs(mode=spec.cpu_mode) if spec.cpu_mode else None,
            disks=disks,
            # The provider attaches the seed as an IDE CD-ROM (machine type "pc") and leaves
            # it out of `disks` when it reads the domain back only in that shape: any other
            # attachment shows up as a second disk and forces a replacement of the VM on
            # the next `pulumi up`. Debian's and Rocky's cloud kernels read it (ata_piix).
            cloudinit=seed.id,
            network_interfaces=[interface],
            consoles=[libvirt.DomainConsoleArgs(type="pty", target_port="0",
                                                target_type="serial")],
            autostart=True,
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(custom_timeouts=DOMAIN_TIMEOUTS)))
        if host.lan is None:
            self.ip = self.domain.network_interfaces.apply(_first_address)
        else:
            # A static address, in use once the domain exists.
            self.ip = self.domain.id.apply(lambda _: node.address or "")
        self.register_outputs({"ip": self.ip, "domain": self.domain.id})


def _child_options(vm: pulumi.Resource, host: LibvirtHost,
                   after: Sequence[pulumi.Resource]) -> pulumi.ResourceOptions:
    """A VM's resources on a listed host are replaced when the VM moves to another host
    (the host's URI is their replacement trigger: a provider of another host with the
    same inputs would otherwise take them over as they are), the old ones deleted first:
    the new VM takes over the old one's static address. Adding the trigger to resources
    made before it existed replaces nothing. On a single host: neither."""
    if host.lan is None:
        return pulumi.ResourceOptions(parent=vm, depends_on=list(after) or None)
    return pulumi.ResourceOptions(parent=vm, depends_on=list(after) or None,
                                  replacement_trigger=host.lan.uri,
                                  delete_before_replace=True)


def _interface(spec: ClusterSpec, node: NodeSpec,
               host: LibvirtHost) -> libvirt.DomainNetworkInterfaceArgs:
    """The VM's NIC: on libvirt's network with a DHCP reservation (one host), or on the
    hosts' shared LAN through the host's bridge, NIC or network (a static address the
    seed's network configuration sets; no lease to wait for)."""
    if host.lan is None:
        return libvirt.DomainNetworkInterfaceArgs(
            mac=node.mac, hostname=node.name, wait_for_lease=True,
            addresses=[node.address] if node.address else None,
            network_id=host.network_id,
            network_name=None if host.network_id is not None else spec.network_name)
    attachment = {host.lan.attachment if host.lan.attachment != "network" else
                  "network_name": host.lan.device}
    return libvirt.DomainNetworkInterfaceArgs(mac=node.mac, wait_for_lease=False,
                                              **attachment)


def _first_address(interfaces) -> str:
    first = interfaces[0] if interfaces else None
    addresses = first.get("addresses") if isinstance(first, dict) else getattr(
        first, "addresses", None)
    if not addresses:
        # Only reachable in preview: wait_for_lease makes create fail rather than return none.
        return ""
    return addresses[0]
