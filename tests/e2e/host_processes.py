"""Host-side helpers of the private libvirt (libvirt_host.py): the host programs
it needs, commands, processes (told apart by PID and start time), namespaces (by
device and inode), mounts, file locks and free TCP ports; and ``LibvirtHostError``,
the error they and the modules beside them raise.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

# Host programs and the Debian packages that carry them.
TOOLS: dict[str, str] = {
    "ip": "iproute2",
    "unshare": "util-linux",
    "virsh": "libvirt-clients",
    "libvirtd": "libvirt-daemon-system",
    "virtlogd": "libvirt-daemon-system",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "dnsmasq": "dnsmasq-base",
    "genisoimage": "genisoimage",
    "tinyproxy": "tinyproxy-bin",
    "socat": "socat",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}


class LibvirtHostError(RuntimeError):
    pass


def missing_tools(tools: Iterable[str] = TOOLS) -> list[str]:
    """Programs from ``tools`` that are not on PATH (with their package)."""
    return [f"{t} ({TOOLS.get(t, '?')})" for t in tools if shutil.which(t) is None]


def _run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )
    if check and p.returncode != 0:
        raise LibvirtHostError(
            f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}"
        )
    return p


def _proc_starttime(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks (field 22 of /proc/PID/stat)."""
    try:
        stat_ = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    rest = stat_[stat_.rindex(")") + 2 :].split()
    return rest[19]


def _proc_exe_name(pid: int) -> str | None:
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return None
    return os.path.basename(argv0.decode(errors="replace"))


def _ns_id(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(device, inode) of a namespace file (/run/netns/X, /proc/PID/ns/net)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _terminate(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL one PID."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        if not _alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pid):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)


def _unix_peer_pid(path: Path) -> int | None:
    """PID of the process that listens on unix socket ``path`` (SO_PEERCRED)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        pid, _uid, _gid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        return pid
    return None


def _mounts_below(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this process's mount namespace."""
    out = []
    prefix = str(path).rstrip("/") + "/"
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mp = line.split()[4].encode().decode("unicode_escape")
            if mp == str(path) or mp.startswith(prefix):
                out.append(mp)
    return out


@contextlib.contextmanager
def _flock(path: Path, timeout: float = 600.0) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LibvirtHostError(f"could not lock {path} within {timeout:.0f} s") from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


def _try_flock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None if someone holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
