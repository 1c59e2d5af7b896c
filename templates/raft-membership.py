"""Change one node's membership of the cluster: join Raft, hand leadership over, or be
forgotten by Raft. Run with Patroni's own Python (pysyncobj, PyYAML) as root or postgres:

    python raft-membership.py --config /etc/patroni/patroni.yml join
    python raft-membership.py --config /etc/patroni/patroni.yml handover --candidates a,b,c
    python raft-membership.py --config /etc/patroni/patroni.yml forget --address IP:PORT --name N
    python raft-membership.py --config /etc/patroni/patroni.yml status

(`pgha-raft status` on a node: the configure step installs it there.)

Every secret (the Raft password, the REST API's password) is read from patroni.yml,
a file only root and postgres can read: none is on a command line or in the output.

Why a tool and not syncobj_admin: pysyncobj changes membership one node at a time and
denies a change while another is uncommitted; Patroni asks to add a new node once, in a
thread, and never retries, so two nodes joining at once can leave one outside for good.
This tool retries a denied change until it is committed and then proves the result from
the Raft leader's own view. Lines starting with "changed: " name what it changed."""
import argparse
import base64
import json
import ssl
import sys
import time
import urllib.error
import urllib.request

import yaml
from pysyncobj.utility import TcpUtility, UtilityException


# pysyncobj's status lists each other member as partner_node_status_server_<address>.
PARTNER = "partner_node_status_server_"


