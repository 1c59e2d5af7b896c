"""The cluster's configuration model: one validated, frozen ClusterSpec.

`build_spec` turns the raw stack settings (strings, as Pulumi stores them) into a
ClusterSpec, or raises ConfigError listing every problem at once. It imports nothing
from Pulumi, so validation runs (and is tested) before any resource exists.
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional
from urllib.parse import urlparse

from components import hosts as multihost
from components.calendar import calendar_problem
from components.hosts import HostSpec

POSTGRES_PORT = 5432
RESTAPI_PORT = 8008
RAFT_PORT = 5010
# Nodes get fixed DHCP reservations from this offset in a network the program creates,
# leaving the low addresses to the gateway and to dynamic leases.
FIRST_NODE_OFFSET = 10
MAX_NODES = 7  # nodeCount's largest value
# The backup repository's VM sits just below the first node, clear of nodes added later.
REPOSITORY_NAME = "repository"
REPOSITORY_OFFSET = -1
MIN_MEMORY_MIB = 1024
# A bound that catches a typo (MiB read as KiB), not a sizing advice: 1 TiB per VM.
MAX_MEMORY_MIB = 1024 * 1024
# libvirt's `default` network: on most hosts already, so a created network must not
# overlap it.
LIBVIRT_DEFAULT_NETWORK = ipaddress.ip_network("192.168.122.0/24")
# Private by Python's reckoning, yet no network for VMs.
UNUSABLE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "192.0.0.0/24", "192.0.2.0/24",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4"))
MIN_DISK_GIB = 8
SUPPORTED_POSTGRES = range(13, 19)
# Debian 12 ships PostgreSQL 15; Rocky 8's AppStream modules lag behind PGDG.
DISTRO_POSTGRES = {"debian12": 15}
DEFAULT_IMAGES = {
    "rocky8": "https://dl.rockylinux.org/pub/rocky/8/images/x86_64/"
    "Rocky-8-GenericCloud-Base.latest.x86_64.qcow2",
    "debian12": "https://cloud.debian.org/images/cloud/bookworm/latest/"
    "debian-12-genericcloud-amd64.qcow2",
}
# Settings the program owns: letting users override them would break the cluster.
MANAGED_PG_PARAMETERS = frozenset({
    "listen_addresses", "port", "data_directory", "hba_file", "ident_file",
    "config_file", "unix_socket_directories", "hot_standby", "wal_level",
    "synchronous_standby_names", "primary_conninfo", "primary_slot_name",
    # TLS (the tls settings): the node's own certificate files.
    "ssl", "ssl_cert_file", "ssl_key_file", "ssl_ca_file",
})
# What backups set for WAL archiving (components.backup): refused then, not overridden.
BACKUP_PG_PARAMETERS = frozenset({"archive_mode", "archive_command", "archive_library",
                                  "restore_command"})
PATRONI_TAGS = {"nofailover": bool, "noloadbalance": bool, "clonefrom": bool,
                "nosync": bool, "failover_priority": int}
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}[a-z0-9]$")
HOSTNAME_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
PG_PARAM_RE = re.compile(r"^[a-z_][a-z0-9_.]*$", re.IGNORECASE)
# Every parameter name each major version's server knows (pg_settings of a real server,
# recorded by tools/postgres-parameter-names.py).
PG_PARAMETER_NAMES_FILE = Path(__file__).with_name("postgres_parameters.json")
VERSION_RE = re.compile(r"^\d+(\.\d+){1,2}$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class ConfigError(ValueError):
    """Every invalid setting, one line each: key, value, what is allowed."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack configuration:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class Setting:
    kind: str  # str | int | bool | object | list
    default: Any
    description: str
    items: str = "str"  # a list's items: str | object


