"""Scaling the real cluster with nodeCount, as `pulumi up` does it (components/membership.py):

- out: new nodes on the network, every node's patroni.yml rendered from the new stack's
  addresses and Patroni reloaded (the configure steps), the new nodes started, then each
  new node's join step (the program's membership tool) one after another;
- in: the remaining nodes' patroni.yml rewritten and reloaded, the health gate's script
  (the tool's handover from the first node: a departing leader hands over to a node that
  stays, then the stack's nodes are healthy), then per departing node, highest-numbered
  first, its leave step (the tool's handover, then Patroni stopped as `systemctl stop`
  stops it: SIGTERM) and its forget step on the first node (the tool's forget).

Hosts beside the nodes that Pulumi reconfigures before the nodes start or leave (the
backup repository) follow through the `hosts_changed` hook.

The tool is the program's own file; only the patroni.yml it reads has local paths.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from components import firewall, membership
from components.config import build_spec
from tests.realcluster import harness as h
from tests.realcluster.backups import BackupCluster


class ScalingCluster(h.Cluster):
    def __init__(self, runtime: h.Runtime, node_count: int = 3, profile: str = "fast",
                 settings: dict[str, Any] | None = None, label: str = "scaling"):
        super().__init__(runtime, node_count, profile, settings, label)
        self.tool = self.workdir / "raft-membership.py"
        self.tool.write_text(membership.tool_text())
        self.departed: dict[str, h.Node] = {}
        self.steps: list[tuple[str, str]] = []  # (step, what the tool printed)

    # ---- what the program's steps do --------------------------------------------------
    def membership_tool(self, name: str, *args: str, timeout: float = 300) -> str:
        """The program's membership tool inside node `name`'s namespace, as root."""
        node = self.nodes[name]
        proc = subprocess.run(
            ["ip", "netns", "exec", node.ns, str(self.runtime.venv / "bin" / "python"),
             str(self.tool), "--config", node.paths.config, *args],
            capture_output=True, text=True, timeout=timeout + 60, cwd="/")
        self.steps.append((f"{name}: {args[0]}", proc.stdout.strip()))
        if proc.returncode != 0:
            raise h.HarnessError(f"membership tool {args} on {name} failed "
                                 f"({proc.returncode}): {proc.stdout}{proc.stderr}")
        return proc.stdout

    def patroni_process(self, name: str) -> int:
        """Patroni's own PID (under `ip netns exec` and runuser)."""
        config = self.nodes[name].paths.config
        for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
            argv = h._proc_cmdline(pid).split()
            if len(argv) >= 2 and argv[-1] == config and argv[-2].endswith("/bin/patroni") \
                    and "runuser" not in argv[0]:
                return pid
        raise h.HarnessError(f"no Patroni process of {name}")

    def _use_spec(self, node_count: int) -> None:
        self.raw_settings = {**self.raw_settings, "nodeCount": node_count}
        self.spec = build_spec(self.raw_settings)
        self.addresses = {n.name: n.address for n in self.spec.nodes}

    def _reconfigure(self, names: list[str]) -> None:
        """The configure steps: patroni.yml from the stack's addresses, Patroni reloaded."""
        for node in self.spec.nodes:
            if node.name in names:
                running = self.nodes[node.name].patroni_pid
                self.nodes[node.name] = self._prepare_node(node)
                self.nodes[node.name].patroni_pid = running
                os.kill(self.patroni_process(node.name), signal.SIGHUP)

    def grow(self, node_count: int) -> list[str]:
        before = list(self.nodes)
        self._use_spec(node_count)
        new = [n for n in self.spec.nodes if n.name not in self.nodes]
        for node in new:
            self.net.add_member(node.name, node.address)
            self.nodes[node.name] = self._prepare_node(node)
        self._write_state()
        self._reconfigure(before)
        self.hosts_changed([n.name for n in new])
        for node in new:
            self.start_patroni(node.name)
        for node in new:  # the join steps, one after another
            self.membership_tool(node.name, "join")
        self.event(f"grown to {node_count}: {[n.name for n in new]} joined")
        return [n.name for n in new]

    def shrink(self, node_count: int) -> list[str]:
        self._use_spec(node_count)
        departing = sorted((n for n in self.nodes if n not in self.addresses),
                           key=lambda n: int(n.removeprefix(self.spec.name_prefix)),
                           reverse=True)
        self._reconfigure(list(self.addresses))
        self.hosts_changed([])
        first = self.spec.nodes[0].name
        # The health gate: the leadership on a node that stays, the stack's nodes healthy.
        self.membership_tool(first, "handover", "--candidates", ",".join(self.addresses))
        self.wait_healthy(members=list(self.addresses))
        for name in departing:
            self.membership_tool(name, "handover", "--candidates",
                                 ",".join(membership.core_names(self.spec)))
            self.stop_patroni(name)
            address = membership.raft_address(self.nodes[name].ip)
            self.membership_tool(first, "forget", "--address", address, "--name", name)
            self.forgotten(name)
            self.departed[name] = self.nodes.pop(name)
            self.event(f"{name} left")
        return departing

    def switch_over_to(self, name: str) -> None:
        """The leadership on node `name` (patronictl switchover), the cluster healthy."""
        if self.leaders() == [name]:
            return
        switched = self.patronictl(self.spec.nodes[0].name, "switchover", "--candidate",
                                   name, "--force")
        assert switched.returncode == 0, switched.stdout + switched.stderr
        self.wait_for(f"{name} to lead", lambda: self.leaders() == [name], 60)
        self.wait_healthy()

    def hosts_changed(self, added: list[str]) -> None:
        """Hook: what Pulumi updates beside the nodes once the stack's nodes changed,
        before the `added` nodes start and before any departing node leaves."""

    def forgotten(self, name: str) -> None:
        """Hook: what Pulumi deletes once Raft forgot departing node `name` (before its
        VM)."""

    def stop_patroni(self, name: str, timeout: float = 120) -> None:
        """systemctl stop: SIGTERM to Patroni, which stops PostgreSQL and exits."""
        pid = self.patroni_process(name)
        os.kill(pid, signal.SIGTERM)
        self.wait_for(f"Patroni on {name} to stop", lambda: not h._alive(pid)
                      and self.postmaster_pid(name) is None, timeout, 0.5)
        self.nodes[name].patroni_pid = None

    # ---- what the test checks ---------------------------------------------------------
    def raft_members(self, name: str) -> set[str]:
        """The Raft membership as member `name` sees it: itself and its partners."""
        status = self.raft_status(name)
        prefix = "partner_node_status_server_"
        return {status["self"]} | {k[len(prefix):] for k in status if k.startswith(prefix)}

    def patroni_members(self, name: str) -> set[str]:
        view = self.cluster_view(name) or {}
        return {m["name"] for m in view.get("members", [])}

    def patronictl_members(self, name: str) -> set[str]:
        """`patronictl list` on node `name` (a Raft client of the members its
        patroni.yml names)."""
        listed = self.patronictl(name, "list", "-f", "json", check=True)
        return {m["Member"] for m in json.loads(listed.stdout)}

    def stop(self) -> None:
        # The departed nodes' namespaces and processes go with the cluster's.
        self.nodes.update(self.departed)
        self.departed = {}
        super().stop()


