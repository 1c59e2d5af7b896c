"""Settings a live cluster cannot take a change of, and the check that refuses one.

Each run exports these settings' values (the stack output `fixedSettings`); the next run
reads its own stack's last outputs and compares, before any resource is registered. A
setting is fixed when changing it would replace every VM at once (the libvirt provider
replaces a domain or disk for most of its properties), strand the nodes (a new SSH user or
key reaches no VM: cloud-init read the first one at first boot), point PostgreSQL at an
empty data directory, or lose backups. Settings missing from the record (a stack created
before a setting was recorded, or before this check existed) are not compared: the run
records them for the next one.

Every other setting changes in place: nodeCount (scaling), PostgreSQL parameters and the
timing settings (pushed to the DCS), the firewall and client lists, the watchdog, tags,
proxies and indexes, TLS lifetimes, the backup schedules, retention and compression,
restoreTarget (a point-in-time recovery is such a change), turning backups on, and
dropping cloneFromStack once the clone exists.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Mapping

from components import moves
from components.config import ClusterSpec

OUTPUT = "fixedSettings"

REPLACES_VMS = ("it would replace every VM at once (the cluster goes down and its data "
                "disks with it)")
CREATE_ANEW = "to change it, create a new stack (a clone of this one's backups keeps the data)"


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16] if text else ""


@dataclass(frozen=True)
class Fixed:
    read: Callable[[ClusterSpec], str]
    why: str
    # The values a change may go to anyway: (old, new) -> allowed.
    allows: Callable[[str, str], bool] = lambda old, new: False
    # Recorded only when not empty; a run that recorded none had it empty. (Settings
    # added later: an existing stack's recorded output stays as it was.)
    omit_empty: bool = False
    # How a refusal names the change, from (old, new); default: both values.
    describe: Callable[[str, str], str] | None = None


def _placement(spec: ClusterSpec) -> str:
    """Each VM's host as it matters to the VM: the connection, pool and LAN attachment."""
    return ";".join(f"{node}={h.uri}|{h.storage_pool}|{h.attachment}:{h.device}"
                    for node in sorted(spec.placement)
                    if (h := spec.host_of(node)) is not None)


def _same_hosts_for_kept_nodes(old: str, new: str) -> bool:
    """Scaling adds or removes nodes; a node that stays keeps its host."""
    if not old or not new:
        return False
    before, after = moves.placed(old), moves.placed(new)
    return all(after[n] == h for n, h in before.items() if n in after)


def _moved_nodes(old: str, new: str) -> str:
    """The nodes a placement change would move, each with its host before and after."""
    before, after = moves.placed(old), moves.placed(new)
    if not before or not after:
        return ("pgha:hosts would move every VM between one libvirt host and a list of "
                "hosts")
    moved = []
    for n in before:
        if n not in after or after[n] == before[n]:
            continue
        uri_before, uri_after = before[n].split("|")[0], after[n].split("|")[0]
        moved.append(f"{n} from {uri_before} to {uri_after}" if uri_after != uri_before
                     else f"{n} on {uri_before} to another pool or LAN attachment")
    return "pgha:hosts (or pgha:placement) would move " + "; ".join(moved)


def _backups(spec: ClusterSpec, read: Callable) -> str:
    return "" if spec.backups is None else str(read(spec.backups))


