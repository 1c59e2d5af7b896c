"""The VM tier: the program's own steps on real Debian 12 VMs (QEMU/TCG), three nodes
and the backup repository, spread over three libvirt hosts as the stack's `hosts` says:
three private libvirtds, each in a network namespace of its own, their bridges joined
into one LAN (tests/vm/hosts_lab.py). One cluster serves the whole session (provisioning
takes minutes under emulation); every scenario starts by waiting for a healthy cluster
and leaves one.

Needs root, the host tools in tests/e2e/libvirt_host.TOOLS, and reach to Debian's and
PyPI's package servers (the image build, the nodes' apt through the relay, the
wheelhouse). Without them it skips, and CI (PGHA_NO_SKIP=1) turns the skip into a failure.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, skip_or_fail
from tests.vm.cluster import Timings, VmCluster
from tests.vm.hosts_lab import HOST_BRIDGE, HostsLab
from tests.vm.plan import VmMocks, plan_for
from tests.vm.remote import Ssh

sys.path.insert(0, str(REPO / "tests" / "e2e"))
import libvirt_host  # noqa: E402

CIDR = "10.232.0.0/24"
CACHE = Path(os.environ.get("PGHA_CACHE", Path.home() / ".cache" / "pgha"))
TIMINGS = Timings()
# Less WAL for a former leader's pg_rewind to copy. PostgreSQL 15's pg_rewind copies every
# file in the new primary's pg_wal, whatever it holds: segments kept by wal_keep_size and
# the ones renamed ahead of time for reuse (wal_recycle). Between emulated CPUs that copy
# runs at about 1.3 MB/s: 72 s for 7 segments, 47 s for 4, of one rewind with nothing
# to undo (docs/benchmarks.md), where hardware takes seconds. Nothing here needs those
# files: Patroni keeps a slot for each member, which holds what an absent member still
# needs, and replicas fetch anything older from the repository. archive_timeout 5min:
# fewer forced segment switches (the program's default is 60s).
EMULATION_WAL = {"archive_timeout": "5min", "wal_keep_size": "0", "wal_recycle": "off"}
# Patroni's timing for emulation, as the README's troubleshooting says, from the start:
# at the defaults (ttl 30, retryTimeout 10) a leader VM starved of CPU by its neighbours
# (three more VMs, the namespace tiers alongside) missed its watchdog's 25 s and the
# softdog reset it, in the middle of a test about something else (docs/benchmarks.md).
EMULATION_TIMING = {"ttl": 60, "loopWait": 10, "retryTimeout": 20, "watchdogSafetyMargin": 5}


HOSTS = ["hv1", "hv2", "hv3"]


def vm_settings(run_id: str, image: Path, packages: dict[str, str], lab: HostsLab) -> dict:
    """The stack the VM tier brings up: what a user's Debian 12 stack over three
    emulating hypervisors would say, each with a bridge onto one LAN (one node per host,
    the repository with the first), with a package relay and a wheelhouse there."""
    hosts = [{"name": name, "uri": lab.sites[name].host.uri, "bridge": HOST_BRIDGE}
             for name in HOSTS]
    return {"clusterName": f"vm{run_id}", "nodeCount": 3, "osFamily": "debian12",
            "postgresSource": "distro", "postgresVersion": 15, "domainType": "qemu",
            "vcpus": 1, "memoryMib": 1024, "diskGib": 8, "hosts": hosts,
            "networkCidr": CIDR, "networkGateway": lab.gateway, "baseImage": str(image),
            "storagePool": f"pgha-vm{run_id}-pool", "backups": True,
            "backupRepoDiskGib": 4, "backupRepoMemoryMib": 768,
            "postgresParameters": EMULATION_WAL, **EMULATION_TIMING, **packages}


def build_image() -> Path:
    env = dict(os.environ, PGHA_IMAGE_DIR=str(CACHE / "images"))
    subprocess.run([str(REPO / "tools" / "build-debian-image.sh")], check=True, env=env,
                   stdout=subprocess.DEVNULL, timeout=1800)
    return CACHE / "images" / "debian12-cloud.qcow2"


def build_node_image(lab: HostsLab, settings: dict, workdir: Path,
                     out: Path = CACHE / "images") -> Path:
    """The stack's node image, built by the user's command in the LAN's libvirtd (cached
    by its hash in `out`: a warm run only checks it)."""
    stack_file = workdir / "Pulumi.vm-image.yaml"
    stack_file.write_text(yaml.safe_dump({"config": {f"pgha:{key}": value
                                                     for key, value in settings.items()}}))
    built = subprocess.run(
        [str(REPO / ".venv/bin/python"), str(REPO / "tools/build-node-image.py"),
         "--config", str(stack_file), "--out", str(out),
         "--connect", lab.lan.uri, "--pool", settings["storagePool"],
         "--network", lab.lan_network],
        check=True, stdout=subprocess.PIPE, text=True, timeout=3600)
    return Path(built.stdout.strip().splitlines()[-1])


def build_wheelhouse() -> Path:
    out = CACHE / "wheelhouse"
    subprocess.run([str(REPO / ".venv/bin/python"), str(REPO / "tools/build-wheelhouse.py"),
                    str(out)], check=True, stdout=subprocess.DEVNULL, timeout=1800)
    return out


def provision(lab: HostsLab, plan, mocks: VmMocks, workdir: Path,
              timings: Timings) -> VmCluster:
    """What `pulumi up` does for `plan` on the lab: the base image on every host, each
    node's VM on its host, then every step, the VMs booting meanwhile."""
    t0 = time.monotonic()
    base = next(v for v in plan.volumes if "source" in v)
    lab.create_base_volume(base, Path(base["source"]))
    lab.create_nodes(plan, plan.domains)
    timings.add(f"setup: define and start {len(plan.domains)} VMs", time.monotonic() - t0)
    cluster = VmCluster(plan, lab, Ssh(lab.netns, workdir / "ssh"), timings, workdir)
    cluster.mocks = mocks
    t0 = time.monotonic()
    cluster.provisioning = cluster.run_steps()
    timings.add("pulumi up steps, VMs booting to healthy (all nodes)", time.monotonic() - t0)
    return cluster


