import json

import pytest

from components.config import SETTINGS, ConfigError, build_spec


def problems_for(**raw) -> list[str]:
    with pytest.raises(ConfigError) as excinfo:
        build_spec(raw)
    return excinfo.value.problems


def test_defaults_match_the_reference_deployment():
    spec = build_spec({})
    assert spec.node_names == ["srv1", "srv2", "srv3"]
    assert (spec.ttl, spec.loop_wait, spec.retry_timeout) == (30, 10, 10)
    assert spec.postgres_version == 14 and spec.os_family == "rocky8"
    assert spec.synchronous_mode is True and spec.watchdog_mode == "required"
    assert spec.layout.pg_bin_dir == "/usr/pgsql-14/bin"
    assert spec.hba_cidrs == ("192.168.130.0/24",)
    assert spec.image_source.startswith("https://dl.rockylinux.org/")
    assert spec.cpu_mode == "host-passthrough" and spec.generates_ssh_key


def test_raw_strings_are_parsed_as_pulumi_stores_them():
    spec = build_spec({"nodeCount": "5", "synchronousMode": "false",
                       "postgresParameters": '{"shared_buffers": "1GB"}',
                       "clientCidrs": '["10.1.0.0/16"]', "nodeTags": '{"srv2": {"nofailover": true}}'})
    assert spec.node_count == 5 and spec.synchronous_mode is False
    assert spec.postgres_parameters == {"shared_buffers": "1GB"}
    assert spec.hba_cidrs == ("10.1.0.0/16",)
    assert [n.tags for n in spec.nodes][1] == {"nofailover": True}


def test_nodes_get_distinct_macs_and_addresses_in_the_network():
    spec = build_spec({"nodeCount": 7, "networkCidr": "10.20.30.0/24"})
    assert len({n.mac for n in spec.nodes}) == 7
    assert [n.address for n in spec.nodes] == [f"10.20.30.{10 + i}" for i in range(7)]
    assert all(n.mac.startswith("52:54:00:") for n in spec.nodes)


def test_every_problem_is_reported_at_once_with_key_value_and_allowed():
    problems = problems_for(nodeCount=4, memoryMib=512, postgresVersion=12, ttl=15,
                            networkCidr="10.0.0.0/33", namePrefix="Srv_1")
    text = "\n".join(problems)
    assert "pgha:nodeCount = 4: must be odd and between 3 and 7" in text
    assert "pgha:memoryMib = 512: must be at least 1024" in text
    assert "pgha:postgresVersion = 12: allowed: 13, 14, 15, 16, 17, 18" in text
    assert "pgha:ttl = 15: must be at least 20 seconds" in text
    assert "pgha:networkCidr = '10.0.0.0/33'" in text
    assert "pgha:namePrefix = 'Srv_1'" in text
    assert len(problems) >= 6