FIXED: dict[str, Fixed] = {
    "libvirtUri": Fixed(lambda s: s.libvirt_uri,
                        "every VM, disk and network is managed through this connection; "
                        + CREATE_ANEW),
    "domainType": Fixed(lambda s: s.domain_type, REPLACES_VMS),
    "cpuMode": Fixed(lambda s: s.cpu_mode, REPLACES_VMS),
    "vcpus": Fixed(lambda s: str(s.vcpus), REPLACES_VMS),
    "memoryMib": Fixed(lambda s: str(s.memory_mib), REPLACES_VMS),
    "diskGib": Fixed(lambda s: str(s.disk_gib), REPLACES_VMS),
    "namePrefix": Fixed(lambda s: s.name_prefix,
                        "every node would be renamed, that is replaced; " + CREATE_ANEW),
    "osFamily": Fixed(lambda s: s.os_family, REPLACES_VMS),
    "baseImage": Fixed(lambda s: s.image_source, REPLACES_VMS),
    "storagePool": Fixed(lambda s: s.storage_pool, REPLACES_VMS),
    "networkName": Fixed(lambda s: s.network_name,
                         "the nodes' addresses would change under a running Raft cluster; "
                         + CREATE_ANEW),
    "networkCidr": Fixed(lambda s: s.network_cidr if s.knows_addresses else "",
                         "the nodes' addresses would change under a running Raft cluster; "
                         + CREATE_ANEW),
    "networkMode": Fixed(lambda s: s.network_mode if s.creates_network else "",
                         "the network would be replaced under the running VMs; "
                         + CREATE_ANEW),
    "hosts": Fixed(_placement,
                   "a VM would move between one libvirt host and a list of hosts, or to "
                   "another pool or LAN attachment on its host: it would be replaced, "
                   "data disk included; a node moves to another listed host (one per "
                   "`pulumi up`), or scale in and out, or create a new stack",
                   allows=lambda old, new: (_same_hosts_for_kept_nodes(old, new)
                                            or moves.only_hosts_changed(old, new)),
                   omit_empty=True, describe=_moved_nodes),
    "networkGateway": Fixed(lambda s: s.network_gateway,
                            "cloud-init set each node's network at its first boot; "
                            + CREATE_ANEW, omit_empty=True),
    "firstNodeAddress": Fixed(lambda s: s.first_node_address,
                              "the nodes' addresses would change under a running Raft "
                              "cluster; " + CREATE_ANEW, omit_empty=True),
    "networkDns": Fixed(lambda s: ",".join(s.network_dns),
                        "cloud-init set each node's network at its first boot; "
                        + CREATE_ANEW, omit_empty=True),
    "sshUser": Fixed(lambda s: s.ssh_user,
                     "cloud-init created the user at each VM's first boot, so no node "
                     "would accept the new one"),
    "sshPublicKey": Fixed(lambda s: _digest(s.ssh_public_key),
                          "cloud-init installed the key at each VM's first boot, so no node "
                          "would accept a new one (empty: the generated key)"),
    "clusterName": Fixed(lambda s: s.cluster_name,
                         "it names the Patroni cluster, every libvirt object and the backup "
                         "stanza: a rename is a new cluster; " + CREATE_ANEW),
    "namespace": Fixed(lambda s: s.namespace,
                       "Patroni would look for its cluster under another key in Raft and "
                       "bootstrap a second one"),
    "postgresVersion": Fixed(lambda s: str(s.postgres_version),
                             "the nodes would start PostgreSQL on the new version's empty "
                             "data directory (the data stays in the old one, served by "
                             "nothing); there is no in-place major upgrade yet: to move to "
                             "another major version, dump and restore into a new stack "
                             "created with it"),
    "postgresSource": Fixed(lambda s: s.postgres_source,
                            "the packages and data directory layout differ between "
                            "sources; " + CREATE_ANEW),
    "tls": Fixed(lambda s: str(s.tls is not None).lower(),
                 "replication, pg_hba and the REST API would switch protocol on nodes "
                 "that switch one at a time; " + CREATE_ANEW),
    "tlsCaCertificate": Fixed(lambda s: _digest(s.tls.ca_certificate) if s.tls else "",
                              "replicas and clients verify the nodes against the CA the "
                              "cluster was created with; a CA rotation is not supported"),
    "backups": Fixed(lambda s: str(s.backups is not None).lower(),
                     "turning backups off would delete the repository VM with every "
                     "backup and the WAL archive; to remove the cluster and its backups, "
                     "`pulumi destroy`",
                     allows=lambda old, new: old == "false"),
    "backupEncrypt": Fixed(lambda s: _backups(s, lambda b: str(b.encrypt).lower()),
                           "the repository's existing backups and WAL are stored with the "
                           "first choice; pgBackRest cannot read them under another",
                           allows=lambda old, new: old == ""),
    "backupRepoDiskGib": Fixed(lambda s: _backups(s, lambda b: b.repo_disk_gib),
                               "the repository's disk would be replaced, with every backup "
                               "on it", allows=lambda old, new: old == ""),
    "backupRepoMemoryMib": Fixed(lambda s: _backups(s, lambda b: b.repo_memory_mib),
                                 "the repository's VM would be replaced",
                                 allows=lambda old, new: old == ""),
    "cloneFromStack": Fixed(lambda s: s.clone.stack if s.clone else "",
                            "a cluster is cloned once, when it is created; remove the "
                            "setting (the clone keeps its data) or create a new stack",
                            allows=lambda old, new: new == ""),
}

