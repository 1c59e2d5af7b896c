"""The VM tier: the program's own steps on real Debian 12 VMs (QEMU/TCG) in a private
libvirtd, three nodes and the backup repository. One cluster serves the whole session
(provisioning takes minutes under emulation); every scenario starts by waiting for a
healthy cluster and leaves one.

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
from tests.vm.lab import Lab
from tests.vm.plan import VmMocks, plan_for
from tests.vm.remote import Ssh

sys.path.insert(0, str(REPO / "tests" / "e2e"))
import libvirt_host  # noqa: E402

CIDR = "10.232.0.0/24"
CACHE = Path(os.environ.get("PGHA_CACHE", Path.home() / ".cache" / "pgha"))
TIMINGS = Timings()
# Less WAL for a former leader's pg_rewind to copy. PostgreSQL 15's pg_rewind copies every
# segment in the new primary's pg_wal; with archive_timeout 60 s (a switch each minute) and
# wal_keep_size 256MB that was 27-29 segments, 100-105 s between emulated CPUs, which on
# hardware is seconds (docs/benchmarks.md). Nothing needs the kept segments here: Patroni
# keeps a slot for each member and replicas fetch older WAL from the repository.
EMULATION_WAL = {"archive_timeout": "5min", "wal_keep_size": "64MB"}


def vm_settings(run_id: str, image: Path, packages: dict[str, str]) -> dict:
    """The stack the VM tier brings up: what a user's Debian 12 stack on an emulating
    host would say, on an isolated network with a package relay and a wheelhouse."""
    return {"clusterName": f"vm{run_id}", "nodeCount": 3, "osFamily": "debian12",
            "postgresSource": "distro", "postgresVersion": 15, "domainType": "qemu",
            "vcpus": 1, "memoryMib": 1024, "diskGib": 8, "networkMode": "none",
            "networkCidr": CIDR, "baseImage": str(image),
            "storagePool": f"pgha-vm{run_id}-pool", "backups": True,
            "backupRepoDiskGib": 4, "backupRepoMemoryMib": 768,
            "postgresParameters": EMULATION_WAL, **packages}


def build_image() -> Path:
    env = dict(os.environ, PGHA_IMAGE_DIR=str(CACHE / "images"))
    subprocess.run([str(REPO / "tools" / "build-debian-image.sh")], check=True, env=env,
                   stdout=subprocess.DEVNULL, timeout=1800)
    return CACHE / "images" / "debian12-cloud.qcow2"


def build_node_image(lab: Lab, settings: dict, network: str, workdir: Path,
                     out: Path = CACHE / "images") -> Path:
    """The stack's node image, built by the user's command in the lab's libvirtd (cached
    by its hash in `out`: a warm run only checks it)."""
    stack_file = workdir / "Pulumi.vm-image.yaml"
    stack_file.write_text(yaml.safe_dump({"config": {f"pgha:{key}": value
                                                     for key, value in settings.items()}}))
    built = subprocess.run(
        [str(REPO / ".venv/bin/python"), str(REPO / "tools/build-node-image.py"),
         "--config", str(stack_file), "--out", str(out),
         "--connect", lab.host.uri, "--pool", settings["storagePool"], "--network", network],
        check=True, stdout=subprocess.PIPE, text=True, timeout=3600)
    return Path(built.stdout.strip().splitlines()[-1])


def build_wheelhouse() -> Path:
    out = CACHE / "wheelhouse"
    subprocess.run([str(REPO / ".venv/bin/python"), str(REPO / "tools/build-wheelhouse.py"),
                    str(out)], check=True, stdout=subprocess.DEVNULL, timeout=1800)
    return out


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
    lab = Lab(run_id, CIDR, workdir)
    try:
        t0 = time.monotonic()
        lab.start()
        mocks = VmMocks()
        # The relay and wheelhouse addresses are known before the network exists (its
        # gateway), so one plan serves to build everything.
        packages = {"httpProxy": f"http://{lab.gateway}:3128",
                    "pythonIndexUrl": f"http://{lab.gateway}:8080/simple/"}
        plain = plan_for(vm_settings(run_id, image, packages), mocks)
        lab.create_network(plain.network, plain.domains)
        served = lab.serve_packages(wheelhouse)
        assert served == packages, served
        TIMINGS.add("setup: lab, network and package relay", time.monotonic() - t0)
        t0 = time.monotonic()
        baked = build_node_image(lab, plain.settings, plain.network["name"], workdir)
        TIMINGS.add("setup: node image (built when cold, checked when warm)",
                    time.monotonic() - t0)
        t0 = time.monotonic()
        plan = plan_for(vm_settings(run_id, baked, packages), mocks)
        assert (plan.network, plan.domains.keys()) == (plain.network, plain.domains.keys())
        (base,) = [v for v in plan.volumes if "source" in v]
        lab.create_base_volume(base, Path(base["source"]))  # the node image
        lab.create_nodes(plan, plan.domains)
        TIMINGS.add(f"setup: define and start {len(plan.domains)} VMs",
                    time.monotonic() - t0)

        cluster = VmCluster(plan, lab, Ssh(lab.netns, workdir / "ssh"), TIMINGS, workdir)
        cluster.mocks = mocks
        t0 = time.monotonic()
        cluster.provisioning = cluster.run_steps()
        TIMINGS.add("pulumi up steps, VMs booting to healthy (all nodes)",
                    time.monotonic() - t0)
        yield cluster
    finally:
        if os.environ.get("PGHA_KEEP_VMS") == "1":
            lab.host.mark_kept()  # until tests/e2e/smoke_boot.py --stop sweeps it
        else:
            errors = lab.host.stop()
            assert not errors, errors


def pytest_terminal_summary(terminalreporter):
    if TIMINGS.rows:
        terminalreporter.write_sep("-", "VM tier timings (seconds)")
        terminalreporter.write_line(TIMINGS.table())
    for note in TIMINGS.notes:
        terminalreporter.write_line(note)

