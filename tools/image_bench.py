#!/usr/bin/env python3
"""Node images against the plain cloud image, on real VMs in the VM tier's lab (three
libvirt hosts on one LAN, tests/vm/hosts_lab.py). A benchmark that prints figures, not a
timed test.

    sudo .venv/bin/python tools/image_bench.py

In one run on this machine, with the VM tier's stack (Debian 12, distro PostgreSQL 15,
1 vCPU / 1 GiB per node, one node per host, the domain type the stack says, a package
relay and a wheelhouse on the LAN), backups off, and Patroni's timing for emulation that
the VM tier's stack has (tests/vm/conftest.py), so that growing under emulation does
not cost the leader its lock:

  build   tools/build-node-image.py into an empty directory: a cold build
  up      3 nodes to a healthy cluster: the VMs defined and started, then every step
          `pulumi up` runs, in its order, until the health gate passes
  grow    nodeCount 3 -> 5 on that cluster: what `pulumi up` runs for the change, until
          the cluster is healthy with five members

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
from tests.vm.cluster import Timings  # noqa: E402
from tests.vm.hosts_lab import HostsLab  # noqa: E402
from tests.vm.plan import VmMocks, plan_for  # noqa: E402

PLAIN, IMAGE = "plain image", "node image"
ROWS = (("build", "build the node image (cold)"),
        ("up", "up: 3 nodes to healthy"),
        ("grow", "grow: nodeCount 3 -> 5 to healthy"))


def measure(kind: str, plain_image: Path, wheelhouse: Path, out: Path,
            figures: dict[tuple[str, str], float]) -> None:
    """`up` and `grow` from `kind` in a lab of their own (and the build, for an image)."""
    run_id = secrets.token_hex(3)
    workdir = Path(tempfile.mkdtemp(prefix=f"pgha-bench{run_id}-"))
    lab = HostsLab(run_id, tier.CIDR, workdir, tier.HOSTS)
    try:
        lab.start()
        served = lab.serve_packages(wheelhouse)
        mocks = VmMocks()
        settings = {**tier.vm_settings(run_id, plain_image, served, lab), "backups": False}
        if kind == IMAGE:
            t0 = time.monotonic()
            image = tier.build_node_image(lab, settings, workdir, out)
            figures[("build", kind)] = time.monotonic() - t0
            settings["baseImage"] = str(image)
        plan = plan_for(settings, mocks)
        t0 = time.monotonic()
        cluster = tier.provision(lab, plan, mocks, workdir, Timings())
        cluster.wait_healthy()
        figures[("up", kind)] = time.monotonic() - t0
        t0 = time.monotonic()
        cluster.apply(plan_for({**plan.settings, "nodeCount": 5}, mocks))
        cluster.wait_healthy()
        assert len(cluster.members()) == 5, cluster.members()
        figures[("grow", kind)] = time.monotonic() - t0
        print(f"{kind}: " + ", ".join(f"{what} {s:.0f} s" for (what, k), s in
                                      figures.items() if k == kind), flush=True)
    finally:
        errors = lab.stop()
        assert not errors, errors


def table(figures: dict[tuple[str, str], float]) -> str:
    lines = [f"{'what':36} {PLAIN:>12} {IMAGE:>12} {'ratio':>7}"]
    for what, label in ROWS:
        plain_s, image_s = figures.get((what, PLAIN)), figures[(what, IMAGE)]
        plain = f"{plain_s:12.0f}" if plain_s else f"{'-':>12}"
        ratio = f"{plain_s / image_s:6.1f}x" if plain_s else f"{'-':>7}"
        lines.append(f"{label:36} {plain} {image_s:12.0f} {ratio}")
    return "\n".join(lines)


def main() -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    plain = tier.build_image()
    wheelhouse = tier.build_wheelhouse()
    figures: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="pgha-bench-images-") as out:
        for kind in (PLAIN, IMAGE):
            measure(kind, plain, wheelhouse, Path(out), figures)
    print(table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