# The other settings, and how a change of each reaches the live cluster.
IN_PLACE: dict[str, str] = {
    "nodeCount": "scaling: nodes join or leave Raft one at a time",
    "patroniVersion": "installed into Patroni's virtualenv on the next up",
    "ttl": "pushed to the DCS (patronictl edit-config)",
    "loopWait": "pushed to the DCS",
    "retryTimeout": "pushed to the DCS",
    "maximumLagOnFailover": "pushed to the DCS",
    "synchronousMode": "pushed to the DCS",
    "watchdogMode": "patroni.yml, reloaded",
    "watchdogSafetyMargin": "patroni.yml, reloaded",
    "postgresParameters": "pushed to the DCS; a parameter that needs a restart is pending "
                          "until `patronictl restart --pending`",
    "clientCidrs": "pg_hba and the firewall, reloaded",
    "firewall": "the ruleset is loaded or removed",
    "adminCidrs": "the firewall, reloaded",
    "openToAnyAddress": "an acknowledgement, checked on every run",
    "tlsCertificateDays": "applies to the next certificate issued",
    "tlsRenewalDays": "applies to the next run's renewal check",
    "nodeTags": "patroni.yml, reloaded",
    "placement": "where nodes added later go; one of the first three nodes on another "
                 "host moves there (components/moves.py), one per run",
    "allowHostMajority": "an acknowledgement, checked on every run",
    "httpProxy": "used by the install steps",
    "extraCaCertificates": "the nodes' trust store",
    "pythonIndexUrl": "used by the install steps",
    "healthTimeoutSeconds": "the health gate's limit",
    "backupRetentionFull": "the repository's pgbackrest.conf",
    "backupFullSchedule": "the repository's timers",
    "backupDiffSchedule": "the repository's timers",
    "backupCompressType": "the repository's pgbackrest.conf (new files only)",
    "backupCompressLevel": "the repository's pgbackrest.conf (new files only)",
    "backupArchiveQueueMax": "the nodes' pgbackrest.conf",
    "restoreTarget": "a point-in-time recovery of the whole cluster, once per target",
}


def record(spec: ClusterSpec) -> dict[str, str]:
    """What this run exports as OUTPUT: each fixed setting's effective value (keys and CA
    certificates as a digest)."""
    values = {key: fixed.read(spec) for key, fixed in FIXED.items()}
    return {key: value for key, value in values.items()
            if value or not FIXED[key].omit_empty}


def refused_changes(previous: Mapping[str, str], spec: ClusterSpec) -> list[str]:
    """One line per fixed setting whose value differs from the one the live cluster was
    built with, in ConfigError's form: the key, the new value, why not, what to do."""
    problems = []
    current = record(spec)
    for key, fixed in FIXED.items():
        value = current.get(key, "")
        if key not in previous and not (fixed.omit_empty and previous):
            continue
        old = previous.get(key, "")
        if old == value:
            continue
        if fixed.allows(old, value):
            continue
        if fixed.describe is not None:
            change = fixed.describe(old, value)
            back = "Set it back as it was"
        elif old.startswith("sha256:") or value.startswith("sha256:"):
            change = f"pgha:{key} differs from the one the live cluster was created with"
            back = "Set the original back"
        else:
            change = (f"pgha:{key} = {_shown(value)}: the live cluster was created with "
                      f"{_shown(old)}")
            back = f"Set it back to {_shown(old)}"
        problems.append(f"{change}, and it cannot change in place: {fixed.why}. {back}")
    # A node on another listed host is a move: one node at a time, and only some.
    return problems + moves.refused(previous.get("hosts", ""), current.get("hosts", ""),
                                    spec)


def _shown(value: str) -> str:
    return repr(value) if value else "'' (empty)"