# Every stack setting (key in Pulumi.yaml's `config:` block, namespace `pgha`).
SETTINGS: dict[str, Setting] = {
    "libvirtUri": Setting("str", "qemu:///system", "libvirt connection URI"),
    "domainType": Setting("str", "kvm", "kvm (hardware virtualization) or qemu (emulation)"),
    "cpuMode": Setting("str", "", "libvirt CPU mode; empty: host-passthrough on kvm, "
                       "the hypervisor default on qemu"),
    "nodeCount": Setting("int", 3, "number of nodes: odd, 3 to 7"),
    "namePrefix": Setting("str", "srv", "node names are <prefix>1..<prefix>N"),
    "vcpus": Setting("int", 2, "vCPUs per node"),
    "memoryMib": Setting("int", 2048, "memory per node in MiB (at least 1024)"),
    "diskGib": Setting("int", 20, "disk per node in GiB"),
    "osFamily": Setting("str", "rocky8", "guest OS: rocky8 or debian12"),
    "baseImage": Setting("str", "", "cloud image URL or local qcow2 path; empty: the "
                         "OS's official generic cloud image"),
    "storagePool": Setting("str", "default", "libvirt storage pool for disks and seeds"),
    "networkName": Setting("str", "", "use this existing libvirt network instead of "
                           "creating one"),
    "networkCidr": Setting("str", "192.168.130.0/24", "CIDR of the network the program creates"),
    "networkMode": Setting("str", "nat", "created network's mode: nat or none (isolated)"),
    # Several libvirt hosts (empty: one host, libvirtUri, as above).
    "hosts": Setting("list", [], "the libvirt hosts the nodes are spread over, each "
                     "{name, uri, bridge|macvtap|network, storagePool?, sshJump?, "
                     "sshJumpHostKey?}; "
                     "empty: every VM on libvirtUri", items="object"),
    "placement": Setting("object", {}, "host name per node (and for the repository); "
                         "unplaced nodes go round-robin in node order"),
    "allowHostMajority": Setting("bool", False, "acknowledge a placement where losing "
                                 "one host stops the cluster; refused otherwise"),
    "networkGateway": Setting("str", "", "with hosts: the LAN's default gateway for the "
                              "nodes' static addresses; empty: no default route"),
    "networkDns": Setting("list", [], "with hosts: DNS servers for the nodes"),
    "firstNodeAddress": Setting("str", "", "with hosts: the first node's static address "
                                "on the LAN (the others follow it, the repository takes "
                                "the one before it); empty: host +10 of networkCidr"),
    "sshUser": Setting("str", "pgha", "admin user created on every node"),
    "sshPublicKey": Setting("str", "", "OpenSSH public key for sshUser; empty: generate "
                            "a key pair (needs sshPrivateKey when set)"),
    "clusterName": Setting("str", "pg-raft", "Patroni scope; also prefixes libvirt names"),
    "namespace": Setting("str", "/db/", "Patroni namespace"),
    "postgresVersion": Setting("int", 14, "PostgreSQL major version, 13 to 18"),
    "postgresSource": Setting("str", "pgdg", "pgdg (PostgreSQL's own repository) or "
                              "distro (the OS's packages)"),
    "patroniVersion": Setting("str", "4.1.5", "Patroni version installed from PyPI"),
    "ttl": Setting("int", 30, "leader lock TTL in seconds"),
    "loopWait": Setting("int", 10, "seconds between HA loop runs"),
    "retryTimeout": Setting("int", 10, "DCS and PostgreSQL retry timeout in seconds"),
    "maximumLagOnFailover": Setting("int", 1048576, "bytes a replica may lag and still "
                                    "be promoted"),
    "synchronousMode": Setting("bool", True, "Patroni synchronous_mode (no acknowledged "
                               "write lost on failover)"),
    "watchdogMode": Setting("str", "required", "off, automatic or required"),
    "watchdogSafetyMargin": Setting("int", 5, "seconds before TTL expiry the watchdog fires"),
    "postgresParameters": Setting("object", {}, "extra PostgreSQL parameters"),
    "clientCidrs": Setting("list", [], "CIDRs allowed to connect (pg_hba); empty: the "
                           "cluster network only"),
    "firewall": Setting("bool", True, "nftables on every host, owned by the program: "
                        "inbound only what the cluster needs"),
    "adminCidrs": Setting("list", [], "CIDRs SSH and the REST API are reached from; "
                          "empty: the network the program creates"),
    "openToAnyAddress": Setting("bool", False, "acknowledge that clientCidrs or adminCidrs "
                                "admit every address (0.0.0.0/0); refused otherwise"),
    "tls": Setting("bool", True, "TLS for PostgreSQL and Patroni's REST API (clients "
                   "verify the server); false only for debugging: all in plain text"),
    "tlsCertificateDays": Setting("int", 365, "lifetime of each node's server certificate "
                                  "in days"),
    "tlsRenewalDays": Setting("int", 30, "an `up` this many days or fewer before a "
                              "certificate expires issues a new one and reloads it"),
    "tlsCaCertificate": Setting("str", "", "PEM CA certificate that signs the nodes' "
                                "certificates (with the secret tlsCaPrivateKey); empty: "
                                "the program generates a CA"),
    "nodeTags": Setting("object", {}, "Patroni tags per node name, e.g. "
                        "{srv3: {nofailover: true}}"),
    "httpProxy": Setting("str", "", "HTTP proxy the nodes use for packages"),
    "extraCaCertificates": Setting("str", "", "PEM CA certificates the nodes trust "
                                   "(TLS-inspecting proxies)"),
    "pythonIndexUrl": Setting("str", "", "Python package index or wheelhouse URL for "
                              "Patroni (air-gapped sites)"),
    "healthTimeoutSeconds": Setting("int", 900, "how long `pulumi up` waits for a healthy "
                                    "cluster"),
    # Backups: pgBackRest with a repository VM of its own (off: no repository VM at all).
    "backups": Setting("bool", False, "pgBackRest backups and WAL archive on a repository "
                       "VM of their own"),
    "backupRetentionFull": Setting("int", 2, "full backups kept (older ones expire with "
                                   "the WAL they need), 1 to 100"),
    "backupFullSchedule": Setting("str", "Sun *-*-* 01:00:00", "systemd OnCalendar of the "
                                  "full backup"),
    "backupDiffSchedule": Setting("str", "Mon..Sat *-*-* 01:00:00", "systemd OnCalendar "
                                  "of the differential backup; none: no differentials"),
    "backupEncrypt": Setting("bool", True, "encrypt the repository (aes-256-cbc, "
                             "generated passphrase)"),
    "backupCompressType": Setting("str", "zst", "zst, lz4, gz, bz2 or none"),
    "backupCompressLevel": Setting("int", 3, "compression level (zst -7..22, lz4 -5..12, "
                                   "gz 0..9, bz2 1..9; ignored with none)"),
    "backupArchiveQueueMax": Setting("str", "2GiB", "WAL a primary queues while the "
                                     "repository is away before it drops the queue"),
    "backupRepoDiskGib": Setting("int", 50, "repository VM's data disk in GiB"),
    "backupRepoMemoryMib": Setting("int", 1024, "repository VM's memory in MiB"),
    "restoreTarget": Setting("str", "", "point-in-time recovery of the whole cluster on the "
                             "next up: latest, time:<timestamp+zone>, name:<restore point> "
                             "or lsn:<lsn>"),
    "cloneFromStack": Setting("str", "", "create the cluster from another pgha stack's "
                              "backup repository (its stack name as `pulumi stack ls` "
                              "shows it, e.g. organization/pgha/prod), at restoreTarget "
                              "(default latest)"),
}


# Settings read only as Pulumi secrets (never into the spec): what each one is for.
SECRET_SETTINGS: dict[str, str] = {
    "sshPrivateKey": "the private key matching sshPublicKey "
                     "(pulumi config set --secret sshPrivateKey < key)",
    "tlsCaPrivateKey": "the private key (PEM) of tlsCaCertificate "
                       "(pulumi config set --secret tlsCaPrivateKey < ca.key)",
}


@dataclass(frozen=True)
class NodeSpec:
    name: str
    index: int  # 0-based
    mac: str
    address: str | None  # fixed DHCP reservation, None on an existing network
    tags: Mapping[str, Any] = field(default_factory=dict)
    host: str = ""  # its libvirt host's name (hosts listed), else ""


@dataclass(frozen=True)
class OsLayout:
    """Where one OS + PostgreSQL source puts things: the only per-OS difference."""
    family: str
    package_manager: str  # dnf | apt
    pg_bin_dir: str
    pg_data_dir: str
    postgres_home: str
    python: str  # interpreter for Patroni's virtualenv


