"""Run the program's remote steps on real VMs the way pulumi-command does.

pulumi-command's remote.Command dials SSH as the connection's user, checks the host key
against the pinned one, runs `create` (here `sudo bash -s`) and writes `stdin` to it; a
dial error is retried (dial_error_limit=-1) while the VM boots. This module does the same
with OpenSSH from inside the lab's network namespace, and runs a set of steps in the
program's dependency order, independent steps (other nodes) in parallel.
"""
from __future__ import annotations

import subprocess
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tests.vm.plan import Step

SSH_UNREACHABLE = 255


@dataclass
class StepResult:
    name: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def changes(self) -> str:
        """The script's own report: 'pgha: no changes' or 'pgha: changed: ...'."""
        reports = [line for line in self.stdout.splitlines() if line.startswith("pgha: ")]
        return reports[-1] if reports else "(no report)"


class StepFailed(AssertionError):
    pass


class Ssh:
    """SSH into the lab's VMs from its namespace, with the program's key and pinned host
    keys only (no agent, no user config, no host key learnt on the way)."""

    def __init__(self, netns: str, workdir: Path):
        self.netns = netns
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)

    def _files(self, step_like: Step) -> tuple[Path, Path]:
        key = self.workdir / f"key-{abs(hash(step_like.private_key))}"
        if not key.exists():
            key.write_text(step_like.private_key)
            key.chmod(0o600)
        known = self.workdir / f"known-{step_like.host}"
        known.write_text(f"{step_like.host} {step_like.host_key.strip()}\n")
        return key, known

    def argv(self, step_like: Step, command: str, connect_timeout: int = 15) -> list[str]:
        key, known = self._files(step_like)
        return ["ip", "netns", "exec", self.netns, "ssh", "-F", "/dev/null", "-i", str(key),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
                "-o", f"ConnectTimeout={connect_timeout}", "-o", "ServerAliveInterval=10",
                "-o", "ServerAliveCountMax=6", f"{step_like.user}@{step_like.host}", command]

    def run(self, step_like: Step, command: str, stdin: str = "", timeout: float = 2400,
            dial_deadline: float = 600) -> subprocess.CompletedProcess:
        """Run `command` with `stdin`; retry while SSH cannot connect (VM booting)."""
        give_up = time.monotonic() + dial_deadline
        while True:
            p = subprocess.run(self.argv(step_like, command), input=stdin, text=True,
                               capture_output=True, timeout=timeout)
            if p.returncode != SSH_UNREACHABLE or time.monotonic() > give_up:
                return p
            time.sleep(3)


def run_step(ssh: Ssh, step: Step) -> StepResult:
    t0 = time.monotonic()
    p = ssh.run(step, step.command, stdin=step.script)
    return StepResult(step.name, p.returncode, p.stdout, p.stderr, time.monotonic() - t0)


def run_steps(ssh: Ssh, steps: dict[str, Step], only: Iterable[str] | None = None,
              workers: int = 8) -> dict[str, StepResult]:
    """Run `only` (default: all) in dependency order, each as soon as the steps it depends
    on (among those being run) succeeded; stop at the first failure, as `pulumi up` does.
    Progress goes to <ssh workdir>/progress.log (follow it with tail -f)."""
    progress = open(ssh.workdir / "progress.log", "a", buffering=1)
    todo = set(steps if only is None else only)
    done: dict[str, StepResult] = {}
    running = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while todo or running:
            ready = [n for n in sorted(todo)
                     if all(d in done or d not in todo | set(running.values())
                            for d in steps[n].after)]
            for name in ready:
                progress.write(f"{time.strftime('%H:%M:%S')} start {name}\n")
                todo.discard(name)
                running[pool.submit(run_step, ssh, steps[name])] = name
            if not running:
                raise StepFailed(f"dependency cycle among {sorted(todo)}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                name = running.pop(future)
                result = future.result()
                done[name] = result
                progress.write(f"{time.strftime('%H:%M:%S')} done  {name} rc="
                               f"{result.returncode} {result.seconds:.0f}s {result.changes}\n")
                if result.returncode != 0:
                    for other in running:
                        other.cancel()
                    raise StepFailed(
                        f"step {name} failed ({result.returncode}):\n"
                        f"--- stdout\n{result.stdout[-3000:]}\n"
                        f"--- stderr\n{result.stderr[-3000:]}")
    return done


def run_deletes(ssh: Ssh, steps: dict[str, Step]) -> dict[str, StepResult]:
    """Delete `steps` as `pulumi up` does after its creates and updates: in reverse
    dependency order (a step once every step that depends on it is gone), running each
    step's `delete` command with its script on stdin; a step without one just goes.
    Stops at the first failure."""
    done: dict[str, StepResult] = {}
    todo = dict(steps)
    while todo:
        ready = [n for n in sorted(todo)
                 if not any(n in other.after for o, other in todo.items() if o != n)]
        if not ready:
            raise StepFailed(f"dependency cycle among {sorted(todo)}")
        for name in ready:
            step = todo.pop(name)
            if step.delete is None:
                continue
            t0 = time.monotonic()
            p = ssh.run(step, step.delete, stdin=step.script)
            done[name] = StepResult(name, p.returncode, p.stdout, p.stderr,
                                    time.monotonic() - t0)
            if p.returncode != 0:
                raise StepFailed(f"deleting step {name} failed ({p.returncode}):\n"
                                 f"--- stdout\n{p.stdout[-3000:]}\n"
                                 f"--- stderr\n{p.stderr[-3000:]}")
    return done


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="pgha-vm-ssh-"))
