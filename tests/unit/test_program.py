"""The Pulumi program under mocks: the resource graph, its wiring and its secrets."""
import json

import pulumi
import pytest

from tests.pulumi_mocks import COMMAND, Program
from tests.pulumi_mocks import run_program as run_mocked


def mock_ip(name: str) -> str:
    # TEST-NET addresses, unlike the spec's reservations: proves IPs come from outputs.
    return f"203.0.113.{10 + int(name.split('-srv')[1].split('-')[0])}"


CERT_TYPES = ("tls:index/selfSignedCert:SelfSignedCert", "tls:index/certRequest:CertRequest",
              "tls:index/locallySignedCert:LocallySignedCert")


class Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = dict(args.inputs)
        if args.typ == "libvirt:index/domain:Domain":
            outputs["networkInterfaces"] = [{**args.inputs["networkInterfaces"][0],
                                             "addresses": [mock_ip(args.name)]}]
        elif args.typ == "tls:index/privateKey:PrivateKey":
            outputs.update(publicKeyOpenssh=f"ssh-ed25519 AAAA{args.name}\n",
                           privateKeyOpenssh=f"-----BEGIN OPENSSH PRIVATE KEY-----\n{args.name}\n",
                           privateKeyPem=f"PRIVATE KEY of {args.name}")
        elif args.typ in CERT_TYPES:
            field = "certRequestPem" if "certRequest" in args.typ else "certPem"
            outputs[field] = f"PEM of {args.name}"
        elif args.typ == "random:index/randomPassword:RandomPassword":
            outputs["result"] = f"pw-{args.name}"
        elif args.typ == "command:remote:Command":
            outputs["stdout"] = json.dumps({"leader": "srv2"}) if "health-gate" in args.name \
                else "ok"
            outputs["stderr"] = ""
        return f"{args.name}_id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


def run_program(settings: dict) -> Program:
    return run_mocked(settings, Mocks())


@pytest.fixture(params=[3, 5], ids=["3-nodes", "5-nodes"])
def program(request):
    return run_program({"nodeCount": request.param}), request.param


STEPS = ("prepare", "install-postgres", "watchdog", "install-patroni", "firewall",
         "configure", "start")


def test_one_domain_seed_and_disk_per_node_over_one_base_image(program):
    prog, count = program
    domains = prog.of_type("libvirt:index/domain:Domain")
    assert len(domains) == count
    assert len(prog.of_type("libvirt:index/cloudInitDisk:CloudInitDisk")) == count
    volumes = prog.of_type("libvirt:index/volume:Volume")
    assert len(volumes) == count + 1
    base = [v for v in volumes if "base" in v.name]
    assert len(base) == 1
    for disk in (v for v in volumes if v not in base):
        assert disk.inputs["baseVolumeId"] == base[0].name + "_id"
    for domain in domains:
        nic = domain.inputs["networkInterfaces"][0]
        assert nic["waitForLease"] is True
        assert domain.inputs["type"] == "kvm"
    assert len(prog.of_type("libvirt:index/network:Network")) == 1


def test_each_nodes_commands_connect_to_its_own_domains_ip(program):
    prog, count = program
    commands = prog.of_type(COMMAND)
    # Nodes past the third also join, leave and are forgotten, and are admitted by every
    # other node's firewall (tests/unit/test_program_scaling.py).
    elastic = count - 3
    assert len(commands) == count * len(STEPS) + 1 + 3 * elastic + elastic * (count - 1)
    for i in range(1, count + 1):
        ip = f"203.0.113.{10 + i}"
        for step in STEPS:
            cmd = prog.named(f"pg-raft-srv{i}-provision-{step}")
            assert cmd.inputs["connection"]["host"] == ip, step
            assert cmd.inputs["connection"]["hostKey"].startswith("ssh-ed25519 AAAApg-raft-srv")
            assert cmd.inputs["create"] == "sudo bash -s"


