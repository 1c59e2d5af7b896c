"""The firewall on real VMs, as the program's steps left it: in force on every host and
loaded at boot; the lab (the libvirt host's side of the network: an admin network and a
PostgreSQL client, not a member) reaches SSH, PostgreSQL and the REST API but no Raft
port; the repository VM, a host on the same network that is not a member, reaches no
Raft port either, while the members reach each other's. The power-loss scenarios that
follow run behind the same rules."""
from components.backup import TLS_PORT
from components.config import POSTGRES_PORT, RAFT_PORT, REPOSITORY_NAME, RESTAPI_PORT
from tests import netns


def reachable_from_lab(c, ip: str, port: int) -> bool:
    """A TCP handshake from the lab's namespace within 3 s (a dropped SYN times out)."""
    return c.in_ns(netns.tcp_connects, ip, port, 3, timeout=15)


def reachable_from_host(c, host: str, ip: str, port: int) -> bool:
    p = c.sh(host, f"timeout 3 bash -c '</dev/tcp/{ip}/{port}'", timeout=30)
    return p.returncode == 0


def test_the_firewall_admits_the_cluster_and_keeps_raft_to_the_members(vm_cluster):
    c = vm_cluster
    c.wait_healthy()
    for name, ip in c.addresses.items():
        loaded = c.sh(name, "sudo nft list table inet pgha >/dev/null && "
                            "systemctl is-enabled pgha-firewall.service")
        assert loaded.returncode == 0 and loaded.stdout.strip() == "enabled", loaded
        lab = {port: reachable_from_lab(c, ip, port)
               for port in (22, POSTGRES_PORT, RESTAPI_PORT, RAFT_PORT)}
        assert lab == {22: True, POSTGRES_PORT: True, RESTAPI_PORT: True,
                       RAFT_PORT: False}, (name, lab)
        others = [n for n in c.names if n != name]
        assert all(reachable_from_host(c, other, ip, RAFT_PORT) for other in others), name
        if c.spec.backups:
            # pgBackRest's server listens on every node, for the repository alone.
            assert not reachable_from_lab(c, ip, TLS_PORT), name
            assert reachable_from_host(c, REPOSITORY_NAME, ip, TLS_PORT), name
            assert not reachable_from_host(c, REPOSITORY_NAME, ip, RAFT_PORT), name