class Node:
    """What this node's patroni.yml says about it and its cluster."""

    def __init__(self, path):
        with open(path) as f:
            config = yaml.safe_load(f)
        raft, rest = config["raft"], config["restapi"]
        self.name = config["name"]
        self.self_addr = raft["self_addr"]
        self.partners = list(raft.get("partner_addrs") or [])
        self.raft = TcpUtility(raft.get("password"), timeout=5)
        self.rest_url = ("https" if rest.get("certfile") else "http") + "://" \
            + rest["connect_address"]
        self.context = None
        if rest.get("certfile"):
            self.context = ssl.create_default_context(cafile=config["ctl"]["cacert"])
        auth = rest.get("authentication") or {}
        token = base64.b64encode(f"{auth.get('username', '')}:{auth.get('password', '')}"
                                 .encode()).decode()
        self.auth = {"Authorization": f"Basic {token}"} if auth else {}

    # ---- Raft ----------------------------------------------------------------------
    def status(self, address):
        try:
            result = self.raft.executeCommand(address, ["status"])
        except (UtilityException, OSError):
            return None
        return result if isinstance(result, dict) else None

    def leader_view(self):
        """(leader address, members) as the Raft leader itself reports them, or None."""
        for address in [self.self_addr, *self.partners]:
            status = self.status(address)
            leader = status and status.get("leader")
            if leader is None:
                continue
            view = self.status(str(leader))
            if view and view.get("state") == 2:  # pysyncobj's _RAFT_STATE.LEADER
                members = {str(view["self"])} | {
                    key[len(PARTNER):] for key in view if key.startswith(PARTNER)}
                return str(view["self"]), members
        return None

    def change(self, verb, address, wanted, timeout):
        """Send `verb` (add or remove) for `address` to the leader until the leader's
        membership satisfies `wanted(members)`."""
        deadline = time.monotonic() + timeout
        last = "no Raft leader answered"
        while time.monotonic() < deadline:
            view = self.leader_view()
            if view is not None:
                leader, members = view
                if wanted(members):
                    return sorted(members)
                try:
                    last = self.raft.executeCommand(leader, [verb, address])
                except UtilityException as error:
                    last = str(error)
            time.sleep(1)
        raise SystemExit(f"{verb} {address}: not done after {timeout} s (last answer: {last})")

    # ---- Patroni's REST API ----------------------------------------------------------
    def rest(self, path, body=None, timeout=5):
        request = urllib.request.Request(
            self.rest_url + path, method="POST" if body is not None else "GET",
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json", **self.auth})
        # Straight to the node: a proxy in the environment must not take these calls.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=self.context))
        try:
            with opener.open(request, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def cluster(self):
        status, text = self.rest("/cluster")
        if status != 200:
            raise SystemExit(f"GET /cluster on {self.name}: HTTP {status}: {text}")
        return json.loads(text)["members"]


def until(predicate, timeout):
    """Whether `predicate` held within `timeout` seconds (asked once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1)


def wait(what, predicate, timeout):
    if not until(predicate, timeout):
        raise SystemExit(f"{what}: not within {timeout} s")


def other_leader(node, leader):
    """A running leader other than `leader`, as this node's Patroni reports the cluster
    (False while it cannot say)."""
    try:
        members = node.cluster()
    except (SystemExit, urllib.error.URLError, OSError):
        return False
    return any(m.get("role") == "leader" and m["name"] != leader
               and m.get("state") == "running" for m in members)


def join(node, timeout):
    view = node.leader_view()
    if view is not None and node.self_addr in view[1]:
        print(f"{node.self_addr} is a Raft member ({len(view[1])} members)")
        return
    members = node.change("add", node.self_addr, lambda m: node.self_addr in m, timeout)
    print(f"changed: joined raft ({len(members)} members: {', '.join(members)})")


def handover(node, candidates, timeout):
    """While a node other than `candidates` leads (one that is leaving the stack), switch
    over to a streaming candidate (the synchronous standby first, then the least lag),
    until a candidate leads. Runs on any member: on a departing node before it stops, and
    in the health gate, so that what follows the gate sees the final leader."""
    deadline = time.monotonic() + timeout
    switched = False
    while True:
        try:
            status, text = node.rest("/cluster")
            trouble = None if status == 200 else f"HTTP {status}"
        except urllib.error.URLError as error:
            trouble = error.reason
        if trouble is not None:
            # Patroni is down here (on a departing node, stopped by an earlier,
            # interrupted run of its leave step) or cannot say: nothing to hand over from
            # here. In the gate, the gate's own wait and diagnosis follow.
            print(f"Patroni does not answer on {node.name} ({trouble}): "
                  f"nothing to hand over")
            return
        members = json.loads(text)["members"]
        leader = next((m["name"] for m in members if m.get("role") == "leader"), None)
        if leader is None or leader in candidates:
            if not switched:
                print(f"{leader or 'no member'} leads: nothing to hand over")
            return
        streaming = [m for m in members
                     if m["name"] in candidates and m.get("state") == "streaming"]
        if time.monotonic() > deadline:
            raise SystemExit(f"{leader} still leads after {timeout:.0f} s; streaming among "
                             f"{', '.join(candidates)}: {[m['name'] for m in streaming]}; "
                             f"members: {json.dumps(members)}")
        if not streaming:
            time.sleep(2)  # the nodes that stay may still be catching up
            continue
        best = min(streaming, key=lambda m: (m.get("role") != "sync_standby",
                                             m["lag"] if isinstance(m.get("lag"), int)
                                             else 1 << 62))
        status, text = node.rest("/switchover",
                                 {"leader": leader, "candidate": best["name"]}, timeout=60)
        if status == 412:
            # Synchronous mode admits only the synchronous standby: let Patroni choose. If
            # it chooses another departing node, the next turn hands that one over.
            status, text = node.rest("/switchover", {"leader": leader}, timeout=60)
        if status == 503:
            # Registered, but Patroni's API stopped waiting for the outcome (it polls for
            # about 20 s, which a switchover between emulated CPUs outlasts: "Switchover
            # status unknown"), or the leader gave it up ("Switchover failed"). Wait for
            # another leader; the next turn asks again if none came.
            print(f"switchover from {leader}: HTTP 503: {text.strip()}")
            if "unknown" in text and until(lambda: other_leader(node, leader),
                                           min(max(deadline - time.monotonic(), 0), 120)):
                print(f"changed: switched over from {leader}")
                switched = True
            else:
                time.sleep(2)
            continue
        if status != 200:
            raise SystemExit(f"switchover from {leader}: HTTP {status}: {text}")
        wait(f"a leader other than {leader}", lambda: other_leader(node, leader),
             max(deadline - time.monotonic(), 60))
        print(f"changed: switched over from {leader} ({text.strip()})")
        switched = True


def forget(node, address, name, timeout):
    view = node.leader_view()
    if view is not None and address not in view[1]:
        print(f"{address} is not a Raft member")
    else:
        members = node.change("remove", address, lambda m: address not in m, timeout)
        print(f"changed: removed {address} from raft ({len(members)} members: "
              f"{', '.join(members)})")
    # Patroni's member key of the departed node expires after ttl.
    wait(f"{name} gone from Patroni's member list",
         lambda: name not in {m["name"] for m in node.cluster()}, timeout)


def show_status(node):
    """This member's Raft status as pysyncobj reports it (the Raft leader, the term, and
    each other member and whether this one is connected to it), `key: value` lines."""
    status = node.status(node.self_addr)
    if status is None:
        print(f"{node.self_addr}: no answer (is Patroni running?)")
        sys.exit(1)
    for key in sorted(status):
        print(f"{key}: {status[key]}")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--timeout", type=float, default=300)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("join")
    hand = commands.add_parser("handover")
    hand.add_argument("--candidates", required=True)
    gone = commands.add_parser("forget")
    gone.add_argument("--address", required=True)
    gone.add_argument("--name", required=True)
    commands.add_parser("status")
    args = parser.parse_args(argv)
    node = Node(args.config)
    if args.command == "status":
        show_status(node)
    elif args.command == "join":
        join(node, args.timeout)
    elif args.command == "handover":
        handover(node, args.candidates.split(","), args.timeout)
    else:
        forget(node, args.address, args.name, args.timeout)


if __name__ == "__main__":
    main(sys.argv[1:])