@pytest.mark.parametrize("raw, expected", [
    ({"nodeCount": 9}, "pgha:nodeCount = 9"),
    ({"nodeCount": 1}, "pgha:nodeCount = 1"),
    ({"nodeCount": "three"}, "pgha:nodeCount = 'three': must be an int"),
    ({"networkCidr": "10.0.0.0/29"}, "too small for 3 nodes"),
    ({"networkCidr": "not-a-cidr"}, "an IPv4 CIDR"),
    ({"loopWait": 10, "retryTimeout": 15, "ttl": 30}, "loopWait + 2*retryTimeout = 40"),
    ({"watchdogSafetyMargin": 30}, "pgha:watchdogSafetyMargin = 30"),
    ({"watchdogSafetyMargin": 15}, "pgha:watchdogSafetyMargin = 15: leaves the watchdog "
                                   "ttl - watchdogSafetyMargin = 15 s, less than one slow HA "
                                   "loop (loopWait + retryTimeout = 20 s); at most 10"),
    ({"watchdogMode": "on"}, "allowed: off, automatic, required"),
    ({"baseImage": "/nonexistent/rocky.qcow2"}, "no such file on this machine"),
    ({"baseImage": "ftp://example.org/x.qcow2"}, "an http(s):// URL or a local qcow2 path"),
    ({"baseImage": "relative.qcow2"}, "must be absolute"),
    ({"clusterName": "Bad Name"}, "pgha:clusterName = 'Bad Name'"),
    ({"namespace": "db"}, "starts and ends with '/'"),
    ({"postgresSource": "distro"}, "osFamily rocky8 supports only pgdg"),
    ({"osFamily": "debian12", "postgresSource": "distro"}, "provide PostgreSQL 15 only"),
    ({"osFamily": "ubuntu"}, "allowed: rocky8, debian12"),
    ({"clientCidrs": '["10.0.0.0/8", "nope"]'}, "pgha:clientCidrs = 'nope'"),
    ({"postgresParameters": '{"port": 5433}'}, "managed by the program"),
    ({"nodeTags": '{"srv9": {"nofailover": true}}'}, "not a node name"),
    ({"nodeTags": '{"srv1": {"nofailover": "yes"}}'}, "must be a bool"),
    ({"nodeTags": '{"srv1": {"nofailover": true}, "srv2": {"nofailover": true}, '
                   '"srv3": {"nofailover": true}}'}, "at least one node must be able to lead"),
    ({"sshPublicKey": "hello"}, "an OpenSSH public key line"),
    ({"sshUser": "root"}, "other than root/postgres"),
    ({"domainType": "xen"}, "allowed: kvm, qemu"),
    ({"domainType": "qemu", "cpuMode": "host-passthrough"}, "needs domainType kvm"),
    ({"httpProxy": "proxy:3128"}, "an http:// or https:// URL"),
    ({"extraCaCertificates": "junk"}, "PEM certificates"),
    ({"patroniVersion": "latest"}, "a Patroni 3.x or 4.x release"),
    ({"networkMode": "bridge"}, "allowed: nat, none"),
    ({"bogusKey": 1}, "pgha:bogusKey: unknown setting"),
    ({"tlsCertificateDays": 1}, "pgha:tlsCertificateDays = 1: must be 2 to 3650"),
    ({"tlsCertificateDays": 5000}, "must be 2 to 3650"),
    ({"tlsRenewalDays": 365}, "pgha:tlsRenewalDays = 365: must be at least 1 and less "
                              "than tlsCertificateDays (365)"),
    ({"tlsRenewalDays": 0}, "pgha:tlsRenewalDays = 0"),
    ({"tlsCaCertificate": "my-ca"}, "pgha:tlsCaCertificate = 'my-ca...': one PEM certificate"),
    ({"tlsCaCertificate": "-----BEGIN CERTIFICATE-----\na\n-----END CERTIFICATE-----\n"
                          "-----BEGIN CERTIFICATE-----\nb\n-----END CERTIFICATE-----"},
     "one PEM certificate"),
    ({"postgresParameters": '{"ssl": "off"}'}, "pgha:postgresParameters = 'ssl': managed"),
    # Checked with TLS off too: turning it back on cannot surface an old typo.
    ({"tls": False, "tlsRenewalDays": 400}, "pgha:tlsRenewalDays = 400"),
])
def test_invalid_settings_are_rejected(raw, expected):
    assert any(expected in p for p in problems_for(**raw)), problems_for(**raw)


def test_tls_is_on_by_default_and_its_settings_become_hours():
    tls = build_spec({}).tls
    assert (tls.certificate_hours, tls.renewal_hours, tls.generates_ca) == (
        365 * 24, 30 * 24, True)
    custom = build_spec({"tlsCertificateDays": 2, "tlsRenewalDays": 1,
                         "tlsCaCertificate": "-----BEGIN CERTIFICATE-----\nx\n"
                                             "-----END CERTIFICATE-----"}).tls
    assert (custom.certificate_hours, custom.renewal_hours) == (48, 24)
    assert custom.ca_certificate.endswith("-----END CERTIFICATE-----\n")
    assert not custom.generates_ca
    assert build_spec({"tls": "false"}).tls is None


