"""PatroniCluster: libvirt VMs running PostgreSQL under Patroni with the Raft DCS."""
from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass, field
from typing import Mapping, Optional

import pulumi
import pulumi_random as random
import pulumi_tls as tls
from pulumi_command import local, remote

from components import backup, clone, firewall, health, membership, rendering
from components.certificates import ClusterCa
from components.config import RESTAPI_PORT, ClusterSpec, NodeSpec
from components.hosts import jump_of
from components.moves import NodeMove
from components.provisioner import (DELETE_DIAL_LIMIT, NodeBackupArgs, NodeProvisioner,
                                    NodeProvisionerArgs, address_connection,
                                    deleting_ssh_connection, remote_step)
from components.repository import BackupRepository, BackupRepositoryArgs
from components.vm import LibvirtHost, LibvirtNode, LibvirtNodeArgs, libvirt_hosts

PASSWORDS = ("superuser_password", "replication_password", "rewind_password",
             "restapi_password", "raft_password")


@dataclass
class PatroniClusterArgs:
    spec: ClusterSpec
    # Both set, or neither (then a key pair is generated).
    ssh_public_key: Optional[pulumi.Input[str]] = None
    ssh_private_key: Optional[pulumi.Input[str]] = None
    # The key of the user's CA (spec.tls.ca_certificate), a secret; None: generated.
    tls_ca_private_key: Optional[pulumi.Input[str]] = None
    # Nodes that move to another host in this run or moved in an earlier one
    # (components/moves.py), by name.
    moves: Mapping[str, NodeMove] = field(default_factory=dict)


