"""The hosts' firewall: one nftables table per host, owned by the program (pure rendering).

Inbound is dropped unless a rule admits it: SSH from the admin networks; PostgreSQL from
the cluster and its clients; Patroni's REST API from the cluster and the admin networks;
Raft only from the other members (pysyncobj unpickles what arrives there); pgBackRest's
TLS server only from the hosts that talk to it. Outbound is not filtered.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable, Mapping

from components.backup import TLS_PORT
from components.config import POSTGRES_PORT, RAFT_PORT, RESTAPI_PORT, ClusterSpec
from components.rendering import _env  # one Jinja environment for every template

SSH_PORT = 22


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
        host=host, role=role, sets=address_sets, rules=rules)


def node_ruleset(node: str, addresses: Mapping[str, str], admin_cidrs: Iterable[str],
                 client_cidrs: Iterable[str], repository: str | None = None) -> str:
    """The ruleset of database node `node`; `addresses` maps every member to its IP;
    `repository`: the backup repository's address when backups are on."""
    members = list(addresses.values())
    others = [ip for name, ip in addresses.items() if name != node]
    sets = {"admin": admin_cidrs, "members": members, "other_members": others,
            "postgres_clients": [*members, *client_cidrs],
            "restapi_clients": [*members, *admin_cidrs]}
    rules = [Rule(SSH_PORT, "admin", "SSH: the admin networks"),
             Rule(POSTGRES_PORT, "postgres_clients",
                  "PostgreSQL: replication and pg_rewind from the members, and the clients"),
             Rule(RESTAPI_PORT, "restapi_clients",
                  "Patroni's REST API: the members, patronictl and the health gate"),
             Rule(RAFT_PORT, "other_members", "Raft: the other members only")]
    if repository is not None:
        sets["backup_repository"] = [repository]
        rules.append(Rule(TLS_PORT, "backup_repository",
                          "pgBackRest's TLS server: the repository takes backups here"))
    return _render(node, "database node", sets, rules)


def repository_ruleset(addresses: Mapping[str, str], admin_cidrs: Iterable[str],
                       backup_clients: Iterable[str] = ()) -> str:
    """The repository host's ruleset: pgBackRest's TLS server admits the members (WAL
    archive, restores) and `backup_clients` (the clones of this stack, by network)."""
    sets = {"admin": admin_cidrs,
            "backup_clients": [*addresses.values(), *backup_clients]}
    rules = [Rule(SSH_PORT, "admin", "SSH: the admin networks"),
             Rule(TLS_PORT, "backup_clients",
                  "pgBackRest's TLS server: archive-push/get and restores")]
    return _render("repository", "backup repository", sets, rules)


RULESET_PATH = "/etc/pgha/firewall.nft"


def render_configure_script(spec: ClusterSpec, host: str, ruleset: str) -> str:
    """nftables installed, `ruleset` checked and in force, and loaded at every boot by a
    unit of the program's own (pgha-firewall.service)."""
    unit = _env.get_template("pgha-firewall.service.j2").render(ruleset=RULESET_PATH)
    return _env.get_template("configure-firewall.sh.j2").render(
        host=host, ruleset=ruleset, ruleset_path=RULESET_PATH, unit=unit,
        package_manager=spec.layout.package_manager)