@dataclass(frozen=True)
class RestoreTarget:
    """Where a point-in-time recovery stops: the end of the WAL archive ("latest"), a
    timestamp with its time zone, a restore point's name or an LSN."""
    kind: str  # latest | time | name | lsn
    value: str = ""

    @property
    def text(self) -> str:
        return self.kind if self.kind == "latest" else f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class BackupSettings:
    """The stack's backup settings, validated; the repository's address is known only
    once its VM exists (components.backup.backup_spec adds it)."""
    retention_full: int
    full_schedule: str
    diff_schedule: str  # empty: no differential backups
    encrypt: bool
    compress_type: str
    compress_level: int | None
    archive_push_queue_max: str
    repo_disk_gib: int
    repo_memory_mib: int
    restore_target: RestoreTarget | None


@dataclass(frozen=True)
class TlsSettings:
    """TLS on: each node's certificate lifetime and renewal window, and the user's CA
    certificate when it is not generated (its key is a secret, read by __main__)."""
    certificate_hours: int
    renewal_hours: int
    ca_certificate: str  # empty: the program generates the CA

    @property
    def generates_ca(self) -> bool:
        return not self.ca_certificate


@dataclass(frozen=True)
class CloneSpec:
    """A cluster created from another stack's backup repository (its stack output
    backupCloneSource), at `target` in that repository's archive."""
    stack: str
    target: RestoreTarget


@dataclass(frozen=True)
class ClusterSpec:
    libvirt_uri: str
    domain_type: str
    cpu_mode: str
    node_count: int
    name_prefix: str
    vcpus: int
    memory_mib: int
    disk_gib: int
    os_family: str
    base_image: str
    storage_pool: str
    network_name: str
    network_cidr: str
    network_mode: str
    ssh_user: str
    ssh_public_key: str
    cluster_name: str
    namespace: str
    postgres_version: int
    postgres_source: str
    patroni_version: str
    ttl: int
    loop_wait: int
    retry_timeout: int
    maximum_lag_on_failover: int
    synchronous_mode: bool
    watchdog_mode: str
    watchdog_safety_margin: int
    postgres_parameters: Mapping[str, Any]
    client_cidrs: tuple[str, ...]
    firewall: bool
    admin_cidrs: tuple[str, ...]  # resolved (see _admin_cidrs)
    node_tags: Mapping[str, Mapping[str, Any]]
    http_proxy: str
    extra_ca_certificates: str
    python_index_url: str
    health_timeout_seconds: int
    tls: TlsSettings | None = None  # None: plain text (debugging only)
    backups: BackupSettings | None = None  # None: no backups, no repository VM
    clone: CloneSpec | None = None  # None: a new cluster starts empty (initdb)
    # Several libvirt hosts (empty: libvirt_uri alone): each node's host by name, static
    # addresses in network_cidr on the LAN the hosts share.
    hosts: tuple[HostSpec, ...] = ()
    placement: Mapping[str, str] = field(default_factory=dict)
    network_gateway: str = ""
    network_dns: tuple[str, ...] = ()
    first_node_address: str = ""  # with hosts; empty: host +FIRST_NODE_OFFSET

    @property
    def restore_request(self) -> str | None:
        """What this stack asks to be restored, as one line (a node records the last one
        it carried out): a clone of another stack, a point-in-time recovery, or None."""
        if self.clone is not None:
            return f"clone {self.clone.stack} {self.clone.target.text}"
        if self.backups is not None and self.backups.restore_target is not None:
            return self.backups.restore_target.text
        return None

    @property
    def creates_network(self) -> bool:
        return not self.network_name and not self.hosts

    def host_of(self, name: str) -> HostSpec | None:
        """The listed host a node (or the repository) runs on; None on a single host."""
        placed = self.placement.get(name)
        return next((h for h in self.hosts if h.name == placed), None)

    @property
    def knows_addresses(self) -> bool:
        """The nodes' addresses are the program's: reservations on the network it creates,
        or static addresses on the hosts' LAN."""
        return self.creates_network or bool(self.hosts)

    @property
    def generates_ssh_key(self) -> bool:
        return not self.ssh_public_key

    @property
    def node_names(self) -> list[str]:
        return [f"{self.name_prefix}{i + 1}" for i in range(self.node_count)]

    @property
    def nodes(self) -> list[NodeSpec]:
        return [NodeSpec(name=name, index=i, mac=node_mac(self.cluster_name, i),
                         address=self.address_of(i) if self.knows_addresses
                         else None,
                         tags=dict(self.node_tags.get(name, {})),
                         host=self.placement.get(name, ""))
                for i, name in enumerate(self.node_names)]

    @property
    def repository(self) -> NodeSpec | None:
        """The backup repository's VM (a host of its own, not a cluster member)."""
        if self.backups is None:
            return None
        return NodeSpec(name=REPOSITORY_NAME, index=-1,
                        mac=node_mac(self.cluster_name, REPOSITORY_NAME),
                        address=self.address_of(REPOSITORY_OFFSET)
                        if self.knows_addresses else None,
                        host=self.placement.get(REPOSITORY_NAME, ""))

    def address_of(self, index: int) -> str:
        """Node `index`'s address (negative: counted down from the first node's)."""
        if self.first_node_address:
            return str(ipaddress.ip_address(self.first_node_address) + index)
        return node_address(self.network_cidr, index)

    @property
    def hba_cidrs(self) -> tuple[str, ...]:
        """Who may connect to PostgreSQL: the configured clients, else the cluster network."""
        return self.client_cidrs or ((self.network_cidr,) if self.knows_addresses else ())

    @property
    def layout(self) -> OsLayout:
        return os_layout(self.os_family, self.postgres_source, self.postgres_version)

    @property
    def image_source(self) -> str:
        return self.base_image or DEFAULT_IMAGES[self.os_family]

    @property
    def libvirt_prefix(self) -> str:
        return f"pgha-{self.cluster_name}"


def os_layout(family: str, source: str, version: int) -> OsLayout:
    if family == "rocky8":
        return OsLayout(family, "dnf", f"/usr/pgsql-{version}/bin",
                        f"/var/lib/pgsql/{version}/data", "/var/lib/pgsql", "/usr/bin/python3.11")
    return OsLayout(family, "apt", f"/usr/lib/postgresql/{version}/bin",
                    f"/var/lib/postgresql/{version}/main", "/var/lib/postgresql",
                    "/usr/bin/python3")


