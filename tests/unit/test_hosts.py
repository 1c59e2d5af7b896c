"""Several libvirt hosts: the `hosts` list checked entry by entry, the placement (round-
robin, explicit, the repository's), and the refusal of a placement where losing one host
stops the cluster, with the numbers, unless acknowledged."""
import pytest

from components.config import ConfigError, build_spec
from components.hosts import majority_problem

HOSTS = [{"name": f"hv{i}", "uri": f"qemu+ssh://root@hv{i}/system", "bridge": "br0"}
         for i in (1, 2, 3)]
ON_HOSTS = {"hosts": HOSTS, "networkCidr": "10.20.0.0/24"}


def problems(settings: dict) -> list[str]:
    with pytest.raises(ConfigError) as error:
        build_spec(settings)
    return error.value.problems


def test_nodes_go_round_robin_and_the_repository_to_a_host_with_the_fewest():
    spec = build_spec({**ON_HOSTS, "nodeCount": 5, "backups": True})
    assert [(n.name, n.host, n.address) for n in spec.nodes] == [
        ("srv1", "hv1", "10.20.0.10"), ("srv2", "hv2", "10.20.0.11"),
        ("srv3", "hv3", "10.20.0.12"), ("srv4", "hv1", "10.20.0.13"),
        ("srv5", "hv2", "10.20.0.14")]
    # Counted over the first three nodes only: scaling never moves the repository.
    assert spec.repository.host == "hv1" and spec.repository.address == "10.20.0.9"
    four = build_spec({**ON_HOSTS, "backups": True, "hosts": [
        *HOSTS, {"name": "hv4", "uri": "qemu+tls://hv4/system", "network": "lan"}]})
    assert four.repository.host == "hv4"
    assert not four.creates_network and four.knows_addresses


def test_an_explicit_placement_wins_and_unplaced_nodes_go_round_robin():
    spec = build_spec({**ON_HOSTS, "backups": True,
                       "placement": {"srv1": "hv3", "srv3": "hv1", "repository": "hv2"}})
    assert spec.placement == {"srv1": "hv3", "srv2": "hv2", "srv3": "hv1",
                              "repository": "hv2"}


@pytest.mark.parametrize("settings, line", [
    ({"hosts": HOSTS[:2]},
     "pgha:placement = {'hv1': ['srv1', 'srv3'], 'hv2': ['srv2']}: losing host hv1 "
     "stops 2 of 3 nodes (srv1, srv3) and leaves 1, short of the Raft majority of 2"),
    ({"nodeCount": 5, "placement": {"srv2": "hv1", "srv3": "hv1"}},
     "pgha:placement = {'hv1': ['srv1', 'srv2', 'srv3', 'srv4'], 'hv2': ['srv5'], "
     "'hv3': []}: losing host hv1 stops 4 of 5 nodes"),
    ({"hosts": HOSTS[:1]}, "losing host hv1 stops 3 of 3 nodes"),
])
def test_a_host_holding_a_majority_is_refused_with_the_numbers_unless_acknowledged(
        settings, line):
    stack = {**ON_HOSTS, **settings}
    (found,) = [p for p in problems(stack) if p.startswith("pgha:placement")]
    assert line in found and "pgha:allowHostMajority true" in found
    build_spec({**stack, "allowHostMajority": True})


def test_losing_any_one_host_keeps_a_majority_when_no_host_holds_one():
    nodes = [f"srv{i}" for i in range(1, 6)]
    spread = dict(zip(nodes, ["hv1", "hv2", "hv3", "hv1", "hv2"]))
    assert majority_problem(spread, nodes) is None
    assert "stops 3 of 5" in majority_problem({**spread, "srv3": "hv1"}, nodes)


@pytest.mark.parametrize("host, line", [
    ({"name": "HV1", "uri": "qemu:///system", "bridge": "br0"}, "pgha:hosts[0].name = 'HV1'"),
    ({"name": "hv1", "uri": "http://hv1", "bridge": "br0"}, "pgha:hosts[0].uri = 'http://hv1'"),
    ({"name": "hv1", "uri": "qemu:///system"}, "pgha:hosts[0] = 'none': exactly one of"),
    ({"name": "hv1", "uri": "qemu:///system", "bridge": "br0", "network": "lan"},
     "pgha:hosts[0] = ['bridge', 'network']: exactly one of"),
    ({"name": "hv1", "uri": "qemu:///system", "bridge": "br0", "jump": "x"},
     "pgha:hosts[0] = ['jump']: unknown keys"),
    ({"name": "hv1", "uri": "qemu:///system", "bridge": "br0", "storagePool": "a b"},
     "pgha:hosts[0].storagePool = 'a b'"),
])
def test_each_host_entry_is_checked_naming_the_entry_and_the_value(host, line):
    found = problems({**ON_HOSTS, "hosts": [host, *HOSTS[1:]]})
    assert [p for p in found if p.startswith(line)], found


def test_a_host_listed_twice_is_refused():
    twice = [*HOSTS, {**HOSTS[0], "name": "hv4"}]
    (line,) = problems({**ON_HOSTS, "hosts": twice})
    assert line.startswith("pgha:hosts.uri = 'qemu+ssh://root@hv1/system': each host "
                           "once: hv1 and hv4 both say it")


