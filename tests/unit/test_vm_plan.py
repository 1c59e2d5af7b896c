"""The VM tier's reading of the program (tests/vm/plan.py), checked fast: the steps it
would run over SSH, their order, and what a changed setting re-runs."""
import subprocess

from tests.vm.lab import Lab
from tests.vm.plan import VmMocks, plan_for
from tests.vm.remote import run_deletes


def vm_plan(tmp_path, **extra):
    image = tmp_path / "image.qcow2"
    image.write_bytes(b"")
    settings = {"clusterName": "vmtest", "osFamily": "debian12", "postgresSource": "distro",
                "postgresVersion": 15, "domainType": "qemu", "networkMode": "none",
                "networkCidr": "10.232.0.0/24", "baseImage": str(image), **extra}
    return settings, plan_for(settings, VmMocks())


def test_steps_connect_to_reserved_addresses_with_real_keys_in_the_programs_order(tmp_path):
    _, plan = vm_plan(tmp_path)
    assert plan.addresses == {"srv1": "10.232.0.10", "srv2": "10.232.0.11",
                              "srv3": "10.232.0.12"}
    assert len(plan.steps) == 3 * 7 + 1
    configure = plan.steps["vmtest-srv2-provision-configure"]
    assert configure.host == "10.232.0.11" and configure.command == "sudo bash -s"
    assert configure.private_key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert configure.host_key.startswith("ssh-ed25519 AAAA")
    assert sorted(configure.after) == ["vmtest-srv2-provision-firewall",
                                       "vmtest-srv2-provision-install-patroni"]
    gate = plan.steps["vmtest-health-gate"]
    assert {f"vmtest-srv{i}-provision-start" for i in (1, 2, 3)} <= set(gate.after)
    # The seed the lab boots is the program's cloud-init, with the pinned host key.
    assert configure.host_key.strip() in plan.seeds["srv2"]["userData"]
    assert '"srv1": "10.232.0.10"' in plan.health_probe
    assert len(plan.outputs["passwords"]["superuser_password"]) == 32


def test_a_parameter_change_reruns_only_configure_and_the_gate_with_the_same_secrets(
        tmp_path):
    settings, _ = vm_plan(tmp_path)
    mocks = VmMocks()
    before = plan_for(settings, mocks)
    assert plan_for(settings, mocks).steps_changed_since(before) == []
    after = plan_for({**settings, "postgresParameters": {"work_mem": "6MB"}}, mocks)
    assert sorted(after.steps_changed_since(before)) == sorted(
        [f"vmtest-srv{i}-provision-configure" for i in (1, 2, 3)] + ["vmtest-health-gate"])
    assert after.outputs["passwords"] == before.outputs["passwords"]


def test_the_nodes_certificates_are_real_and_name_their_reserved_address(tmp_path):
    """What the VM tier installs is what PostgreSQL and Patroni will load: a key and a
    certificate that match, signed by the CA the stack exports, for the node's address."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from tests.unit.test_rendering import installed_files
    _, plan = vm_plan(tmp_path)
    ca = x509.load_pem_x509_certificate(plan.outputs["caCertificate"].encode())
    for name, ip in plan.addresses.items():
        files = installed_files(plan.steps[f"vmtest-{name}-provision-configure"].script)
        cert = x509.load_pem_x509_certificate(
            files["/etc/patroni/tls/server.crt"][1].encode())
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert ipaddress.ip_address(ip) in sans.get_values_for_type(x509.IPAddress)
        assert name in sans.get_values_for_type(x509.DNSName)
        key = serialization.load_pem_private_key(
            files["/etc/patroni/tls/server.key"][1].encode(), None)
        assert key.public_key().public_numbers() == cert.public_key().public_numbers()
        assert files["/etc/patroni/tls/ca.crt"][1] == plan.outputs["caCertificate"]


class RecordingSsh:
    """Stands in for tests/vm/remote.Ssh: records which command ran for which step."""

    def __init__(self):
        self.ran: list[tuple[str, str]] = []

    def run(self, step, command, stdin="", **_):
        self.ran.append((step.name, command))
        return subprocess.CompletedProcess([], 0, "pgha: changed: x\n", "")


def test_a_shrink_deletes_what_up_deletes_in_reverse_dependency_order(tmp_path):
    settings, _ = vm_plan(tmp_path, backups=True)
    mocks = VmMocks()
    five = plan_for({**settings, "nodeCount": 5}, mocks)
    three = plan_for(settings, mocks)
    removed = three.steps_removed_since(five)
    assert all("-srv4-" in n or "-srv5-" in n for n in removed), sorted(removed)
    ssh = RecordingSsh()
    run_deletes(ssh, removed)
    ran = [name.removeprefix("vmtest-") for name, _ in ssh.ran]
    # Only the steps with a delete command run, with it: each departing node leaves Raft
    # (on itself), is forgotten (on the first node), the last added first; then every
    # other host's firewall stops admitting it.
    assert {command for _, command in ssh.ran} == {"sudo bash -s delete"}
    assert ran[:4] == ["srv5-provision-raft-leave", "srv5-provision-raft-forget",
                       "srv4-provision-raft-leave", "srv4-provision-raft-forget"], ran
    admissions = sorted(ran[4:])
    assert admissions == sorted(f"{n}-admitted-by-{h}" for n in ("srv4", "srv5")
                                for h in ("srv1", "srv2", "srv3", "srv4", "srv5",
                                          "repository") if h != n), ran


class RecordingHost:
    """The lab's libvirt host as far as the network goes: what it was told to do."""
    def __init__(self):
        self.networks: list[str] = []
        self.calls: list[tuple[str, ...]] = []

    def define_network(self, xml: str) -> None:
        self.networks.append(xml)

    def virsh(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        self.calls.append(args)
        return ""


def test_added_nodes_get_their_reserved_address_and_removed_ones_give_it_back(tmp_path):
    # As the libvirt provider does for an interface with fixed addresses: a DHCP host
    # entry in the network when the domain is created, gone when it is destroyed.
    settings, three = vm_plan(tmp_path)
    five = plan_for({**settings, "nodeCount": 5}, VmMocks())
    lab = Lab("feed01", "10.232.0.0/24", tmp_path)
    lab.host = RecordingHost()
    lab.create_network(three.network, three.domains)
    assert [line.count("<host ") for line in lab.host.networks] == [3]
    for name in five.domains:
        lab._update_reservations(five.domains[name], "add")
    added = [c for c in lab.host.calls if c[:3] == ("net-update", three.network["name"], "add")]
    # (The mocked program registers domains in no fixed order.)
    assert sorted(c[4] for c in added) == sorted(
        f"<host mac=\"{five.domains[n]['networkInterfaces'][0]['mac']}\" name=\"{n}\" "
        f"ip=\"10.232.0.{ip}\"/>" for n, ip in (("srv4", 13), ("srv5", 14)))
    assert all(c[3] == "ip-dhcp-host" and c[5:] == ("--live", "--config") for c in added)
    lab.host.calls.clear()
    lab._update_reservations(five.domains["srv5"], "delete")
    lab._update_reservations(five.domains["srv5"], "delete")  # once only
    assert [c[2] for c in lab.host.calls] == ["delete"]
    assert "10.232.0.14" in lab.host.calls[0][4]