def node_mac(cluster_name: str, index: int | str) -> str:
    """A stable, locally administered MAC (QEMU's OUI) per cluster and node."""
    digest = hashlib.sha256(f"{cluster_name}/{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def node_address(cidr: str, index: int) -> str:
    """Node `index`'s reservation; negative indexes count down from the first node's."""
    net = ipaddress.ip_network(cidr, strict=False)
    return str(net.network_address + FIRST_NODE_OFFSET + index)


# --- parsing ----------------------------------------------------------------------

class _Problems(list):
    def add(self, key: str, value: Any, allowed: str) -> None:
        self.append(f"pgha:{key} = {value!r}: {allowed}")


def _parse(key: str, raw: Any, problems: _Problems) -> Any:
    setting = SETTINGS[key]
    if raw is None or raw == "":
        return setting.default
    try:
        if setting.kind == "str":
            return str(raw)
        if setting.kind == "int":
            if isinstance(raw, bool):
                raise ValueError
            return int(raw)
        if setting.kind == "bool":
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("true", "false"):
                return str(raw).lower() == "true"
            raise ValueError
        value = json.loads(raw) if isinstance(raw, str) else raw
        expected = dict if setting.kind == "object" else list
        if not isinstance(value, expected):
            raise ValueError
        return value
    except (ValueError, TypeError):
        problems.add(key, raw, f"must be {'an' if setting.kind in ('int', 'object') else 'a'} "
                     f"{setting.kind}")
        return setting.default


def build_spec(raw: Mapping[str, Any],
               secrets_set: Optional[Iterable[str]] = None) -> ClusterSpec:
    """Validate raw settings (missing keys take defaults); raise ConfigError listing
    every problem at once. `secrets_set`: the SECRET_SETTINGS keys the stack sets, when
    known (the program passes them; without them the secrets are not checked)."""
    problems = _Problems()
    for key in sorted(set(raw) - set(SETTINGS)):
        problems.append(_unknown_setting(key))
    v = {key: _parse(key, raw.get(key), problems) for key in SETTINGS}

    def one_of(key: str, allowed: tuple[str, ...]) -> None:
        if v[key] not in allowed:
            problems.add(key, v[key], "allowed: " + ", ".join(allowed))

    def at_least(key: str, low: int, why: str = "") -> None:
        if v[key] < low:
            problems.add(key, v[key], f"must be at least {low}{why}")

    one_of("domainType", ("kvm", "qemu"))
    one_of("cpuMode", ("", "host-passthrough", "host-model"))
    if v["domainType"] == "qemu" and v["cpuMode"] == "host-passthrough":
        problems.add("cpuMode", v["cpuMode"], "host-passthrough needs domainType kvm")
    if v["nodeCount"] not in range(multihost.CORE_NODES, MAX_NODES + 1, 2):
        problems.add("nodeCount", v["nodeCount"],
                     "must be odd and between 3 and 7 (Raft needs a majority)")
    if not HOSTNAME_PREFIX_RE.match(v["namePrefix"]):
        problems.add("namePrefix", v["namePrefix"], "lowercase letters, digits and '-', "
                     "starting with a letter, at most 31 characters (a hostname)")
    at_least("vcpus", 1)
    at_least("memoryMib", MIN_MEMORY_MIB, " (PostgreSQL + Patroni)")
    if v["memoryMib"] > MAX_MEMORY_MIB:
        problems.add("memoryMib", v["memoryMib"], f"at most {MAX_MEMORY_MIB} (1 TiB; the "
                     f"value is in MiB: 8192 is 8 GiB)")
    at_least("diskGib", MIN_DISK_GIB)
    one_of("osFamily", tuple(DEFAULT_IMAGES))
    _check_image(v, problems)
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", v["storagePool"]):
        problems.add("storagePool", v["storagePool"], "a libvirt storage pool name")
    _check_network(v, problems)
    hosts, placement = _check_hosts(v, problems)
    if v["hosts"] and not raw.get("networkCidr"):
        problems.add("networkCidr", v["networkCidr"], "with hosts: the CIDR of the LAN the "
                     "hosts' bridges are on, said explicitly (the nodes take static "
                     f"addresses in it from host +{FIRST_NODE_OFFSET}; the default is a "
                     "network the program would create, not yours)")
    if not USER_RE.match(v["sshUser"]) or v["sshUser"] in ("root", "postgres"):
        problems.add("sshUser", v["sshUser"], "a Linux user name other than root/postgres")
    if v["sshPublicKey"] and not re.match(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-\S+) \S+",
                                          v["sshPublicKey"]):
        problems.add("sshPublicKey", v["sshPublicKey"][:30] + "...",
                     "an OpenSSH public key line (ssh-ed25519/ssh-rsa/ecdsa)")
    if not NAME_RE.match(v["clusterName"]):
        problems.add("clusterName", v["clusterName"], "lowercase letters, digits and '-', "
                     "2-42 characters, starting with a letter (used in libvirt names)")
    ns = v["namespace"]
    if not re.match(r"^/([A-Za-z0-9_.-]+/)*$", ns):
        problems.add("namespace", ns, "a path that starts and ends with '/', e.g. /db/")
    _check_postgres(v, problems)
    if not VERSION_RE.match(v["patroniVersion"]) or not v["patroniVersion"].startswith(
            ("3.", "4.")):
        problems.add("patroniVersion", v["patroniVersion"], "a Patroni 3.x or 4.x release, "
                     "e.g. 4.1.5")
    _check_timing(v, problems)
    at_least("maximumLagOnFailover", 0)
    one_of("watchdogMode", ("off", "automatic", "required"))
    _check_parameters(v["postgresParameters"], v["postgresVersion"], problems)
    if v["backups"]:
        for name in v["postgresParameters"]:
            if str(name).lower() in BACKUP_PG_PARAMETERS:
                problems.add("postgresParameters", name,
                             "set by the program when backups is true (WAL archiving "
                             "to the repository); archive_timeout is yours to set")
    for key in ("clientCidrs", "adminCidrs"):
        for cidr in v[key]:
            try:
                if ipaddress.ip_network(str(cidr), strict=False).version != 4:
                    problems.add(key, cidr, "an IPv4 CIDR (the cluster is IPv4 only)")
            except ValueError:
                problems.add(key, cidr, "a CIDR such as 10.0.0.0/24")
    for key, what in (("clientCidrs", "PostgreSQL"), ("adminCidrs", "SSH and the REST API")):
        anywhere = [c for c in v[key] if _is_every_address(c)]
        if anywhere and not v["openToAnyAddress"]:
            problems.add(key, anywhere, f"opens {what} to every address; list the "
                         f"networks that need it, or set pgha:openToAnyAddress true to "
                         f"mean it")
    if v["firewall"] and v["networkName"] and not v["adminCidrs"]:
        problems.add("adminCidrs", v["adminCidrs"], "with networkName and the firewall on, "
                     "the networks SSH and the REST API are reached from (the program "
                     "does not know that network's addresses), e.g. [192.168.122.0/24]")
    _check_tags(v, problems)
    if v["httpProxy"] and urlparse(v["httpProxy"]).scheme not in ("http", "https"):
        problems.add("httpProxy", v["httpProxy"], "an http:// or https:// URL")
    if v["pythonIndexUrl"] and urlparse(v["pythonIndexUrl"]).scheme not in ("http", "https"):
        problems.add("pythonIndexUrl", v["pythonIndexUrl"], "an http:// or https:// URL")
    if v["extraCaCertificates"] and "-----BEGIN CERTIFICATE-----" not in v["extraCaCertificates"]:
        problems.add("extraCaCertificates", v["extraCaCertificates"][:30] + "...",
                     "PEM certificates (-----BEGIN CERTIFICATE-----)")
    at_least("healthTimeoutSeconds", 60)
    tls = _check_tls(v, problems)
    target = _check_restore_target(v, problems)
    backups = _check_backups(v, problems, target)
    clone = _check_clone(v, problems, target)
    if secrets_set is not None:
        _check_secrets(v, set(secrets_set), problems)

    if problems:
        raise ConfigError(list(problems))
    return ClusterSpec(
        libvirt_uri=v["libvirtUri"], domain_type=v["domainType"],
        cpu_mode=v["cpuMode"] or ("host-passthrough" if v["domainType"] == "kvm" else ""),
        node_count=v["nodeCount"], name_prefix=v["namePrefix"], vcpus=v["vcpus"],
        memory_mib=v["memoryMib"], disk_gib=v["diskGib"], os_family=v["osFamily"],
        base_image=v["baseImage"], storage_pool=v["storagePool"],
        network_name=v["networkName"],
        network_cidr=str(ipaddress.ip_network(v["networkCidr"], strict=False)),
        network_mode=v["networkMode"], ssh_user=v["sshUser"],
        ssh_public_key=v["sshPublicKey"].strip(), cluster_name=v["clusterName"],
        namespace=ns, postgres_version=v["postgresVersion"],
        postgres_source=v["postgresSource"], patroni_version=v["patroniVersion"],
        ttl=v["ttl"], loop_wait=v["loopWait"], retry_timeout=v["retryTimeout"],
        maximum_lag_on_failover=v["maximumLagOnFailover"],
        synchronous_mode=v["synchronousMode"], watchdog_mode=v["watchdogMode"],
        watchdog_safety_margin=v["watchdogSafetyMargin"],
        postgres_parameters=dict(v["postgresParameters"]),
        client_cidrs=tuple(str(ipaddress.ip_network(c, strict=False))
                           for c in v["clientCidrs"]),
        firewall=v["firewall"], admin_cidrs=_admin_cidrs(v),
        node_tags={k: dict(t) for k, t in v["nodeTags"].items()},
        http_proxy=v["httpProxy"], extra_ca_certificates=v["extraCaCertificates"],
        python_index_url=v["pythonIndexUrl"],
        health_timeout_seconds=v["healthTimeoutSeconds"], tls=tls, backups=backups,
        clone=clone, hosts=hosts, placement=placement,
        network_gateway=v["networkGateway"],
        network_dns=tuple(str(a) for a in v["networkDns"]),
        first_node_address=v["firstNodeAddress"],
    )


