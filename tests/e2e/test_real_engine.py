"""The real thing, opt-in: `pulumi up` of this program through pulumi.automation, with the
real engine and the real providers, on three Debian 12 VMs in a private libvirtd.

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

Checks: up; the cluster's outputs work (a row written through dsnReadWrite is read
through dsnReadOnly); `preview` proposes no change; a PostgreSQL parameter change updates
commands only (no VM replaced); the leader VM powered off fails over and comes back by
itself; `refresh` works; `destroy` leaves no domain, volume or network of the stack.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time

import pytest

from tests import netns
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



def libvirt_ids(deployment) -> dict[str, str]:
    """URN -> provider ID of every libvirt resource in an exported stack: a replaced VM,
    disk, seed or network gets a new ID."""
    return {r["urn"]: r.get("id") for r in deployment.deployment["resources"]
            if r["type"].startswith("libvirt:index/")}

def leftovers(lab, before: set[str]) -> list[str]:
    """Whatever the names: every domain and network the stack left in the lab's
    libvirtd beyond what was there `before`, and every file left in its pool."""
    left = sorted(libvirt_objects(lab) - before)
    return left + ([p.name for p in lab.pool_dir.iterdir()] if lab.pool_dir else [])


def libvirt_objects(lab) -> set[str]:
    """Every domain and network in the lab's private libvirtd, by kind and name."""
    return {f"{kind.split()[0]}:{name}"
            for kind in ("list --all --name", "net-list --all --name")
            for name in lab.virsh(*kind.split()).split()}


class RealStack:
    """A stack of this program on the lab's private libvirtd, driven through
    pulumi.automation from a thread inside the lab's namespace (see the module's doc)."""

    def __init__(self, lab, image, tmp_path, **extra: str):
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
        gateway = lab.gateway
        self.settings = {
            "clusterName": f"e2e{lab.run_id}", "libvirtUri": lab.host.uri,
            "osFamily": "debian12", "postgresSource": "distro", "postgresVersion": "15",
            "domainType": "qemu", "vcpus": "1", "memoryMib": "1024", "diskGib": "8",
            "networkMode": "none", "networkCidr": lab.network_cidr,
            "baseImage": str(image), "storagePool": f"{lab.prefix}-pool",
            "httpProxy": f"http://{gateway}:3128",
            "pythonIndexUrl": f"http://{gateway}:8080/simple/", **extra}
        self.set(**self.settings)

    def run(self, call, *args, **kwargs):
        return self.engine.submit(call, *args, **kwargs).result()

    def set(self, **settings: str) -> None:
        self.run(self.stack.set_all_config,
                 {f"pgha:{k}": self.auto.ConfigValue(v) for k, v in settings.items()})

    def up(self, **kwargs):
        return self.run(self.stack.up, on_output=print, color="never", **kwargs)

    def preview(self, **kwargs):
        return self.run(self.stack.preview, on_output=print, color="never", **kwargs)

    def outputs(self) -> dict:
        return {k: v.value for k, v in self.run(self.stack.outputs).items()}

    def cluster(self, timings, tmp_path):
        """The lab's view of the cluster the stack's outputs describe now."""
        from tests.vm.cluster import VmCluster
        from tests.vm.plan import Plan
        from tests.vm.remote import Ssh
        outputs = self.outputs()
        plan = Plan(program=None, settings={**self.settings, "postgresVersion": 15,
                                            "nodeCount": len(outputs["nodeIps"])},
                    network={}, volumes=[], seeds={}, domains={
                        n: {"name": f"pgha-{self.settings['clusterName']}-{n}",
                            "networkInterfaces": [{"addresses": [ip]}]}
                        for n, ip in outputs["nodeIps"].items()},
                    steps={}, health_probe="", outputs=outputs)
        return VmCluster(plan, self.lab, Ssh(self.lab.netns, tmp_path / "ssh"), timings,
                         tmp_path)

    def witness(self, workdir, names: list[str]):
        """An observer of the stack's VMs (tests/e2e/witness.py), following the journals
        of `names` over SSH with the stack's own key and pinned host keys."""
        from tests.e2e.witness import Witness
        from tests.vm.plan import Step
        outputs = self.outputs()
        host_keys = dict(line.split(" ", 1) for line in outputs["knownHosts"].splitlines())
        logins = {n: Step(name=f"witness-{n}", host=ip, user="pgha",
                          private_key=outputs["sshPrivateKey"], host_key=host_keys[ip],
                          command="", script="", triggers=(), after=())
                  for n, ip in outputs["nodeIps"].items() if n in names}
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
    real = RealStack(lab, image, tmp_path)
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
        cluster.wait_for("a new leader", lambda: cluster.leader() not in (None, leader), 120,
                         0.5)
        timings.add("real: leader VM powered off -> new leader", time.time() - t_off)
        lab.power_on(cluster.domain(leader))
        cluster.wait_for(f"{leader} streaming again", lambda: cluster.streaming(leader), 600)
        timings.add("real: leader powered off -> streaming again (failover, boot, rejoin)", time.time() - t_off)

        t0 = time.monotonic()
        # One read at a time: the provider reads every seed back by downloading it, and
        # parallel downloads can come back short (README, troubleshooting).
        in_lab(stack.refresh, parallel=1, on_output=print, color="never")
        timings.add("real: refresh", time.monotonic() - t0)
        real.preview(expect_no_changes=True)
    finally:
        real.destroy(timings)
        print(timings.table())
    assert leftovers(lab, before) == []


# Patroni's timing for six emulated VMs on two host cores. Patroni's defaults (ttl 30,
# retryTimeout 10) assume a loop that takes milliseconds; here an idle node's VM already
# takes about a third of a host core, and while two new VMs boot and install packages
# the leader's HA cycles stretch to 14-18 s and a Raft write can take longer than 10 s.
# The leader then demotes itself (correctly: it could not renew its lock), and its
# demotion, as slow, outlasts what was left of the watchdog's 25 s: a softdog reset.
# (Measured: docs/testing.md, "Scaling under emulation".) The watchdog stays required.
EMULATION_TIMING = {"ttl": "60", "loopWait": "10", "retryTimeout": "20",
                    "watchdogSafetyMargin": "5"}


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
    from tests.vm.cluster import Timings
    lab, image = real_lab
    real = RealStack(lab, image, tmp_path, backups="true", backupRepoMemoryMib="768",
                     backupRepoDiskGib="8", watchdogMode="required", **EMULATION_TIMING)
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