def test_each_nodes_patroni_yml_has_its_own_ip_and_exactly_the_others_as_partners(program):
    import base64
    import re

    import yaml
    prog, count = program
    ips = {f"srv{i}": f"203.0.113.{10 + i}" for i in range(1, count + 1)}
    for name, ip in ips.items():
        stdin = prog.named(f"pg-raft-{name}-provision-configure").inputs["stdin"]
        encoded = re.search(r"patroni.yml 0600 postgres:postgres <<'B64'; then\n(.*?)\nB64",
                            stdin, re.S).group(1)
        config = yaml.safe_load(base64.b64decode("".join(encoded.split())))
        assert config["raft"]["self_addr"] == f"{ip}:5010"
        assert sorted(config["raft"]["partner_addrs"]) == sorted(
            f"{other}:5010" for n, other in ips.items() if n != name)


def test_configure_waits_for_every_domain_but_installs_only_for_their_own(program):
    prog, count = program
    domain_urns = {r.urn for r in prog.of_type("libvirt:index/domain:Domain")}

    def upstream_domains(reg, seen=None):
        """Domains reg depends on, directly or through other resources' dependencies."""
        seen = set() if seen is None else seen
        found = set()
        for urn in reg.dependencies | set().union(*reg.property_dependencies.values()):
            if urn in seen:
                continue
            seen.add(urn)
            if urn in domain_urns:
                found.add(urn)
            matches = [r for r in prog.monitor.registrations if r.urn == urn]
            if matches:
                found |= upstream_domains(matches[0], seen)
        return found

    for i in range(1, count + 1):
        own = {u for u in domain_urns if u.endswith(f"pg-raft-srv{i}-domain")}
        for step in ("prepare", "install-postgres", "watchdog", "install-patroni"):
            reg = prog.named(f"pg-raft-srv{i}-provision-{step}")
            assert upstream_domains(reg) == own, step
        configure = prog.named(f"pg-raft-srv{i}-provision-configure")
        assert upstream_domains(configure) == domain_urns
    gate = prog.named("pg-raft-health-gate")
    starts = {prog.named(f"pg-raft-srv{i}-provision-start").urn for i in range(1, count + 1)}
    assert starts <= gate.dependencies
    # A replaced VM (a new domain id, every configuration as it was) runs the gate again:
    # `up` waits for the new node too.
    assert {f"pg-raft-srv{i}-domain_id" for i in range(1, count + 1)} <= set(
        gate.inputs["triggers"])


def test_steps_run_in_order_on_each_node(program):
    prog, count = program
    for i in range(1, count + 1):
        for before, after in zip(STEPS, STEPS[1:]):
            reg = prog.named(f"pg-raft-srv{i}-provision-{after}")
            assert prog.named(f"pg-raft-srv{i}-provision-{before}").urn in reg.dependencies


def test_secrets_stay_secret(program):
    prog, count = program
    for i in range(1, count + 1):
        configure = prog.named(f"pg-raft-srv{i}-provision-configure")
        assert "stdin" in configure.secret_keys
        seed = prog.named(f"pg-raft-srv{i}-seed")
        assert "userData" in seed.secret_keys  # holds the SSH host private key
        for step in STEPS:
            conn = prog.named(f"pg-raft-srv{i}-provision-{step}")
            assert "connection" in conn.secret_keys  # holds the SSH private key
    outputs = prog.namespace["cluster"]
    await_ = pulumi.runtime.sync_await._sync_await
    secret_flags = [await_(out.is_secret()) for out in (outputs.passwords,
                                                        outputs.ssh_private_key)]
    assert secret_flags == [True, True]
    assert not pulumi.runtime.sync_await._sync_await(outputs.dsn_read_write.is_secret())


def test_outputs_come_from_the_domains_and_the_gate():
    prog = run_program({})
    cluster = prog.namespace["cluster"]
    await_ = pulumi.runtime.sync_await._sync_await
    ips = await_(cluster.node_ips.future())
    assert ips == {"srv1": "203.0.113.11", "srv2": "203.0.113.12", "srv3": "203.0.113.13"}
    assert await_(cluster.leader.future()) == "srv2"
    dsn = await_(cluster.dsn_read_write.future())
    assert dsn.startswith("postgresql://postgres@203.0.113.11:5432,203.0.113.12:5432,")
    assert "password" not in dsn and "pw-" not in dsn
    assert await_(cluster.known_hosts.future()).splitlines()[0].startswith(
        "203.0.113.11 ssh-ed25519 ")


