"""Several libvirt hosts for one cluster: what each host is (its connection, storage pool
and how its VMs reach the shared LAN), where each node runs, and whether losing any one
host keeps a Raft majority. Pure: settings in, a placement or problems out.

Without `hosts` a stack runs on one host (`libvirtUri`) exactly as before; the functions
here are then not used."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Protocol
from urllib.parse import urlparse

# The nodes every cluster has, nodeCount's lower bound (nodeCount is 3, 5 or 7); the
# rest come and go by scaling and never leave these without a Raft majority.
CORE_NODES = 3
HOST_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# A libvirt connection to a system daemon: local, or remote over SSH, TLS or TCP.
URI_SCHEMES = ("qemu", "qemu+ssh", "qemu+tls", "qemu+tcp", "qemu+libssh2", "qemu+unix")
# How a host's VMs reach the LAN the nodes share: exactly one of these per host.
ATTACHMENTS = {
    "bridge": "a Linux or Open vSwitch bridge on the host, on the shared LAN (e.g. br0)",
    "macvtap": "a NIC of the host on the shared LAN (the VMs cannot reach that host itself)",
    "network": "an existing libvirt network of the host that bridges to the shared LAN",
}
HOST_KEYS = ("name", "uri", "storagePool", *ATTACHMENTS, "sshJump", "sshJumpHostKey")
SSH_JUMP_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}@[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,5})?$")
HOST_KEY_RE = re.compile(r"^(ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|"
                         r"ecdsa-sha2-nistp521|ssh-rsa) [A-Za-z0-9+/]+=*$")


class Problems(Protocol):
    def add(self, key: str, value: Any, allowed: str) -> None: ...


@dataclass(frozen=True)
class HostSpec:
    name: str
    uri: str
    storage_pool: str
    attachment: str  # one of ATTACHMENTS
    device: str  # the bridge, NIC or libvirt network it names
    # user@host[:port]: the VMs are reached over SSH through this server (usually the
    # hypervisor), authenticated by the user's SSH agent, its host key pinned.
    ssh_jump: str = ""
    ssh_jump_host_key: str = ""

    @property
    def jump_user(self) -> str:
        return self.ssh_jump.split("@", 1)[0]

    @property
    def jump_host(self) -> str:
        return self.ssh_jump.split("@", 1)[1].split(":", 1)[0]

    @property
    def jump_port(self) -> int:
        rest = self.ssh_jump.split("@", 1)[1]
        return int(rest.split(":", 1)[1]) if ":" in rest else 22


def jump_of(host: HostSpec | None) -> HostSpec | None:
    """The host whose sshJump reaches the VMs on it, or None to reach them directly."""
    return host if host is not None and host.ssh_jump else None


def parse_hosts(raw: Any, storage_pool: str, problems: Problems) -> tuple[HostSpec, ...]:
    """The `hosts` list, each entry checked; entries with problems are left out."""
    if not isinstance(raw, list):
        problems.add("hosts", raw, "a list of hosts, each {name, uri, bridge|macvtap|"
                     "network, storagePool?, sshJump?, sshJumpHostKey?}")
        return ()
    hosts: list[HostSpec] = []
    for i, entry in enumerate(raw):
        key = f"hosts[{i}]"
        if not isinstance(entry, dict):
            problems.add(key, entry, "a map {name, uri, bridge|macvtap|network, ...}")
            continue
        host = _parse_host(key, entry, storage_pool, problems)
        if host is not None:
            hosts.append(host)
    for field, read in (("name", lambda h: h.name), ("uri", lambda h: h.uri)):
        seen: dict[str, str] = {}
        for host in hosts:
            value = read(host)
            if value in seen:
                problems.add(f"hosts.{field}", value,
                             f"each host once: {seen[value]} and {host.name} both say it "
                             f"(one machine listed twice is still one point of failure)")
            seen.setdefault(value, host.name)
    return tuple(hosts)


def _parse_host(key: str, entry: dict, storage_pool: str,
                problems: Problems) -> HostSpec | None:
    unknown = sorted(set(entry) - set(HOST_KEYS))
    if unknown:
        problems.add(key, unknown, "unknown keys; a host has " + ", ".join(HOST_KEYS))
    name, uri = str(entry.get("name", "")), str(entry.get("uri", ""))
    ok = True
    if not HOST_NAME_RE.match(name):
        problems.add(f"{key}.name", name, "a short name for the host: lowercase letters, "
                     "digits and '-', starting with a letter (e.g. hv1)")
        ok = False
    parsed = urlparse(uri)
    if parsed.scheme not in URI_SCHEMES or parsed.path not in ("/system", "/session"):
        problems.add(f"{key}.uri", uri, "a libvirt URI such as qemu:///system, "
                     "qemu+ssh://root@hv2/system or qemu+tls://hv3/system")
        ok = False
    pool = str(entry.get("storagePool") or storage_pool)
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", pool):
        problems.add(f"{key}.storagePool", pool, "a libvirt storage pool name")
        ok = False
    given = [a for a in ATTACHMENTS if entry.get(a)]
    if len(given) != 1:
        problems.add(f"{key}", given or "none", "exactly one of " + "; ".join(
            f"{a}: {why}" for a, why in ATTACHMENTS.items()))
        ok = False
    elif not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$", str(entry[given[0]])):
        problems.add(f"{key}.{given[0]}", entry[given[0]], f"a device or network name "
                     f"({ATTACHMENTS[given[0]]})")
        ok = False
    jump, jump_key = str(entry.get("sshJump") or ""), str(entry.get("sshJumpHostKey") or "")
    if jump and not SSH_JUMP_RE.match(jump):
        problems.add(f"{key}.sshJump", jump, "user@host or user@host:port: an SSH server "
                     "(usually the hypervisor) that reaches the nodes' LAN")
        ok = False
    if jump and not HOST_KEY_RE.match(jump_key.strip()):
        problems.add(f"{key}.sshJumpHostKey", jump_key[:30], "with sshJump: that server's "
                     "public host key, one line as `ssh-keyscan -t ed25519 <host>` prints "
                     "it without the host name (ssh-ed25519 AAAA...), so that no other "
                     "machine can stand in for it")
        ok = False
    elif jump_key and not jump:
        problems.add(f"{key}.sshJumpHostKey", jump_key[:30], "only with sshJump")
        ok = False
    if not ok:
        return None
    return HostSpec(name=name, uri=uri, storage_pool=pool, attachment=given[0],
                    device=str(entry[given[0]]), ssh_jump=jump,
                    ssh_jump_host_key=jump_key.strip())


def place(nodes: list[str], hosts: Iterable[HostSpec], explicit: Mapping[str, str],
          repository: str | None) -> dict[str, str]:
    """Host name per node (and for the `repository`, if any): the explicit placement,
    else round-robin in node order (node i on host i mod N); the repository, unless
    placed, on a host with the fewest of the first three nodes (the first such in list
    order). Neither depends on nodes after the third, so scaling moves nothing."""
    names = [h.name for h in hosts]
    placed = {node: explicit.get(node) or names[i % len(names)]
              for i, node in enumerate(nodes)}
    if repository is not None:
        core = nodes[:CORE_NODES]
        placed[repository] = explicit.get(repository) or min(
            names, key=lambda h: sum(1 for n in core if placed[n] == h))
    return placed


def check_placement(explicit: Any, nodes: list[str], hosts: tuple[HostSpec, ...],
                    repository: str | None, problems: Problems) -> bool:
    """The explicit `placement` names known nodes and hosts only."""
    if not isinstance(explicit, dict):
        problems.add("placement", explicit, "a map of node name to host name, e.g. "
                     "{srv1: hv1, srv2: hv2}")
        return False
    known_nodes = [*nodes, *([repository] if repository else [])]
    host_names = [h.name for h in hosts]
    ok = True
    for node, host in explicit.items():
        if node not in known_nodes:
            problems.add("placement", node, "not a node of this stack; nodes: "
                         + ", ".join(known_nodes))
            ok = False
        if host not in host_names:
            problems.add(f"placement.{node}", host, "not a listed host; hosts: "
                         + ", ".join(host_names))
            ok = False
    return ok


def majority_problem(placement: Mapping[str, str], nodes: list[str]) -> str | None:
    """Why losing one host would stop the cluster, with the numbers; None if it would
    not. Raft needs a majority of the nodes; a host holding a majority takes it along."""
    majority = len(nodes) // 2 + 1
    per_host: dict[str, list[str]] = {}
    for node in nodes:
        per_host.setdefault(placement[node], []).append(node)
    for host, held in per_host.items():
        if len(held) >= majority:
            left = len(nodes) - len(held)
            return (f"losing host {host} stops {len(held)} of {len(nodes)} nodes "
                    f"({', '.join(held)}) and leaves {left}, short of the Raft majority "
                    f"of {majority}: the cluster stops with it")
    return None