def _is_every_address(cidr: Any) -> bool:
    try:
        return ipaddress.ip_network(str(cidr), strict=False).prefixlen == 0
    except ValueError:
        return False  # reported as not a CIDR


def _unknown_setting(key: str) -> str:
    """The line for a key the program does not know (its value is not shown: it may be
    a mistyped secret), with the nearest known key."""
    known = {k.lower(): k for k in [*SETTINGS, *SECRET_SETTINGS]}
    near = difflib.get_close_matches(key.lower(), list(known), n=1, cutoff=0.6)
    hint = f"did you mean {known[near[0]]}?" if near else \
        "the settings are listed in Pulumi.yaml and the README"
    return f"pgha:{key}: unknown setting; {hint}"


def _check_secrets(v: dict, present: set[str], problems: _Problems) -> None:
    needed = {"sshPrivateKey": bool(v["sshPublicKey"]),
              "tlsCaPrivateKey": v["tls"] and bool(v["tlsCaCertificate"].strip())}
    for key, need in needed.items():
        if need and key not in present:
            because = "sshPublicKey" if key == "sshPrivateKey" else "tlsCaCertificate"
            problems.append(f"pgha:{key} is not set: with {because} set, the secret "
                            f"{SECRET_SETTINGS[key]} is needed")


# pgBackRest's own ranges per compression type.
COMPRESS_LEVELS = {"zst": (-7, 22), "lz4": (-5, 12), "gz": (0, 9), "bz2": (1, 9)}
SIZE_RE = re.compile(r"^[1-9][0-9]*(KiB|MiB|GiB|TiB|KB|MB|GB|TB)?$", re.IGNORECASE)
TIME_TARGET_RE = re.compile(r"^(?P<stamp>\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})"
                            r"(?P<fraction>\.\d{1,6})?(?P<zone>Z|[+-]\d{2}(:?\d{2})?)$")
LSN_RE = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
RESTORE_POINT_RE = re.compile(r"^[A-Za-z0-9_.:@+-][A-Za-z0-9_.:@+ -]{0,62}$")


def parse_target_time(value: str) -> datetime:
    """A time target's timestamp (TIME_TARGET_RE) as an aware datetime; ValueError for a
    date or time that does not exist (2026-02-30, 25:61). Normalised first, because
    Python 3.10's fromisoformat takes neither `Z`, `+00` nor 1-5 fraction digits."""
    match = TIME_TARGET_RE.match(value)
    if not match:
        raise ValueError(f"not a timestamp with a zone: {value!r}")
    stamp, fraction, zone = match.group("stamp"), match.group("fraction"), match.group("zone")
    fraction = (fraction or ".0").ljust(7, "0")
    if zone == "Z":
        zone = "+00:00"
    elif ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:] or '00'}"
    return datetime.fromisoformat(f"{stamp}{fraction}{zone}")


