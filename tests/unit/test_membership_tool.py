"""The membership tool's handover (templates/raft-membership.py) against a fake Patroni
REST API: a switchover whose outcome Patroni's API stopped waiting for ("Switchover
status unknown", 503) is waited for, and one Patroni reports failed is asked again."""
import importlib.util
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from tests.conftest import REPO


def load_tool():
    spec = importlib.util.spec_from_file_location(
        "raft_membership", REPO / "templates" / "raft-membership.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


class FakePatroni:
    """/cluster reports `leader` among srv1-srv3, all streaming; /switchover answers
    from `answers` in turn, and a switchover takes effect `delay` seconds after it was
    asked for when its answer says so."""

    def __init__(self, leader: str, answers: list[tuple[int, str, bool]], delay: float):
        self.leader, self.answers, self.delay = leader, list(answers), delay
        self.asked: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status: int, body: str):
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                members = [{"name": n, "role": "leader" if n == fake.leader else "replica",
                            "state": "running" if n == fake.leader else "streaming",
                            "lag": 0} for n in ("srv1", "srv2", "srv3")]
                self.reply(200, json.dumps({"members": members}))

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.asked.append(body)
                status, text, takes_effect = fake.answers.pop(0)
                if takes_effect:
                    to = body.get("candidate") or "srv1"
                    threading.Timer(fake.delay, lambda: setattr(fake, "leader", to)).start()
                self.reply(status, text)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def node(tmp_path):
    def make(fake: FakePatroni):
        config = {"name": "srv2", "raft": {"self_addr": "127.0.0.1:1", "partner_addrs": []},
                  "restapi": {"connect_address": fake.address}}
        path = tmp_path / "patroni.yml"
        path.write_text(yaml.safe_dump(config))
        return load_tool().Node(str(path))
    return make


def test_a_switchover_whose_outcome_patroni_did_not_wait_for_is_waited_for(node, capsys):
    fake = FakePatroni("srv2", [(503, "Switchover status unknown", True)], delay=3)
    tool = load_tool()
    tool.handover(node(fake), ["srv1", "srv3"], timeout=60)
    out = capsys.readouterr().out
    assert "switchover from srv2: HTTP 503: Switchover status unknown" in out
    assert "changed: switched over from srv2" in out
    assert fake.leader in ("srv1", "srv3") and len(fake.asked) == 1
    fake.server.shutdown()


def test_a_switchover_patroni_reports_failed_is_asked_again(node, capsys):
    fake = FakePatroni("srv2", [(503, "Switchover failed", False),
                                (200, 'Successfully switched over to "srv1"', True)], delay=1)
    load_tool().handover(node(fake), ["srv1", "srv3"], timeout=60)
    assert len(fake.asked) == 2 and fake.leader == "srv1"
    assert "changed: switched over from srv2" in capsys.readouterr().out
    fake.server.shutdown()


def test_a_switchover_that_never_comes_fails_at_the_deadline(node):
    fake = FakePatroni("srv2", [(503, "Switchover failed", False)] * 50, delay=0)
    with pytest.raises(SystemExit, match="srv2 still leads after 5 s"):
        load_tool().handover(node(fake), ["srv1", "srv3"], timeout=5)
    fake.server.shutdown()
