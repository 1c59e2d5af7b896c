"""A watchdog device that records instead of resetting, for the real-cluster tier.

Network namespaces have no softdog (the host kernel has none), so each node's Patroni
uses its own testing driver (`watchdog.driver: testing`, patroni/watchdog/linux.py):
it opens `device` for writing like /dev/watchdog and turns the timeout ioctl into a
line `Ctimeout=<s>\\n`; a keepalive is the byte `1`, a magic close the byte `V`. Here
`device` is a named pipe, and a thread per node reads what Patroni writes there, with
the time each byte arrived.

The verdict (`Recording.misses`) is what the kernel's softdog would have done: while the
device is open and not disarmed by `V`, every gap between keepalives (from the open to
the first one, and from the last one to the close or to now) longer than the timeout
Patroni armed is a reset the node would have taken.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# TestingWatchdogDevice's timeout until Patroni sets one.
DEFAULT_TIMEOUT = 60


@dataclass(frozen=True)
class Miss:
    """A gap between keepalives longer than the armed timeout: the node would have been
    reset at `start + timeout`."""
    node: str
    start: float
    end: float
    timeout: int
    still_open: bool  # the gap runs up to the verdict, not to a keepalive or a close

    @property
    def gap(self) -> float:
        return self.end - self.start

    def __str__(self) -> str:
        end = "still no keepalive" if self.still_open else "next keepalive or close"
        return (f"{self.node}: {self.gap:.1f} s without a keepalive against a "
                f"{self.timeout} s timeout (from {_clock(self.start)}, {end} at "
                f"{_clock(self.end)})")


@dataclass
class Session:
    """One open of the device by Patroni, to its close."""
    opened: float
    timeout: int = DEFAULT_TIMEOUT
    keepalives: list[float] = field(default_factory=list)
    disarmed: bool = False  # `V` before the close: a magic close stops the timer
    closed: float | None = None

    def gaps(self, now: float) -> list[tuple[float, float, bool]]:
        """(start, end, still_open) of every interval the timer ran without a keepalive."""
        points = [self.opened, *self.keepalives]
        end = self.closed if self.closed is not None else now
        return [(a, b, False) for a, b in zip(points, points[1:])] + \
            [(points[-1], end, self.closed is None)]


class Recording:
    """The named pipe at `path` (owned by `uid`:`gid`) and the thread that reads it."""

    def __init__(self, node: str, path: Path, uid: int, gid: int):
        self.node = node
        self.path = path
        self.sessions: list[Session] = []
        self._lock = threading.Lock()
        self._stopping = False
        if not path.exists():
            os.mkfifo(path, 0o600)
        os.chown(path, uid, gid)
        self._thread = threading.Thread(target=self._read, name=f"watchdog-{node}",
                                        daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stopping:
            try:
                fd = os.open(self.path, os.O_RDONLY)  # blocks until Patroni opens it
            except OSError:
                return
            session = Session(opened=time.time())
            with self._lock:
                self.sessions.append(session)
            pending = b""
            try:
                while True:
                    data = os.read(fd, 4096)
                    now = time.time()
                    if not data:
                        break
                    pending = self._parse(session, pending + data, now)
            finally:
                os.close(fd)
                with self._lock:
                    session.closed = time.time()

    def _parse(self, session: Session, data: bytes, now: float) -> bytes:
        """Apply every complete message in `data`; return an incomplete tail."""
        while data:
            if data[:1] == b"C":
                line, sep, rest = data.partition(b"\n")
                if not sep:
                    return data
                key, _, value = line[1:].decode().partition("=")
                if key == "timeout":
                    with self._lock:
                        session.timeout = int(value)
                data = rest
                continue
            with self._lock:
                if data[:1] == b"V":
                    session.disarmed = True
                else:  # any other byte is a keepalive, as for the kernel's driver
                    session.keepalives.append(now)
                    session.disarmed = False
            data = data[1:]
        return b""

    def misses(self, now: float | None = None, since: float = 0.0) -> list[Miss]:
        now = time.time() if now is None else now
        with self._lock:
            sessions = list(self.sessions)
        found = []
        for session in sessions:
            for start, end, still_open in session.gaps(now):
                # A magic close just before the close stops the timer: no reset.
                if not still_open and end == session.closed and session.disarmed:
                    continue
                if end - start > session.timeout and end >= since:
                    found.append(Miss(self.node, start, end, session.timeout, still_open))
        return found

    def keepalive_count(self) -> int:
        with self._lock:
            return sum(len(s.keepalives) for s in self.sessions)

    def stop(self) -> None:
        self._stopping = True
        # A reader waiting in open() returns once a writer opens the pipe.
        with contextlib.suppress(OSError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
        self._thread.join(timeout=5)


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"
