"""tools/up.sh checks the machine before anything is created, one actionable line each."""
import os
import shutil
import subprocess
import sys
import textwrap

from tests.conftest import REPO


def run_up(tmp_path, stubs: dict[str, str], extra: list[str] = ()):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for name, body in stubs.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
        path.chmod(0o755)
    # Only basic tools besides the stubs: the machine's own pulumi, virsh etc. stay hidden.
    for tool in ("sed", "grep", "head", "tr", "dirname", "sh", "cat", "install", "base64"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    # The interpreter itself, not a launcher that needs its own PATH (pyenv's shims).
    (bin_dir / "python3").symlink_to(os.path.realpath(sys.executable))
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    return subprocess.run([shutil.which("bash"), str(REPO / "tools/up.sh"), "dev", *extra],
                          env=env, text=True, capture_output=True, timeout=120)


def test_everything_missing_is_listed_with_its_fix_and_nothing_is_created(tmp_path):
    p = run_up(tmp_path, {"pulumi": "exit 0\n"})  # a CLI without any plugin
    assert p.returncode == 1
    for plugin in ("command v1.2.1", "libvirt v0.5.4", "random v4.21.4", "tls v5.6.2"):
        assert f"pulumi plugin install resource {plugin}" in p.stderr
    assert "virsh is missing" in p.stderr
    assert "mkisofs/genisoimage is missing" in p.stderr
    assert not (tmp_path / ".pgha").exists()


def test_a_missing_storage_pool_is_named_with_the_commands_that_create_it(tmp_path):
    plugins = "".join(f"{n}  resource  {v}  1 MB\n" for n, v in (
        ("command", "1.2.1"), ("libvirt", "0.5.4"), ("random", "4.21.4"), ("tls", "5.6.2")))
    p = run_up(tmp_path, {
        "pulumi": f'[ "$1 $2" = "plugin ls" ] && printf "{plugins}"; exit 0\n',
        "genisoimage": "exit 0\n",
        "virsh": 'case "$3" in version) exit 0;; *) exit 1;; esac\n'})
    assert p.returncode == 1
    (line,) = [x for x in p.stderr.splitlines() if x.startswith("  - ")]
    assert "storage pool 'default' does not exist" in line and "pool-define-as default" in line


def test_up_shows_the_preview_and_asks_unless_the_user_passes_yes(tmp_path):
    plugins = "".join(f"{n}  resource  {v}  1 MB\n" for n, v in (
        ("command", "1.2.1"), ("libvirt", "0.5.4"), ("random", "4.21.4"), ("tls", "5.6.2")))
    calls = tmp_path / "pulumi-calls"
    stubs = {"pulumi": f'[ "$1 $2" = "plugin ls" ] && printf "{plugins}"; '
                       f'echo "$*" >> {calls}; exit 0\n',
             "genisoimage": "exit 0\n", "virsh": "exit 0\n"}
    for extra, asks in (([], True), (["--yes"], False)):
        calls.unlink(missing_ok=True)
        p = run_up(tmp_path / ("yes" if extra else "ask"), stubs, extra)
        assert p.returncode == 0, p.stderr
        (up,) = [c for c in calls.read_text().splitlines() if c.startswith("up ")]
        assert up.startswith("up --stack dev") and ("--yes" not in up) == asks, up


PLUGINS_LISTED = "".join(f"{n}  resource  {v}  1 MB\n" for n, v in (
    ("command", "1.2.1"), ("libvirt", "0.5.4"), ("random", "4.21.4"), ("tls", "5.6.2")))


def host_stubs(memory_kib: int, routes: str, network_exists: bool = False) -> dict[str, str]:
    return {
        "pulumi": f'[ "$1 $2" = "plugin ls" ] && printf "{PLUGINS_LISTED}"; exit 0\n',
        "genisoimage": "exit 0\n",
        "virsh": f'''case "$3" in
            nodeinfo) printf "CPU(s):              2\\nMemory size:         {memory_kib} KiB\\n";;
            net-info) exit {0 if network_exists else 1};;
            esac
            exit 0
            ''',
        "ip": f"printf '{routes}'\n"}


def problem_lines(p) -> list[str]:
    return [x for x in p.stderr.splitlines() if x.startswith("  - ")]


def test_more_memory_than_the_host_has_is_named_before_anything(tmp_path):
    # The dev stack: 3 nodes x 1536 MiB = 4608 MiB, on a host with about 3.8 GiB.
    p = run_up(tmp_path, host_stubs(4_000_000, ""))
    assert p.returncode == 1
    (line,) = problem_lines(p)
    assert "need 4608 MiB" in line and "has 3906 MiB" in line and "pgha:memoryMib" in line
    assert not (tmp_path / ".pgha").exists()


def test_a_network_the_host_already_routes_is_named_with_its_route(tmp_path):
    routes = ("default via 10.0.2.2 dev eth0\\n"
              "192.168.128.0/20 dev wlan0 proto kernel scope link src 192.168.131.7\\n")
    p = run_up(tmp_path, host_stubs(24_000_000, routes))
    assert p.returncode == 1
    (line,) = problem_lines(p)
    assert "pgha:networkCidr 192.168.130.0/24 overlaps" in line
    assert "192.168.128.0/20 dev wlan0" in line


def test_the_stacks_own_network_from_an_earlier_up_is_not_an_overlap(tmp_path):
    routes = "192.168.130.0/24 dev virbr7 proto kernel scope link src 192.168.130.1\\n"
    p = run_up(tmp_path, host_stubs(24_000_000, routes, network_exists=True))
    assert p.returncode == 0, p.stderr
    p = run_up(tmp_path / "fresh", host_stubs(24_000_000, routes))
    assert p.returncode == 1 and "virbr7" in p.stderr
