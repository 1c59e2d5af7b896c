"""The hosts' nftables rulesets: loaded by the real nft into a private network namespace
(never the host's), then read back as nft itself parsed them."""
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from components import firewall
from tests.conftest import skip_or_fail

ADDRESSES = {"srv1": "10.20.0.10", "srv2": "10.20.0.11", "srv3": "10.20.0.12"}
ADMIN = ["10.20.0.0/24"]
CLIENTS = ["192.168.7.0/24", "10.20.0.11"]
REPOSITORY = "10.20.0.9"


def loaded(ruleset: str, admissions: dict[str, str] | None = None) -> dict:
    """Load `ruleset` with nft in a network namespace of its own (twice: replacing the
    table must work as well as creating it) and return {"sets", "rules", "sources"} as
    nft lists them: per port, the addresses admitted and the sets they come from.
    `admissions`: admission files (name -> text) in the directory the ruleset includes,
    which stands in a temporary directory here."""
    if shutil.which("nft") is None or shutil.which("unshare") is None:
        skip_or_fail("nft and unshare are needed (apt-get install nftables util-linux)")
    script = "nft -f /dev/stdin <<<\"$RULES\" && nft -f /dev/stdin <<<\"$RULES\" && " \
             "nft -j list table inet pgha"
    # As root a plain network namespace; otherwise one inside a user namespace.
    unshare = ["unshare", "--net"] if os.geteuid() == 0 else [
        "unshare", "--user", "--map-root-user", "--net"]
    with tempfile.TemporaryDirectory() as included:
        for name, text in (admissions or {}).items():
            Path(included, name).write_text(text)
        p = subprocess.run(
            [*unshare, "bash", "-c", script], capture_output=True, text=True,
            env={"RULES": ruleset.replace(firewall.ADMISSIONS_DIR, included),
                 "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert p.returncode == 0, p.stderr
    items = json.loads(p.stdout)["nftables"]
    sets = {i["set"]["name"]: {e if isinstance(e, str) else
                               f"{e['prefix']['addr']}/{e['prefix']['len']}"
                               for e in i["set"].get("elem", [])}
            for i in items if "set" in i}
    rules: dict[int, set[str]] = {}
    sources: dict[int, set[str]] = {}
    for item in items:
        if "rule" not in item:
            continue
        matches = {m["match"]["left"].get("payload", {}).get("field"): m["match"]["right"]
                   for m in item["rule"]["expr"] if "match" in m}
        if "dport" in matches and "saddr" in matches:
            source = matches["saddr"].lstrip("@")
            rules.setdefault(matches["dport"], set()).update(sets[source])
            sources.setdefault(matches["dport"], set()).add(source)
    chain = next(i["chain"] for i in items if "chain" in i)
    return {"sets": sets, "rules": rules, "sources": sources, "policy": chain["policy"]}


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


def test_members_added_by_scaling_are_admitted_by_their_admission_files_only():
    # The rendered ruleset names the first three nodes; srv4 and srv5 are admitted on
    # PostgreSQL, the REST API and Raft by the files the ruleset includes, and on
    # nothing else.
    ruleset = firewall.node_ruleset("srv1", ADDRESSES, ADMIN, [])
    alone = loaded(ruleset)
    assert alone["sets"][firewall.ELASTIC_SET] == set()
    assert {p for p, s in alone["sources"].items() if firewall.ELASTIC_SET in s} == \
        {5432, 8008, 5010}
    admitted = loaded(ruleset, {"srv4.nft": firewall.render_admission("10.20.0.13"),
                                "srv5.nft": firewall.render_admission("10.20.0.14")})
    assert admitted["sets"][firewall.ELASTIC_SET] == {"10.20.0.13", "10.20.0.14"}
    assert admitted["rules"][5010] == {"10.20.0.11", "10.20.0.12", "10.20.0.13",
                                       "10.20.0.14"}
    assert admitted["rules"][22] == alone["rules"][22]
    # The repository: its pgBackRest server, for the same files.
    repository = loaded(firewall.repository_ruleset(ADDRESSES, ADMIN),
                        {"srv4.nft": firewall.render_admission("10.20.0.13")})
    assert repository["rules"][8432] == {*ADDRESSES.values(), "10.20.0.13"}


def test_an_admission_names_one_ipv4_address():
    assert "{ 10.20.0.13 }" in firewall.render_admission("10.20.0.13")
    with pytest.raises(ValueError):
        firewall.render_admission("10.20.0.0/24")


def test_no_admin_network_means_no_ssh_at_all():
    got = loaded(firewall.node_ruleset("srv1", ADDRESSES, [], []))
    assert got["rules"][22] == set()