class ScalingBackupCluster(ScalingCluster, BackupCluster):
    """Scaling with backups on. As the program's steps do it: a new node gets its
    pgBackRest identity, configuration and server (its configure-pgbackrest step), and the
    repository host's configuration is rewritten for the stack's nodes and its server
    restarted (the repository's configure-pgbackrest step, an update that Pulumi runs
    before the new nodes start and before any departing node leaves)."""

    def hosts_changed(self, added: list[str]) -> None:
        for name in added:
            self.add_backup_node(name)
            self.start_server(name)
        self.write_repository_conf()
        self.start_server("repo")


class FirewalledScalingCluster(ScalingCluster):
    """Every node behind the program's firewall, changed in the order `pulumi up`
    changes it (components/firewall.py): the rendered rulesets name the first three
    nodes, so they never change with nodeCount; a node added by scaling is admitted by
    every other node (its admission file, which the ruleset includes) before it starts,
    and that admission goes only once Raft forgot it. The client namespace stands for
    the admin network and the PostgreSQL clients."""

    def admissions_dir(self, host: str) -> Path:
        return self.workdir / host / "firewall.d"

    def load_firewall(self, host: str) -> None:
        """The host's firewall step (or a reload): its ruleset, with what is admitted."""
        ruleset = firewall.node_ruleset(host, membership.core_addresses(
            self.spec, self.addresses), [h.CLIENT_IP], [h.CLIENT_IP])
        included = self.admissions_dir(host)
        included.mkdir(exist_ok=True)
        h.run(["ip", "netns", "exec", self.nodes[host].ns, "nft", "-f", "-"],
              input=ruleset.replace(firewall.ADMISSIONS_DIR, str(included)))

    def before_patroni(self) -> None:
        super().before_patroni()
        for name in self.nodes:
            self.load_firewall(name)

    def hosts_changed(self, added: list[str]) -> None:
        super().hosts_changed(added)
        for new in added:
            for host in self.nodes:
                if host != new:
                    self.admissions_dir(host).mkdir(exist_ok=True)
                    (self.admissions_dir(host) / f"{new}.nft").write_text(
                        firewall.render_admission(self.addresses[new]))
        for host in self.nodes:
            self.load_firewall(host)

    def forgotten(self, name: str) -> None:
        super().forgotten(name)
        for host in self.nodes:
            (self.admissions_dir(host) / f"{name}.nft").unlink(missing_ok=True)
            if host != name:
                self.load_firewall(host)


def wait_exact_membership(c: ScalingCluster, timeout: float = 120) -> None:
    """Every member's Raft view lists exactly the stack's nodes, and so does Patroni."""
    wanted_raft = {membership.raft_address(ip) for ip in c.addresses.values()}
    wanted = set(c.addresses)

    def exact():
        return all(c.raft_members(n) == wanted_raft and c.patroni_members(n) == wanted
                   for n in c.addresses)
    try:
        c.wait_for("exact Raft and Patroni membership", exact, timeout, 1)
    except h.HarnessError as error:
        seen = {n: (sorted(c.raft_members(n)), sorted(c.patroni_members(n)))
                for n in c.addresses}
        raise h.HarnessError(f"{error}: want {sorted(wanted_raft)} / {sorted(wanted)}, "
                             f"seen {seen}") from None
    listed = {n: c.patronictl_members(n) for n in c.addresses}
    assert all(members == wanted for members in listed.values()), listed