def test_invalid_config_fails_with_the_message_and_creates_nothing():
    with pytest.raises(SystemExit) as excinfo:
        run_program({"nodeCount": 4, "ttl": 10})
    message = str(excinfo.value)
    assert "pgha:nodeCount = 4" in message and "pgha:ttl = 10" in message
    # Nothing registered beyond what the engine makes itself.
    monitor = pulumi.runtime.settings.SETTINGS.monitor
    assert monitor.registrations == []


def test_a_mistyped_key_in_the_stack_stops_the_program_before_anything_is_created():
    # __main__.py reads every key of the namespace, not only the known ones.
    with pytest.raises(SystemExit) as excinfo:
        run_program({"nodecount": 5, "memoryMB": 4096})
    message = str(excinfo.value)
    assert "pgha:nodecount: unknown setting; did you mean nodeCount?" in message
    assert "pgha:memoryMB: unknown setting; did you mean memoryMib?" in message
    assert pulumi.runtime.settings.SETTINGS.monitor.registrations == []


def test_a_missing_secret_is_reported_together_with_the_other_problems():
    with pytest.raises(SystemExit) as excinfo:
        run_program({"sshPublicKey": "ssh-ed25519 AAAAkey me", "ttl": 10})
    message = str(excinfo.value)
    assert "pgha:sshPrivateKey is not set" in message and "pgha:ttl = 10" in message


def test_existing_network_and_qemu_domains():
    prog = run_program({"networkName": "lab", "domainType": "qemu",
                        "adminCidrs": ["192.168.122.0/24"]})
    assert prog.of_type("libvirt:index/network:Network") == []
    for domain in prog.of_type("libvirt:index/domain:Domain"):
        assert domain.inputs["type"] == "qemu" and "cpu" not in domain.inputs
        nic = domain.inputs["networkInterfaces"][0]
        assert nic["networkName"] == "lab" and "addresses" not in nic


def test_seed_is_the_providers_own_cdrom_and_nothing_rewrites_the_domain_xml(program):
    """A Domain read back with an extra disk would be replaced on the next `pulumi up`."""
    prog, count = program
    for domain in prog.of_type("libvirt:index/domain:Domain"):
        assert "xml" not in domain.inputs
        assert domain.inputs["cloudinit"].endswith("-seed_id")
        assert len(domain.inputs["disks"]) == 1 and "volumeId" in domain.inputs["disks"][0]


def test_a_changed_cloud_init_template_does_not_rebuild_seeds_or_vms(program):
    """The seed is read at first boot only; a new seed would replace its domain."""
    prog, count = program
    seeds = prog.of_type("libvirt:index/cloudInitDisk:CloudInitDisk")
    assert len(seeds) == count
    for seed in seeds:
        assert seed.ignore_changes == ["userData"], seed.name
    for other in prog.registrations:
        if other.type != "libvirt:index/cloudInitDisk:CloudInitDisk":
            assert other.ignore_changes == [], other.name


def test_commands_send_no_previous_output_and_domains_no_update_timeout(program):
    prog, _ = program
    for cmd in prog.of_type(COMMAND):
        assert cmd.inputs["addPreviousOutputInEnv"] is False, cmd.name
    for domain in prog.of_type("libvirt:index/domain:Domain"):
        timeouts = domain.custom_timeouts
        assert (timeouts.create, timeouts.update, timeouts.delete) == ("30m", "", "10m")


def test_every_run_reports_health_through_an_invoke_after_the_gate(monkeypatch):
    warned = []
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: warned.append(msg))
    prog = run_program({})
    (probe,) = prog.invokes_of("command:local:run")
    assert '"srv1": "203.0.113.11"' in probe["stdin"] and probe["command"].endswith(" -")
    assert probe["logging"] == "stderr"  # the JSON report is not shown to the user
    # The mocked probe printed no report: the run says so instead of staying silent.
    assert any("pgha health: cluster health unknown" in w for w in warned)
