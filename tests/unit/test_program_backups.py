"""The Pulumi program with backups on, under mocks: the repository VM and its disk, the
TLS identities, the steps and their order, secrets, outputs, and the restore flow."""
import base64
import json
import re

import pulumi
import yaml

from components import backup
from tests.pulumi_mocks import COMMAND, DOMAIN, VOLUME, Program
from tests.pulumi_mocks import run_program as run_mocked
from tests.unit.test_program import CERT_TYPES
from tests.unit.test_program import Mocks as ClusterMocks

REPO_IP = "203.0.113.9"


class Mocks(ClusterMocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        if args.typ == DOMAIN and args.name.endswith("-repository-domain"):
            outputs = dict(args.inputs)
            outputs["networkInterfaces"] = [{**args.inputs["networkInterfaces"][0],
                                             "addresses": [REPO_IP]}]
            return f"{args.name}_id", outputs
        if args.typ == COMMAND and args.name.endswith("-init-backups"):
            return f"{args.name}_id", {**args.inputs, "stdout": "pgha: last backup "
                                       "20261126-101010F\npgha: changed: x", "stderr": ""}
        return super().new_resource(args)


def run_program(settings: dict) -> Program:
    return run_mocked(settings, Mocks())


ON = {"backups": True}
REPO_STEPS = ("prepare", "install-pgbackrest", "mount-data-disk", "configure-pgbackrest")


def decoded_files(script: str) -> dict[str, str]:
    """Every file a provisioning script installs, by destination."""
    files = {}
    for dest, body in re.findall(r"install_file (\S+) \S+ \S+ <<'B64'[^\n]*\n(.*?)\nB64",
                                 script, re.S):
        files[dest] = base64.b64decode("".join(body.split())).decode()
    return files


def test_backups_off_creates_no_repository_certificate_or_backup_step():
    prog = run_program({})
    names = [r.name for r in prog.registrations]
    assert not [n for n in names if "repository" in n or "pgbackrest" in n or "restore" in n]
    # The cluster's own CA and node certificates (TLS) are not the repository's.
    assert not [r for r in prog.registrations if r.type in CERT_TYPES
                and "-repository-" in r.name]
    for cmd in prog.of_type(COMMAND):
        assert "pgbackrest" not in cmd.inputs["stdin"], cmd.name
    assert "backupRepositoryHost" not in prog.namespace


def test_repository_vm_has_its_own_data_disk_and_smaller_size():
    prog = run_program({**ON, "backupRepoDiskGib": 30, "backupRepoMemoryMib": 768})
    domains = {d.name: d for d in prog.of_type(DOMAIN)}
    assert len(domains) == 4
    repo = domains["pg-raft-repository-domain"]
    assert repo.inputs["memory"] == 768 and repo.inputs["vcpu"] == 1
    assert len(repo.inputs["disks"]) == 2
    data = prog.named("pg-raft-repository-data-disk")
    assert data.inputs["size"] == 30 * 1024 ** 3 and "baseVolumeId" not in data.inputs
    assert repo.inputs["disks"][1]["volumeId"] == "pg-raft-repository-data-disk_id"
    # The repository gets the reservation just below the first node's.
    nic = repo.inputs["networkInterfaces"][0]
    assert nic["addresses"] == ["192.168.130.9"]
    for name, domain in domains.items():
        if name != "pg-raft-repository-domain":
            assert len(domain.inputs["disks"]) == 1, name
    assert len(prog.of_type(VOLUME)) == 3 + 1 + 2  # nodes, base image, repository's two


def test_repository_steps_run_in_order_and_before_any_node_starts():
    prog = run_program(ON)
    for before, after in zip(REPO_STEPS, REPO_STEPS[1:]):
        assert prog.named(f"pg-raft-repository-{before}").urn in \
            prog.named(f"pg-raft-repository-{after}").dependencies
    repo_configure = prog.named("pg-raft-repository-configure-pgbackrest")
    for i in (1, 2, 3):
        node = f"pg-raft-srv{i}-provision"
        assert repo_configure.urn in prog.named(f"{node}-start").dependencies
        assert prog.named(f"{node}-install-patroni").urn in \
            prog.named(f"{node}-install-pgbackrest").dependencies
        assert prog.named(f"{node}-configure-pgbackrest").urn in \
            prog.named(f"{node}-configure").dependencies
    init = prog.named("pg-raft-repository-init-backups")
    assert prog.named("pg-raft-health-gate").urn in init.dependencies


def test_each_host_gets_its_own_certificate_named_as_its_peers_admit():
    prog = run_program(ON)
    requests = {r.name: r.inputs for r in prog.of_type("tls:index/certRequest:CertRequest")
                if "-repository-" in r.name}
    expected = {"repository": (backup.repo_client_name("pg-raft"), REPO_IP),
                **{f"srv{i}": (backup.node_client_name("pg-raft"),
                               f"203.0.113.{10 + i}") for i in (1, 2, 3)}}
    assert set(requests) == {f"pg-raft-repository-{h}-tls-request"
                             for h in [*expected, "clone"]}
    # Another stack's clone only dials out: a client name and no address.
    clone_request = requests["pg-raft-repository-clone-tls-request"]
    assert clone_request["subject"]["commonName"] == backup.clone_client_name("pg-raft")
    assert not clone_request.get("ipAddresses") and not clone_request.get("dnsNames")
    for host, (cn, ip) in expected.items():
        inputs = requests[f"pg-raft-repository-{host}-tls-request"]
        assert inputs["subject"]["commonName"] == cn
        assert inputs["ipAddresses"] == [ip] and inputs["dnsNames"] == [ip]
    (ca,) = [c for c in prog.of_type("tls:index/selfSignedCert:SelfSignedCert")
             if "-repository-" in c.name]
    assert ca.inputs["isCaCertificate"] is True
    for cert in (c for c in prog.of_type("tls:index/locallySignedCert:LocallySignedCert")
                 if "-repository-" in c.name):
        assert "client_auth" in cert.inputs["allowedUses"]
        assert "server_auth" in cert.inputs["allowedUses"]


def test_configs_point_at_the_repository_and_every_node():
    prog = run_program(ON)
    repo_files = decoded_files(
        prog.named("pg-raft-repository-configure-pgbackrest").inputs["stdin"])
    repo_conf = repo_files["/etc/pgbackrest/pgbackrest.conf"]
    for i in (1, 2, 3):
        assert f"pg{i}-host=203.0.113.{10 + i}" in repo_conf
    assert "repo1-cipher-pass=pw-pg-raft-repository-passphrase" in repo_conf
    assert "/etc/systemd/system/pgha-backup-full.timer" in repo_files
    for i in (1, 2, 3):
        files = decoded_files(prog.named(f"pg-raft-srv{i}-provision-configure-pgbackrest")
                              .inputs["stdin"])
        conf = files["/etc/pgbackrest/pgbackrest.conf"]
        assert f"repo1-host={REPO_IP}" in conf and "cipher-pass" not in conf
        assert files["/etc/pgbackrest/tls/server.key"] == \
            f"PRIVATE KEY of pg-raft-repository-srv{i}-tls-key"
        patroni = yaml.safe_load(decoded_files(
            prog.named(f"pg-raft-srv{i}-provision-configure").inputs["stdin"])
            ["/etc/patroni/patroni.yml"])
        params = patroni["bootstrap"]["dcs"]["postgresql"]["parameters"]
        assert params["archive_mode"] == "on"
        assert "archive-push" in params["archive_command"]
        assert patroni["postgresql"]["create_replica_methods"] == ["pgbackrest", "basebackup"]
        assert "method" not in patroni["bootstrap"]  # no restore asked for


def test_keys_passphrase_and_scripts_holding_them_are_secret():
    prog = run_program(ON)
    for name in ["pg-raft-repository-configure-pgbackrest",
                 *(f"pg-raft-srv{i}-provision-configure-pgbackrest" for i in (1, 2, 3))]:
        cmd = prog.named(name)
        assert "stdin" in cmd.secret_keys, name
        assert {"stdout", "stderr"} <= cmd.additional_secret_outputs, name
    for cmd in prog.of_type(COMMAND):
        if "stdin" not in cmd.secret_keys:
            assert "PRIVATE KEY" not in cmd.inputs["stdin"], cmd.name
            assert "pw-pg-raft-repository-passphrase" not in cmd.inputs["stdin"], cmd.name


def test_unencrypted_repository_has_no_passphrase():
    prog = run_program({**ON, "backupEncrypt": False})
    assert not [r for r in prog.registrations if r.name.endswith("-passphrase")]
    conf = decoded_files(prog.named("pg-raft-repository-configure-pgbackrest")
                         .inputs["stdin"])["/etc/pgbackrest/pgbackrest.conf"]
    assert "cipher" not in conf


def test_outputs_name_the_repository_and_the_first_backup():
    prog = run_program(ON)
    ns = prog.namespace
    cluster = ns["cluster"]
    assert prog.resolve(cluster.repository_ip) == REPO_IP
    assert prog.resolve(cluster.backup_label) == "20261126-101010F"


def test_restore_target_resets_every_node_after_the_check_then_starts_them_all():
    prog = run_program({**ON, "restoreTarget": "time:2026-11-26 14:05:00+00"})
    check = prog.named("pg-raft-restore-check")
    assert "TARGET_EPOCH=1795701900" in check.inputs["stdin"]
    resets = [prog.named(f"pg-raft-srv{i}-provision-restore-reset") for i in (1, 2, 3)]
    starts = [prog.named(f"pg-raft-srv{i}-provision-restore-start") for i in (1, 2, 3)]
    for i, reset in enumerate(resets, start=1):
        assert check.urn in reset.dependencies
        assert prog.named(f"pg-raft-srv{i}-provision-start").urn in reset.dependencies
        assert "rm -rf /var/lib/pgsql/14/data /var/lib/pgha/raft" in reset.inputs["stdin"]
        # A brand-new stack never starts Patroni before the repository proved the target.
        assert check.urn in prog.named(f"pg-raft-srv{i}-provision-start").dependencies
    for start in starts:
        assert {r.urn for r in resets} <= start.dependencies
    gate = prog.named("pg-raft-health-gate")
    assert {s.urn for s in starts} <= gate.dependencies
    assert "time:2026-11-26 14:05:00+00" in json.dumps(gate.inputs["triggers"])
    patroni = yaml.safe_load(decoded_files(
        prog.named("pg-raft-srv1-provision-configure").inputs["stdin"])
        ["/etc/patroni/patroni.yml"])
    method = patroni["bootstrap"]["method"]
    assert method == backup.RESTORE_METHOD
    assert "'--target=2026-11-26 14:05:00+00'" in patroni["bootstrap"][method]["command"]
    # The new leader archives where its timeline begins before any replica restores.
    assert patroni["bootstrap"]["post_bootstrap"] == (
        "/usr/local/sbin/pgha-after-restore 120 /usr/pgsql-14/bin/psql")
