"""The hosts' firewall: one nftables table per host, owned by the program (pure rendering).

Inbound is dropped unless a rule admits it: SSH from the admin networks; PostgreSQL from
the cluster and its clients; Patroni's REST API from the cluster and the admin networks;
Raft only from the other members (pysyncobj unpickles what arrives there); pgBackRest's
TLS server only from the hosts that talk to it. Outbound is not filtered.

The rendered rulesets name only the nodes that never leave (the first three). Every node
added by scaling out ("elastic", components/membership.py) is admitted on each other host
by an admission of its own: a file in ADMISSIONS_DIR that adds its address to the set
ELASTIC_SET, written when the node is created and removed when it leaves, after it was
forgotten by Raft. A shrink therefore never cuts a Raft member off: the survivors' rules
do not change while the departing nodes still take part (Pulumi runs every update before
any delete). The ruleset includes the directory, so a reload keeps what is admitted;
both kinds of step take LOCK, so neither reloads while the other writes.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable, Mapping

from components.backup import TLS_PORT
from components.config import POSTGRES_PORT, RAFT_PORT, RESTAPI_PORT, ClusterSpec
from components.rendering import _env  # one Jinja environment for every template

SSH_PORT = 22
ELASTIC_SET = "elastic_members"
ADMISSIONS_DIR = "/etc/pgha/firewall.d"
LOCK = "/run/pgha-firewall.lock"


@dataclass(frozen=True)
class AddressSet:
    """A named nftables set of IPv4 addresses and networks."""
    name: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class Rule:
    port: int
    source: str  # an AddressSet's name
    why: str


def _networks(items: Iterable[str]) -> tuple[str, ...]:
    """Addresses and CIDRs, normalised, without duplicates or networks another one in the
    list already covers (nft refuses overlapping elements in an interval set)."""
    networks = sorted({ipaddress.ip_network(i, strict=False) for i in items},
                      key=lambda n: (n.prefixlen, n))
    kept: list[ipaddress.IPv4Network] = []
    for net in networks:
        if not any(net.subnet_of(k) for k in kept):
            kept.append(net)
    return tuple(str(n.network_address) if n.prefixlen == 32 else str(n)
                 for n in sorted(kept))


def _render(host: str, role: str, sets: dict[str, Iterable[str]], rules: list[Rule]) -> str:
    address_sets = [AddressSet(name, _networks(items)) for name, items in sets.items()]
    return _env.get_template("nftables.nft.j2").render(
        host=host, role=role, sets=address_sets, rules=rules,
        admissions=f"{ADMISSIONS_DIR}/*.nft")


def _elastic_rules(ports: Iterable[tuple[int, str]]) -> list[Rule]:
    return [Rule(port, ELASTIC_SET, f"{what}: the members added by scaling out, each "
                                    f"while it is a member (its admission file)")
            for port, what in ports]


def node_ruleset(node: str, addresses: Mapping[str, str], admin_cidrs: Iterable[str],
                 client_cidrs: Iterable[str], repository: str | None = None) -> str:
    """The ruleset of database node `node`; `addresses` maps every node that never
    leaves to its IP (the others are admitted one by one: render_admission);
    `repository`: the backup repository's address when backups are on."""
    members = list(addresses.values())
    others = [ip for name, ip in addresses.items() if name != node]
    sets = {"admin": admin_cidrs, "members": members, "other_members": others,
            "postgres_clients": [*members, *client_cidrs],
            "restapi_clients": [*members, *admin_cidrs], ELASTIC_SET: []}
    rules = [Rule(SSH_PORT, "admin", "SSH: the admin networks"),
             Rule(POSTGRES_PORT, "postgres_clients",
                  "PostgreSQL: replication and pg_rewind from the members, and the clients"),
             Rule(RESTAPI_PORT, "restapi_clients",
                  "Patroni's REST API: the members, patronictl and the health gate"),
             Rule(RAFT_PORT, "other_members", "Raft: the other members only"),
             *_elastic_rules([(POSTGRES_PORT, "PostgreSQL"), (RESTAPI_PORT, "REST API"),
                              (RAFT_PORT, "Raft")])]
    if repository is not None:
        sets["backup_repository"] = [repository]
        rules.append(Rule(TLS_PORT, "backup_repository",
                          "pgBackRest's TLS server: the repository takes backups here"))
    return _render(node, "database node", sets, rules)


def repository_ruleset(addresses: Mapping[str, str], admin_cidrs: Iterable[str],
                       backup_clients: Iterable[str] = ()) -> str:
    """The repository host's ruleset: pgBackRest's TLS server admits the members that
    never leave (`addresses`) and the admitted ones (WAL archive, restores), and
    `backup_clients` (the clones of this stack, by network)."""
    sets = {"admin": admin_cidrs,
            "backup_clients": [*addresses.values(), *backup_clients], ELASTIC_SET: []}
    rules = [Rule(SSH_PORT, "admin", "SSH: the admin networks"),
             Rule(TLS_PORT, "backup_clients",
                  "pgBackRest's TLS server: archive-push/get and restores"),
             *_elastic_rules([(TLS_PORT, "pgBackRest's TLS server")])]
    return _render("repository", "backup repository", sets, rules)


def render_admission(ip: str) -> str:
    """The admission file of a member added by scaling out (nft, included by the
    ruleset)."""
    address = str(ipaddress.IPv4Address(ip))
    return (f"# Managed by Pulumi (pgha): {address} is a member; removed when it leaves.\n"
            f"add element inet pgha {ELASTIC_SET} {{ {address} }}\n")


def render_admission_script(host: str, member: str, ip: str) -> str:
    """On `host`: member `member` (at `ip`) admitted when the step is created
    (`bash -s create`), no longer when it is deleted (`bash -s delete`)."""
    return _env.get_template("firewall-admission.sh.j2").render(
        host=host, member=member, admission=render_admission(ip),
        path=f"{ADMISSIONS_DIR}/{member}.nft", admissions_dir=ADMISSIONS_DIR, lock=LOCK)


RULESET_PATH = "/etc/pgha/firewall.nft"


def render_package_script(spec: ClusterSpec) -> str:
    """nftables installed, nothing else: the firewall step's package, for a node image
    (the same template part the firewall step runs)."""
    return _env.get_template("install-nftables.sh.j2").render(
        package_manager=spec.layout.package_manager)


def render_configure_script(spec: ClusterSpec, host: str, ruleset: str) -> str:
    """nftables installed, `ruleset` checked and in force, and loaded at every boot by a
    unit of the program's own (pgha-firewall.service)."""
    unit = _env.get_template("pgha-firewall.service.j2").render(ruleset=RULESET_PATH)
    return _env.get_template("configure-firewall.sh.j2").render(
        host=host, ruleset=ruleset, ruleset_path=RULESET_PATH, unit=unit,
        package_manager=spec.layout.package_manager, admissions_dir=ADMISSIONS_DIR,
        lock=LOCK)
