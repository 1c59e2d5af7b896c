"""What the program would do, read from the program itself.

`plan_for(settings)` runs __main__.py under Pulumi mocks that behave like the real
providers where it matters to the nodes: a Domain's address is the DHCP reservation the
program declared for it (the lab network hands out exactly that), keys are real ED25519
keys, passwords are real random passwords. Keys and passwords are kept per resource name
across runs, as Pulumi's state keeps them, so a second run with a changed setting differs
only where the program's inputs differ.

The result lists the libvirt objects to build (network, volumes, seeds, domains) and the
remote steps (every `command:remote:Command` with its script, SSH connection and the
steps it depends on), plus the invoke the program runs on each up and preview (the health
probe) and the stack outputs.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

import pulumi

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from components.config import REPOSITORY_NAME, build_spec
from tests.pulumi_mocks import (COMMAND, DOMAIN, LOCAL_RUN, NETWORK, PASSWORD, PRIVATE_KEY,
                                SEED, VOLUME, Program, random_password, run_program,
                                unwrap)

SELF_SIGNED_CERT = "tls:index/selfSignedCert:SelfSignedCert"
CERT_REQUEST = "tls:index/certRequest:CertRequest"
LOCALLY_SIGNED_CERT = "tls:index/locallySignedCert:LocallySignedCert"


class VmMocks(pulumi.runtime.Mocks):
    """Provider stand-ins whose outputs are real enough to provision real VMs."""

    def __init__(self) -> None:
        self.kept: dict[str, dict[str, Any]] = {}

    def _keep(self, name: str, make) -> dict[str, Any]:
        if name not in self.kept:
            self.kept[name] = make()
        return self.kept[name]

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = dict(args.inputs)
        inputs = unwrap(dict(args.inputs))
        if args.typ == DOMAIN:
            # wait_for_lease returns the address DHCP gave; the lab reserves exactly this.
            outputs["networkInterfaces"] = [dict(nic) for nic in
                                            args.inputs["networkInterfaces"]]
        elif args.typ == PRIVATE_KEY:
            outputs.update(self._keep(args.name, _ecdsa_key if args.inputs.get(
                "algorithm") == "ECDSA" else _ed25519_key))
        elif args.typ == SELF_SIGNED_CERT:
            outputs.update(self._keep(args.name, lambda: {"certPem": _ca_cert(inputs)}))
        elif args.typ == CERT_REQUEST:
            # The request is only carried to the signer: keep what it asks for.
            outputs["certRequestPem"] = json.dumps(inputs)
        elif args.typ == LOCALLY_SIGNED_CERT:
            outputs.update(self._keep(args.name, lambda: {"certPem": _signed_cert(inputs)}))
        elif args.typ == PASSWORD:
            outputs.update(self._keep(args.name, lambda: {"result": random_password(
                int(args.inputs.get("length", 32)))}))
        elif args.typ == COMMAND:
            outputs.update(stdout="", stderr="")
        return f"{args.name}_id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == LOCAL_RUN:
            return {"stdout": "{}", "stderr": "", "command": args.args.get("command", "")}
        return {}


def _ecdsa_key() -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    return {"privateKeyPem": key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()}


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: x509.Name, public_key, issuer: x509.Name, signer, hours: int,
                 extensions: list) -> str:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(hours=hours)))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signer, hashes.SHA256()).public_bytes(
        serialization.Encoding.PEM).decode()


def _ca_cert(inputs: dict) -> str:
    """tls.SelfSignedCert as the provider makes it for a CA."""
    key = serialization.load_pem_private_key(inputs["privateKeyPem"].encode(), None)
    name = _name(inputs["subject"]["commonName"])
    return _certificate(name, key.public_key(), name, key,
                        int(inputs["validityPeriodHours"]),
                        [(x509.BasicConstraints(ca=True, path_length=None), True)])


def _signed_cert(inputs: dict) -> str:
    """tls.LocallySignedCert: the request's subject and SANs, signed by the CA."""
    request = json.loads(inputs["certRequestPem"])
    key = serialization.load_pem_private_key(request["privateKeyPem"].encode(), None)
    ca_key = serialization.load_pem_private_key(inputs["caPrivateKeyPem"].encode(), None)
    ca = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
    sans = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in request.get("ipAddresses", [])]
    sans += [x509.DNSName(name) for name in request.get("dnsNames", [])]
    uses = {"server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
            "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH}
    # A client certificate (pgBackRest's) names no address: no SAN extension then.
    extensions = [(x509.SubjectAlternativeName(sans), False)] if sans else []
    return _certificate(
        _name(request["subject"]["commonName"]), key.public_key(), ca.subject, ca_key,
        int(inputs["validityPeriodHours"]),
        extensions + [(x509.ExtendedKeyUsage([uses[u] for u in inputs["allowedUses"]
                                              if u in uses]), False)])


def _ed25519_key() -> dict[str, str]:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return {"privateKeyOpenssh": private, "publicKeyOpenssh": public + "\n"}


@dataclass(frozen=True)
class Step:
    """One remote.Command as pulumi-command runs it: `create` over SSH, script on stdin."""
    name: str
    host: str
    user: str
    private_key: str
    host_key: str
    command: str
    script: str
    triggers: tuple
    after: tuple[str, ...]  # names of the steps it depends on
    delete: str | None = None  # run with the same stdin when the step is deleted

    @property
    def inputs(self) -> tuple:
        """What Pulumi diffs: any change is an update, which runs `create` again."""
        return (self.host, self.user, self.host_key, self.command, self.script,
                self.triggers)


@dataclass
class Plan:
    program: Program
    settings: dict
    network: dict | None  # the program's libvirt network; None on the hosts' LAN
    volumes: list[dict]
    seeds: dict[str, dict]       # node name -> CloudInitDisk inputs
    domains: dict[str, dict]     # node name -> Domain inputs
    steps: dict[str, Step]
    health_probe: str
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def hosts(self) -> dict[str, str]:
        """Every VM's address by name: the cluster's nodes and, with backups on, the
        backup repository (their DHCP reservations on one host, their static addresses
        on the hosts' LAN)."""
        if self.network is None:
            spec = build_spec(self.settings)
            vms = [*spec.nodes, *([spec.repository] if spec.repository else [])]
            return {vm.name: vm.address for vm in vms if vm.name in self.domains}
        return {name: d["networkInterfaces"][0]["addresses"][0]
                for name, d in self.domains.items()}

    @property
    def placement(self) -> dict[str, str]:
        """Each VM's libvirt host (the stack's hosts), by name; empty on one host."""
        return dict(build_spec(self.settings).placement)

    @property
    def addresses(self) -> dict[str, str]:
        """The cluster's nodes only."""
        return dict(self.outputs["nodeIps"])

    def steps_changed_since(self, before: "Plan") -> list[str]:
        """Steps whose inputs differ from `before`'s: what `pulumi up` would update."""
        return [name for name, step in self.steps.items()
                if name not in before.steps or before.steps[name].inputs != step.inputs]

    def steps_removed_since(self, before: "Plan") -> dict[str, Step]:
        """Steps `before` had and this plan has not: what `pulumi up` would delete."""
        return {name: step for name, step in before.steps.items() if name not in self.steps}


def plan_for(settings: dict, mocks: VmMocks) -> Plan:
    program = run_program(settings, mocks)
    cluster = program.namespace["cluster"]
    outputs = {key: program.resolve(value) for key, value in {
        "nodeIps": cluster.node_ips, "dsnReadWrite": cluster.dsn_read_write,
        "dsnReadOnly": cluster.dsn_read_only, "passwords": cluster.passwords,
        "knownHosts": cluster.known_hosts}.items()}
    if cluster.ca_certificate is not None:
        outputs["caCertificate"] = program.resolve(cluster.ca_certificate)
    node_of = {name: name for name in outputs["nodeIps"]}
    if cluster.repository_ip is not None:
        node_of[REPOSITORY_NAME] = REPOSITORY_NAME
        outputs["backupRepositoryHost"] = program.resolve(cluster.repository_ip)
        outputs["backupLabelAtCreation"] = program.resolve(cluster.backup_label)

    def node_name(resource_name: str) -> str:
        return next(n for n in node_of if f"-{n}-" in resource_name + "-")

    commands = program.of_type(COMMAND)
    by_urn = {c.urn: c.name for c in commands}
    steps = {}
    for c in commands:
        conn = c.inputs["connection"]
        steps[c.name] = Step(
            name=c.name, host=conn["host"], user=conn["user"],
            private_key=conn["privateKey"], host_key=conn["hostKey"],
            command=c.inputs["create"], script=c.inputs["stdin"],
            triggers=tuple(map(str, c.inputs.get("triggers") or ())),
            after=tuple(sorted(by_urn[u] for u in c.all_dependencies if u in by_urn)),
            delete=c.inputs.get("delete"))
    networks = [n.inputs for n in program.of_type(NETWORK)]
    network = networks[0] if networks else None
    (probe,) = [args["stdin"] for args in program.invokes_of(LOCAL_RUN)]
    return Plan(
        program=program, settings=dict(settings), network=network,
        volumes=[v.inputs for v in program.of_type(VOLUME)],
        seeds={node_name(s.name): s.inputs for s in program.of_type(SEED)},
        domains={node_name(d.name): d.inputs for d in program.of_type(DOMAIN)},
        steps=steps, health_probe=probe, outputs=outputs)