class PatroniCluster(pulumi.ComponentResource):
    """N VMs, each provisioned with PostgreSQL + Patroni, gated on cluster health."""

    node_ips: pulumi.Output[Mapping[str, str]]
    leader: pulumi.Output[str]
    dsn_read_write: pulumi.Output[str]
    dsn_read_only: pulumi.Output[str]
    rest_urls: pulumi.Output[Mapping[str, str]]
    # With TLS on (else None): the CA that clients verify the nodes against.
    ca_certificate: Optional[pulumi.Output[str]] = None
    ssh_private_key: pulumi.Output[str]
    known_hosts: pulumi.Output[str]
    passwords: pulumi.Output[Mapping[str, str]]
    # With backups on (else None): the repository host and what it printed at creation.
    repository_ip: Optional[pulumi.Output[str]] = None
    backup_label: Optional[pulumi.Output[str]] = None
    # With backups on: what another stack's cloneFromStack reads (a secret).
    backup_clone_source: Optional[pulumi.Output[dict]] = None

    def __init__(self, name: str, args: PatroniClusterArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("pgha:index:PatroniCluster", name, None, opts)
        spec = args.spec
        ssh_public_key, self._ssh_private_key = self._ssh_key(name, args)
        secrets = self._passwords(name)
        self.passwords = pulumi.Output.secret(secrets.apply(
            lambda s: {key: getattr(s, key) for key in PASSWORDS}))
        hosts = libvirt_hosts(name, spec, parent=self)
        self._moves = args.moves
        self._vms(name, spec, hosts, ssh_public_key)
        self._backups(name, spec, hosts, ssh_public_key)
        ca = None
        if spec.tls is not None:
            ca = ClusterCa(name, spec, self, args.tls_ca_private_key)
            self.ca_certificate = ca.cert_pem
        admissions = self._admissions(name, spec, self._vms_by_name, self._repository,
                                      self._ssh_private_key, self._host_keys)
        provisioners = self._provisioners(name, spec, secrets, ca, admissions)
        gate = self._health_gate(name, spec, provisioners, admissions)
        self._outputs(spec, gate)

    def _vms(self, name: str, spec: ClusterSpec, hosts: Mapping[str, LibvirtHost],
             ssh_public_key: pulumi.Input[str]) -> None:
        """Each node's VM on its libvirt host, with the SSH host key its seed installs
        (generated here, pinned by every connection). A node that moves to another host
        leaves the cluster before its VM is made there (its steps need the others' VMs)."""
        self._vms_by_name: dict[str, LibvirtNode] = {}
        self._host_keys: dict[str, tls.PrivateKey] = {}
        for node in spec.nodes:
            self._host_keys[node.name] = tls.PrivateKey(
                f"{name}-{node.name}-host-key", algorithm="ED25519",
                opts=pulumi.ResourceOptions(parent=self))
        staying = [n for n in spec.nodes if n.name not in self._moves]
        moving = [n for n in spec.nodes if n.name in self._moves]
        for node in staying + moving:
            key = self._host_keys[node.name]
            after = (self._move_out(name, spec, node, self._moves[node.name])
                     if node.name in self._moves else [])
            self._vms_by_name[node.name] = LibvirtNode(f"{name}-{node.name}", LibvirtNodeArgs(
                spec=spec, node=node, host=hosts[node.host], ssh_public_key=ssh_public_key,
                host_private_key=pulumi.Output.secret(key.private_key_openssh),
                host_public_key=key.public_key_openssh, after=after),
                opts=hosts[node.host].options)
        names = [n.name for n in spec.nodes]
        self.node_ips = pulumi.Output.all(
            *[self._vms_by_name[n].ip for n in names]).apply(lambda ips: dict(zip(names, ips)))

    def _move_out(self, name: str, spec: ClusterSpec, node: NodeSpec,
                  move: NodeMove) -> list[pulumi.Resource]:
        """A node moving to another host leaves on its old VM (handing over its
        leadership, then stopping Patroni) and another member forgets it; both once
        (components/moves.py). Returns the forget step, which its new VM waits for."""
        prefix = f"{name}-{node.name}-move-to-{move.target}"
        # Its old VM, at the node's static address, through the new host's jump host if
        # it has one: every listed host reaches the LAN the nodes share.
        old_vm = address_connection(
            spec, node.address or "", jump_of(spec.host_of(node.name)),
            self._ssh_private_key, self._host_keys[node.name].public_key_openssh,
            DELETE_DIAL_LIMIT)
        leave = remote_step(f"{prefix}-leave", old_vm,
                            membership.render_move_leave_script(spec, node), parent=self,
                            after=[], create=membership.CREATE_SHELL, once=True)
        member = next(n for n in membership.core_names(spec) if n != node.name)
        forget = remote_step(
            f"{prefix}-forget", deleting_ssh_connection(
                spec, self._vms_by_name[member], self._ssh_private_key,
                self._host_keys[member].public_key_openssh),
            membership.render_move_forget_script(spec, node, node.address or ""),
            parent=self, after=[leave], create=membership.CREATE_SHELL, once=True)
        return [forget]

    def _backups(self, name: str, spec: ClusterSpec, hosts: Mapping[str, LibvirtHost],
                 ssh_public_key: pulumi.Input[str]) -> None:
        """With backups on, the repository VM and its steps; with a restore target, the
        check that the repository can serve it (before any node is emptied)."""
        self._repository: Optional[BackupRepository] = None
        self._restore_check: Optional[pulumi.Resource] = None
        if spec.backups is None or spec.repository is None:
            return
        host = hosts[spec.repository.host]
        repository = BackupRepository(f"{name}-repository", BackupRepositoryArgs(
            spec=spec, host=host, ssh_public_key=ssh_public_key,
            ssh_private_key=self._ssh_private_key, addresses=self.node_ips),
            opts=host.options)
        self._repository = repository
        self.repository_ip = repository.ip
        self.backup_clone_source = repository.clone_source()
        if spec.backups.restore_target is not None:
            target = spec.backups.restore_target
            self._restore_check = remote_step(
                f"{name}-restore-check", repository.connection,
                repository.spec_output.apply(
                    lambda b: backup.render_restore_check_script(b, target)),
                parent=self, after=[repository.configure])

    def _backup_args(self, spec: ClusterSpec, node_name: str) -> Optional[NodeBackupArgs]:
        """What node `node_name` needs of the repository (None with backups off)."""
        repository = self._repository
        if repository is None:
            return None
        identity = repository.identity(node_name, backup.node_client_name(spec.cluster_name),
                                       self._vms_by_name[node_name].ip)
        return NodeBackupArgs(spec=repository.spec_output, ca_cert=identity.ca_cert,
                              cert=identity.cert, key=identity.key,
                              repository_ready=repository.configure,
                              restore_ready=self._restore_check)

    def _provisioners(self, name: str, spec: ClusterSpec,
                      secrets: pulumi.Output[rendering.ClusterSecrets],
                      ca: Optional[ClusterCa],
                      admissions: Mapping[str, list[pulumi.Resource]]
                      ) -> list[NodeProvisioner]:
        """Every node's steps, from installing packages to a started Patroni."""
        clone_source = None
        if spec.clone is not None:
            source = pulumi.StackReference(f"{name}-clone-source", stack_name=spec.clone.stack,
                                           opts=pulumi.ResourceOptions(parent=self))
            clone_source = pulumi.Output.secret(source.get_output(clone.SOURCE_OUTPUT)).apply(
                lambda value: clone.parse_source(spec, value))
        vms = self._vms_by_name
        return [NodeProvisioner(f"{name}-{node.name}-provision", NodeProvisionerArgs(
            spec=spec, node=node, vm=vms[node.name], ssh_private_key=self._ssh_private_key,
            host_public_key=self._host_keys[node.name].public_key_openssh,
            addresses=self.node_ips, secrets=secrets,
            backup=self._backup_args(spec, node.name), clone_source=clone_source,
            tls=ca.server_identity(node.name, vms[node.name].ip) if ca is not None else None,
            admitted=admissions.get(node.name, [])),
            opts=pulumi.ResourceOptions(parent=self))
            for node in spec.nodes]

    def _health_gate(self, name: str, spec: ClusterSpec,
                     provisioners: list[NodeProvisioner],
                     admissions: Mapping[str, list[pulumi.Resource]]) -> remote.Command:
        """The gate `up` ends with: after every node started (restored, joined), it waits
        for a healthy cluster; then, with backups, the first backup."""
        started: list[pulumi.Resource] = [p.start for p in provisioners]
        # Re-check health whenever any node's configuration changed, and whenever a VM
        # is new (a replaced VM's steps all run again, its configuration unchanged: `up`
        # must still wait for it to rejoin).
        gate_triggers: list = ([p.configure.stdin for p in provisioners]
                               + [self._vms_by_name[n.name].domain.id for n in spec.nodes])
        if spec.restore_request is not None:
            # Every node proved the source can serve the target before any is emptied.
            ready = ([self._restore_check] if self._restore_check is not None
                     else [p.clone_ready for p in provisioners])
            started = self._restore(spec, provisioners, ready)
            gate_triggers.append(spec.restore_request)
        # The gate waits for every node, the ones that joined by scaling out included.
        started = started + self._membership(
            spec, self._vms_by_name, provisioners, started, self._ssh_private_key,
            self._host_keys, admissions) + self._move_joins(name, spec, provisioners, started)
        gate = remote_step(
            f"{name}-health-gate", provisioners[0].connection,
            self.node_ips.apply(lambda ips: rendering.render_health_gate_script(spec, ips)),
            parent=self, after=started, triggers=gate_triggers)
        if self._repository is not None:
            self.backup_label = self._repository.init_backups(after=[gate],
                                                              triggers=gate_triggers)
        return gate

    def _outputs(self, spec: ClusterSpec, gate: remote.Command) -> None:
        """What the cluster tells its user: the leader, DSNs, REST URLs, SSH access."""
        self.leader = gate.stdout.apply(_leader_from_gate)
        self._report_health(spec, gate)
        self.dsn_read_write = self.node_ips.apply(
            lambda ips: rendering.libpq_dsn(spec, ips, "read-write"))
        self.dsn_read_only = self.node_ips.apply(
            lambda ips: rendering.libpq_dsn(spec, ips, "read-only"))
        scheme = rendering.rest_scheme(spec)
        self.rest_urls = self.node_ips.apply(
            lambda ips: {n: f"{scheme}://{ip}:{RESTAPI_PORT}" for n, ip in ips.items()})
        self.ssh_private_key = pulumi.Output.secret(self._ssh_private_key)
        # Every host an output tells the user to reach over SSH: the nodes and the
        # repository.
        hosts = [(vm.ip, self._host_keys[n].public_key_openssh)
                 for n, vm in self._vms_by_name.items()]
        if self._repository is not None:
            hosts.append((self._repository.ip, self._repository.host_public_key))
        self.known_hosts = pulumi.Output.all(*[part for host in hosts for part in host]).apply(
            lambda v: "".join(f"{ip} {key.strip()}\n" for ip, key in zip(v[::2], v[1::2])))
        self.register_outputs({
            "nodeIps": self.node_ips, "leader": self.leader,
            "dsnReadWrite": self.dsn_read_write, "dsnReadOnly": self.dsn_read_only,
            "restUrls": self.rest_urls, "knownHosts": self.known_hosts,
            "caCertificate": self.ca_certificate})

    @staticmethod
    def _membership(spec: ClusterSpec, vms: Mapping[str, LibvirtNode],
                    provisioners: list[NodeProvisioner], started: list[pulumi.Resource],
                    ssh_private_key: pulumi.Input[str],
                    host_keys: Mapping[str, tls.PrivateKey],
                    admissions: Mapping[str, list[pulumi.Resource]]) -> list[pulumi.Resource]:
        """The join, leave and forget steps of the nodes after the first three
        (components/membership.py for the order); `started` is each node's last start
        step. Returns the joins."""
        def deleting(node_name: str):
            return deleting_ssh_connection(spec, vms[node_name], ssh_private_key,
                                           host_keys[node_name].public_key_openssh)
        first = spec.nodes[0].name
        core = [vms[n] for n in membership.core_names(spec)]
        # A node joins once every node's firewall admits it to the Raft port.
        firewalls = [p.firewall for p in provisioners if p.firewall is not None]
        joins: list[pulumi.Resource] = []
        previous_leave: list[pulumi.Resource] = []
        for p, node, start in zip(provisioners, spec.nodes, started):
            if not membership.is_elastic(node):
                continue
            vm = vms[node.name]
            joins.append(remote_step(
                f"{p.step_prefix}-raft-join", p.connection,
                membership.render_join_script(spec, node), parent=p,
                after=[start, *joins[-1:], *firewalls], triggers=[vm.domain.id],
                create=membership.CREATE_SHELL))
            forget = remote_step(
                f"{p.step_prefix}-raft-forget", deleting(first),
                vm.ip.apply(lambda ip, n=node: membership.render_forget_script(spec, n, ip)),
                parent=p, after=[vm, *core, *previous_leave,
                                 *admissions.get(node.name, [])],
                create=membership.CREATE_SHELL, delete=membership.DELETE_SHELL)
            previous_leave = [remote_step(
                f"{p.step_prefix}-raft-leave", deleting(node.name),
                membership.render_leave_script(spec, node), parent=p,
                after=[forget, joins[-1]],
                create=membership.CREATE_SHELL, delete=membership.DELETE_SHELL)]
        return joins

    def _move_joins(self, name: str, spec: ClusterSpec, provisioners: list[NodeProvisioner],
                    started: list[pulumi.Resource]) -> list[pulumi.Resource]:
        """A moved node's new VM back in the Raft membership once its Patroni started
        (the others forgot it before its old VM went); again whenever its VM is new."""
        joins = []
        for p, node, start in zip(provisioners, spec.nodes, started):
            move = self._moves.get(node.name)
            if move is None:
                continue
            joins.append(remote_step(
                f"{name}-{node.name}-move-to-{move.target}-join", p.connection,
                membership.render_join_script(spec, node, f"moved to host {move.target}"),
                parent=self, after=[start],
                triggers=[self._vms_by_name[node.name].domain.id],
                create=membership.CREATE_SHELL))
        return joins

    def _admissions(self, name: str, spec: ClusterSpec, vms: Mapping[str, LibvirtNode],
                    repository: Optional[BackupRepository],
                    ssh_private_key: pulumi.Input[str],
                    host_keys: Mapping[str, tls.PrivateKey]
                    ) -> dict[str, list[pulumi.Resource]]:
        """With the firewall on, each node after the first three admitted by every other
        host's firewall (components/firewall.py): created before the node's Patroni
        starts, deleted only after Raft forgot the node. By node name."""
        if not spec.firewall:
            return {}
        hosts = {n: deleting_ssh_connection(spec, vms[n], ssh_private_key,
                                            host_keys[n].public_key_openssh) for n in vms}
        after = {n: [vm] for n, vm in vms.items()}
        if repository is not None:
            hosts["repository"] = repository.deleting_connection
            after["repository"] = [repository.vm]
        admissions: dict[str, list[pulumi.Resource]] = {}
        for node in spec.nodes:
            if not membership.is_elastic(node):
                continue
            ip = vms[node.name].ip
            admissions[node.name] = [remote_step(
                f"{name}-{node.name}-admitted-by-{host}", connection,
                ip.apply(lambda a, h=host, n=node.name:
                         firewall.render_admission_script(h, n, a)),
                # Not a child of a node's component: depending on a component waits
                # for its children, and the nodes past the third admit each other.
                parent=self, after=after[host],
                create=membership.CREATE_SHELL, delete=membership.DELETE_SHELL)
                for host, connection in hosts.items() if host != node.name]
        return admissions

    @staticmethod
    def _restore(spec: ClusterSpec, provisioners: list[NodeProvisioner],
                 ready: list[pulumi.Resource]) -> list[pulumi.Resource]:
        """The whole cluster restored (a point-in-time recovery, or a clone of another
        stack's backups): once the source proved it can serve the target, every node
        stops and empties itself, then all start together and Patroni bootstraps the
        cluster from the backup (patroni.yml's restore method, rendered by the configure
        steps); the other nodes become replicas. On a new cluster the nodes start empty
        and the resets find nothing to do (see start-patroni.sh.j2)."""
        resets = [remote_step(f"{p.step_prefix}-restore-reset", p.connection,
                              backup.render_restore_reset_script(spec), parent=p,
                              after=[*ready, p.configure, p.start])
                  for p in provisioners]
        return [remote_step(f"{p.step_prefix}-restore-start", p.connection,
                            rendering.render_start_script(spec, node), parent=p,
                            after=resets)
                for p, node in zip(provisioners, spec.nodes)]

    def _report_health(self, spec: ClusterSpec, gate: pulumi.Resource) -> None:
        """Warn about a degraded cluster on every up and preview, without a diff: an invoke
        runs each time the program runs and stores nothing. It waits for the gate, so a
        first `up` reports only once the cluster was built."""
        probe = pulumi.Output.all(self.node_ips, gate.id, self.ca_certificate or "").apply(
            lambda v: rendering.render_health_probe(spec, v[0], v[2]))
        # Its stdout is a report for health.py, not for the user's terminal.
        result = local.run_output(command=f"{shlex.quote(sys.executable)} -", stdin=probe,
                                  logging=local.Logging.STDERR)

        def report(values) -> None:
            ips, stdout = values
            warnings, summary = health.health_findings(spec, ips, stdout)
            for warning in warnings:
                pulumi.log.warn(f"pgha health: {warning}", resource=self)
            (pulumi.log.warn if warnings else pulumi.log.info)(
                f"pgha health: {summary}", resource=self)
        pulumi.Output.all(self.node_ips, result.stdout).apply(report)

    def _ssh_key(self, name: str, args: PatroniClusterArgs):
        if args.spec.generates_ssh_key:
            key = tls.PrivateKey(f"{name}-ssh-key", algorithm="ED25519",
                                 opts=pulumi.ResourceOptions(parent=self))
            return key.public_key_openssh, pulumi.Output.secret(key.private_key_openssh)
        return args.ssh_public_key, pulumi.Output.secret(args.ssh_private_key)

    def _passwords(self, name: str) -> pulumi.Output[rendering.ClusterSecrets]:
        # Letters and digits only: safe in YAML, pgpass files and libpq URIs alike.
        values = {key: pulumi.Output.secret(random.RandomPassword(
            f"{name}-{key.replace('_', '-')}", length=32, special=False,
            opts=pulumi.ResourceOptions(parent=self)).result) for key in PASSWORDS}
        return pulumi.Output.all(**values).apply(lambda v: rendering.ClusterSecrets(**v))


def _leader_from_gate(stdout: str) -> str:
    """The gate prints one JSON line ({"leader": ..., "members": ...}), then its report."""
    for line in (stdout or "").splitlines():
        if line.startswith("{"):
            return json.loads(line)["leader"]
    return ""