def test_valid_edge_values_are_accepted(tmp_path):
    image = tmp_path / "local.qcow2"
    image.write_bytes(b"qcow")
    spec = build_spec({"nodeCount": 7, "ttl": 20, "loopWait": 5, "retryTimeout": 5,
                       "networkCidr": "10.0.0.0/27", "baseImage": str(image),
                       "osFamily": "debian12", "postgresSource": "distro",
                       "postgresVersion": 15, "domainType": "qemu"})
    assert spec.layout.pg_bin_dir == "/usr/lib/postgresql/15/bin"
    assert spec.cpu_mode == "" and spec.image_source == str(image)


def test_every_setting_is_declared_in_pulumi_yaml_as_the_program_knows_it():
    # SETTINGS is the source; Pulumi.yaml must say the same: type, default, description.
    import yaml
    from tests.conftest import REPO
    declared = yaml.safe_load((REPO / "Pulumi.yaml").read_text())["config"]
    assert set(declared) == set(SETTINGS)
    types = {"str": "string", "int": "integer", "bool": "boolean", "object": "object",
             "list": "array"}
    for key, setting in SETTINGS.items():
        items = {"items": {"type": types[setting.items]}} if setting.kind == "list" else {}
        assert declared[key] == {"type": types[setting.kind], "default": setting.default,
                                 "description": setting.description, **items}, key


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_example_stacks_are_valid(stack):
    import yaml
    from tests.conftest import REPO
    raw = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
    spec = build_spec({key.split(":", 1)[1]: value for key, value in raw.items()})
    assert spec.node_count in (3, 5)


@pytest.mark.parametrize("typo, meant", [("nodecount", "nodeCount"),
                                         ("memoryMB", "memoryMib"),
                                         ("watchdogmode", "watchdogMode"),
                                         ("sshPrivatekey", "sshPrivateKey")])
def test_a_mistyped_key_names_the_nearest_known_one_and_not_its_value(typo, meant):
    (problem,) = problems_for(**{typo: "s3cret-value"})
    assert problem == f"pgha:{typo}: unknown setting; did you mean {meant}?"


@pytest.mark.parametrize("target", ["time:2026-13-45 25:61:00+00",
                                    "time:2026-02-30 10:00:00+00",
                                    "time:2026-11-26 24:00:00Z"])
def test_a_restore_time_that_does_not_exist_is_refused_before_anything(target):
    (problem,) = problems_for(backups=True, restoreTarget=target)
    assert problem.startswith(f"pgha:restoreTarget = {target!r}: latest, time:")


@pytest.mark.parametrize("target, epoch", [
    ("time:2026-11-26 14:05:00+00", 1795701900),
    ("time:2026-11-26T14:05:00Z", 1795701900),
    ("time:2026-11-26 15:35:00.5+0130", 1795701900),
    ("time:2026-11-26 09:05:00-05:00", 1795701900)])
def test_every_time_target_form_the_readme_allows_is_read_the_same(target, epoch):
    from components.backup import target_epoch
    spec = build_spec({"backups": True, "restoreTarget": target})
    assert target_epoch(spec.backups.restore_target) == epoch


def test_missing_secrets_are_reported_with_every_other_problem():
    with pytest.raises(ConfigError) as excinfo:
        build_spec({"sshPublicKey": "ssh-ed25519 AAAAkey me", "tlsCaCertificate":
                    "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----",
                    "nodeCount": 4}, secrets_set=set())
    problems = excinfo.value.problems
    assert any(p.startswith("pgha:nodeCount = 4") for p in problems), problems
    assert any(p.startswith("pgha:sshPrivateKey is not set") for p in problems), problems
    assert any(p.startswith("pgha:tlsCaPrivateKey is not set") for p in problems), problems
    # Set: nothing to report.
    build_spec({"sshPublicKey": "ssh-ed25519 AAAAkey me"}, secrets_set={"sshPrivateKey"})


