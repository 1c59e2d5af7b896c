"""The Pulumi program's TLS under mocks: the cluster's CA (generated or the user's), one
server certificate per node named for its real address, the files each node gets, the
outputs clients use, and nothing in plain text with TLS on."""
import pulumi
import pytest
import yaml

from tests.unit.test_program import run_program
from tests.unit.test_rendering import installed_files

SELF_SIGNED = "tls:index/selfSignedCert:SelfSignedCert"
REQUEST = "tls:index/certRequest:CertRequest"
SIGNED = "tls:index/locallySignedCert:LocallySignedCert"
USER_CA = "-----BEGIN CERTIFICATE-----\nusers-ca\n-----END CERTIFICATE-----"


def resolve(output):
    return pulumi.runtime.sync_await._sync_await(output.future())


def test_each_node_gets_a_certificate_for_its_real_address_signed_by_the_cluster_ca():
    prog = run_program({})
    (ca,) = prog.of_type(SELF_SIGNED)
    assert ca.name == "pg-raft-tls-ca" and ca.inputs["isCaCertificate"] is True
    assert ca.inputs["subject"]["commonName"] == "pgha pg-raft CA"
    requests = {r.name: r.inputs for r in prog.of_type(REQUEST)}
    signed = {r.name: r.inputs for r in prog.of_type(SIGNED)}
    for i in (1, 2, 3):
        ip = f"203.0.113.{10 + i}"  # the domain's address, not the reservation
        request = requests[f"pg-raft-srv{i}-server-request"]
        assert request["subject"]["commonName"] == f"srv{i}"
        assert request["ipAddresses"] == [ip, "127.0.0.1"]
        assert request["dnsNames"] == [f"srv{i}", ip, "localhost"]
        cert = signed[f"pg-raft-srv{i}-server-cert"]
        assert cert["caCertPem"] == "PEM of pg-raft-tls-ca"
        assert cert["caPrivateKeyPem"] == "PRIVATE KEY of pg-raft-tls-ca-key"
        assert cert["allowedUses"] == ["digital_signature", "key_encipherment", "server_auth"]
        assert (cert["validityPeriodHours"], cert["earlyRenewalHours"]) == (365 * 24, 30 * 24)
        files = installed_files(prog.named(f"pg-raft-srv{i}-provision-configure").inputs["stdin"])
        assert files["/etc/patroni/tls/ca.crt"] == ("0644", "PEM of pg-raft-tls-ca")
        assert files["/etc/patroni/tls/server.crt"] == ("0644", f"PEM of pg-raft-srv{i}-server-cert")
        assert files["/etc/patroni/tls/server.key"] == (
            "0600", f"PRIVATE KEY of pg-raft-srv{i}-server-key")
        patroni = yaml.safe_load(files["/etc/patroni/patroni.yml"][1])
        assert patroni["postgresql"]["parameters"]["ssl"] == "on"


def test_the_keys_are_secrets_and_the_ca_certificate_is_an_output():
    prog = run_program({})
    cluster = prog.namespace["cluster"]
    for i in (1, 2, 3):
        assert "stdin" in prog.named(f"pg-raft-srv{i}-provision-configure").secret_keys
        # The signer's input holds the CA key: secret in the state too.
        assert "caPrivateKeyPem" in prog.named(f"pg-raft-srv{i}-server-cert").secret_keys
    assert resolve(cluster.ca_certificate) == "PEM of pg-raft-tls-ca"
    assert not prog.is_secret(cluster.ca_certificate)
    assert resolve(cluster.dsn_read_write).endswith(
        "&sslmode=verify-full&sslrootcert=pg-raft-ca.crt")
    assert set(resolve(cluster.rest_urls).values()) == {
        f"https://203.0.113.{10 + i}:8008" for i in (1, 2, 3)}


def test_the_health_report_verifies_the_nodes_against_the_ca():
    prog = run_program({})
    (probe,) = prog.invokes_of("command:local:run")
    assert "PEM of pg-raft-tls-ca" in probe["stdin"]
    assert 'f"https://{address}' in probe["stdin"]


def test_lifetime_and_renewal_come_from_the_settings():
    prog = run_program({"tlsCertificateDays": 90, "tlsRenewalDays": 10})
    for cert in prog.of_type(SIGNED):
        assert (cert.inputs["validityPeriodHours"], cert.inputs["earlyRenewalHours"]) == (
            90 * 24, 10 * 24)


def test_a_users_ca_signs_the_nodes_and_none_is_generated():
    prog = run_program({"tlsCaCertificate": USER_CA,
                        "tlsCaPrivateKey": "-----BEGIN PRIVATE KEY-----\nk\n"})
    assert prog.of_type(SELF_SIGNED) == []
    for cert in prog.of_type(SIGNED):
        assert cert.inputs["caCertPem"] == USER_CA + "\n"
        assert cert.inputs["caPrivateKeyPem"] == "-----BEGIN PRIVATE KEY-----\nk\n"
        assert "caPrivateKeyPem" in cert.secret_keys
    assert resolve(prog.namespace["cluster"].ca_certificate) == USER_CA + "\n"


def test_a_users_ca_without_its_key_fails_before_anything_is_created():
    with pytest.raises(SystemExit) as excinfo:
        run_program({"tlsCaCertificate": USER_CA})
    assert "pgha:tlsCaPrivateKey is not set" in str(excinfo.value)
    assert pulumi.runtime.settings.SETTINGS.monitor.registrations == []


def test_tls_off_has_no_certificates_and_plain_urls():
    prog = run_program({"tls": False})
    assert [r for r in prog.registrations if r.type in (SELF_SIGNED, REQUEST, SIGNED)] == []
    cluster = prog.namespace["cluster"]
    assert cluster.ca_certificate is None and "caCertificate" not in prog.namespace
    assert "sslmode" not in resolve(cluster.dsn_read_write)
    assert all(u.startswith("http://") for u in resolve(cluster.rest_urls).values())
