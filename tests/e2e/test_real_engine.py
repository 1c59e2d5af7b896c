"""The real thing, opt-in: `pulumi up` of this program through pulumi.automation, with the
real engine and the real providers, on Debian 12 VMs in a private libvirtd, or spread over
three private libvirtds on one LAN as a stack's `hosts` lists them (tests/vm/hosts_lab.py).

Opt-in: runs with PGHA_REAL_ENGINE=1 where the `pulumi` CLI, its Python language host and
the four resource plugins (command 1.2.1, libvirt 0.5.4, random 4.21.4, tls 5.6.2) are
installed; otherwise it skips and says why (which piece is missing). This is the one skip
CI may allow, and only through the switch PGHA_ALLOW_SKIP_REAL_ENGINE=1: no package
registry ships the plugins, and with them CI would need about 85 more minutes.

The engine runs inside the lab's network namespace: every Automation API call is made from
a thread that entered it, so the `pulumi` processes it spawns (and their providers) and
the event server it listens on all live there. The providers reach libvirt by its private
socket and the VMs by SSH, and nothing the test starts talks to any other network. Under
TCG the first test takes about 25 minutes, the scaling test about 60.

Checks on one host: up; the cluster's outputs work (a row written through dsnReadWrite is
read through dsnReadOnly); `preview` proposes no change; a PostgreSQL parameter change
updates commands only (no VM replaced); the leader VM powered off fails over and comes
back by itself; `refresh` works; `destroy` leaves no domain, volume or network of the
stack. Scaling 3 -> 5 -> 3 with backups, each one `up`. On three hosts: up with one
provider per host, the leader's host lost under a writer and back, a host replaced by an
empty machine (refresh and up), destroy leaving nothing on any host.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time

import pytest

from tests import netns
from components.config import REPOSITORY_NAME
from tests.conftest import ALLOW_SKIP_REAL_ENGINE, NO_SKIP, REAL_ENGINE_SKIP, REPO

PLUGINS = {"command": "1.2.1", "libvirt": "0.5.4", "random": "4.21.4", "tls": "5.6.2"}


def missing_engine() -> list[str]:
    missing = [tool for tool in ("pulumi", "pulumi-language-python") if not shutil.which(tool)]
    if "pulumi" not in missing:
        listed = subprocess.run(["pulumi", "plugin", "ls"], capture_output=True, text=True,
                                timeout=60).stdout.split("\n")
        for name, version in PLUGINS.items():
            if not any(line.split()[:3] == [name, "resource", version] for line in listed):
                missing.append(f"plugin {name} {version}")
    return missing


def require_engine() -> None:
    if os.environ.get("PGHA_REAL_ENGINE") != "1":
        reason = f"{REAL_ENGINE_SKIP}: opt-in, set PGHA_REAL_ENGINE=1 (about 85 minutes)"
    else:
        missing = missing_engine()
        if not missing:
            return
        reason = (f"{REAL_ENGINE_SKIP}: the real Pulumi engine is not installed: missing "
                  + ", ".join(missing))
    if NO_SKIP and not ALLOW_SKIP_REAL_ENGINE:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def real_lab(tmp_path):
    """A private libvirtd with the relay and wheelhouse on every address of its namespace
    (the program creates the network, so its bridge appears only during `up`)."""
    require_engine()
    if os.geteuid() != 0:
        pytest.fail("the real-engine test needs root")
    from tests.vm import conftest as vm
    from tests.vm.lab import Lab
    image, wheelhouse = vm.build_image(), vm.build_wheelhouse()
    run_id = secrets.token_hex(3)
    lab = Lab(run_id, "10.233.0.0/24", tmp_path)
    lab.start()
    try:
        lab.host.start_proxy(gateway_ip="0.0.0.0", port=3128)
        lab.host.start_file_server(wheelhouse, bind_ip="0.0.0.0", port=8080)
        yield lab, image
    finally:
        lab.host.stop()



@pytest.fixture
def real_hosts_lab(tmp_path):
    """Three private libvirtds on one LAN (tests/vm/hosts_lab.py) with the relay and the
    wheelhouse on it, and the VM tier's stack on them from its node image (built in the
    lab when not cached)."""
    require_engine()
    if os.geteuid() != 0:
        pytest.fail("the real-engine test needs root")
    from tests.vm import conftest as vm
    from tests.vm.hosts_lab import HostsLab
    image, wheelhouse = vm.build_image(), vm.build_wheelhouse()
    run_id = secrets.token_hex(3)
    lab = HostsLab(run_id, vm.CIDR, tmp_path / "lab", vm.HOSTS)
    try:
        lab.start()
        settings = vm.vm_settings(run_id, image, lab.serve_packages(wheelhouse), lab)
        baked = vm.build_node_image(lab, settings, tmp_path)
        yield lab, {**settings, "baseImage": str(baked)}
    finally:
        errors = lab.stop()
        assert not errors, errors


def libvirt_ids(deployment) -> dict[str, str]:
    """URN -> provider ID of every libvirt resource in an exported stack: a replaced VM,
    disk, seed or network gets a new ID."""
    return {r["urn"]: r.get("id") for r in deployment.deployment["resources"]
            if r["type"].startswith("libvirt:index/")}

def sites(lab) -> dict:
    """Each libvirt host of a lab by name: the three of a HostsLab, or the one of a Lab."""
    return getattr(lab, "sites", None) or {"": lab}


def leftovers(lab, before: set[str]) -> list[str]:
    """Whatever the names: every domain and network the stack left in the lab's
    libvirtds beyond what was there `before`, and every file left in their pools."""
    left = sorted(libvirt_objects(lab) - before)
    return left + [f"{host}:{p.name}" for host, site in sites(lab).items() if site.pool_dir
                   for p in site.pool_dir.iterdir()]


def libvirt_objects(lab) -> set[str]:
    """Every domain and network in the lab's private libvirtds, by host, kind and name."""
    return {f"{host}:{kind.split()[0]}:{name}"
            for host, site in sites(lab).items()
            for kind in ("list --all --name", "net-list --all --name")
            for name in site.virsh(*kind.split()).split()}


