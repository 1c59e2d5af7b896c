#!/usr/bin/env python3
"""Node images against plain cloud images, on real VMs (the VM tier's lab), not a timed
test.

    sudo .venv/bin/python tools/image_bench.py

In one run on this machine, with the VM tier's stack (Debian 12, distro PostgreSQL 15,
1 vCPU / 1 GiB per node, QEMU as the stack's domainType says, a package relay and a
wheelhouse on the lab's isolated network):

  build      tools/build-node-image.py into an empty directory (a cold build)
  up         3 nodes from the image to a healthy cluster: every step `pulumi up` runs
  grow       nodeCount 3 -> 5 on that cluster: the steps `pulumi up` runs for it

`up` and `grow` run once from the plain cloud image and once from the node image, each in
a lab of its own. Prints one table of seconds and the ratio.
"""
from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.vm import conftest as tier  # noqa: E402
from tests.vm.cluster import Timings, VmCluster  # noqa: E402
from tests.vm.lab import Lab  # noqa: E402
from tests.vm.plan import VmMocks, plan_for  # noqa: E402
from tests.vm.remote import Ssh  # noqa: E402


def measure(kind: str, plain_image: Path, wheelhouse: Path, out: Path,
            figures: dict[tuple[str, str], float]) -> None:
    run_id = secrets.token_hex(3)
    workdir = Path(tempfile.mkdtemp(prefix=f"pgha-bench{run_id}-"))
    lab = Lab(run_id, tier.CIDR, workdir)
    try:
        lab.start()
        mocks = VmMocks()
        packages = {"httpProxy": f"http://{lab.gateway}:3128",
                    "pythonIndexUrl": f"http://{lab.gateway}:8080/simple/"}
        settings = {**tier.vm_settings(run_id, plain_image, packages), "backups": False}
        plan = plan_for(settings, mocks)
        lab.create_network(plan.network, plan.domains)
        lab.serve_packages(wheelhouse)
        if kind == "node image":
            t0 = time.monotonic()
            image = tier.build_node_image(lab, settings, plan.network["name"], workdir, out)
            figures[("build", kind)] = time.monotonic() - t0
            plan = plan_for({**settings, "baseImage": str(image)}, mocks)
        t0 = time.monotonic()
        (base,) = [v for v in plan.volumes if "source" in v]
        lab.create_base_volume(base, Path(base["source"]))
        lab.create_nodes(plan, plan.domains)
        cluster = VmCluster(plan, lab, Ssh(lab.netns, workdir / "ssh"), Timings(), workdir)
        cluster.mocks = mocks
        cluster.run_steps()
        cluster.wait_healthy()
        figures[("up", kind)] = time.monotonic() - t0
        t0 = time.monotonic()
        cluster.apply(plan_for({**plan.settings, "nodeCount": 5}, mocks))
        cluster.wait_healthy()
        figures[("grow", kind)] = time.monotonic() - t0
    finally:
        errors = lab.host.stop()
        assert not errors, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    plain = tier.build_image()
    wheelhouse = tier.build_wheelhouse()
    figures: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="pgha-bench-images-") as out:
        for kind in ("plain image", "node image"):
            measure(kind, plain, wheelhouse, Path(out), figures)
    print(f"{'what':34} {'plain image':>12} {'node image':>12} {'ratio':>7}")
    for what, label in (("build", "build the node image (cold)"),
                        ("up", "up: 3 nodes to healthy"),
                        ("grow", "grow: nodeCount 3 -> 5 to healthy")):
        plain_s = figures.get((what, "plain image"))
        image_s = figures[(what, "node image")]
        ratio = f"{plain_s / image_s:6.1f}x" if plain_s else "      -"
        print(f"{label:34} {plain_s or 0:12.0f} {image_s:12.0f} {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
