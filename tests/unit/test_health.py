"""The health report that every `pulumi up` and `pulumi preview` prints."""
import json
import subprocess
import sys

import pytest

from components import health, rendering
from components.config import build_spec
from tests.certs import TestCa

SPEC = build_spec({})
ADDRESSES = {"srv1": "192.0.2.11", "srv2": "192.0.2.12", "srv3": "192.0.2.13"}


def member(name, role, state, **extra):
    return {"name": name, "role": role, "state": state, **extra}


HEALTHY = {"members": [member("srv1", "leader", "running"),
                       member("srv2", "sync_standby", "streaming", lag=0),
                       member("srv3", "replica", "streaming", lag=0)]}


# What each node's own Patroni says about itself (GET /patroni) in the healthy cluster.
SELF = {"srv1": {"state": "running", "role": "primary"},
        "srv2": {"state": "running", "role": "replica", "replication_state": "streaming",
                 "sync_standby": True},
        "srv3": {"state": "running", "role": "replica", "replication_state": "streaming"}}


def probe_output(views):
    return json.dumps({name: views.get(name, {"cluster": HEALTHY, "self": SELF[name]})
                       for name in ADDRESSES})


def test_a_healthy_cluster_gives_no_warning_and_a_summary():
    warnings, summary = health.health_findings(SPEC, ADDRESSES, probe_output({}))
    assert warnings == []
    assert summary == "cluster healthy: leader srv1, sync standby srv2, streaming srv3"


def test_a_node_whose_patroni_is_down_is_named_with_what_to_do():
    view = {"members": [m for m in HEALTHY["members"] if m["name"] != "srv3"]}
    out = probe_output({"srv3": {"error": "URLError: connection refused"},
                        "srv1": {"cluster": view}, "srv2": {"cluster": view}})
    warnings, summary = health.health_findings(SPEC, ADDRESSES, out)
    assert summary == "cluster degraded: 1 problem(s)"
    (warning,) = warnings
    assert warning.startswith("srv3 (192.0.2.13): Patroni's REST API does not answer")
    assert "journalctl -u patroni" in warning and "virsh start pgha-pg-raft-srv3" in warning


@pytest.mark.parametrize("members, expected", [
    ([member("srv1", "replica", "streaming"), member("srv2", "replica", "streaming"),
      member("srv3", "replica", "streaming")], "no running leader: writes are not possible"),
    ([member("srv1", "leader", "running"), member("srv2", "leader", "running"),
      member("srv3", "sync_standby", "streaming")], "2 running leaders (srv1, srv2)"),
    ([member("srv1", "leader", "running"), member("srv2", "sync_standby", "streaming"),
      member("srv3", "replica", "starting")], "srv3 is a replica in state 'starting'"),
    ([member("srv1", "leader", "running"), member("srv2", "replica", "streaming"),
      member("srv3", "replica", "streaming")], "synchronous mode is on but no replica"),
    ([member("srv1", "leader", "running", pending_restart=True),
      member("srv2", "sync_standby", "streaming"), member("srv3", "replica", "streaming")],
     "srv1 needs a restart"),
    ([member("srv1", "leader", "running"), member("srv2", "sync_standby", "streaming"),
      member("srv3", "replica", "streaming", lag=50 * 1024 * 1024)], "srv3 lags 52428800"),
    ([member("srv1", "leader", "running"), member("srv2", "sync_standby", "streaming"),
      member("srv3", "replica", "streaming"), member("srv4", "replica", "streaming")],
     "member srv4 is in the cluster but not in this stack"),
    ([member("srv1", "leader", "running"), member("srv2", "sync_standby", "streaming")],
     "srv3 is not a member of the Patroni cluster"),
])
def test_each_problem_is_one_warning(members, expected):
    out = probe_output({n: {"cluster": {"members": members}} for n in ADDRESSES})
    warnings, _ = health.health_findings(SPEC, ADDRESSES, out)
    assert len(warnings) == 1 and warnings[0].startswith(expected), warnings


def test_paused_cluster_and_unreadable_probe_are_reported():
    out = probe_output({n: {"cluster": {**HEALTHY, "pause": True}} for n in ADDRESSES})
    assert "maintenance mode" in health.health_findings(SPEC, ADDRESSES, out)[0][0]
    warnings, summary = health.health_findings(SPEC, ADDRESSES, "Traceback ...")
    assert summary == "cluster health unknown" and "printed no report" in warnings[0]
    down = probe_output({n: {"error": "timed out"} for n in ADDRESSES})
    warnings, summary = health.health_findings(SPEC, ADDRESSES, down)
    assert summary == "cluster state unknown" and len(warnings) == 4


