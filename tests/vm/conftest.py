"""The VM tier: the program's own steps on three real Debian 12 VMs (QEMU/TCG) in a private
libvirtd. One cluster serves the whole session (provisioning takes minutes under
emulation); every scenario starts by waiting for a healthy cluster and leaves one.

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


def vm_settings(run_id: str, image: Path, packages: dict[str, str]) -> dict:
    """The stack the VM tier brings up: what a user's Debian 12 stack on an emulating
    host would say, on an isolated network with a package relay and a wheelhouse."""
    return {"clusterName": f"vm{run_id}", "nodeCount": 3, "osFamily": "debian12",
            "postgresSource": "distro", "postgresVersion": 15, "domainType": "qemu",
            "vcpus": 1, "memoryMib": 1024, "diskGib": 8, "networkMode": "none",
            "networkCidr": CIDR, "baseImage": str(image),
            "storagePool": f"pgha-vm{run_id}-pool", **packages}


def build_image() -> Path:
    env = dict(os.environ, PGHA_IMAGE_DIR=str(CACHE / "images"))
    subprocess.run([str(REPO / "tools" / "build-debian-image.sh")], check=True, env=env,
                   stdout=subprocess.DEVNULL, timeout=1800)
    return CACHE / "images" / "debian12-cloud.qcow2"


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
        plan = plan_for(vm_settings(run_id, image, packages), mocks)
        lab.create_network(plan.network, plan.domains)
        served = lab.serve_packages(wheelhouse)
        assert served == packages, served
        (base,) = [v for v in plan.volumes if "source" in v]
        base_path = lab.create_base_volume(base, image)
        disks = {v["name"]: v for v in plan.volumes if "source" not in v}
        for name, domain in plan.domains.items():
            lab.create_node(domain, plan.seeds[name], disks[f"{domain['name']}.qcow2"],
                            base_path, disks.get(f"{domain['name']}-data.qcow2"))
        TIMINGS.add(f"setup: lab + define and start {len(plan.domains)} VMs",
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