def announce_provisioned() -> None:
    """Tell tools/test.sh that the cluster is up: it starts the namespace tiers then, so
    that their native processes do not take CPU from four VMs provisioning, the tier's
    most CPU-bound phase (docs/testing.md has what was measured)."""
    marker = os.environ.get("PGHA_VM_PROVISIONED_FILE")
    if marker:
        Path(marker).touch()


@pytest.fixture(scope="session")
def vm_cluster():
    if os.geteuid() != 0:
        skip_or_fail("the VM tier needs root (libvirtd, network namespaces)")
    missing = libvirt_host.missing_tools()
    if missing:
        skip_or_fail("the VM tier needs host tools: " + ", ".join(missing))
    t0 = time.monotonic()
    image = build_image()
    wheelhouse = build_wheelhouse()
    TIMINGS.add("setup: image + wheelhouse (cached when warm)", time.monotonic() - t0)

    run_id = secrets.token_hex(3)
    workdir = Path(tempfile.mkdtemp(prefix=f"pgha-vm{run_id}-"))
    lab = HostsLab(run_id, CIDR, workdir, HOSTS)
    try:
        t0 = time.monotonic()
        lab.start()
        mocks = VmMocks()
        served = lab.serve_packages(wheelhouse)
        plain = plan_for(vm_settings(run_id, image, served, lab), mocks)
        assert plain.network is None and set(plain.placement.values()) == set(HOSTS)
        TIMINGS.add("setup: lab (hosts, LAN) and package relay", time.monotonic() - t0)
        t0 = time.monotonic()
        baked = build_node_image(lab, plain.settings, workdir)
        TIMINGS.add("setup: node image (built when cold, checked when warm)",
                    time.monotonic() - t0)
        plan = plan_for(vm_settings(run_id, baked, served, lab), mocks)
        assert plan.domains.keys() == plain.domains.keys()
        cluster = provision(lab, plan, mocks, workdir, TIMINGS)
        announce_provisioned()
        yield cluster
    finally:
        if os.environ.get("PGHA_KEEP_VMS") == "1":
            lab.mark_kept()  # until tests/e2e/smoke_boot.py --stop sweeps it
        else:
            errors = lab.stop()
            assert not errors, errors


def pytest_terminal_summary(terminalreporter):
    if TIMINGS.rows:
        terminalreporter.write_sep("-", "VM tier timings (seconds)")
        terminalreporter.write_line(TIMINGS.table())
    for note in TIMINGS.notes:
        terminalreporter.write_line(note)


def pytest_runtest_logreport(report):
    """Each phase's duration as it ends, with the time of day: a run stopped by CI's time
    limit never reaches the summary, and these lines say where its time went."""
    if report.when == "call" or report.duration >= 30:
        sys.__stdout__.write(f"\n[vm {time.strftime('%H:%M:%S')}] {report.nodeid} "
                             f"{report.when} {report.outcome} in {report.duration:.0f} s\n")
        sys.__stdout__.flush()