def test_the_probe_reports_unreachable_nodes_without_failing():
    # Nothing listens on these loopback ports: the probe still prints a full report.
    addresses = {"srv1": "127.0.0.1", "srv2": "127.0.0.1", "srv3": "127.0.0.1"}
    probe = rendering.render_health_probe(build_spec({}), addresses, TestCa().cert)
    p = subprocess.run([sys.executable, "-"], input=probe.replace("8008", "9"),
                       text=True, capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert set(report) == set(addresses) and all("error" in v for v in report.values())


def test_nodes_that_disagree_about_the_leader_are_not_healthy():
    # srv1 still has an old copy of the DCS: no running leader in its view.
    stale = {"members": [member("srv1", "replica", "streaming"),
                         member("srv2", "sync_standby", "streaming"),
                         member("srv3", "replica", "streaming")]}
    out = probe_output({"srv2": {"cluster": stale}})
    warnings, summary = health.health_findings(SPEC, ADDRESSES, out)
    assert summary == "cluster degraded: 1 problem(s)"
    assert warnings[0].startswith("the nodes disagree about the leader (srv1 sees srv1, "
                                  "srv2 sees none, srv3 sees srv1)"), warnings


def test_a_stale_dcs_copy_after_a_full_power_loss_is_not_healthy():
    # Every node first serves the DCS as it was before the outage: it looks healthy, but
    # the nodes themselves say otherwise.
    recovering = {"srv1": {"state": "stopped", "role": "replica"},
                  "srv2": {"state": "starting", "role": "replica"},
                  "srv3": {"state": "running", "role": "replica",
                           "replication_state": None}}
    out = probe_output({n: {"cluster": HEALTHY, "self": recovering[n]} for n in ADDRESSES})
    warnings, summary = health.health_findings(SPEC, ADDRESSES, out)
    assert summary == "cluster degraded: 3 problem(s)"
    assert warnings[0].startswith("the DCS names srv1 the running leader but srv1 itself "
                                  "reports role 'replica', state 'stopped'"), warnings
    assert warnings[1].startswith("srv2 is not streaming: it reports state 'starting'")
    assert warnings[2].startswith("srv3 is not streaming: it reports state 'running', "
                                  "replication None")


CA = TestCa()


@pytest.fixture
def three_patronis(tmp_path):
    """Three fake Patroni REST APIs on 127.0.0.1-3 (one port), over HTTPS with a
    certificate for their address signed by CA, as the program's nodes: every node
    serves the healthy DCS view and its own report from `selves` (a test may change it)."""
    import http.server
    import ssl
    import threading

    servers, selves = [], dict(SELF)
    for i, name in enumerate(ADDRESSES, start=1):
        class Handler(http.server.BaseHTTPRequestHandler):
            node = name

            def do_GET(self):
                body = {"/cluster": HEALTHY, "/patroni": selves[self.node]}.get(self.path)
                self.send_response(200 if body else 404)
                self.end_headers()
                self.wfile.write(json.dumps(body).encode())

            def log_message(self, *args):
                pass
        port = servers[0].server_address[1] if servers else 0
        server = http.server.ThreadingHTTPServer((f"127.0.0.{i}", port), Handler)
        issued = CA.issue(name, ip_addresses=[f"127.0.0.{i}"])
        (tmp_path / f"{name}.pem").write_text(issued.key + issued.cert)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp_path / f"{name}.pem")
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield ({name: f"127.0.0.{i}" for i, name in enumerate(ADDRESSES, start=1)},
           servers[0].server_address[1], selves)
    for server in servers:
        server.shutdown()
        server.server_close()


def run_probe(addresses, port, ca_cert):
    probe = rendering.render_health_probe(build_spec({}), addresses, ca_cert)
    return subprocess.run([sys.executable, "-"], input=probe.replace("8008", str(port)),
                          text=True, capture_output=True, timeout=30)


def test_the_probe_refuses_nodes_whose_certificate_another_ca_signed(three_patronis):
    addresses, port, _ = three_patronis
    p = run_probe(addresses, port, TestCa("another CA").cert)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert all("CERTIFICATE_VERIFY_FAILED" in report[n]["error"] for n in addresses), report


def test_the_probe_refuses_a_certificate_for_another_name(three_patronis):
    # srv1's server, dialled by a name its certificate (for 127.0.0.1 only) does not hold.
    addresses, port, _ = three_patronis
    report = json.loads(run_probe({"srv1": "localhost"}, port, CA.cert).stdout)
    assert "certificate is not valid for 'localhost'" in report["srv1"]["error"], report


def test_the_probe_reads_each_nodes_dcs_view_and_its_own_report(three_patronis):
    addresses, port, _ = three_patronis
    p = run_probe(addresses, port, CA.cert)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["srv2"] == {"cluster": HEALTHY, "self": SELF["srv2"]}
    warnings, summary = health.health_findings(SPEC, addresses, p.stdout)
    assert (warnings, summary) == (
        [], "cluster healthy: leader srv1, sync standby srv2, streaming srv3")


def run_gate(addresses, port, timeout_s, ca_file):
    import re
    from tests.unit.test_rendering import gate_python
    spec = build_spec({})
    gate = gate_python(rendering.render_health_gate_script(spec, addresses))
    gate = gate.replace("8008", str(port)).replace("/etc/patroni/tls/ca.crt", str(ca_file))
    gate = re.sub(r"^TIMEOUT = \d+$", f"TIMEOUT = {timeout_s}", gate, flags=re.M)
    return subprocess.run([sys.executable, "-"], input=gate, text=True,
                          capture_output=True, timeout=60)


def test_the_gate_passes_only_when_each_node_confirms_its_part(three_patronis, tmp_path):
    addresses, port, selves = three_patronis
    ca_file = tmp_path / "ca.crt"
    ca_file.write_text(CA.cert)
    passed = run_gate(addresses, port, 0, ca_file)
    assert passed.returncode == 0, passed.stderr
    assert json.loads(passed.stdout.splitlines()[0])["leader"] == "srv1"
    # The same DCS view, but srv1 has not started PostgreSQL yet (a stale copy).
    selves["srv1"] = {"state": "stopped", "role": "replica"}
    failed = run_gate(addresses, port, 0, ca_file)
    assert failed.returncode == 1
    assert "srv1=replica/stopped/None" in failed.stderr, failed.stderr


def test_the_gate_does_not_trust_nodes_another_ca_signed(three_patronis, tmp_path):
    addresses, port, _ = three_patronis
    other = tmp_path / "other-ca.crt"
    other.write_text(TestCa("another CA").cert)
    failed = run_gate(addresses, port, 0, other)
    assert failed.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in failed.stderr, failed.stderr
