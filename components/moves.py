"""Moving a node to another libvirt host: a changed `placement` (or host list) for one of
the first three nodes. Pure: the last run's record and the spec in, the moves (or why
not) out.

A move replaces the node's VM on its new host, its data included, with the cluster
serving throughout, as a shrink and a grow would do it for one node:

1. leave (on the node, its old VM): if it leads, a switchover to a streaming node that
   stays; then Patroni stopped and disabled, PostgreSQL with it;
2. forget (through another member): its Raft address removed, its Patroni member gone;
3. its VM deleted on the old host and created on the new one (the same address, name and
   SSH host key): the VM's resources carry the host's URI as their replacement trigger
   and are deleted before they are replaced, so the two never hold the address at once;
4. every step of the node runs on the new VM, which restores or streams its data as any
   new replica does;
5. join (on the new VM): its address back in the Raft membership, proven from the Raft
   leader's view; then the health gate, as on every change of a VM.

One node per `pulumi up`, so that the others keep a Raft majority; never with a change
of nodeCount in the same run. Nodes added by scaling (srv4, ...) and the backup
repository keep their hosts: scaling in and out moves the former; the latter holds
every backup on its disk.

Each run exports the moves it carried out (OUTPUT); the next runs declare the same
steps again while the node stays where it moved, so that `preview` after the move
proposes no change. The steps run once: a later program whose scripts differ never runs
them again (their script and connection are ignored after creation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from components.config import REPOSITORY_NAME, ClusterSpec
from components.hosts import CORE_NODES

OUTPUT = "nodeMoves"


@dataclass(frozen=True)
class NodeMove:
    node: str
    source_uri: str  # the libvirt connection of the host it left
    target: str  # the name of the listed host it runs on now

    @property
    def record(self) -> dict[str, str]:
        return {"from": self.source_uri, "to": self.target}


def placed(recorded: str) -> dict[str, str]:
    """A recorded placement (fixed_settings' `hosts` value: node=uri|pool|attachment
    entries separated by ';') as node -> "uri|pool|attachment"."""
    return dict(e.split("=", 1) for e in recorded.split(";")) if recorded else {}


def _uri(entry: str) -> str:
    return entry.split("|", 1)[0]


def changed_uris(old: str, new: str) -> dict[str, tuple[str, str]]:
    """The nodes (and the repository) of both records whose host's URI changed:
    name -> (uri before, uri after)."""
    before, after = placed(old), placed(new)
    return {n: (_uri(before[n]), _uri(after[n])) for n in before
            if n in after and _uri(before[n]) != _uri(after[n])}


def only_hosts_changed(old: str, new: str) -> bool:
    """Every node kept in both records is where it was, or on another host altogether (a
    move, which refused() judges); a new pool or LAN attachment on the same host is not
    a move."""
    if not old or not new:
        return False
    before, after = placed(old), placed(new)
    return all(after[n] == e or _uri(after[n]) != _uri(e) for n, e in before.items()
               if n in after)


def refused(old: str, new: str, spec: ClusterSpec) -> list[str]:
    """Why this run cannot move what it would move, one line per reason; [] when it
    moves nothing or one node it may move. `old` is the last run's placement record,
    `new` this run's."""
    moved = changed_uris(old, new)
    if not moved:
        return []
    problems = []
    shown = {n: f"{n} from {a} to {b}" for n, (a, b) in moved.items()}
    if REPOSITORY_NAME in moved:
        # Unless placed, the repository goes where the first three nodes are fewest, so
        # a node's move can move it too.
        where = next((h.name for h in spec.hosts if h.uri == moved[REPOSITORY_NAME][0]),
                     None)
        back = (f"set pgha:placement.repository to {where}" if where is not None
                else "list its host again and set pgha:placement.repository to it")
        problems.append(
            f"pgha:placement (or pgha:hosts) would move the backup repository "
            f"({shown[REPOSITORY_NAME]}): its data disk holds every backup and the WAL "
            f"archive, and it keeps its host; {back}")
    nodes = [n for n in moved if n != REPOSITORY_NAME]
    index = {name: i for i, name in enumerate(spec.node_names)}
    elastic = [n for n in nodes if index.get(n, 0) >= CORE_NODES]
    if elastic:
        problems.append(
            f"pgha:placement would move {', '.join(shown[n] for n in elastic)}: nodes "
            f"added by scaling keep their hosts; to move one, lower nodeCount so that it "
            f"leaves, then raise it again with its new placement")
    if len(nodes) > 1:
        problems.append(
            f"pgha:placement (or pgha:hosts) would move {len(nodes)} nodes at once "
            f"({'; '.join(shown[n] for n in nodes)}): move one node per `pulumi up`, so "
            f"that the others keep a Raft majority while it is away")
    before = [n for n in placed(old) if n != REPOSITORY_NAME]
    if nodes and len(before) != spec.node_count:
        problems.append(
            f"pgha:nodeCount = {spec.node_count} (was {len(before)}) in the same run as "
            f"moving {', '.join(nodes)}: change one, `pulumi up`, then the other")
    if nodes and spec.firewall and spec.node_count > CORE_NODES:
        problems.append(
            f"moving {', '.join(nodes)} with nodes past the third and the firewall on: "
            f"the new VM's firewall would not admit them (each is admitted by a step of "
            f"its own, made when it joined); lower nodeCount to {CORE_NODES} first")
    return problems


def current(old: str, new: str, previous_moves: Mapping[str, Any],
            spec: ClusterSpec) -> dict[str, NodeMove]:
    """The moves whose steps this run declares, by node: the one it carries out (a node
    whose host's URI differs from the last run's record) and those earlier runs carried
    out, while each node stays on the host it moved to."""
    moves: dict[str, NodeMove] = {}
    for node, entry in (previous_moves or {}).items():
        if (isinstance(entry, Mapping) and node in spec.node_names
                and spec.placement.get(node) == entry.get("to")):
            moves[node] = NodeMove(node, str(entry.get("from", "")), str(entry["to"]))
    for node, (before, _) in changed_uris(old, new).items():
        if node in spec.node_names:
            moves[node] = NodeMove(node, before, spec.placement[node])
    return moves
