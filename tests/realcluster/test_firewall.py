"""The program's nftables ruleset in force on every node of a real cluster: the cluster
forms, fails over and rewinds through it; from outside the members' addresses Raft and
the REST API cannot be reached, and PostgreSQL only from the allowed clients; replacing
the rules does not cut established replication."""
from __future__ import annotations

from components import firewall
from tests import netns
from tests.realcluster import harness as h
from tests.realcluster.conftest import describe

OUTSIDER_IP = "10.199.0.4"  # on the cluster's network, in no allowed list
PORTS = {"postgres": 5432, "restapi": 8008, "raft": 5010}


class FirewalledCluster(h.Cluster):
    """Every node behind its rendered ruleset. The client namespace stands for the admin
    network and the PostgreSQL clients (clientCidrs); the outsider is neither."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.net.members["outsider"] = OUTSIDER_IP

    def before_patroni(self) -> None:
        for name in self.nodes:
            self.load_firewall(name)

    def load_firewall(self, name: str) -> None:
        ruleset = firewall.node_ruleset(name, self.addresses, [h.CLIENT_IP], [h.CLIENT_IP])
        h.run(["ip", "netns", "exec", self.nodes[name].ns, "nft", "-f", "-"],
              input=ruleset)

    def reachable(self, from_ns: str, ip: str, port: int) -> bool:
        """A TCP handshake from namespace `from_ns` to ip:port within 2 s (a dropped SYN
        times out)."""
        with netns.executor(from_ns, workers=1) as pool:
            return pool.submit(netns.tcp_connects, ip, port, 2).result(timeout=10)


def reach_map(c: FirewalledCluster, from_ns: str) -> dict[tuple[str, str], bool]:
    return {(name, port): c.reachable(from_ns, node.ip, number)
            for name, node in c.nodes.items() for port, number in PORTS.items()}


def test_the_cluster_runs_and_fails_over_behind_the_firewall_and_outsiders_are_shut_out(
        make_cluster):
    c = make_cluster(3, cls=FirewalledCluster)
    everything = {(n, p) for n in c.nodes for p in PORTS}
    # The client (admin network and a PostgreSQL client): PostgreSQL and REST, not Raft.
    assert {k for k, ok in reach_map(c, c.net.ns("client")).items() if ok} == \
        {(n, p) for n, p in everything if p != "raft"}
    # The outsider: nothing at all.
    assert not any(reach_map(c, c.net.ns("outsider")).values())
    # A member reaches every other member on every port, Raft included.
    first = next(iter(c.nodes))
    assert {k for k, ok in reach_map(c, c.nodes[first].ns).items() if ok} >= \
        {(n, p) for n, p in everything if n != first}

    # The reference post's experiment through the firewall: the leader's cable pulled,
    # a new leader, and the old one back by pg_rewind once the cable is back.
    r = h.scenario_leader_failure(c, "cut", c.profile)
    why = describe(r)
    assert r.new_leader and r.new_leader != r.old_leader, why
    assert r.lost_ids == [], f"acknowledged writes lost: {r.lost_ids}\n{why}"
    assert r.overlaps == [], f"two writable primaries at once: {r.overlaps[:5]}\n{why}"
    assert r.notes["rejoined_by"] == "pg_rewind", why

    # Rules rewritten on every node (as a membership or settings change would): the
    # replicas' connections to the leader are the same ones before and after.
    leader = c.wait_healthy()
    query = ("SELECT string_agg(application_name || '@' || backend_start, ',' ORDER BY "
             "application_name) FROM pg_stat_replication")
    before = c.sql(leader, query)
    for name in c.nodes:
        c.load_firewall(name)
    assert c.wait_healthy() == leader
    assert c.sql(leader, query) == before
    assert len(before.split(",")) == len(c.nodes) - 1, before
