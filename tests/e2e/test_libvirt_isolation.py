"""The tests' private libvirt leaves the host's libvirt alone.

Two rounds in a row (the second also shows that the first cleaned up): take a
snapshot (path, type, size, mtime, mode, owner) of everything under the host's
/etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/cache/libvirt and
/var/log/libvirt; start a LibvirtHost, give it an isolated network, a storage
pool with a volume and a small running domain (no disk, 64 MiB, TCG); take the
snapshot again while it runs and once more after stop(): all three must be
equal. If a libvirtd answers on the host's default socket, its domain, network
and pool lists (read through its read-only socket) must not change and must
not show any of the run's objects.

On a host whose own libvirtd is busy (running VMs write logs, renew leases),
changes that it makes itself cannot be told apart from ours: then only changes
under /etc/libvirt or to paths that carry the run's names fail the test, the
rest is printed. With no host libvirtd answering (CI), any change fails.

About 5-15 s a round, 10 s for the sweep test (the first start on a machine
also probes QEMU's capabilities, about 9 s).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import libvirt_host  # noqa: E402
from libvirt_host import HOST_LIBVIRT_DIRS, HOST_URI, RUN_ROOT, LibvirtHost  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (libvirtd, network namespaces)")

Snapshot = dict[str, tuple[object, ...] | None]


def snapshot(roots: tuple[str, ...] = HOST_LIBVIRT_DIRS) -> Snapshot:
    """Every path under ``roots`` (symlinks not followed): type, size, mtime,
    mode, owner. A missing root maps to None."""
    out: Snapshot = {}

    def entry(p: str) -> tuple[object, ...]:
        st = os.lstat(p)
        return (st.st_mode, st.st_size, st.st_mtime_ns, st.st_uid, st.st_gid)

    for root in roots:
        if not os.path.lexists(root):
            out[root] = None
            continue
        out[root] = entry(root)
        for d, dirs, files in os.walk(root):
            for name in dirs + files:
                p = os.path.join(d, name)
                try:
                    out[p] = entry(p)
                except FileNotFoundError:
                    out[p] = None
    return out


def diff(a: Snapshot, b: Snapshot) -> list[str]:
    return [
        f"{p}: {a.get(p, 'absent')} -> {b.get(p, 'absent')}"
        for p in sorted(set(a) | set(b))
        if a.get(p, "absent") != b.get(p, "absent")
    ]


def host_libvirt_lists() -> dict[str, list[str]] | None:
    """Names of the host libvirtd's domains, networks and pools, through its
    read-only socket; None if no libvirtd answers on the default socket."""

    def virsh(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["virsh", "-r", "-q", "-c", HOST_URI, *args], capture_output=True, text=True, timeout=30)

    if virsh("version").returncode != 0:
        return None
    lists = {}
    for key, args in (
        ("domains", ("list", "--all", "--name")),
        ("networks", ("net-list", "--all", "--name")),
        ("pools", ("pool-list", "--all", "--name")),
    ):
        p = virsh(*args)
        assert p.returncode == 0, p.stderr
        lists[key] = sorted(n.strip() for n in p.stdout.splitlines() if n.strip())
    return lists


def check_unchanged(before: Snapshot, after: Snapshot, host: LibvirtHost, host_daemon: bool, when: str) -> None:
    changes = diff(before, after)
    if not changes:
        return
    ours = [c for c in changes if c.startswith("/etc/libvirt") or str(host.run_id) in c or str(host.prefix) in c]
    if host_daemon and not ours:
        print(f"{when}: changes under the host's libvirt dirs, presumably by its own libvirtd:", *changes, sep="\n  ")
        return
    pytest.fail(f"{when}: the host's libvirt directories changed:\n  " + "\n  ".join(changes[:50]))


def tiny_domain_xml(h: LibvirtHost, network: str) -> str:
    # No disk: SeaBIOS finds nothing to boot and idles. Enough to make libvirt
    # spawn QEMU, virtlogd write its log and dnsmasq serve the bridge.
    return textwrap.dedent(
        f"""\
        <domain type='qemu'>
          <name>{h.name("probe")}</name>
          <memory unit='MiB'>64</memory>
          <vcpu>1</vcpu>
          <os><type arch='x86_64' machine='pc'>hvm</type></os>
          <devices>
            <interface type='network'>
              <source network='{network}'/>
              <model type='virtio'/>
            </interface>
            <video><model type='none'/></video>
            <memballoon model='none'/>
          </devices>
        </domain>
        """
    )


@pytest.mark.parametrize("round_", [1, 2])
def test_private_libvirt_leaves_host_libvirt_alone(round_: int, tmp_path: Path) -> None:
    missing = libvirt_host.missing_tools(["ip", "unshare", "virsh", "libvirtd", "virtlogd", "qemu-system-x86_64", "dnsmasq"])
    if missing:
        pytest.skip("missing host tools: " + ", ".join(missing))
    before = snapshot()
    lists_before = host_libvirt_lists()
    host_daemon = lists_before is not None
    print(f"round {round_}: host libvirtd on the default socket: {'yes' if host_daemon else 'no'}")

    h = LibvirtHost()
    assert h.uri != HOST_URI and h.uri.startswith(HOST_URI + "?socket=")
    with h:
        # Reached through its own socket, served by its own daemon.
        assert h.socket_path.is_socket() and h.state_dir is not None
        assert h.socket_path.is_relative_to(h.state_dir)
        pid = h._owned_pid("libvirtd", "libvirtd")
        assert pid is not None
        assert libvirt_host._unix_peer_pid(h.socket_path) == pid
        # Its mount namespace is not ours, and there /etc/libvirt etc. are the run's.
        assert os.stat(f"/proc/{pid}/ns/mnt").st_ino != os.stat("/proc/self/ns/mnt").st_ino
        for host_dir, private in h.private_dirs.items():
            inside = os.stat(f"/proc/{pid}/root{host_dir}")
            assert (inside.st_dev, inside.st_ino) == (os.stat(private).st_dev, os.stat(private).st_ino), host_dir
        # Nothing of the host's libvirt objects came along.
        assert h.virsh("list", "--all", "--name").split() == []
        assert h.virsh("net-list", "--all", "--name").split() == []

        net = h.define_network(
            textwrap.dedent(
                f"""\
                <network>
                  <name>{h.name("net")}</name>
                  <bridge name='{h.bridge_name(0)}' stp='off' delay='0'/>
                  <dns enable='no'/>
                  <ip address='10.239.0.1' netmask='255.255.255.0'>
                    <dhcp><range start='10.239.0.100' end='10.239.0.200'/></dhcp>
                  </ip>
                </network>
                """
            )
        )
        pool_dir = h.create_pool(h.name("pool"))
        assert pool_dir.is_relative_to(h.pool_root)  # type: ignore[arg-type]
        h.virsh("vol-create-as", h.name("pool"), h.name("vol.qcow2"), "16M", "--format", "qcow2")
        assert (pool_dir / h.name("vol.qcow2")).is_file()
        xml = tmp_path / "probe.xml"
        xml.write_text(tiny_domain_xml(h, net))
        h.virsh("define", str(xml))
        h.virsh("start", h.name("probe"))
        assert h.virsh("domstate", h.name("probe")).strip() == "running"
        # Its QEMU log and dnsmasq are in the run's own directories.
        assert (h.private_dirs["/var/log/libvirt"] / "qemu" / f"{h.name('probe')}.log").is_file()
        assert list((h.private_dirs["/var/lib/libvirt"] / "dnsmasq").glob(f"{h.bridge_name(0)}.*"))

        check_unchanged(before, snapshot(), h, host_daemon, "while running")
        if host_daemon:
            during = host_libvirt_lists()
            assert during == lists_before
            assert not any(n.startswith(str(h.prefix)) for names in during.values() for n in names)  # type: ignore[union-attr]

    assert h.stop() == []  # a second stop is harmless
    check_unchanged(before, snapshot(), h, host_daemon, "after stop")
    if host_daemon:
        assert host_libvirt_lists() == lists_before
    # Nothing of the run is left: state dir, namespace, processes. (Other
    # runs, e.g. a concurrent VM tier, may come and go meanwhile.)
    assert not h.state_dir.exists()  # type: ignore[union-attr]
    assert not (RUN_ROOT / str(h.run_id)).exists()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert h.netns not in netns
    assert h.status()["processes"] == {"virtlogd": None, "libvirtd": None}
    assert not [m for m in Path("/proc/self/mountinfo").read_text().splitlines() if str(h.run_id) in m]
    print("\n".join(h.log))


def test_stale_run_is_swept_and_live_run_is_not() -> None:
    """A run whose owner died without stop() is torn down by the next sweep
    (its daemons by verified PID, its namespace, its state); a live run, even
    one of this very process, is left alone."""
    missing = libvirt_host.missing_tools(["ip", "unshare", "virsh", "libvirtd", "virtlogd", "qemu-system-x86_64", "dnsmasq"])
    if missing:
        pytest.skip("missing host tools: " + ", ".join(missing))
    with LibvirtHost() as live:
        code = (
            f"import sys, time; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
            "from libvirt_host import LibvirtHost\n"
            "h = LibvirtHost().start()\n"
            "print(h.run_id, flush=True)\n"
            "time.sleep(600)\n"
        )
        owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            run_id = (owner.stdout.readline() if owner.stdout else "").strip()
        finally:
            owner.kill()  # the owner dies without stop(): its daemons live on
            owner.wait()
        assert run_id, "the owner process did not start its run"
        stale = LibvirtHost(run_id=run_id)
        stale_pid = stale._owned_pid("libvirtd", "libvirtd")
        assert stale_pid is not None and (RUN_ROOT / run_id).is_dir()

        swept = LibvirtHost.sweep_stale()
        print("swept:", swept)
        assert any(s.startswith(run_id) for s in swept)
        assert not (RUN_ROOT / run_id).exists()
        assert not libvirt_host._alive(stale_pid)
        assert stale.netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
        assert not any(s.startswith(str(live.run_id)) for s in swept)
        assert (RUN_ROOT / str(live.run_id)).is_dir()
        assert live.virsh("version")
