"""What a real-engine stack's VMs did while a `pulumi up` ran, for diagnosis: every
domain's serial console (the kernel's own lines: a softdog reset prints there and nowhere
that survives it), the whole journal of chosen nodes streamed over SSH (Patroni's HA
loop logs one line per cycle, so the gaps between them are the loop's own timing), and
the host's load with the CPU time each domain got.

An observer only: it changes nothing on the VMs or the host, and no verdict depends on
it; its digest says what the nodes were doing when a step failed.
"""
from __future__ import annotations

import os
import re
import select
import subprocess
import threading
import time
import tty
from datetime import datetime
from pathlib import Path

from tests.vm.plan import Step
from tests.vm.remote import Ssh

POLL_SECONDS = 5
# Patroni's per-cycle result lines ("no action. I am (srv1), the leader with the lock",
# "I am (srv2), a secondary, and following a leader (srv1)").
HA_CYCLE = re.compile(r"patroni\[\d+\]: .*INFO: .*\bI am \(")
JOURNAL_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)")
NOTABLE = re.compile(r"softdog|watchdog|Loop time exceeded|demot|Error communicating|"
                     r"RaftError|timeout|Traceback|acquired session lock|released|"
                     r"reboot|Out of memory|hung_task|soft lockup|rcu_sched|pgha:",
                     re.IGNORECASE)


class Witness:
    def __init__(self, lab, workdir: Path, domain_prefix: str, logins: dict[str, Step]):
        self.lab, self.prefix, self.logins = lab, domain_prefix, logins
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ssh = Ssh(lab.netns, workdir / "ssh")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._streams: dict[str, subprocess.Popen] = {}
        self._consoles: set[str] = set()

    # ---- recording ---------------------------------------------------------------------
    def start(self) -> "Witness":
        self._spawn(self._sample)
        for name in self.logins:
            self._spawn(self._journal, name)
        return self

    def stop(self) -> None:
        self._stop.set()
        for stream in list(self._streams.values()):
            stream.terminate()
        for thread in self._threads:
            thread.join(timeout=20)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _sample(self) -> None:
        """Every few seconds: the host's load, each domain's CPU seconds so far, and a
        console reader for every domain of the stack not read yet."""
        with open(self.dir / "host.log", "a") as out:
            while not self._stop.is_set():
                stats = self.lab.virsh("domstats", "--cpu-total", check=False, timeout=30)
                cpu = {}
                domain = None
                for line in stats.splitlines():
                    if line.startswith("Domain: "):
                        domain = line.split("'")[1]
                    elif line.strip().startswith("cpu.time=") and domain:
                        cpu[domain] = int(line.split("=")[1]) / 1e9
                out.write(f"{time.time():.1f} load={os.getloadavg()[0]:.2f} "
                          + " ".join(f"{d}={s:.1f}" for d, s in sorted(cpu.items())) + "\n")
                out.flush()
                for domain in cpu:
                    if domain.startswith(self.prefix) and domain not in self._consoles:
                        self._consoles.add(domain)
                        self._spawn(self._console, domain)
                self._stop.wait(POLL_SECONDS)

    def _console(self, domain: str) -> None:
        path = self.lab.virsh("ttyconsole", domain, check=False, timeout=30).strip()
        if not path.startswith("/dev/pts/"):
            return
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            # Raw, no echo: nothing read here is ever sent back to the guest's serial port.
            tty.setraw(fd)
            with open(self.dir / f"console-{domain}.log", "ab") as out:
                while not self._stop.is_set():
                    ready, _, _ = select.select([fd], [], [], 1)
                    if not ready:
                        continue
                    try:
                        data = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    except OSError:  # the domain is gone
                        return
                    if not data:
                        return
                    out.write(data)
                    out.flush()
        finally:
            os.close(fd)

    def _journal(self, name: str) -> None:
        """The node's whole journal, followed; re-followed after a reset."""
        command = "sudo journalctl --follow --lines=20 --output=short-iso-precise"
        with open(self.dir / f"journal-{name}.log", "a") as out:
            while not self._stop.is_set():
                out.write(f"--- following from {datetime.now().isoformat()}\n")
                out.flush()
                stream = subprocess.Popen(self.ssh.argv(self.logins[name], command),
                                          stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)
                self._streams[name] = stream
                while stream.poll() is None and not self._stop.is_set():
                    self._stop.wait(1)
                if stream.poll() is None:
                    stream.terminate()
                stream.wait(timeout=10)
                self._stop.wait(POLL_SECONDS)

    # ---- digest ------------------------------------------------------------------------
    def digest(self, notable_lines: int = 25) -> str:
        parts = [f"witness files: {self.dir}"]
        for name in self.logins:
            path = self.dir / f"journal-{name}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            cycles = cycle_times(text)
            longest = longest_gap(cycles)
            parts.append(f"{name}: Patroni HA cycles {len(cycles)}, longest gap "
                         f"between cycle lines {longest[0]:.1f} s ending {longest[1]}; "
                         f"'Loop time exceeded' x{text.count('Loop time exceeded')}")
            parts.extend(f"  {line}" for line in notable(text, notable_lines))
        for path in sorted(self.dir.glob("console-*.log")):
            lines = notable(path.read_text(errors="replace"), 10)
            if lines:
                parts.append(f"{path.name}:")
                parts.extend(f"  {line}" for line in lines)
        parts.append(cpu_shares(self.dir / "host.log"))
        return "\n".join(parts)


def cycle_times(journal: str) -> list[datetime]:
    times = []
    for line in journal.splitlines():
        match = JOURNAL_TIME.match(line)
        if match and HA_CYCLE.search(line):
            times.append(datetime.fromisoformat(match.group(1)))
    return times


def longest_gap(times: list[datetime]) -> tuple[float, str]:
    gaps = [((b - a).total_seconds(), b.isoformat()) for a, b in zip(times, times[1:])]
    return max(gaps, default=(0.0, "-"))


def notable(text: str, limit: int) -> list[str]:
    lines = [line.strip() for line in text.splitlines() if NOTABLE.search(line)]
    return [line[:300] for line in lines[-limit:]]


def cpu_shares(host_log: Path) -> str:
    """The host's peak load and each domain's share of one host CPU over the window."""
    if not host_log.exists():
        return "host: no samples"
    samples = []
    for line in host_log.read_text().splitlines():
        fields = line.split()
        values = dict(f.split("=", 1) for f in fields[1:])
        samples.append((float(fields[0]), float(values.pop("load")),
                        {d: float(s) for d, s in values.items()}))
    if len(samples) < 2:
        return "host: too few samples"
    first: dict[str, tuple[float, float]] = {}
    for t, _, cpu in samples:
        for domain, seconds in cpu.items():
            first.setdefault(domain, (t, seconds))
    t1, _, last = samples[-1]
    shares = {d: (last[d] - first[d][1]) / max(t1 - first[d][0], 1) for d in last}
    t0 = samples[0][0]
    return (f"host: peak load {max(s[1] for s in samples):.2f} over {t1 - t0:.0f} s; "
            "CPU share per domain: "
            + ", ".join(f"{d.rsplit('-', 1)[-1]} {v:.2f}" for d, v in sorted(shares.items())))
