"""Run the Pulumi program (__main__.py) under mocks and record everything it registers.

Shared by the unit tier (fake IPs, fake keys) and the VM tier (the real VMs' addresses,
real keys and passwords), so both look at the very same resources the program declares.
"""
from __future__ import annotations

import json
import runpy
import secrets
import string
from typing import Any, Callable

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc

from tests.conftest import REPO

SECRET_SIG = rpc._special_sig_key
SECRET_VALUE = rpc._special_secret_sig

DOMAIN = "libvirt:index/domain:Domain"
NETWORK = "libvirt:index/network:Network"
VOLUME = "libvirt:index/volume:Volume"
SEED = "libvirt:index/cloudInitDisk:CloudInitDisk"
COMMAND = "command:remote:Command"
PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
PASSWORD = "random:index/randomPassword:RandomPassword"
LOCAL_RUN = "command:local:run"


def random_password(length: int = 32) -> str:
    """A password as the program asks pulumi-random for one (special=False): letters and
    digits only, so it never starts with '-' (which a command-line tool would take for an
    option) and needs no quoting in YAML, pgpass files or URIs."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def unwrap(value):
    """Inputs with secrets replaced by their plain values (secretness is recorded apart)."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == SECRET_VALUE:
            return unwrap(value.get("value"))
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


class Registration:
    def __init__(self, request, inputs):
        self.type, self.name, self.parent = request.type, request.name, request.parent
        self.urn = None
        self.dependencies = set(request.dependencies)
        self.property_dependencies = {k: set(v.urns) for k, v in
                                      request.propertyDependencies.items()}
        self.secret_keys = {k for k, v in request.object.fields.items()
                            if v.HasField("struct_value") and
                            v.struct_value.fields.get(SECRET_SIG) is not None and
                            v.struct_value.fields[SECRET_SIG].string_value == SECRET_VALUE}
        self.additional_secret_outputs = set(request.additionalSecretOutputs)
        self.custom_timeouts = request.customTimeouts
        self.ignore_changes = list(request.ignoreChanges)
        self.provider = request.provider  # "<urn>::<id>", empty for the default provider
        self.delete_before_replace = request.deleteBeforeReplace
        self.replacement_trigger = (json_format.MessageToDict(request.replacement_trigger)
                                    if request.HasField("replacement_trigger") else None)
        self.inputs = inputs

    @property
    def all_dependencies(self) -> set[str]:
        return self.dependencies | set().union(*self.property_dependencies.values())


class RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks):
        super().__init__(mocks)
        self.registrations: list[Registration] = []
        self.invokes: list[tuple[str, dict]] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        reg = Registration(request, unwrap(rpc.deserialize_properties(request.object)))
        reg.urn = response.urn
        self.registrations.append(reg)
        return response

    def Invoke(self, request):
        self.invokes.append((request.tok, unwrap(rpc.deserialize_properties(request.args))))
        return super().Invoke(request)


class Program:
    """What one run of __main__.py registered, with lookups by type, name and URN."""

    def __init__(self, monitor: RecordingMonitor, namespace: dict):
        self.monitor, self.namespace = monitor, namespace

    @property
    def registrations(self) -> list[Registration]:
        return self.monitor.registrations

    def of_type(self, typ):
        return [r for r in self.monitor.registrations if r.type == typ]

    def named(self, name):
        (reg,) = [r for r in self.monitor.registrations if r.name == name]
        return reg

    def by_urn(self, urn):
        (reg,) = [r for r in self.monitor.registrations if r.urn == urn]
        return reg

    def invokes_of(self, token):
        return [args for tok, args in self.monitor.invokes if tok == token]

    def stack_outputs(self) -> dict[str, Any]:
        """What __main__.py exported (pulumi.export), resolved."""
        root = pulumi.runtime.settings.get_root_resource()
        return {name: self.resolve(pulumi.Output.from_input(value))
                for name, value in root.outputs.items()}

    def resolve(self, output: pulumi.Output) -> Any:
        return pulumi.runtime.sync_await._sync_await(output.future())

    def is_secret(self, output: pulumi.Output) -> bool:
        return pulumi.runtime.sync_await._sync_await(output.is_secret())


def run_program(settings: dict, mocks: pulumi.runtime.Mocks,
                outputs: Callable[[Any], list] | None = None) -> Program:
    """Run __main__.py with these stack settings (`pgha:` keys without the prefix)."""
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="pgha", stack="test", preview=False,
                             monitor=monitor)
    # The root stack outlives set_mocks within a process: forget the last run's exports.
    pulumi.runtime.settings.get_root_resource().outputs.clear()
    pulumi.runtime.set_all_config({f"pgha:{k}": v if isinstance(v, str) else json.dumps(v)
                                   for k, v in settings.items()})
    namespace: dict = {}

    @pulumi.runtime.test
    def body():
        namespace.update(runpy.run_path(str(REPO / "__main__.py")))
        cluster = namespace["cluster"]
        return pulumi.Output.all(cluster.node_ips, cluster.leader, cluster.passwords,
                                 *(outputs(cluster) if outputs else []))

    body()
    return Program(monitor, namespace)
