"""Remote provisioning of one node over SSH, as separate steps that each re-run only when
their own script (or the VM under them) changes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import pulumi
from pulumi_command import remote

from components import backup, clone, firewall, membership, rendering
from components.certificates import TlsIdentity
from components.config import ClusterSpec, NodeSpec
from components.hosts import HostSpec
from components.vm import LibvirtNode

# Scripts arrive on stdin: nothing (secrets included) appears on a command line.
REMOTE_SHELL = "sudo bash -s"
# Dials of a step that must also run when it is deleted before it fails: a node that does
# not answer then fails the step instead of hanging. pulumi-command counts dials, not
# time, and waits up to 5 s between them, so this is about 3 minutes against a refused
# port, 5 against an address that answers "no route to host" (3 s each: a VM that is
# gone or rebooting, which it outlasts under emulation) and 13 against dials that time
# out (15 s each).
DELETE_DIAL_LIMIT = 40
STEP_TIMEOUTS = pulumi.CustomTimeouts(create="40m", update="40m")


def ssh_connection(spec: ClusterSpec, vm: LibvirtNode, ssh_private_key: pulumi.Input[str],
                   host_public_key: pulumi.Input[str],
                   dial_error_limit: int = -1) -> remote.ConnectionArgs:
    # dial_error_limit=-1: keep dialling while the VM boots; the pinned host key means no
    # connection ever trusts whatever answers on that address.
    return address_connection(spec, vm.ip, vm.jump, ssh_private_key, host_public_key,
                              dial_error_limit)


def address_connection(spec: ClusterSpec, address: pulumi.Input[str],
                       jump: Optional[HostSpec], ssh_private_key: pulumi.Input[str],
                       host_public_key: pulumi.Input[str],
                       dial_error_limit: int = -1) -> remote.ConnectionArgs:
    """SSH to `address` (a VM's, or a node's static one before its VM is made anew),
    with its pinned host key."""
    # Through the VM's hypervisor where the Pulumi machine cannot reach the VMs' LAN: the
    # user's SSH agent logs in there (as libvirt's qemu+ssh:// does), its key pinned too.
    proxy = None if jump is None else remote.ProxyConnectionArgs(
        host=jump.jump_host, port=jump.jump_port, user=jump.jump_user,
        host_key=jump.ssh_jump_host_key, dial_error_limit=dial_error_limit,
        per_dial_timeout=15)
    return remote.ConnectionArgs(host=address, user=spec.ssh_user,
                                 private_key=ssh_private_key, host_key=host_public_key,
                                 dial_error_limit=dial_error_limit, per_dial_timeout=15,
                                 proxy=proxy)


def deleting_ssh_connection(spec: ClusterSpec, vm: LibvirtNode,
                            ssh_private_key: pulumi.Input[str],
                            host_public_key: pulumi.Input[str]) -> remote.ConnectionArgs:
    """For a step that also runs when deleted: it gives up on a node that does not answer
    (DELETE_DIAL_LIMIT) instead of dialling for ever, so that the error reaches the user."""
    return ssh_connection(spec, vm, ssh_private_key, host_public_key,
                          dial_error_limit=DELETE_DIAL_LIMIT)


def remote_step(name: str, connection: remote.ConnectionArgs, script: pulumi.Input[str],
                parent: pulumi.Resource, after: Sequence[pulumi.Resource],
                triggers: Optional[list] = None, holds_secrets: bool = False,
                create: str = REMOTE_SHELL, delete: Optional[str] = None,
                once: bool = False) -> remote.Command:
    """A script run as root on a node; changing the script re-runs it (as an update).
    With `delete`, the same script runs again, so invoked, when the step is deleted.
    With `once`, it never runs again: a later script or connection is ignored."""
    return remote.Command(
        name, connection=connection, create=create, delete=delete, stdin=script,
        triggers=triggers,
        # Scripts never read their previous output; sending it as environment variables
        # only earns a warning from every sshd that does not AcceptEnv them.
        add_previous_output_in_env=False,
        opts=pulumi.ResourceOptions(
            parent=parent, depends_on=list(after), custom_timeouts=STEP_TIMEOUTS,
            ignore_changes=["stdin", "connection"] if once else None,
            # Scripts never print secrets; marking the output secret is a second guard.
            additional_secret_outputs=["stdout", "stderr"] if holds_secrets else None))


def vm_steps(prefix: str, connection: remote.ConnectionArgs, parent: pulumi.Resource,
             vm: LibvirtNode):
    """A factory of steps on one VM: each named <prefix>-<step>, and run again from
    scratch when the VM is replaced (same IP or not)."""
    def step(step_name: str, script: pulumi.Input[str], after: Sequence[pulumi.Resource],
             holds_secrets: bool = False) -> remote.Command:
        return remote_step(f"{prefix}-{step_name}", connection, script, parent, after,
                           triggers=[vm.domain.id], holds_secrets=holds_secrets)
    return step


@dataclass
class NodeBackupArgs:
    """What a database node needs for backups: the repository's settings and address,
    the node's TLS identity, and the repository host's step that must be done first."""
    spec: pulumi.Output[backup.BackupSpec]
    ca_cert: pulumi.Input[str]
    cert: pulumi.Input[str]
    key: pulumi.Input[str]  # secret
    repository_ready: pulumi.Resource
    # Set only while a point-in-time recovery is requested (spec.backups.restore_target).
    restore_ready: Optional[pulumi.Resource] = None


@dataclass
class NodeProvisionerArgs:
    spec: ClusterSpec
    node: NodeSpec
    vm: LibvirtNode
    ssh_private_key: pulumi.Input[str]
    host_public_key: pulumi.Input[str]
    # Every node's IP by name: only the configuration step waits for all of them.
    addresses: pulumi.Output[Mapping[str, str]]
    secrets: pulumi.Output[rendering.ClusterSecrets]
    backup: Optional[NodeBackupArgs] = None
    # Set when the cluster is created from another stack's backups (spec.clone).
    clone_source: Optional[pulumi.Output[clone.CloneSource]] = None
    # With TLS on: the node's server certificate (components.certificates).
    tls: Optional[TlsIdentity] = None
    # A node added by scaling out: its admissions by the other hosts' firewalls, in
    # force before its Patroni starts.
    admitted: Sequence[pulumi.Resource] = ()


class NodeProvisioner(pulumi.ComponentResource):
    """PostgreSQL, softdog and Patroni on one node, then its config, then Patroni running."""

    install_patroni: remote.Command
    configure: remote.Command
    start: remote.Command
    # With spec.clone: the source repository's configuration, proven to serve the target.
    clone_ready: Optional[remote.Command] = None
    # With spec.firewall: the node's nftables ruleset in force.
    firewall: Optional[remote.Command] = None

    def __init__(self, name: str, args: NodeProvisionerArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("pgha:index:NodeProvisioner", name, None, opts)
        spec, node = args.spec, args.node
        self.step_prefix = name
        self.connection = ssh_connection(spec, args.vm, args.ssh_private_key,
                                         args.host_public_key)
        step = vm_steps(name, self.connection, self, args.vm)
        prepare = step("prepare", rendering.render_prepare_script(spec), [args.vm])
        install_postgres = step("install-postgres",
                                rendering.render_install_postgres_script(spec), [prepare])
        watchdog = step("watchdog", rendering.render_watchdog_script(spec), [install_postgres])
        self.install_patroni = step("install-patroni",
                                    rendering.render_install_patroni_script(spec), [watchdog])
        before_configure: list[pulumi.Resource] = [self.install_patroni]
        before_start: list[pulumi.Resource] = list(args.admitted)
        backup_spec: pulumi.Output = pulumi.Output.from_input(None)
        bootstrap: pulumi.Output = pulumi.Output.from_input(None)
        install_backup = None
        if args.backup is not None or args.clone_source is not None:
            # After the last step that installs packages: one package manager at a time.
            install_backup = step("install-pgbackrest",
                                  backup.render_install_script(spec, "database"),
                                  [self.install_patroni])
        if args.clone_source is not None:
            target = spec.clone.target
            self.clone_ready = step(
                "configure-clone-source",
                args.clone_source.apply(lambda s: clone.render_configure_script(spec, s)),
                [install_backup], holds_secrets=True)
            before_start.append(self.clone_ready)
            bootstrap = args.clone_source.apply(lambda s: clone.bootstrap(s, target))
        if args.backup is not None:
            wiring = args.backup
            backup_spec = wiring.spec
            paths = rendering.node_paths(spec)
            config = wiring.spec.apply(lambda b: backup.render_node_conf(
                b, node.name, paths.data_dir, paths.socket_dir))
            backup_script = pulumi.Output.all(config, wiring.ca_cert, wiring.cert,
                                              wiring.key).apply(
                lambda v: backup.render_configure_script("database", node.name, *v))
            before_configure.append(step("configure-pgbackrest", backup_script,
                                         [install_backup], holds_secrets=True))
            # Archiving starts with the cluster: the repository's server must answer.
            before_start.append(wiring.repository_ready)
            if wiring.restore_ready is not None:
                before_start.append(wiring.restore_ready)
        if spec.firewall:
            # After the last package install (one package manager at a time); Patroni's
            # configuration comes after it, so Patroni never runs unprotected.
            repository = args.backup.spec.apply(lambda b: b.repo_address) \
                if args.backup is not None else pulumi.Output.from_input(None)
            ruleset = pulumi.Output.all(args.addresses, repository).apply(
                lambda v: firewall.node_ruleset(node.name, membership.core_addresses(
                    spec, v[0]), spec.admin_cidrs, spec.hba_cidrs, repository=v[1]))
            self.firewall = step("firewall", ruleset.apply(
                lambda r: firewall.render_configure_script(spec, node.name, r)),
                [install_backup or self.install_patroni])
            before_configure.append(self.firewall)
        tls_pems: pulumi.Output = pulumi.Output.from_input(None)
        if args.tls is not None:
            tls_pems = pulumi.Output.all(args.tls.ca_cert, args.tls.cert, args.tls.key).apply(
                lambda v: rendering.NodeTlsPems(*v))
        configure_script = pulumi.Output.all(args.addresses, args.secrets, backup_spec,
                                             bootstrap, tls_pems).apply(
            lambda v: rendering.render_configure_script(
                spec, node, v[0], v[1], backup=_patroni_backup_settings(spec, v[2]),
                bootstrap=v[3], tls_pems=v[4]))
        self.configure = step("configure", configure_script, before_configure,
                              holds_secrets=True)
        self.start = step("start", rendering.render_start_script(spec, node),
                          [self.configure, *before_start])
        self.register_outputs({"configured": self.configure.id, "started": self.start.id})


def _patroni_backup_settings(spec: ClusterSpec, backup_spec: Optional[backup.BackupSpec]):
    if backup_spec is None or spec.backups is None:
        return None
    return backup.patroni_settings(backup_spec, backup.BackupPaths(),
                                   restore=spec.backups.restore_target)
