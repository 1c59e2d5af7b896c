"""Remote provisioning of one node over SSH, as separate steps that each re-run only when
their own script (or the VM under them) changes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import pulumi
from pulumi_command import remote

from components import rendering
from components.config import ClusterSpec, NodeSpec
from components.vm import LibvirtNode

# Scripts arrive on stdin: nothing (secrets included) appears on a command line.
REMOTE_SHELL = "sudo bash -s"
STEP_TIMEOUTS = pulumi.CustomTimeouts(create="40m", update="40m")


def ssh_connection(spec: ClusterSpec, vm: LibvirtNode, ssh_private_key: pulumi.Input[str],
                   host_public_key: pulumi.Input[str]) -> remote.ConnectionArgs:
    # dial_error_limit=-1: keep dialling while the VM boots; the pinned host key means no
    # connection ever trusts whatever answers on that address.
    return remote.ConnectionArgs(host=vm.ip, user=spec.ssh_user, private_key=ssh_private_key,
                                 host_key=host_public_key, dial_error_limit=-1,
                                 per_dial_timeout=15)


def remote_step(name: str, connection: remote.ConnectionArgs, script: pulumi.Input[str],
                parent: pulumi.Resource, after: Sequence[pulumi.Resource],
                triggers: Optional[list] = None, holds_secrets: bool = False) -> remote.Command:
    """A script run as root on a node; changing the script re-runs it (as an update)."""
    return remote.Command(
        name, connection=connection, create=REMOTE_SHELL, stdin=script, triggers=triggers,
        # Scripts never read their previous output; sending it as environment variables
        # only earns a warning from every sshd that does not AcceptEnv them.
        add_previous_output_in_env=False,
        opts=pulumi.ResourceOptions(
            parent=parent, depends_on=list(after), custom_timeouts=STEP_TIMEOUTS,
            # Scripts never print secrets; marking the output secret is a second guard.
            additional_secret_outputs=["stdout", "stderr"] if holds_secrets else None))


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


class NodeProvisioner(pulumi.ComponentResource):
    """PostgreSQL, softdog and Patroni on one node, then its config, then Patroni running."""

    install_patroni: remote.Command
    configure: remote.Command
    start: remote.Command

    def __init__(self, name: str, args: NodeProvisionerArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("pgha:index:NodeProvisioner", name, None, opts)
        spec, node = args.spec, args.node
        self.connection = ssh_connection(spec, args.vm, args.ssh_private_key,
                                         args.host_public_key)
        # A replaced VM (same IP or not) must be provisioned from scratch.
        vm_trigger = [args.vm.domain.id]

        def step(step_name, script, after, holds_secrets=False):
            return remote_step(f"{name}-{step_name}", self.connection, script, self, after,
                               triggers=vm_trigger, holds_secrets=holds_secrets)

        prepare = step("prepare", rendering.render_prepare_script(spec), [args.vm])
        install_postgres = step("install-postgres",
                                rendering.render_install_postgres_script(spec), [prepare])
        watchdog = step("watchdog", rendering.render_watchdog_script(spec), [install_postgres])
        self.install_patroni = step("install-patroni",
                                    rendering.render_install_patroni_script(spec), [watchdog])
        configure_script = pulumi.Output.all(args.addresses, args.secrets).apply(
            lambda values: rendering.render_configure_script(spec, node, values[0], values[1]))
        self.configure = step("configure", configure_script, [self.install_patroni],
                              holds_secrets=True)
        self.start = step("start", rendering.render_start_script(spec, node), [self.configure])
        self.register_outputs({"configured": self.configure.id, "started": self.start.id})
