"""The hosts' nftables rulesets: loaded by the real nft into a private network namespace
(never the host's), then read back as nft itself parsed them."""
import json
import os
import shutil
import subprocess

import pytest

from components import firewall
from tests.conftest import skip_or_fail

ADDRESSES = {"srv1": "10.20.0.10", "srv2": "10.20.0.11", "srv3": "10.20.0.12"}
ADMIN = ["10.20.0.0/24"]
CLIENTS = ["192.168.7.0/24", "10.20.0.11"]
REPOSITORY = "10.20.0.9"


def loaded(ruleset: str) -> dict:
    """Load `ruleset` with nft in a network namespace of its own (twice: replacing the
    table must work as well as creating it) and return {"sets", "rules"} as nft lists
    them."""
    if shutil.which("nft") is None or shutil.which("unshare") is None:
        skip_or_fail("nft and unshare are needed (apt-get install nftables util-linux)")
    script = "nft -f /dev/stdin <<<\"$RULES\" && nft -f /dev/stdin <<<\"$RULES\" && " \
             "nft -j list table inet pgha"
    # As root a plain network namespace; otherwise one inside a user namespace.
    unshare = ["unshare", "--net"] if os.geteuid() == 0 else [
        "unshare", "--user", "--map-root-user", "--net"]
    p = subprocess.run([*unshare, "bash", "-c", script], capture_output=True,
                       text=True, env={"RULES": ruleset, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert p.returncode == 0, p.stderr
    items = json.loads(p.stdout)["nftables"]
    sets = {i["set"]["name"]: {e if isinstance(e, str) else
                               f"{e['prefix']['addr']}/{e['prefix']['len']}"
                               for e in i["set"].get("elem", [])}
            for i in items if "set" in i}
    rules = {}
    for item in items:
        if "rule" not in item:
            continue
        matches = {m["match"]["left"].get("payload", {}).get("field"): m["match"]["right"]
                   for m in item["rule"]["expr"] if "match" in m}
        if "dport" in matches and "saddr" in matches:
            rules[matches["dport"]] = sets[matches["saddr"].lstrip("@")]
    chain = next(i["chain"] for i in items if "chain" in i)
    return {"sets": sets, "rules": rules, "policy": chain["policy"]}


@pytest.mark.parametrize("node", list(ADDRESSES))
def test_each_node_admits_raft_only_from_the_other_members(node):
    got = loaded(firewall.node_ruleset(node, ADDRESSES, ADMIN, CLIENTS))
    others = {ip for name, ip in ADDRESSES.items() if name != node}
    assert got["policy"] == "drop"
    assert got["rules"] == {
        22: {"10.20.0.0/24"},
        5432: {*ADDRESSES.values(), "192.168.7.0/24"},  # 10.20.0.11 is a member already
        8008: {"10.20.0.0/24"},  # the admin network holds the members
        5010: others,
    }


def test_the_repository_alone_reaches_a_nodes_pgbackrest_server():
    got = loaded(firewall.node_ruleset("srv2", ADDRESSES, ["172.16.5.0/24"], [],
                                       repository=REPOSITORY))
    assert got["rules"][8432] == {REPOSITORY}
    assert got["rules"][8008] == {*ADDRESSES.values(), "172.16.5.0/24"}
    assert got["rules"][5432] == set(ADDRESSES.values())


def test_the_repository_admits_the_members_and_its_clones_networks_only():
    got = loaded(firewall.repository_ruleset(ADDRESSES, ADMIN, ["10.30.0.0/24"]))
    assert got["policy"] == "drop"
    assert got["rules"] == {22: {"10.20.0.0/24"},
                            8432: {*ADDRESSES.values(), "10.30.0.0/24"}}


def test_no_admin_network_means_no_ssh_at_all():
    got = loaded(firewall.node_ruleset("srv1", ADDRESSES, [], []))
    assert got["rules"][22] == set()