def parse_restore_target(text: str) -> RestoreTarget | None:
    """`latest`, `time:<timestamp with zone>`, `name:<restore point>` or `lsn:<lsn>`;
    None when the text is none of these (a time that does not exist included)."""
    if text == "latest":
        return RestoreTarget("latest")
    kind, _, value = text.partition(":")
    checks = {"time": TIME_TARGET_RE, "name": RESTORE_POINT_RE, "lsn": LSN_RE}
    if kind not in checks or not checks[kind].match(value):
        return None
    if kind == "time":
        try:
            parse_target_time(value)
        except ValueError:
            return None
    return RestoreTarget(kind, value)


# Ten years: a bound that catches hours typed as days, not a recommendation.
MAX_CERTIFICATE_DAYS = 3650


def _check_tls(v: dict, problems: _Problems) -> TlsSettings | None:
    """Checked whenever set, so that turning TLS back on cannot surface an old typo."""
    days, renewal = v["tlsCertificateDays"], v["tlsRenewalDays"]
    if not 2 <= days <= MAX_CERTIFICATE_DAYS:
        problems.add("tlsCertificateDays", days, f"must be 2 to {MAX_CERTIFICATE_DAYS}")
    if not 1 <= renewal < days:
        problems.add("tlsRenewalDays", renewal, f"must be at least 1 and less than "
                     f"tlsCertificateDays ({days}): the window before expiry in which an "
                     f"`up` renews")
    ca = v["tlsCaCertificate"].strip()
    if ca and (ca.count("-----BEGIN CERTIFICATE-----") != 1
               or "-----END CERTIFICATE-----" not in ca):
        problems.add("tlsCaCertificate", ca[:30] + "...", "one PEM certificate "
                     "(-----BEGIN CERTIFICATE-----), the CA that signs the nodes' "
                     "certificates; its key goes in the secret pgha:tlsCaPrivateKey")
    if not v["tls"]:
        return None
    return TlsSettings(certificate_hours=days * 24, renewal_hours=renewal * 24,
                       ca_certificate=ca + "\n" if ca else "")


def _check_restore_target(v: dict, problems: _Problems) -> RestoreTarget | None:
    if not v["restoreTarget"]:
        return None
    target = parse_restore_target(v["restoreTarget"])
    if target is None:
        problems.add("restoreTarget", v["restoreTarget"],
                     "latest, time:<YYYY-MM-DD HH:MM:SS+zone> (e.g. time:2026-11-26 "
                     "14:05:00+00; a date and time that exist), name:<restore point> or "
                     "lsn:<X/X>")
    elif not v["backups"] and not v["cloneFromStack"]:
        problems.add("restoreTarget", v["restoreTarget"],
                     "restores come from the backup repository: needs backups true "
                     "(or cloneFromStack, to restore another stack's backups)")
    return target


def _check_backups(v: dict, problems: _Problems,
                   target: RestoreTarget | None) -> BackupSettings | None:
    """Backup settings are checked whenever they are set, so that turning backups on
    later cannot surface an old typo; they take effect only with backups on."""
    if v["backupRetentionFull"] < 1 or v["backupRetentionFull"] > 100:
        problems.add("backupRetentionFull", v["backupRetentionFull"], "must be 1 to 100")
    for key in ("backupFullSchedule", "backupDiffSchedule"):
        problem = None if v[key] == "none" else calendar_problem(v[key])
        if problem:
            problems.add(key, v[key], f"a systemd calendar expression such as "
                         f"'Sun *-*-* 01:00:00' or 'daily' ({problem})" +
                         ("; none: no differential backups" if "Diff" in key else ""))
    if v["backupFullSchedule"] == "none":
        problems.add("backupFullSchedule", "none", "full backups cannot be turned off")
    compress, level = v["backupCompressType"], v["backupCompressLevel"]
    if compress not in (*COMPRESS_LEVELS, "none"):
        problems.add("backupCompressType", compress, "allowed: zst, lz4, gz, bz2, none")
    elif compress != "none":
        low, high = COMPRESS_LEVELS[compress]
        if not low <= level <= high:
            problems.add("backupCompressLevel", level, f"{compress} levels are {low} to {high}")
    if not SIZE_RE.match(v["backupArchiveQueueMax"]):
        problems.add("backupArchiveQueueMax", v["backupArchiveQueueMax"],
                     "a size such as 2GiB or 512MiB")
    if v["backupRepoDiskGib"] < 4:
        problems.add("backupRepoDiskGib", v["backupRepoDiskGib"], "must be at least 4")
    if not 512 <= v["backupRepoMemoryMib"] <= MAX_MEMORY_MIB:
        problems.add("backupRepoMemoryMib", v["backupRepoMemoryMib"],
                     f"must be 512 to {MAX_MEMORY_MIB} (MiB)")
    if not v["backups"]:
        return None
    return BackupSettings(
        retention_full=v["backupRetentionFull"], full_schedule=v["backupFullSchedule"],
        diff_schedule="" if v["backupDiffSchedule"] == "none" else v["backupDiffSchedule"],
        encrypt=v["backupEncrypt"], compress_type=compress,
        compress_level=None if compress == "none" else level,
        archive_push_queue_max=v["backupArchiveQueueMax"],
        repo_disk_gib=v["backupRepoDiskGib"], repo_memory_mib=v["backupRepoMemoryMib"],
        # With cloneFromStack the target is in the other stack's repository.
        restore_target=None if v["cloneFromStack"] else target)


STACK_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}$")


def _check_clone(v: dict, problems: _Problems,
                 target: RestoreTarget | None) -> CloneSpec | None:
    stack = v["cloneFromStack"]
    if not stack:
        return None
    if not STACK_NAME_RE.match(stack):
        problems.add("cloneFromStack", stack, "a stack name: <stack>, <project>/<stack> or "
                     "<organization>/<project>/<stack> (letters, digits, '.', '_', '-')")
        return None
    return CloneSpec(stack=stack, target=target or RestoreTarget("latest"))


def _check_image(v: dict, problems: _Problems) -> None:
    image = v["baseImage"]
    if not image:
        return
    scheme = urlparse(image).scheme
    if scheme in ("http", "https"):
        return
    if scheme not in ("", "file"):
        problems.add("baseImage", image, "an http(s):// URL or a local qcow2 path")
        return
    path = urlparse(image).path if scheme == "file" else image
    if not os.path.isabs(path):
        problems.add("baseImage", image, "a local image path must be absolute")
    elif not os.path.isfile(path):
        problems.add("baseImage", image, "no such file on this machine")
    else:
        _check_node_image(v, path, problems)


