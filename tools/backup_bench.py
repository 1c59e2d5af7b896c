#!/usr/bin/env python3
"""Backup and restore throughput on a real cluster (the real-cluster harness), not a
timed test.

    sudo .venv/bin/python tools/backup_bench.py --scale 100

A fresh 3-node cluster (network namespaces, PostgreSQL + Patroni + Raft with the
product's patroni.yml and pgBackRest configs, a repository host in its own namespace)
is loaded with `pgbench -i -s SCALE` (about 15 MiB per scale unit), then:

  full       a full backup (from a standby, compressed and encrypted as configured)
  incr       an incremental backup after `pgbench -T SECONDS` of writes
  restore    point-in-time recovery of the whole cluster to the latest WAL: every node
             emptied, the leader restored from the repository, replicas restored from it
             too, until one leader and every replica streaming

Prints one table: seconds, database size, what pgBackRest wrote to the repository, and
the throughput over the database size.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from components.config import RestoreTarget  # noqa: E402
from tests.realcluster import harness as h  # noqa: E402
from tests.realcluster.backups import BackupCluster  # noqa: E402

MIB = 2 ** 20


def pgbench(c: BackupCluster, leader: str, *args: str, timeout: float) -> None:
    node = c.nodes[leader]
    cmd = ["ip", "netns", "exec", c.net.ns(leader), "runuser", "-u", "postgres", "--",
           str(Path(node.paths.bin_dir) / "pgbench"), "-h", node.paths.socket_dir,
           "-p", "5432", *args, "postgres"]
    h.run(cmd, timeout=timeout, cwd="/")


def row(what: str, seconds: float, db_bytes: int, repo_bytes: int | None) -> str:
    rate = db_bytes / MIB / seconds if seconds else 0.0
    repo = f"{repo_bytes / MIB:10.0f}" if repo_bytes is not None else f"{'-':>10}"
    return f"| {what:<44} | {seconds:8.1f} | {db_bytes / MIB:9.0f} | {repo} | {rate:8.1f} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=100, help="pgbench scale factor")
    parser.add_argument("--write-seconds", type=int, default=60,
                        help="pgbench run between the full and the incremental backup")
    parser.add_argument("--compress", default="zst", help="backupCompressType")
    args = parser.parse_args()

    problem = h.environment_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    runtime = h.ensure_runtime()
    c = BackupCluster(runtime, 3, "default", label="bench", compress_type=args.compress)
    rows = []
    try:
        leader = c.start(timeout=300)
        c.start_backups()
        t0 = time.monotonic()
        pgbench(c, leader, "-i", "-q", "-s", str(args.scale), timeout=7200)
        load_s = time.monotonic() - t0
        leader = c.wait_healthy(timeout=600)
        size = int(c.sql(leader, "SELECT pg_database_size('postgres')"))
        print(f"pgbench -i -s {args.scale}: {size / MIB:.0f} MiB in {load_s:.0f} s",
              flush=True)

        for kind, before in (("full", None), ("incr", args.write_seconds)):
            if before:
                pgbench(c, leader, "-n", "-c", "4", "-T", str(before), timeout=before + 600)
                leader = c.wait_healthy(timeout=600)
                size = int(c.sql(leader, "SELECT pg_database_size('postgres')"))
            t0 = time.monotonic()
            c.pgbackrest(f"--type={kind}", "backup", timeout=7200)
            seconds = time.monotonic() - t0
            latest = c.backups()[-1]
            rows.append(row(f"{kind} backup (from a standby, {args.compress})", seconds,
                            size, latest["info"]["repository"]["delta"]))
            print(rows[-1], flush=True)

        c.pgbackrest("check", timeout=600)
        t0 = time.monotonic()
        c.restore_to(RestoreTarget("latest"))
        c.wait_healthy(timeout=7200)
        for name in c.nodes:
            c.wait_for(f"{name} streaming or leading", lambda n=name: (
                c.statuses().get(n) or {}).get("state") in ("running", "streaming"),
                7200, 2)
        rows.append(row("restore of the cluster to healthy (3 nodes)",
                        time.monotonic() - t0, size, None))
        print(rows[-1], flush=True)
    finally:
        c.stop()
        c.remove_files()

    print()
    print(f"| {'what':<44} | {'seconds':>8} | {'DB (MiB)':>9} | {'repo (MiB)':>10} "
          f"| {'MiB/s':>8} |")
    print(f"|{'-' * 46}|{'-' * 10}|{'-' * 11}|{'-' * 12}|{'-' * 10}|")
    for line in rows:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