@pytest.mark.parametrize("key", ["clientCidrs", "adminCidrs"])
def test_every_address_needs_an_explicit_acknowledgement(key):
    (problem,) = problems_for(**{key: ["10.1.0.0/16", "0.0.0.0/0"]})
    assert problem.startswith(f"pgha:{key} = ['0.0.0.0/0']: opens ")
    assert "pgha:openToAnyAddress true" in problem
    spec = build_spec({key: ["0.0.0.0/0"], "openToAnyAddress": True})
    assert "0.0.0.0/0" in (spec.hba_cidrs if key == "clientCidrs" else spec.admin_cidrs)


@pytest.mark.parametrize("cidr, says", [
    ("192.168.122.0/24", "overlaps libvirt's own default network"),
    ("192.168.0.0/16", "overlaps libvirt's own default network"),
    ("127.0.0.0/24", "a private range the VMs can own"),
    ("169.254.10.0/24", "a private range the VMs can own"),
    ("8.8.8.0/24", "a private range the VMs can own"),
    ("198.18.0.0/24", "a private range the VMs can own")])
def test_a_created_network_must_be_a_private_range_of_its_own(cidr, says):
    (problem,) = problems_for(networkCidr=cidr)
    assert problem.startswith(f"pgha:networkCidr = {cidr!r}: {says}")


def test_an_existing_network_is_not_checked_against_the_created_ones_ranges():
    build_spec({"networkName": "lab", "networkCidr": "192.168.122.0/24",
                "adminCidrs": ["192.168.122.0/24"]})


@pytest.mark.parametrize("key", ["memoryMib", "backupRepoMemoryMib"])
def test_memory_read_as_kib_is_refused(key):
    (problem,) = problems_for(**{key: 8388608})
    assert problem.startswith(f"pgha:{key} = 8388608: ")


def test_a_backup_schedule_systemd_would_refuse_is_refused_before_anything():
    (problem,) = problems_for(backupFullSchedule="every sunday at 1")
    assert problem.startswith("pgha:backupFullSchedule = 'every sunday at 1': a systemd "
                              "calendar expression")
    build_spec({"backupDiffSchedule": "none", "backupFullSchedule": "weekly"})


def test_an_isolated_network_without_a_proxy_is_refused():
    (problem,) = problems_for(networkMode="none")
    assert problem.startswith("pgha:networkMode = 'none': an isolated network has no route")
    build_spec({"networkMode": "none", "httpProxy": "http://10.0.0.1:3128"})


@pytest.mark.parametrize("version, name, hint", [
    (14, "shared_bufers", "did you mean shared_buffers?"),
    (16, "max_conections", "did you mean max_connections?"),
    # Removed in PostgreSQL 15, so a stack on 15 cannot carry it over unnoticed.
    (15, "stats_temp_directory", "not a PostgreSQL 15 parameter"),
    (14, "wal_keep_segments", "not a PostgreSQL 14 parameter"),
])
def test_a_misspelt_or_removed_postgres_parameter_is_refused(version, name, hint):
    problems = problems_for(postgresParameters=json.dumps({name: "1"}),
                            postgresVersion=version)
    (line,) = [p for p in problems if name in p]
    assert line.startswith(f"pgha:postgresParameters = '{name}'") and hint in line


@pytest.mark.parametrize("version, names", [
    # Names `postgres --describe-config` leaves out, an old alias, mixed case, and an
    # extension's setting (prefix.name: whatever the extension defines).
    (14, {"application_name": "x", "zero_damaged_pages": "off", "sort_mem": "4MB",
          "DateStyle": "ISO, MDY", "pg_stat_statements.max": 1000}),
    (13, {"wal_keep_size": "1GB"}),
    (18, {"io_method": "worker", "ssl_ecdh_curve": "prime256v1"}),
])
def test_every_parameter_the_server_knows_is_accepted(version, names):
    spec = build_spec({"postgresParameters": json.dumps(names), "postgresVersion": version})
    assert dict(spec.postgres_parameters) == names


def test_the_recorded_parameter_names_cover_every_supported_version():
    from components.config import SUPPORTED_POSTGRES, postgres_parameter_names
    for version in SUPPORTED_POSTGRES:
        names = postgres_parameter_names(version)
        assert {"shared_buffers", "work_mem", "application_name"} <= names, version
        assert len(names) > 300, version