def _check_node_image(v: dict, path: str, problems: _Problems) -> None:
    """A node image's manifest beside it says what the image was built for."""
    from components import node_image  # noqa: PLC0415 - it renders with this module's spec
    try:
        found = node_image.read_manifest(path)
    except (OSError, ValueError) as error:
        problems.add("baseImage", path, f"its manifest {node_image.manifest_path(path)} "
                     f"cannot be read ({error}); build the image again")
        return
    for key, value, why in node_image.check_against_manifest(v, path, found or {}):
        problems.add(key, value, why)


def _admin_cidrs(v: dict) -> tuple[str, ...]:
    """Who reaches SSH and the REST API: the configured networks, else the network the
    program creates; on that network the libvirt host's own address (.1) always, so a
    `pulumi up` run there can always correct the setting. On the hosts' LAN: the
    configured networks, else the LAN."""
    cidrs = [str(ipaddress.ip_network(c, strict=False)) for c in v["adminCidrs"]]
    if v["networkName"]:
        return tuple(cidrs)
    if v["hosts"]:
        return tuple(cidrs or [str(ipaddress.ip_network(v["networkCidr"], strict=False))])
    network = ipaddress.ip_network(v["networkCidr"], strict=False)
    return tuple(cidrs or [str(network)]) + (f"{network.network_address + 1}/32",)


def _check_network(v: dict, problems: _Problems) -> None:
    if v["networkName"]:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", v["networkName"]):
            problems.add("networkName", v["networkName"], "a libvirt network name")
        return
    lan = bool(v["hosts"])  # the hosts' LAN: no libvirt network of the program's
    if not lan and v["networkMode"] not in ("nat", "none"):
        problems.add("networkMode", v["networkMode"], "allowed: nat, none")
    elif not lan and v["networkMode"] == "none" and not v["httpProxy"] and not v["baseImage"]:
        # An image of the user's own may carry a mirror on that network; the official
        # cloud images know only the distributions' repositories on the Internet.
        problems.add("networkMode", "none", "an isolated network has no route to any "
                     "package repository: set httpProxy (a proxy the VMs reach on that "
                     "network; pythonIndexUrl for a wheelhouse), a baseImage whose "
                     "package sources are on that network, or use networkMode nat")
    try:
        net = ipaddress.ip_network(v["networkCidr"], strict=False)
    except ValueError:
        problems.add("networkCidr", v["networkCidr"], "an IPv4 CIDR such as 192.168.130.0/24")
        return
    if net.version != 4:
        problems.add("networkCidr", v["networkCidr"], "must be IPv4")
        return
    if lan:
        if net.is_multicast or any(net.overlaps(r) for r in UNUSABLE_NETWORKS):
            problems.add("networkCidr", v["networkCidr"], "the hosts' LAN: not loopback, "
                         "link-local, multicast or reserved")
    elif net.overlaps(LIBVIRT_DEFAULT_NETWORK):
        problems.add("networkCidr", v["networkCidr"],
                     f"overlaps libvirt's own default network ({LIBVIRT_DEFAULT_NETWORK}, "
                     f"present on most hosts); pick another private range, e.g. "
                     f"192.168.130.0/24")
    elif not net.is_private or any(net.overlaps(r) for r in UNUSABLE_NETWORKS):
        problems.add("networkCidr", v["networkCidr"],
                     "a private range the VMs can own (10.0.0.0/8, 172.16.0.0/12 or "
                     "192.168.0.0/16); not loopback, link-local, multicast or reserved")
    needed = FIRST_NODE_OFFSET + int(v["nodeCount"] or 0) + 1
    if net.num_addresses < needed:
        problems.add("networkCidr", v["networkCidr"],
                     f"too small for {v['nodeCount']} nodes: nodes start at host "
                     f"+{FIRST_NODE_OFFSET}, so at least {needed} addresses (/"
                     f"{32 - (needed - 1).bit_length()} or larger) are needed")


def _check_hosts(v: dict, problems: _Problems) -> tuple[tuple[HostSpec, ...], dict[str, str]]:
    """The libvirt hosts, each node's host and the LAN's static settings; nothing without
    hosts (then the settings that need them are refused, not ignored)."""
    if not v["hosts"]:
        for key, empty in (("placement", {}), ("allowHostMajority", False),
                           ("networkGateway", ""), ("networkDns", []),
                           ("firstNodeAddress", "")):
            if v[key] != empty:
                problems.add(key, v[key], "only with hosts (the nodes spread over several "
                             "libvirt hosts); a single-host stack's network is libvirt's")
        return (), {}
    if v["libvirtUri"] != SETTINGS["libvirtUri"].default:
        problems.add("libvirtUri", v["libvirtUri"], "not with hosts: each host's uri says "
                     "where its VMs run")
    if v["networkName"]:
        problems.add("networkName", v["networkName"], "not with hosts: each host's bridge, "
                     "macvtap or network says how its VMs reach the shared LAN")
    hosts = multihost.parse_hosts(v["hosts"], v["storagePool"], problems)
    nodes = [f"{v['namePrefix']}{i + 1}" for i in range(v["nodeCount"] or 0)]
    repository = REPOSITORY_NAME if v["backups"] else None
    _check_lan_addresses(v, nodes, problems)
    if not hosts or not multihost.check_placement(v["placement"], nodes, hosts, repository,
                                                  problems):
        return hosts, {}
    placement = multihost.place(nodes, hosts, v["placement"], repository)
    why = multihost.majority_problem(placement, nodes)
    if why and not v["allowHostMajority"]:
        shown = {h.name: [n for n in nodes if placement[n] == h.name] for h in hosts}
        problems.add("placement", shown, f"{why}; list another host, move a node "
                     f"(pgha:placement), or set pgha:allowHostMajority true to accept it")
    return hosts, placement


