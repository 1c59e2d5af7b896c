"""The pgha Debian 12 cloud image boots under libvirt (TCG) and is usable.

Runs tests/e2e/smoke_boot.py: builds (or reuses) the image, starts a private
libvirtd (tests/e2e/libvirt_host.py: own namespaces, config, socket, state),
boots one VM on an isolated network with its NoCloud seed attached as
pulumi-libvirt attaches it (IDE cdrom on machine pc), checks that cloud-init
found that seed on /dev/sr0 and created the user with the key, SSHes in, loads
softdog and runs apt-get update through the package relay, then tears
everything down. Takes about 2 minutes with a warm image cache and an idle
machine (about 4 with a cold cache).

Needs root and the host tools in libvirt_host.TOOLS (Debian: libvirt-daemon-system
qemu-system-x86 qemu-utils dnsmasq-base genisoimage tinyproxy-bin socat
openssh-client; the image build installs debootstrap & co itself). Skipped
otherwise; tests/conftest.py turns the skip into a failure when PGHA_NO_SKIP=1.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import libvirt_host  # noqa: E402
import smoke_boot  # noqa: E402

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root (libvirtd, network namespaces, loop devices)"
)


def test_image_boots_and_reaches_packages(tmp_path: Path) -> None:
    missing = libvirt_host.missing_tools()
    if missing:
        pytest.skip("missing host tools: " + ", ".join(missing))
    out = tmp_path / "smoke.json"
    rc = smoke_boot.main(["--json", str(out)])
    report = json.loads(out.read_text())
    assert rc == 0, report["results"].get("error")
    res, t = report["results"], report["timings"]

    assert res["ip"] == smoke_boot.VM_IP
    assert "status: done" in res["cloud_init_status"]
    assert "rc=0" in res["cloud_init_status"]
    # The seed was read from the IDE cdrom, and it was ours.
    assert "DataSourceNoCloud" in res["seed_datasource"] and "seed=/dev/sr0" in res["seed_datasource"]
    assert res["seen_instance_id"] == res["instance_id"]
    assert res["ssh_user"] == smoke_boot.VM_USER
    assert "<target dev='hdd' bus='ide'/>" in res["seed_disk_xml"]
    assert not res.get("teardown_errors")
    assert "/dev/watchdog" in res["watchdog"] and "softdog" in res["watchdog"]
    assert not any(line.startswith(("Err:", "E:")) for line in res["apt_update_tail"])
    # growpart: the root fs fills the 8 GiB overlay, not the 3 GiB image
    df = next(line for line in res["vm_info"] if line.startswith("/dev/vda1"))
    size = df.split()[1]
    assert size.endswith("G") and float(size[:-1]) > 7, df
    for key in ("boot_to_lease", "boot_to_ssh", "apt_get_update"):
        assert key in t
