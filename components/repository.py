"""The backup repository: a VM of its own with a data disk, the cluster's TLS authority
for pgBackRest, and the repository host's provisioning steps.

Thin wiring around components.backup (which renders every file and script). Created only
with backups on; the database nodes' pgBackRest steps live in components.provisioner.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import pulumi
import pulumi_random as random
import pulumi_tls as tls

from components import backup, clone, firewall, membership, rendering
from components.certificates import TlsIdentity
from components.config import ClusterSpec
from components.provisioner import (deleting_ssh_connection, remote_step, ssh_connection,
                                    vm_steps)
from components.vm import DATA_DISK_DEVICE, LibvirtHost, LibvirtNode, LibvirtNodeArgs

# Long enough never to surprise anyone; an `up` in the last 30 days renews a certificate
# (the hosts get the new one through their configure steps).
CERT_VALIDITY_HOURS = 10 * 365 * 24
CERT_RENEWAL_HOURS = 30 * 24
CERT_USES = ["digital_signature", "key_encipherment", "server_auth", "client_auth"]


@dataclass
class BackupRepositoryArgs:
    spec: ClusterSpec
    host: LibvirtHost  # where its VM runs
    ssh_public_key: pulumi.Input[str]
    ssh_private_key: pulumi.Input[str]
    # Every database node's IP by name, in node order (pg1..pgN in pgbackrest.conf).
    addresses: pulumi.Output[Mapping[str, str]]


class BackupRepository(pulumi.ComponentResource):
    """pgBackRest's repository host: its VM, CA, passphrase, and its steps up to a
    running `pgbackrest server` with the backup timers; `init_backups` adds the stanza
    and the first backup once the cluster is healthy."""

    ip: pulumi.Output[str]
    configure: pulumi.Resource
    spec_output: pulumi.Output[backup.BackupSpec]

    def __init__(self, name: str, args: BackupRepositoryArgs,
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("pgha:index:BackupRepository", name, None, opts)
        spec, settings, node = args.spec, args.spec.backups, args.spec.repository
        assert settings is not None and node is not None, "backups are off"
        self._name, self._spec = name, spec
        child = pulumi.ResourceOptions(parent=self)

        host_key = tls.PrivateKey(f"{name}-host-key", algorithm="ED25519", opts=child)
        self.vm = LibvirtNode(name, LibvirtNodeArgs(
            spec=spec, node=node, host=args.host, ssh_public_key=args.ssh_public_key,
            host_private_key=pulumi.Output.secret(host_key.private_key_openssh),
            host_public_key=host_key.public_key_openssh,
            vcpus=1, memory_mib=settings.repo_memory_mib,
            data_disk_gib=settings.repo_disk_gib), opts=child)
        self.ip = self.vm.ip
        # Pinned by every step's connection, and listed in the stack's knownHosts.
        self.host_public_key = host_key.public_key_openssh
        self.connection = ssh_connection(spec, self.vm, args.ssh_private_key,
                                         host_key.public_key_openssh)
        # For steps that also run when deleted (the admissions of nodes added by scaling).
        self.deleting_connection = deleting_ssh_connection(spec, self.vm, args.ssh_private_key,
                                                           host_key.public_key_openssh)
        self.spec_output = self.ip.apply(
            lambda ip: backup.backup_spec(settings, spec.cluster_name, ip))

        self._ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA",
                                      ecdsa_curve="P256", opts=child)
        self._ca_cert = tls.SelfSignedCert(
            f"{name}-ca", private_key_pem=self._ca_key.private_key_pem,
            subject=tls.SelfSignedCertSubjectArgs(
                common_name=f"pgha {spec.cluster_name} backup CA"),
            is_ca_certificate=True, allowed_uses=["cert_signing", "crl_signing"],
            validity_period_hours=CERT_VALIDITY_HOURS,
            early_renewal_hours=CERT_RENEWAL_HOURS, opts=child)
        self.passphrase: pulumi.Output[str] = pulumi.Output.secret(
            random.RandomPassword(f"{name}-passphrase", length=64, special=False,
                                  opts=child).result if settings.encrypt else "")

        identity = self.identity("repository", backup.repo_client_name(spec.cluster_name),
                                 self.ip)
        step = vm_steps(name, self.connection, self, self.vm)
        prepare = step("prepare", rendering.render_prepare_script(spec), [self.vm])
        install = step("install-pgbackrest",
                       backup.render_install_script(spec, "repository"), [prepare])
        disk = step("mount-data-disk", backup.render_repository_disk_script(DATA_DISK_DEVICE),
                    [install])
        paths = rendering.node_paths(spec)
        config = pulumi.Output.all(self.spec_output, args.addresses, self.passphrase).apply(
            lambda v: backup.render_repo_conf(v[0], v[1], paths.data_dir, paths.socket_dir,
                                              v[2]))
        script = pulumi.Output.all(self.spec_output, config, identity.ca_cert, identity.cert,
                                   identity.key).apply(
            lambda v: backup.render_configure_script("repository", "repository", v[1], v[2],
                                                     v[3], v[4], v[0]))
        before_configure: list[pulumi.Resource] = [disk]
        if spec.firewall:
            # Clones of this stack reach the repository from the admin networks.
            ruleset = args.addresses.apply(lambda a: firewall.repository_ruleset(
                membership.core_addresses(spec, a), spec.admin_cidrs,
                backup_clients=spec.admin_cidrs))
            before_configure.append(step("firewall", ruleset.apply(
                lambda r: firewall.render_configure_script(spec, "repository", r)),
                [install]))
        self.configure = step("configure-pgbackrest", script, before_configure,
                              holds_secrets=True)
        self.register_outputs({"ip": self.ip, "configured": self.configure.id})

    def identity(self, host: str, common_name: str,
                 ip: Optional[pulumi.Input[str]] = None) -> TlsIdentity:
        """A key and a certificate for `host`: CN is the name its peers admit, the address
        its SAN (as an IP and, because pgBackRest 2.45 matches the host it dials against
        DNS names only, as a DNS name too); a client only (no `ip`) needs no SAN."""
        child = pulumi.ResourceOptions(parent=self)
        key = tls.PrivateKey(f"{self._name}-{host}-tls-key", algorithm="ECDSA",
                             ecdsa_curve="P256", opts=child)
        request = tls.CertRequest(
            f"{self._name}-{host}-tls-request", private_key_pem=key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(common_name=common_name),
            ip_addresses=[ip] if ip is not None else None,
            dns_names=[ip] if ip is not None else None, opts=child)
        cert = tls.LocallySignedCert(
            f"{self._name}-{host}-tls-cert", cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=self._ca_key.private_key_pem,
            ca_cert_pem=self._ca_cert.cert_pem, allowed_uses=CERT_USES,
            validity_period_hours=CERT_VALIDITY_HOURS,
            early_renewal_hours=CERT_RENEWAL_HOURS, opts=child)
        return TlsIdentity(ca_cert=self._ca_cert.cert_pem, cert=cert.cert_pem,
                           key=pulumi.Output.secret(key.private_key_pem))

    def clone_source(self) -> pulumi.Output[dict]:
        """What another stack needs to be created from these backups (its cloneFromStack):
        this repository's address and a client identity its server admits. A secret."""
        spec = self._spec
        identity = self.identity("clone", backup.clone_client_name(spec.cluster_name))
        return pulumi.Output.secret(pulumi.Output.all(
            self.ip, identity.ca_cert, identity.cert, identity.key).apply(
            lambda v: clone.source_output(spec.cluster_name, v[0], spec.postgres_version,
                                          *v[1:])))

    def init_backups(self, after: Sequence[pulumi.Resource],
                     triggers: Optional[list] = None) -> pulumi.Output[str]:
        """The stanza, a proof that WAL reaches the repository and the first full backup,
        once the cluster is healthy; returns the newest backup's label."""
        script = self.spec_output.apply(backup.render_init_backups_script)
        init = remote_step(f"{self._name}-init-backups", self.connection, script, self,
                           [self.configure, *after],
                           triggers=[self.vm.domain.id, *(triggers or [])])
        return init.stdout.apply(_last_backup_label)


def _last_backup_label(stdout: str) -> str:
    for line in reversed((stdout or "").splitlines()):
        if line.startswith("pgha: last backup "):
            return line.split()[-1]
    return ""
