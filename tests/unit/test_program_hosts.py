"""The program with `hosts` under mocks: one libvirt provider and base image per host,
each node's VM under its host's provider, static addresses on the shared LAN (the
domains' reported addresses are ignored), and the placement as the stack says."""
import base64
import re

import yaml

from tests.pulumi_mocks import COMMAND, DOMAIN, NETWORK, SEED, VOLUME, Program
from tests.unit.test_program_backups import run_program
from tests.unit.test_program_firewall import elements, ruleset_of

PROVIDER = "pulumi:providers:libvirt"
HOSTS = [{"name": "hv1", "uri": "qemu+ssh://root@hv1/system", "bridge": "br0"},
         {"name": "hv2", "uri": "qemu+tls://hv2/system", "macvtap": "eno1",
          "storagePool": "fast"},
         {"name": "hv3", "uri": "qemu:///system", "network": "lan"}]
LAN = {"hosts": HOSTS, "networkCidr": "10.20.0.0/24", "networkGateway": "10.20.0.1",
       "networkDns": ["10.20.0.2", "10.20.0.3"]}


def provider_of(prog: Program, reg) -> str:
    """The name of the provider a resource is managed through (inherited from its
    component when it names none)."""
    while not reg.provider and reg.parent:
        reg = prog.by_urn(reg.parent)
    return reg.provider.split("::")[-2]


def patroni_yml(prog: Program, node: str) -> dict:
    stdin = prog.named(f"pg-raft-{node}-provision-configure").inputs["stdin"]
    encoded = re.search(r"patroni.yml 0600 postgres:postgres <<'B64'; then\n(.*?)\nB64",
                        stdin, re.S).group(1)
    return yaml.safe_load(base64.b64decode("".join(encoded.split())))


def test_one_provider_and_base_image_per_host_and_each_vm_under_its_hosts():
    prog = run_program({**LAN, "nodeCount": 5, "backups": True,
                        "placement": {"repository": "hv3"}})
    providers = {r.name: r.inputs["uri"] for r in prog.of_type(PROVIDER)}
    assert providers == {f"pg-raft-{h['name']}-libvirt": h["uri"] for h in HOSTS}
    bases = {v.name: v for v in prog.of_type(VOLUME) if "base-image" in v.name}
    assert {n: (provider_of(prog, v), v.inputs["pool"]) for n, v in bases.items()} == {
        "pg-raft-hv1-base-image": ("pg-raft-hv1-libvirt", "default"),
        "pg-raft-hv2-base-image": ("pg-raft-hv2-libvirt", "fast"),
        "pg-raft-hv3-base-image": ("pg-raft-hv3-libvirt", "default")}
    assert prog.of_type(NETWORK) == []  # the LAN is the hosts'
    # Round-robin in node order: srv1 hv1, srv2 hv2, srv3 hv3, srv4 hv1, srv5 hv2.
    expected = {"srv1": "hv1", "srv2": "hv2", "srv3": "hv3", "srv4": "hv1", "srv5": "hv2",
                "repository": "hv3"}
    for node, host in expected.items():
        pool = "fast" if host == "hv2" else "default"
        for suffix in ("domain", "disk", "seed"):
            reg = prog.named(f"pg-raft-{node}-{suffix}")
            assert provider_of(prog, reg) == f"pg-raft-{host}-libvirt", (node, suffix)
            if suffix != "domain":
                assert reg.inputs["pool"] == pool, (node, suffix)
        disk = prog.named(f"pg-raft-{node}-disk")
        assert disk.inputs["baseVolumeId"] == f"pg-raft-{host}-base-image_id"


def test_vms_attach_to_the_lan_with_static_addresses_set_by_their_seed():
    prog = run_program(LAN)
    attachments = {"srv1": {"bridge": "br0"}, "srv2": {"macvtap": "eno1"},
                   "srv3": {"networkName": "lan"}}
    for i, (node, attachment) in enumerate(attachments.items()):
        (nic,) = prog.named(f"pg-raft-{node}-domain").inputs["networkInterfaces"]
        assert nic == {"mac": nic["mac"], "waitForLease": False, **attachment}
        seed = prog.named(f"pg-raft-{node}-seed")
        assert sorted(seed.ignore_changes) == ["networkConfig", "userData"]
        (interface,) = yaml.safe_load(seed.inputs["networkConfig"])["config"]
        assert interface == {
            "type": "physical", "name": "lan0", "mac_address": nic["mac"],
            "subnets": [{"type": "static", "address": f"10.20.0.{10 + i}/24",
                         "gateway": "10.20.0.1",
                         "dns_nameservers": ["10.20.0.2", "10.20.0.3"]}]}


