"""Scaling with nodeCount: how a node joins the Raft membership and how it leaves it.

The first CORE_NODES nodes never leave (nodeCount is at least 3). Every node after them
("elastic": srv4, srv5, ...) may leave when nodeCount shrinks; the highest-numbered go
first. For each elastic node the program declares three steps:

- join (on the node, when created): its address in the Raft membership, proven from the
  leader's own view. pysyncobj admits one membership change at a time and Patroni asks
  once, so joins run one node after another.
- leave (on the node, when deleted): if it leads, a switchover to a streaming node among
  the first CORE_NODES; then Patroni stopped. (The health gate, which runs before any
  delete, already hands a departing leader's leadership to a node that stays; the leave
  step does it again for `pulumi destroy`, where no gate runs.)
- forget (on the first node, when deleted): the departed address removed from Raft
  through a remaining member, and its Patroni member gone.
- admissions (with the firewall on; on every other host, the repository included): the
  node admitted by that host's firewall, from before its Patroni starts until it was
  forgotten (components/firewall.py). The rendered rulesets name only the first nodes,
  so a shrink's updates never cut off a node that is still a Raft member.

Pulumi deletes a resource before the resources it depends on, so the dependencies
leave -> forget -> admissions -> the node's VM (and the first nodes' VMs), and
forget(n) -> leave(n-1), order a shrink as: leave(highest), forget(highest), its
admissions, leave(next), ... and only then the VMs. One node at a time, so the remaining
members always keep a Raft majority.
"""
from __future__ import annotations

from typing import Mapping

from components.config import RAFT_PORT, ClusterSpec, NodeSpec
from components.hosts import CORE_NODES
from components.rendering import (MEMBERSHIP_TOOL, _render,  # one Jinja environment
                                  node_paths)

# Scripts read `create` or `delete` as their first argument.
CREATE_SHELL = "sudo bash -s create"
DELETE_SHELL = "sudo bash -s delete"


def is_elastic(node: NodeSpec) -> bool:
    return node.index >= CORE_NODES


def core_names(spec: ClusterSpec) -> list[str]:
    return [node.name for node in spec.nodes[:CORE_NODES]]


def core_addresses(spec: ClusterSpec, addresses: Mapping[str, str]) -> dict[str, str]:
    """The addresses of the nodes that never leave: what the rendered firewall rulesets
    name (every other node is admitted by an admission step of its own)."""
    return {name: addresses[name] for name in core_names(spec)}


def raft_address(ip: str) -> str:
    return f"{ip}:{RAFT_PORT}"


def tool_text() -> str:
    """The membership tool (join, handover, forget) that every step embeds."""
    return MEMBERSHIP_TOOL.read_text()


def _script(spec: ClusterSpec, purpose: str, on_create: list[str] | None = None,
            on_delete: list[str] | None = None, stop_patroni: str = "") -> str:
    """stop_patroni: "create" or "delete", the action after which Patroni is stopped
    and disabled; "" never."""
    return _render("raft-membership.sh.j2", purpose=purpose, paths=node_paths(spec),
                   tool_py=tool_text().rstrip("\n"), on_create=on_create,
                   on_delete=on_delete, stop_patroni=stop_patroni)


def render_join_script(spec: ClusterSpec, node: NodeSpec, why: str = "scaling out") -> str:
    return _script(spec, f"{node.name} in the Raft membership ({why}).",
                   on_create=["join"])


def render_leave_script(spec: ClusterSpec, node: NodeSpec) -> str:
    return _script(spec, f"when {node.name} leaves the stack: hand its leadership to one "
                         f"of {', '.join(core_names(spec))}, then stop Patroni.",
                   on_delete=["handover", "--candidates", ",".join(core_names(spec))],
                   stop_patroni="delete")


def render_forget_script(spec: ClusterSpec, node: NodeSpec, ip: str) -> str:
    return _script(spec, f"when {node.name} leaves the stack: remove {raft_address(ip)} "
                         f"from Raft through this member.",
                   on_delete=["forget", "--address", raft_address(ip), "--name", node.name])


# A move to another host (components/moves.py): the node leaves on its old VM, another
# member forgets it, and its new VM joins with the node's own join script.
def render_move_leave_script(spec: ClusterSpec, node: NodeSpec) -> str:
    others = [n for n in spec.node_names if n != node.name]
    return _script(spec, f"{node.name} moves to host {node.host}: hand its leadership "
                         f"to one of {', '.join(others)}, then stop Patroni on its old VM.",
                   on_create=["handover", "--candidates", ",".join(others)],
                   stop_patroni="create")


def render_move_forget_script(spec: ClusterSpec, node: NodeSpec, ip: str) -> str:
    return _script(spec, f"{node.name} moves to host {node.host}: remove "
                         f"{raft_address(ip)} from Raft through this member.",
                   on_create=["forget", "--address", raft_address(ip), "--name", node.name])
