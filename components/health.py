"""The cluster's health as seen on every `pulumi up` and `pulumi preview`.

A probe (rendering.render_health_probe) runs on the machine that runs Pulumi through the
`command:local:run` invoke: invokes run in every program execution and leave nothing in
the state, so a healthy, unchanged stack still previews as "no changes" while a degraded
one is reported as warnings that name the node and the next step. This module is pure:
it judges the probe's output; components/cluster.py wires probe and report.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from components.config import RESTAPI_PORT, ClusterSpec
from components.rendering import node_paths

RUNNING_REPLICA_STATES = ("streaming",)


def _running_leaders(cluster: Mapping[str, Any]) -> list[str]:
    """The members one node's view of the cluster shows as running leaders."""
    return [m["name"] for m in cluster.get("members", [])
            if m.get("role") in ("leader", "standby_leader") and m.get("state") == "running"]


def _running_leader(cluster: Mapping[str, Any]) -> str | None:
    """The one running leader in one node's view of the cluster, if it has exactly one."""
    leaders = _running_leaders(cluster)
    return leaders[0] if len(leaders) == 1 else None


def health_findings(spec: ClusterSpec, addresses: Mapping[str, str],
                    probe_stdout: str) -> tuple[list[str], str]:
    """(warnings, summary) from the probe's output: one warning per problem, each naming
    the node and what to do; the summary is one line for the healthy case too."""
    try:
        views: dict[str, Any] = json.loads(probe_stdout or "")
    except ValueError:
        return ([f"cluster health unknown: the probe printed no report "
                 f"({(probe_stdout or '').strip()[:200]!r})"], "cluster health unknown")
    config = node_paths(spec).config
    patronictl = f"sudo -u postgres patronictl -c {config} list"
    warnings: list[str] = []
    unreachable = {name: view["error"] for name, view in views.items() if "error" in view}
    for name, error in unreachable.items():
        warnings.append(
            f"{name} ({addresses.get(name)}): Patroni's REST API does not answer ({error}). "
            f"If the VM is off, start it (virsh start {spec.libvirt_prefix}-{name}); "
            f"otherwise on {name}: `sudo systemctl status patroni` and "
            f"`sudo journalctl -u patroni -n 50`.")
    answered = [view["cluster"] for view in views.values() if "cluster" in view]
    if not answered:
        return warnings + [f"no node answered from this machine: cluster state unknown "
                           f"(can this machine reach {', '.join(addresses.values())} on "
                           f"port {RESTAPI_PORT}?)"], "cluster state unknown"
    # The view with the most members is the most complete one (they normally agree).
    cluster = max(answered, key=lambda c: len(c.get("members", [])))
    members = {m["name"]: m for m in cluster.get("members", [])}
    leaders = _running_leaders(cluster)
    # Each node answers from its own copy of the DCS; right after an election or a
    # restart those copies can differ for a moment. "Healthy" means they agree.
    seen = {name: _running_leader(view["cluster"]) for name, view in views.items()
            if "cluster" in view}
    if len(set(seen.values())) > 1:
        warnings.append("the nodes disagree about the leader ("
                        + ", ".join(f"{name} sees {leader or 'none'}"
                                    for name, leader in sorted(seen.items()))
                        + "): the DCS is still converging, or a node is cut off from its "
                        f"peers. Check again in {spec.loop_wait} s; if it persists, "
                        f"`{patronictl}` on each node.")
    if cluster.get("pause"):
        warnings.append("the cluster is in maintenance mode (paused): no automatic "
                        f"failover. Resume with `patronictl -c {config} resume`.")
    if not leaders:
        warnings.append(f"no running leader: writes are not possible. See `{patronictl}` "
                        f"on any node.")
    elif len(leaders) > 1:
        warnings.append(f"{len(leaders)} running leaders ({', '.join(leaders)}): see "
                        f"`{patronictl}` on any node.")
    for name in addresses:
        member = members.get(name)
        if name in unreachable:
            continue
        if member is None:
            warnings.append(f"{name} is not a member of the Patroni cluster: "
                            f"`sudo journalctl -u patroni -n 50` on {name}.")
            continue
        if name not in leaders and member.get("state") not in RUNNING_REPLICA_STATES:
            warnings.append(f"{name} is a replica in state {member.get('state')!r}, not "
                            f"streaming: `sudo journalctl -u patroni -n 50` on {name}; if "
                            f"it cannot catch up, `patronictl -c {config} reinit "
                            f"{spec.cluster_name} {name}`.")
        elif name not in leaders and isinstance(member.get("lag"), int) and \
                member["lag"] > spec.maximum_lag_on_failover:
            warnings.append(f"{name} lags {member['lag']} bytes behind the leader (more than "
                            f"maximumLagOnFailover): it cannot take over until it catches up.")
        if member.get("pending_restart"):
            warnings.append(f"{name} needs a restart to apply changed PostgreSQL parameters: "
                            f"`patronictl -c {config} restart {spec.cluster_name} {name}`.")
    for name in sorted(set(members) - set(addresses)):
        warnings.append(f"member {name} is in the cluster but not in this stack: remove it "
                        f"from Raft if it is gone for good.")
    # The DCS copy a node serves can predate a restart (after a power loss every node
    # first serves what it had on disk). Each node's own report is the truth about it.
    for name in addresses:
        own = views.get(name, {}).get("self")
        member = members.get(name)
        if not own or member is None:
            continue
        if name in leaders and (own.get("role") not in ("primary", "master", "standby_leader")
                                or own.get("state") != "running"):
            warnings.append(f"the DCS names {name} the running leader but {name} itself "
                            f"reports role {own.get('role')!r}, state {own.get('state')!r}: "
                            f"the cluster is still recovering or the DCS copy is stale. "
                            f"Check again in {spec.loop_wait} s; if it persists, "
                            f"`sudo journalctl -u patroni -n 50` on {name}.")
        elif name not in leaders and member.get("state") in RUNNING_REPLICA_STATES and \
                own.get("replication_state") not in RUNNING_REPLICA_STATES:
            warnings.append(f"{name} is not streaming: it reports state {own.get('state')!r}, "
                            f"replication {own.get('replication_state')!r} (the DCS still "
                            f"says streaming). `sudo journalctl -u patroni -n 50` on {name}.")
    sync = [n for n, m in members.items() if m.get("role") == "sync_standby"]
    if spec.synchronous_mode and leaders and not sync:
        warnings.append("synchronous mode is on but no replica is a synchronous standby: a "
                        "leader lost now leaves no failover candidate.")
    if warnings:
        return warnings, f"cluster degraded: {len(warnings)} problem(s)"
    replicas = sorted(set(addresses) - set(leaders) - set(sync))
    return [], (f"cluster healthy: leader {leaders[0]}"
                + (f", sync standby {', '.join(sync)}" if sync else "")
                + (f", streaming {', '.join(replicas)}" if replicas else ""))