def test_placement_names_known_nodes_and_hosts():
    found = problems({**ON_HOSTS, "placement": {"srv9": "hv1", "srv1": "hv7",
                                                "repository": "hv1"}})
    assert "pgha:placement = 'srv9': not a node of this stack; nodes: srv1, srv2, srv3" \
        in found
    assert "pgha:placement.srv1 = 'hv7': not a listed host; hosts: hv1, hv2, hv3" in found
    # The repository is a placeable name only with backups on.
    assert [p for p in found if p.startswith("pgha:placement = 'repository'")]


def test_the_lan_settings_are_checked_and_need_hosts():
    found = problems({**ON_HOSTS, "networkGateway": "10.20.0.10",
                      "networkDns": ["dns.example"], "libvirtUri": "qemu+ssh://x/system",
                      "networkName": "lan", "adminCidrs": ["10.20.0.0/24"]})
    assert [p for p in found if p.startswith("pgha:networkGateway = '10.20.0.10': a node's "
                                             "own address")]
    assert "pgha:networkDns = 'dns.example': IPv4 addresses of DNS servers" in found
    assert [p for p in found if p.startswith("pgha:libvirtUri = 'qemu+ssh://x/system': not "
                                             "with hosts")]
    assert [p for p in found if p.startswith("pgha:networkName = 'lan': not with hosts")]
    outside = problems({**ON_HOSTS, "networkGateway": "10.30.0.1"})
    assert outside == ["pgha:networkGateway = '10.30.0.1': an address in networkCidr "
                       "10.20.0.0/24"]
    for key, value in (("placement", {"srv1": "hv1"}), ("allowHostMajority", True),
                       ("networkGateway", "192.168.130.1"), ("networkDns", ["10.0.0.2"])):
        (line,) = problems({key: value})
        assert line.startswith(f"pgha:{key} = ") and "only with hosts" in line


def test_the_lan_may_be_any_unicast_range_but_not_a_reserved_one():
    build_spec({**ON_HOSTS, "networkCidr": "192.168.122.0/24"})  # libvirt's own: not here
    build_spec({**ON_HOSTS, "networkCidr": "100.64.10.0/24"})
    (line,) = problems({**ON_HOSTS, "networkCidr": "169.254.10.0/24"})
    assert line.startswith("pgha:networkCidr = '169.254.10.0/24': the hosts' LAN")


JUMP_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHypervisorKeyOfHv1"


def test_an_ssh_jump_needs_the_servers_pinned_host_key():
    jumped = {**HOSTS[0], "sshJump": "root@hv1.example.net:2222", "sshJumpHostKey": JUMP_KEY}
    (host, *_) = build_spec({**ON_HOSTS, "hosts": [jumped, *HOSTS[1:]]}).hosts
    assert (host.jump_user, host.jump_host, host.jump_port) == ("root", "hv1.example.net",
                                                                 2222)
    found = problems({**ON_HOSTS, "hosts": [{**jumped, "sshJumpHostKey": ""}, *HOSTS[1:]]})
    assert [p for p in found if p.startswith("pgha:hosts[0].sshJumpHostKey = '': with "
                                             "sshJump: that server's public host key")]
    found = problems({**ON_HOSTS, "hosts": [{**jumped, "sshJump": "hv1"}, *HOSTS[1:]]})
    assert [p for p in found if p.startswith("pgha:hosts[0].sshJump = 'hv1': user@host")]
    found = problems({**ON_HOSTS, "hosts": [{**HOSTS[0], "sshJumpHostKey": JUMP_KEY},
                                            *HOSTS[1:]]})
    assert [p for p in found if p.startswith("pgha:hosts[0].sshJumpHostKey = ")
            and p.endswith("only with sshJump")]


def test_with_hosts_the_lan_cidr_is_said_explicitly():
    (line,) = problems({"hosts": HOSTS})
    assert line.startswith("pgha:networkCidr = '192.168.130.0/24': with hosts: the CIDR of "
                           "the LAN the hosts' bridges are on, said explicitly")


def test_the_first_node_address_places_the_nodes_and_the_repository_before_them():
    spec = build_spec({**ON_HOSTS, "backups": True, "nodeCount": 5,
                       "firstNodeAddress": "10.20.0.100"})
    assert [n.address for n in spec.nodes] == [f"10.20.0.{100 + i}" for i in range(5)]
    assert spec.repository.address == "10.20.0.99"
    (line,) = problems({**ON_HOSTS, "firstNodeAddress": "10.20.0.250"})
    assert line.startswith("pgha:firstNodeAddress = '10.20.0.250': an address in "
                           "networkCidr 10.20.0.0/24 with the one before it")
    assert line.endswith("inside it too: 10.20.0.249..10.20.1.0"), line
    (line,) = problems({**ON_HOSTS, "firstNodeAddress": "10.20.0.101",
                        "networkGateway": "10.20.0.102"})
    assert line == ("pgha:networkGateway = '10.20.0.102': a node's own address (nodes "
                    "start at firstNodeAddress 10.20.0.101)")
    (line,) = problems({"firstNodeAddress": "10.20.0.100"})
    assert "only with hosts" in line