def test_steps_patroni_and_outputs_use_the_static_addresses():
    prog = run_program(LAN)
    ips = {f"srv{i}": f"10.20.0.{9 + i}" for i in (1, 2, 3)}
    for node, ip in ips.items():
        assert prog.named(f"pg-raft-{node}-provision-prepare").inputs["connection"][
            "host"] == ip
        raft = patroni_yml(prog, node)["raft"]
        assert raft["self_addr"] == f"{ip}:5010"
        assert sorted(raft["partner_addrs"]) == sorted(
            f"{other}:5010" for n, other in ips.items() if n != node)
    outputs = prog.stack_outputs()
    assert outputs["nodeIps"] == ips
    assert outputs["nodeHosts"] == {"srv1": "hv1", "srv2": "hv2", "srv3": "hv3"}
    # pg_hba and the firewall admit the LAN by default (no libvirt gateway address).
    assert "hostssl all all 10.20.0.0/24 scram-sha-256" in patroni_yml(prog, "srv1")[
        "postgresql"]["pg_hba"]
    rules = ruleset_of(prog.named("pg-raft-srv1-provision-firewall").inputs["stdin"])
    assert elements(rules, "admin") == {"10.20.0.0/24"}
    assert elements(rules, "other_members") == {"10.20.0.11", "10.20.0.12"}


def test_a_single_host_stack_exports_no_placement():
    prog = run_program({})
    assert "nodeHosts" not in prog.stack_outputs()
    assert all(not c.name.startswith("pg-raft-hv") for c in prog.of_type(COMMAND))
    assert len(prog.of_type(DOMAIN)) == 3 and len(prog.of_type(SEED)) == 3


def test_the_shipped_three_host_stack_spreads_one_node_per_host():
    from tests.unit.test_program_outputs import stack_settings
    prog = run_program(stack_settings("hosts"))
    outputs = prog.stack_outputs()
    assert outputs["nodeHosts"] == {"srv1": "hv1", "srv2": "hv2", "srv3": "hv3",
                                    "repository": "hv1"}
    assert outputs["nodeIps"] == {"srv1": "10.60.0.10", "srv2": "10.60.0.11",
                                  "srv3": "10.60.0.12"}
    assert outputs["backupRepositoryHost"] == "10.60.0.9"
    assert prog.named("pg-spread-hv3-base-image").inputs["pool"] == "fast"


def test_steps_reach_the_vms_of_a_host_with_ssh_jump_through_it_and_so_do_the_outputs():
    from tests.unit.test_hosts import JUMP_KEY
    jumped = {**HOSTS[0], "sshJump": "root@hv1.example.net", "sshJumpHostKey": JUMP_KEY}
    prog = run_program({**LAN, "hosts": [jumped, *HOSTS[1:]], "nodeCount": 5,
                        "backups": True})
    # srv1, srv4 and the repository (hv1 has the fewest of the first three nodes).
    on_hv1 = {"10.20.0.10", "10.20.0.13", "10.20.0.9"}
    through = [c.name for c in prog.of_type(COMMAND)
               if c.inputs["connection"]["host"] in on_hv1]
    assert len(through) > 20 and len(prog.of_type(COMMAND)) - len(through) > 20
    for command in prog.of_type(COMMAND):
        proxy = command.inputs["connection"].get("proxy")
        if command.name in through:
            assert proxy == {"host": "hv1.example.net", "port": 22, "user": "root",
                             "hostKey": JUMP_KEY, "dialErrorLimit": proxy["dialErrorLimit"],
                             "perDialTimeout": 15}, command.name
        else:
            assert proxy is None, command.name
    outputs = prog.stack_outputs()
    assert outputs["sshCommands"]["srv1"].startswith("ssh -J root@hv1.example.net -i ")
    assert outputs["sshCommands"]["srv2"].startswith("ssh -i pgha-key ")
    assert outputs["backupInfoCommand"].startswith("ssh -J root@hv1.example.net ")
