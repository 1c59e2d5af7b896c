"""Scenario 1: a 3-node cluster forms from the product's patroni.yml."""
from __future__ import annotations

from tests.realcluster import harness as h


def test_cluster_forms_with_checksums_sync_standby_and_full_raft_membership(make_cluster):
    c = make_cluster(3)
    formation = c.formed_at - c.created_at
    leader, why = c.health()
    assert leader, why
    statuses = c.statuses()
    replicas = [n for n in c.nodes if n != leader]
    assert all(statuses[n]["replication_state"] == "streaming" for n in replicas), statuses
    assert c.sync_standbys(), "synchronous_mode is on by default: a sync standby is named"
    assert c.rest(leader, "/primary")[0] == 200
    for n in replicas:
        assert c.rest(n, "/replica")[0] == 200
        assert c.rest(n, "/primary")[0] == 503
    for name in c.nodes:
        assert c.sql(name, "SHOW data_checksums") == "on", name
        assert c.sql(name, "SHOW wal_sender_timeout") == "10s", name

    raft = {name: c.raft_status(name) for name in c.nodes}
    leaders = {s.get("leader") for s in raft.values()}
    assert len(leaders) == 1 and None not in leaders and "None" not in leaders, raft
    for name, status in raft.items():
        assert status["has_quorum"] == "True", (name, status)
        assert status["partner_nodes_count"] == str(len(c.nodes) - 1), (name, status)
        partners = {k.rsplit("_", 1)[1]: v for k, v in status.items()
                    if k.startswith("partner_node_status_server_")}
        expected = {f"{c.nodes[n].ip}:5010" for n in c.nodes if n != name}
        assert set(partners) == expected, (name, partners)
        assert all(v == "2" for v in partners.values()), (name, partners)  # 2 = connected
    print(f"formation {formation:.1f}s (namespaces + 3 x initdb/basebackup + election)")
    assert formation < 180
    assert h.CLIENT_IP not in c.addresses.values()