def _check_lan_addresses(v: dict, nodes: list[str], problems: _Problems) -> None:
    """The gateway and DNS servers the nodes' static network configuration names."""
    try:
        net = ipaddress.ip_network(v["networkCidr"], strict=False)
    except ValueError:
        return  # reported by _check_network
    first = _check_first_address(v, net, problems)
    first = first or ipaddress.ip_address(node_address(str(net), 0))
    taken = {str(first + i) for i in range(len(nodes))}
    if v["backups"]:
        taken.add(str(first + REPOSITORY_OFFSET))
    gateway = v["networkGateway"]
    if gateway:
        try:
            address = ipaddress.ip_address(gateway)
            if address not in net or address in (net.network_address,
                                                 net.broadcast_address):
                problems.add("networkGateway", gateway, f"an address in networkCidr {net}")
            elif gateway in taken:
                problems.add("networkGateway", gateway, "a node's own address (nodes "
                             f"start at firstNodeAddress {first})")
        except ValueError:
            problems.add("networkGateway", gateway, "an IPv4 address such as 10.0.0.1")
    if not isinstance(v["networkDns"], list):
        return
    for server in v["networkDns"]:
        try:
            if ipaddress.ip_address(str(server)).version != 4:
                raise ValueError
        except ValueError:
            problems.add("networkDns", server, "IPv4 addresses of DNS servers")


def _check_first_address(v: dict, net: ipaddress.IPv4Network | ipaddress.IPv6Network,
                         problems: _Problems) -> ipaddress.IPv4Address | None:
    """firstNodeAddress: in networkCidr, with room for the repository before it and the
    most nodes a stack can have (7) after it."""
    text = v["firstNodeAddress"]
    if not text:
        return None
    try:
        first = ipaddress.ip_address(text)
    except ValueError:
        problems.add("firstNodeAddress", text, "an IPv4 address such as 10.60.0.20")
        return None
    span = [first + REPOSITORY_OFFSET, first + MAX_NODES - 1]
    usable = (net.network_address, net.broadcast_address)
    if any(a not in net or a in usable for a in span):
        problems.add("firstNodeAddress", text,
                     f"an address in networkCidr {net} with the one before it (the "
                     f"repository's) and {MAX_NODES - 1} after it (nodes, up to nodeCount "
                     f"{MAX_NODES}) inside it too: {span[0]}..{span[1]}")
        return None
    return first  # type: ignore[return-value]


def _check_postgres(v: dict, problems: _Problems) -> None:
    version, source = v["postgresVersion"], v["postgresSource"]
    if version not in SUPPORTED_POSTGRES:
        problems.add("postgresVersion", version, "allowed: 13, 14, 15, 16, 17, 18")
    if source not in ("pgdg", "distro"):
        problems.add("postgresSource", source, "allowed: pgdg, distro")
    elif source == "distro":
        distro_version = DISTRO_POSTGRES.get(v["osFamily"])
        if distro_version is None:
            problems.add("postgresSource", source,
                         f"osFamily {v['osFamily']} supports only pgdg")
        elif version != distro_version:
            problems.add("postgresVersion", version,
                         f"{v['osFamily']}'s own packages provide PostgreSQL "
                         f"{distro_version} only (or use postgresSource pgdg)")


def _check_timing(v: dict, problems: _Problems) -> None:
    ttl, loop_wait, retry = v["ttl"], v["loopWait"], v["retryTimeout"]
    if ttl < 20:
        problems.add("ttl", ttl, "must be at least 20 seconds")
    if loop_wait < 1:
        problems.add("loopWait", loop_wait, "must be at least 1 second")
    if retry < 1:
        problems.add("retryTimeout", retry, "must be at least 1 second")
    if loop_wait + 2 * retry > ttl:
        problems.add("ttl", ttl, f"loopWait + 2*retryTimeout = {loop_wait + 2 * retry} "
                     f"must not exceed ttl")
    margin = v["watchdogSafetyMargin"]
    if margin < 0 or margin >= ttl:
        problems.add("watchdogSafetyMargin", margin, f"must be between 0 and ttl-1 ({ttl - 1})")
    elif v["watchdogMode"] != "off" and ttl - margin < loop_wait + retry:
        # Patroni keeps the watchdog alive once per HA loop, and a loop may wait up to
        # retryTimeout for the DCS before its loopWait sleep: a shorter watchdog timeout
        # resets a healthy leader.
        problems.add("watchdogSafetyMargin", margin,
                     f"leaves the watchdog ttl - watchdogSafetyMargin = {ttl - margin} s, "
                     f"less than one slow HA loop (loopWait + retryTimeout = "
                     f"{loop_wait + retry} s); at most {ttl - loop_wait - retry}")


@functools.cache
def postgres_parameter_names(version: int) -> frozenset[str]:
    """The parameter names PostgreSQL `version` knows (lowercase); empty if unknown."""
    names = json.loads(PG_PARAMETER_NAMES_FILE.read_text())
    return frozenset(names.get(str(version), ()))


def _check_parameters(params: dict, version: Any, problems: _Problems) -> None:
    known = postgres_parameter_names(version) if isinstance(version, int) else frozenset()
    for name, value in params.items():
        if not PG_PARAM_RE.match(name):
            problems.add("postgresParameters", name, "a PostgreSQL parameter name")
        elif name.lower() in MANAGED_PG_PARAMETERS:
            problems.add("postgresParameters", name, "managed by the program; not settable")
        elif known and "." not in name and name.lower() not in known:
            near = difflib.get_close_matches(name.lower(), sorted(known), n=1, cutoff=0.75)
            hint = f"; did you mean {near[0]}?" if near else ""
            problems.add("postgresParameters", name,
                         f"not a PostgreSQL {version} parameter{hint} (an extension's "
                         f"settings are named prefix.name)")
        if isinstance(value, (dict, list)) or value is None:
            problems.add("postgresParameters", f"{name}={value!r}",
                         "values are strings, numbers or booleans")


def _check_tags(v: dict, problems: _Problems) -> None:
    names = [f"{v['namePrefix']}{i + 1}" for i in range(v["nodeCount"] or 0)]
    for node, tags in v["nodeTags"].items():
        if node not in names:
            problems.add("nodeTags", node, "not a node name; nodes: " + ", ".join(names))
            continue
        if not isinstance(tags, dict):
            problems.add("nodeTags", f"{node}={tags!r}", "a map of Patroni tags")
            continue
        for tag, value in tags.items():
            kind = PATRONI_TAGS.get(tag)
            if kind is None:
                problems.add("nodeTags", f"{node}.{tag}",
                             "allowed tags: " + ", ".join(PATRONI_TAGS))
            elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                problems.add("nodeTags", f"{node}.{tag}={value!r}", f"must be a {kind.__name__}")
    if sum(1 for t in v["nodeTags"].values()
           if isinstance(t, dict) and t.get("nofailover") is True) >= len(names) > 0:
        problems.add("nodeTags", "nofailover", "at least one node must be able to lead")
