"""The firewall in the Pulumi program, under mocks: a step per host with the host's own
ruleset, ordered before Patroni starts, and the settings that shape it."""
import base64
import re

import pytest

from components.config import ConfigError, build_spec
from tests.pulumi_mocks import COMMAND
from tests.unit.test_program import run_program
from tests.unit.test_program_backups import REPO_IP
from tests.unit.test_program_backups import run_program as run_with_backups

NODE_IPS = {"srv1": "203.0.113.11", "srv2": "203.0.113.12", "srv3": "203.0.113.13"}


def ruleset_of(script: str) -> str:
    (body,) = re.findall(r'base64 -d > "\$CANDIDATE" <<\'B64\'\n(.*?)\nB64', script, re.S)
    return base64.b64decode("".join(body.split())).decode()


def elements(ruleset: str, name: str) -> set[str]:
    block = re.search(rf"set {name} {{\n(.*?)\n  }}", ruleset, re.S).group(1)
    found = re.search(r"elements = {(.*?)}", block)
    return {e.strip() for e in found.group(1).split(",")} if found else set()


def test_each_node_gets_its_own_ruleset_before_patroni_is_configured():
    prog = run_program({"clientCidrs": ["10.50.0.0/16"]})
    for name, ip in NODE_IPS.items():
        step = prog.named(f"pg-raft-{name}-provision-firewall")
        assert prog.named(f"pg-raft-{name}-provision-install-patroni").urn in step.dependencies
        assert step.urn in prog.named(f"pg-raft-{name}-provision-configure").dependencies
        rules = ruleset_of(step.inputs["stdin"])
        # The addresses come from the domains (the mocks' TEST-NET ones), not the spec.
        assert elements(rules, "other_members") == set(NODE_IPS.values()) - {ip}
        assert elements(rules, "postgres_clients") == {*NODE_IPS.values(), "10.50.0.0/16"}
        assert elements(rules, "admin") == {"192.168.130.0/24"}
        assert "8432" not in rules  # no backups, no pgBackRest server


def test_with_backups_the_nodes_admit_the_repository_and_the_repository_the_nodes():
    prog = run_with_backups({"backups": True, "adminCidrs": ["172.16.9.0/24"]})
    for name in NODE_IPS:
        step = prog.named(f"pg-raft-{name}-provision-firewall")
        rules = ruleset_of(step.inputs["stdin"])
        assert elements(rules, "backup_repository") == {REPO_IP}
        # The libvirt host's own address on the created network is always admitted.
        assert elements(rules, "admin") == {"172.16.9.0/24", "192.168.130.1"}
        # After pgBackRest's install: one package manager at a time.
        assert prog.named(f"pg-raft-{name}-provision-install-pgbackrest").urn \
            in step.dependencies
    repo = prog.named("pg-raft-repository-firewall")
    rules = ruleset_of(repo.inputs["stdin"])
    assert elements(rules, "backup_clients") == {*NODE_IPS.values(), "172.16.9.0/24",
                                                 "192.168.130.1"}
    assert repo.urn in prog.named("pg-raft-repository-configure-pgbackrest").dependencies


def test_firewall_off_means_no_firewall_step_anywhere():
    prog = run_with_backups({"backups": True, "firewall": False})
    assert not [c.name for c in prog.of_type(COMMAND) if c.name.endswith("-firewall")]
    for cmd in prog.of_type(COMMAND):
        assert "nft " not in cmd.inputs["stdin"], cmd.name


def test_an_existing_network_needs_admin_cidrs_before_anything_is_created():
    with pytest.raises(SystemExit) as excinfo:
        run_program({"networkName": "lab"})
    message = str(excinfo.value)
    assert "pgha:adminCidrs" in message and "networkName" in message
    prog = run_program({"networkName": "lab", "adminCidrs": ["192.168.122.0/24"]})
    rules = ruleset_of(prog.named("pg-raft-srv1-provision-firewall").inputs["stdin"])
    assert elements(rules, "admin") == {"192.168.122.0/24"}
    # No clientCidrs on a network the program does not know: PostgreSQL from the members.
    assert elements(rules, "postgres_clients") == set(NODE_IPS.values())


def test_admin_and_client_cidrs_must_be_ipv4_networks():
    with pytest.raises(ConfigError) as excinfo:
        build_spec({"adminCidrs": ["2001:db8::/64", "10.0.0.0/33"],
                    "clientCidrs": ["fd00::/8"]})
    message = str(excinfo.value)
    assert "pgha:adminCidrs = '2001:db8::/64'" in message and "IPv4" in message
    assert "pgha:adminCidrs = '10.0.0.0/33'" in message
    assert "pgha:clientCidrs = 'fd00::/8'" in message