def config_text(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def config_paths(key: str, value):
    """(`pulumi config set --path` key, leaf value) for every leaf of a list or map."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from config_paths(f"{key}[{i}]", item)
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from config_paths(f"{key}[{json.dumps(name)}]", item)
    else:
        yield key, value


def single_host_settings(lab, image, **extra) -> dict:
    """A stack on the lab's one private libvirtd: the program creates the network."""
    return {"clusterName": f"e2e{lab.run_id}", "libvirtUri": lab.host.uri,
            "osFamily": "debian12", "postgresSource": "distro", "postgresVersion": "15",
            "domainType": "qemu", "vcpus": "1", "memoryMib": "1024", "diskGib": "8",
            "networkMode": "none", "networkCidr": lab.network_cidr,
            "baseImage": str(image), "storagePool": f"{lab.prefix}-pool",
            "httpProxy": f"http://{lab.gateway}:3128",
            "pythonIndexUrl": f"http://{lab.gateway}:8080/simple/", **extra}


class RealStack:
    """A stack of this program on the lab's private libvirtd, driven through
    pulumi.automation from a thread inside the lab's namespace (see the module's doc)."""

    def __init__(self, lab, tmp_path, settings: dict):
        from pulumi import automation as auto
        self.auto, self.lab = auto, lab
        self.engine = netns.executor(lab.netns, workers=1)
        env = {"PULUMI_BACKEND_URL": f"file://{tmp_path}/state",
               "PULUMI_CONFIG_PASSPHRASE": secrets.token_hex(16),
               "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
               "PULUMI_SKIP_UPDATE_CHECK": "true"}
        (tmp_path / "state").mkdir()
        self.stack = self.run(auto.create_or_select_stack, stack_name=f"e2e{lab.run_id}",
                              work_dir=str(REPO), opts=auto.LocalWorkspaceOptions(env_vars=env))
        self.settings = settings
        self.set(**self.settings)

    def run(self, call, *args, **kwargs):
        return self.engine.submit(call, *args, **kwargs).result()

    def set(self, **settings) -> None:
        """As a user would: `pulumi config set` for each scalar, `--path` for the lists
        and maps (`hosts`, `postgresParameters`), so the stack file holds them typed."""
        scalars = {k: v for k, v in settings.items() if not isinstance(v, (list, dict))}
        self.run(self.stack.set_all_config,
                 {f"pgha:{k}": self.auto.ConfigValue(config_text(v))
                  for k, v in scalars.items()})
        paths = {path: self.auto.ConfigValue(config_text(v))
                 for k, value in settings.items() if isinstance(value, (list, dict))
                 for path, v in config_paths(f"pgha:{k}", value)}
        if paths:
            self.run(self.stack.set_all_config, paths, path=True)

    def up(self, **kwargs):
        return self.run(self.stack.up, on_output=print, color="never", **kwargs)

    def preview(self, **kwargs):
        return self.run(self.stack.preview, on_output=print, color="never", **kwargs)

    def refresh(self):
        # One read at a time: the provider reads every seed back by downloading it, and
        # parallel downloads can come back short (README, troubleshooting).
        return self.run(self.stack.refresh, parallel=1, on_output=print, color="never")

    def outputs(self) -> dict:
        return {k: v.value for k, v in self.run(self.stack.outputs).items()}

    def cluster(self, timings, tmp_path):
        """The lab's view of the cluster the stack's outputs describe now, with an SSH
        login to every VM (the stack's own key, its pinned host keys)."""
        from components.config import build_spec
        from components.rendering import render_health_probe
        from tests.vm.cluster import VmCluster
        from tests.vm.plan import Plan
        from tests.vm.remote import Ssh
        outputs = self.outputs()
        vms = dict(outputs["nodeIps"])
        if "backupRepositoryHost" in outputs:
            vms[REPOSITORY_NAME] = outputs["backupRepositoryHost"]
        prefix = f"pgha-{self.settings['clusterName']}-"
        settings = {**self.settings, "postgresVersion": 15,
                    "nodeCount": len(outputs["nodeIps"])}
        # The program's own probe (what every up and preview runs), for wait_healthy.
        probe = render_health_probe(build_spec(settings), outputs["nodeIps"],
                                    outputs.get("caCertificate", ""))
        plan = Plan(program=None, settings=settings,
                    network=None if self.settings.get("hosts") else {}, volumes=[],
                    seeds={}, domains={n: {"name": prefix + n,
                                           "networkInterfaces": [{"addresses": [ip]}]}
                                       for n, ip in vms.items()},
                    steps=self.logins(outputs, vms), health_probe=probe, outputs=outputs)
        return VmCluster(plan, self.lab, Ssh(self.lab.netns, tmp_path / "ssh"), timings,
                         tmp_path)

    @staticmethod
    def logins(outputs: dict, vms: dict[str, str], tag: str = "login") -> dict:
        """An SSH login per VM as the program's steps make them (the stack's key and
        pinned host keys, from its `outputs`), named `tag`-<vm>."""
        from tests.vm.plan import Step
        host_keys = dict(line.split(" ", 1) for line in outputs["knownHosts"].splitlines())
        return {f"{tag}-{n}": Step(name=f"{tag}-{n}", host=ip, user="pgha",
                                   private_key=outputs["sshPrivateKey"],
                                   host_key=host_keys[ip], command="", script="",
                                   triggers=(), after=())
                for n, ip in vms.items() if ip in host_keys}

    def witness(self, workdir, names: list[str]):
        """An observer of the stack's VMs (tests/e2e/witness.py), following the journals
        of `names` over SSH with the stack's own key and pinned host keys."""
        from tests.e2e.witness import Witness
        outputs = self.outputs()
        steps = self.logins(outputs, {n: outputs["nodeIps"][n] for n in names}, "witness")
        logins = {n: steps[f"witness-{n}"] for n in names}
        return Witness(self.lab, workdir, f"pgha-{self.settings['clusterName']}-", logins)

    def destroy(self, timings) -> None:
        t0 = time.monotonic()
        self.run(self.stack.destroy, on_output=print, color="never")
        timings.add("real: destroy", time.monotonic() - t0)
        self.run(self.stack.workspace.remove_stack, self.stack.name)
        self.engine.shutdown()


def test_real_pulumi_up_preview_change_failover_refresh_destroy(real_lab, tmp_path):
    from tests.vm.cluster import Timings
    lab, image = real_lab
    real = RealStack(lab, tmp_path, single_host_settings(lab, image))
    stack, in_lab, auto = real.stack, real.run, real.auto
    timings = Timings()
    # Everything in the private libvirtd before the stack: what the lab itself defined.
    before = libvirt_objects(lab)
    try:
        t0 = time.monotonic()
        up = real.up()
        timings.add("real: pulumi up (3 VMs)", time.monotonic() - t0)
        outputs = {k: v.value for k, v in up.outputs.items()}
        t0 = time.monotonic()
        preview = real.preview(expect_no_changes=True)
        timings.add("real: no-op preview", time.monotonic() - t0)
        assert set(preview.change_summary) == {"same"}, preview.change_summary

        cluster = real.cluster(timings, tmp_path)
        cluster.sql(cluster.dsn("dsnReadWrite"), "CREATE TABLE e2e (v text)")
        cluster.sql(cluster.dsn("dsnReadWrite"), "INSERT INTO e2e VALUES ('real')")
        cluster.wait_for("the row through dsnReadOnly", lambda: cluster.sql(
            cluster.dsn("dsnReadOnly"), "SELECT v FROM e2e") == [("real",)], 60)

        # As a user would: `pulumi config set --path pgha:postgresParameters.work_mem 6MB`.
        in_lab(stack.set_config, "pgha:postgresParameters.work_mem", auto.ConfigValue("6MB"),
               path=True)
        vms_before = libvirt_ids(in_lab(stack.export_stack))
        replaced: list[str] = []

        def record_replacements(event) -> None:
            pre = event.resource_pre_event
            if pre and pre.metadata.op.value in ("replace", "create-replacement", "delete-replaced",
                                                     "delete"):
                replaced.append(pre.metadata.urn)
        t0 = time.monotonic()
        changed = real.up(on_event=record_replacements)
        timings.add("real: parameter change up", time.monotonic() - t0)
        summary = changed.summary.resource_changes or {}
        assert "delete" not in summary and "create" not in summary, summary
        # No VM, disk or seed is touched; the one replaced resource is the health gate,
        # whose triggers are the configure steps (it runs again after them by design).
        assert libvirt_ids(in_lab(stack.export_stack)) == vms_before
        assert replaced and all(urn.endswith("::" + f"e2e{lab.run_id}-health-gate")
                                for urn in replaced), replaced
        assert cluster.sql(cluster.dsn("dsnReadWrite"), "SHOW work_mem") == [("6MB",)]

        leader = outputs["leaderAtCreation"]
        t_off = lab.power_off(cluster.domain(leader))
        cluster.wait_new_leader(leader, 120)
        timings.add("real: leader VM powered off -> new leader", time.time() - t_off)
        lab.power_on(cluster.domain(leader))
        cluster.wait_streaming(leader, 600)
        timings.add("real: leader powered off -> streaming again (failover, boot, rejoin)", time.time() - t_off)

        t0 = time.monotonic()
        real.refresh()
        timings.add("real: refresh", time.monotonic() - t0)
        real.preview(expect_no_changes=True)
    finally:
        real.destroy(timings)
        print(timings.table())
    assert leftovers(lab, before) == []




def postmaster_starts(cluster, names) -> dict[str, str]:
    """When each node's PostgreSQL last started (Patroni's /patroni): a VM reset by its
    watchdog, or any restart, changes it."""
    return {n: cluster.rest(n, "/patroni")["postmaster_start_time"] for n in names}


def test_real_scaling_with_backups_in_one_run_each_and_fixed_settings(real_lab, tmp_path):
    """nodeCount 3 -> 5 -> 3 with backups on (a fourth VM, the repository) and the
    watchdog required, each change one `pulumi up` that completes: the first three keep
    their leader and never restart (no softdog reset, no unplanned failover), the row
    written before is on every node after, `preview` proposes no change after each
    step. Also: a changed setting fixed at creation (the Patroni namespace) is refused by
    `preview` before anything, naming the setting and the value the cluster has, and
    `preview --diff` prints the health line."""
    from tests.vm import conftest as vm
    from tests.vm.cluster import Timings
    lab, image = real_lab
    # Patroni's timing for six emulated VMs on two host cores, the VM tier's: at the
    # defaults (ttl 30, retryTimeout 10) the leader's HA cycles stretched to 14-18 s while
    # two new VMs booted, a Raft write took longer than 10 s, and the leader's demotion
    # (correct: it could not renew its lock) outlasted what was left of the watchdog's
    # 25 s: a softdog reset (docs/testing.md, "Scaling under emulation"). The watchdog
    # stays required. Stack config values are strings.
    timing = {key: str(value) for key, value in vm.EMULATION_TIMING.items()}
    real = RealStack(lab, tmp_path, single_host_settings(
        lab, image, backups="true", backupRepoMemoryMib="768", backupRepoDiskGib="8",
        watchdogMode="required", **timing))
    timings = Timings()
    before = libvirt_objects(lab)
    core = ["srv1", "srv2", "srv3"]
    try:
        t0 = time.monotonic()
        real.up()
        timings.add("real: pulumi up (3 VMs + repository)", time.monotonic() - t0)
        real.preview(expect_no_changes=True)

        # A setting fixed at creation: refused by the program before any resource.
        # (Valid on its own: the stack's distro packages give PostgreSQL 15 only, so a
        # new version would be refused for that reason before this check.)
        real.set(namespace="/other/")
        with pytest.raises(real.auto.CommandError) as refused:
            real.preview()
        assert ("pgha:namespace = '/other/': the live cluster was created with '/db/'"
                in str(refused.value)), str(refused.value)[-2000:]
        real.set(namespace="/db/")
        diff = real.preview(diff=True, expect_no_changes=True)
        assert "pgha health: cluster healthy" in diff.stdout + diff.stderr, (
            diff.stdout[-2000:], diff.stderr[-2000:])

        cluster = real.cluster(timings, tmp_path)
        cluster.sql(cluster.dsn("dsnReadWrite"), "CREATE TABLE e2e (v text)")
        cluster.sql(cluster.dsn("dsnReadWrite"), "INSERT INTO e2e VALUES ('before scaling')")
        leader = cluster.wait_for("the leader", cluster.leader, 60)
        starts = postmaster_starts(cluster, core)

        for count, members in (("5", core + ["srv4", "srv5"]), ("3", core)):
            real.set(nodeCount=count)
            t0 = time.monotonic()
            witness = real.witness(tmp_path / f"witness-{count}", core).start()
            try:
                real.up()  # one run: an exception here is the failure issue 19 describes
            finally:
                witness.stop()
                print(witness.digest())
            timings.add(f"real: nodeCount -> {count}", time.monotonic() - t0)
            real.preview(expect_no_changes=True)
            cluster = real.cluster(timings, tmp_path)
            assert sorted(cluster.members()) == members
            assert cluster.leader() == leader, "the leader changed during scaling"
            assert postmaster_starts(cluster, core) == starts, "a node restarted"
            for name in members:
                cluster.wait_for(f"the row on {name}", lambda n=name: cluster.sql(
                    cluster.node_dsn(n), "SELECT v FROM e2e") == [("before scaling",)], 120)
    finally:
        real.destroy(timings)
        print(timings.table())
    assert leftovers(lab, before) == []


def test_real_three_hosts_up_preview_host_loss_replacement_destroy(real_hosts_lab,
                                                                    tmp_path):
    """The stack's `hosts` through the real engine: one libvirt provider per host, the
    base image in each host's pool, each VM on the host its placement says, static
    addresses on the LAN. `preview` after `up` proposes no change. The leader's whole
    host lost under a writer and back (tests/vm/test_host_loss.py: the same fault and
    verdict). Then a replica's host lost for good and replaced by a new, empty machine:
    `refresh` and `up`, as the README says, make its VM again there and the node streams
    again. `preview` proposes no change after each; `destroy` leaves nothing on any
    host."""
    from tests.vm.cluster import Timings
    from tests.vm.test_host_loss import host_loss_under_a_writer
    lab, settings = real_hosts_lab
    real = RealStack(lab, tmp_path, settings)
    timings = Timings()
    before = libvirt_objects(lab)
    prefix = f"pgha-{settings['clusterName']}-"

    def check_placed() -> dict[str, str]:
        placed = real.outputs()["nodeHosts"]
        for vm, host in placed.items():
            assert lab.sites[host].is_running(prefix + vm), (vm, host)
            lab.placed[prefix + vm] = host
        return placed
    try:
        t0 = time.monotonic()
        real.up()
        timings.add("real, 3 hosts: pulumi up (3 nodes + repository)", time.monotonic() - t0)
        placed = check_placed()
        assert sorted(placed[n] for n in ("srv1", "srv2", "srv3")) == sorted(lab.sites)
        t0 = time.monotonic()
        preview = real.preview(expect_no_changes=True)
        timings.add("real, 3 hosts: no-op preview", time.monotonic() - t0)
        assert set(preview.change_summary) == {"same"}, preview.change_summary

        cluster = real.cluster(timings, tmp_path)
        acknowledged = host_loss_under_a_writer(cluster, "real-host-loss")
        leader = cluster.wait_healthy()
        real.preview(expect_no_changes=True)

        # A host that holds one replica and nothing else, lost for good.
        holds = {h: [v for v, p in placed.items() if p == h] for h in lab.sites}
        spare, (node,) = next((h, vms) for h, vms in holds.items()
                              if len(vms) == 1 and vms[0] not in (leader, REPOSITORY_NAME))
        lab.lose_host(spare)
        t0 = time.monotonic()
        gone = lab.replace_host(spare)
        assert gone == [prefix + node]
        real.refresh()
        real.up()
        timings.add("real, 3 hosts: host replaced -> refresh + up", time.monotonic() - t0)
        assert check_placed() == placed
        cluster.wait_streaming(node, 600)
        timings.add("real, 3 hosts: host replaced -> its node streaming",
                    time.monotonic() - t0)
        assert cluster.wait_healthy() == leader
        assert cluster.lost_writes(acknowledged) == set()
        real.preview(expect_no_changes=True)
    finally:
        real.destroy(timings)
        print(timings.table())
    assert leftovers(lab, before) == []


def test_real_three_hosts_the_leader_moves_to_another_host(real_hosts_lab, tmp_path):
    """A node's move through the real engine: `up` on three hosts, then the leader's
    placement changed to another host and one `up` under a writer (it hands over, leaves
    Raft, its VM is deleted there and made on the other host, it rejoins); `preview`
    then proposes no change; `destroy` leaves nothing on any host."""
    from tests.vm.cluster import Timings
    lab, settings = real_hosts_lab
    real = RealStack(lab, tmp_path, settings)
    timings = Timings()
    before = libvirt_objects(lab)
    prefix = f"pgha-{settings['clusterName']}-"
    try:
        t0 = time.monotonic()
        real.up()
        timings.add("real, 3 hosts: pulumi up (3 nodes + repository)", time.monotonic() - t0)
        placed = real.outputs()["nodeHosts"]
        for vm, host in placed.items():
            lab.placed[prefix + vm] = host
        cluster = real.cluster(timings, tmp_path)
        move_the_leader_to_another_host(real, cluster, lab, placed, timings)
        t0 = time.monotonic()
        preview = real.preview(expect_no_changes=True)
        timings.add("real, 3 hosts: preview after the move", time.monotonic() - t0)
        assert set(preview.change_summary) == {"same"}, preview.change_summary
        assert real.outputs()["nodeHosts"] == placed
    finally:
        real.destroy(timings)
        print(timings.table())
    assert leftovers(lab, before) == []


def move_the_leader_to_another_host(real, cluster, lab, placed, timings) -> None:
    """The leader moved to another host (placement), one `up` under a writer: it hands
    its leadership over, leaves Raft, its VM is made anew on the other host, it rejoins
    as a streaming replica; no acknowledged write is lost and the three are members."""
    leader = cluster.wait_healthy()
    prefix = f"pgha-{real.settings['clusterName']}-"
    source = placed[leader]
    target = next(h for h in sorted(lab.sites) if h not in (source, placed[REPOSITORY_NAME]))
    # Two nodes on one host then: acknowledged; the repository stays where it is.
    real.set(placement={leader: target, REPOSITORY_NAME: placed[REPOSITORY_NAME]},
             allowHostMajority="true")
    writer = cluster.start_writer("real-move")
    t0 = time.monotonic()
    try:
        time.sleep(5)
        real.up()
    finally:
        acknowledged = writer.stop()
    timings.add("real, 3 hosts: the leader moved to another host (up)", time.monotonic() - t0)
    assert lab.sites[target].is_running(prefix + leader)
    assert not lab.sites[source].is_running(prefix + leader)
    lab.placed[prefix + leader] = target
    placed[leader] = target
    assert real.outputs()["nodeMoves"] == {
        leader: {"from": lab.sites[source].host.uri, "to": target}}
    cluster.wait_streaming(leader, 600)
    new_leader = cluster.wait_healthy()
    assert new_leader != leader
    assert sorted(cluster.members()) == ["srv1", "srv2", "srv3"]
    assert cluster.lost_writes(acknowledged) == set()
    records = writer.records()
    pause = max((b["t"] - a["t"] for a, b in zip(
        [r for r in records if r["ok"]], [r for r in records if r["ok"]][1:])), default=0)
    timings.add("real, 3 hosts: the move's longest pause between acknowledged writes",
                pause)
    print(f"move: {len(acknowledged)} of {len(records)} writes acknowledged, none lost")
