"""TLS on a real cluster: the program's patroni.yml with certificates issued as the
program issues them (tls.server_names). Replicas stream over TLS after verifying the
primary; a client through the stack's DSN (verify-full and the CA) connects, one without
TLS is refused by pg_hba, one that trusts another CA refuses the server; the REST API is
HTTPS only and patronictl verifies it. Every other real-cluster test runs with TLS on too
(the default): failover, pg_rewind and reinit included."""
from __future__ import annotations

import ssl
import subprocess

from components import rendering
from tests.certs import TestCa
from tests.realcluster import harness as h


def client_psql(c: h.Cluster, dsn: str, query: str) -> subprocess.CompletedProcess:
    """psql from the client namespace (the PostgreSQL clients' network), with the
    superuser's password in the environment."""
    return h.run(["ip", "netns", "exec", c.net.ns("client"), "env",
                  f"PGPASSWORD={c.secrets.superuser_password}",
                  str(c.runtime.pg_bin / "psql"), dsn, "-XAtqc", query],
                 check=False, timeout=30, cwd="/")


def rest_from_client(c: h.Cluster, url: str, context: ssl.SSLContext | None = None
                     ) -> tuple[int, object]:
    """GET `url` from the client namespace, verified against `context` (default: the
    cluster's CA)."""
    return c._executor_for("client").submit(c._http, url, 5, "GET", context).result(15)


def test_clients_and_replicas_verify_the_server_and_plain_text_is_refused(make_cluster,
                                                                          tmp_path):
    c = make_cluster(3)
    leader = c.wait_healthy()
    # Both replicas stream over TLS (their primary_conninfo says verify-full).
    assert c.sql(leader, "SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s "
                         "ON s.pid = r.pid WHERE s.ssl") == "2"
    replica = next(n for n in c.nodes if n != leader)
    conninfo = c.sql(replica, "SHOW primary_conninfo")
    own_ca = f"sslrootcert={c.nodes[replica].paths.tls_dir}/ca.crt"
    assert "sslmode=verify-full" in conninfo and own_ca in conninfo, conninfo

    dsn = rendering.libpq_dsn(c.spec, c.addresses, "read-write", ca_file=str(c.ca_file))
    assert "sslmode=verify-full" in dsn
    ok = client_psql(c, dsn, "SELECT ssl, version FROM pg_stat_ssl "
                             "WHERE pid = pg_backend_pid()")
    assert ok.returncode == 0 and ok.stdout.startswith("t|TLSv1."), ok

    plain = client_psql(c, dsn.replace("sslmode=verify-full", "sslmode=disable"), "SELECT 1")
    assert plain.returncode != 0 and "no encryption" in plain.stderr, plain

    other_ca = tmp_path / "other-ca.crt"
    other_ca.write_text(TestCa("another CA").cert)
    other_ca.chmod(0o644)
    foreign = client_psql(c, dsn.replace(str(c.ca_file), str(other_ca)), "SELECT 1")
    assert foreign.returncode != 0 and "certificate verify failed" in foreign.stderr, foreign

    # REST: HTTPS verified against the CA; refused against another; no plain HTTP.
    url = f"https://{c.addresses[leader]}:{h.RESTAPI_PORT}/patroni"
    assert rest_from_client(c, url)[0] == 200
    refused = rest_from_client(c, url, ssl.create_default_context(cafile=str(other_ca)))
    assert refused[0] == 0 and "CERTIFICATE_VERIFY_FAILED" in refused[1], refused
    plain_rest = rest_from_client(c, url.replace("https://", "http://"))
    assert plain_rest[0] != 200, plain_rest
    # patronictl reads ctl.cacert and verifies every member it asks (the DCS shows a
    # replica as streaming up to one loop after it started to).
    def listed_streaming() -> bool:
        listed = c.patronictl(leader, "list")
        assert listed.returncode == 0, listed
        return listed.stdout.count("streaming") == 2
    c.wait_for("patronictl list with both replicas streaming", listed_streaming,
               timeout=3 * c.spec.loop_wait)
