"""Test clients that run as their own processes (usually inside a network namespace):

  writer: inserts one row per id into pgha_writes and records every acknowledged id
          (JSON lines), so a verdict can later check that no acknowledged write was lost;
  probe:  samples whether the server it is connected to is a primary or a replica.

    python tests/workload.py writer|probe --dsn DSN --out FILE [--first-id N]

Any Python with psycopg 3 runs it (the tests' venv, or Patroni's venv on a node).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
from pathlib import Path

import psycopg

WRITES_TABLE = "pgha_writes"
SCRIPT = Path(__file__).resolve()
# libpq client settings for the writer: notice a dead server within seconds instead of
# TCP's minutes (these are client-side connection parameters, not product settings).
CLIENT_TCP = ("keepalives=1&keepalives_idle=2&keepalives_interval=1&keepalives_count=2"
              "&tcp_user_timeout=4000")


def acknowledged_ids(records: list[dict]) -> set[int]:
    return {r["id"] for r in records if r.get("ok")}


def max_ack_gap(records: list[dict], start: float = float("-inf"),
                end: float = float("inf")) -> float:
    """The longest pause between two acknowledged writes from `start` to `end` (NaN with
    fewer than two)."""
    times = sorted(r["t"] for r in records if r.get("ok") and start <= r["t"] <= end)
    if len(times) < 2:
        return float("nan")
    return max(b - a for a, b in zip(times, times[1:]))


def main(argv: list[str]) -> int:

    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("writer", "probe"))
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--first-id", type=int, default=1)
    parser.add_argument("--interval", type=float, default=None)
    args = parser.parse_args(argv)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    out = open(args.out, "a", buffering=1)

    def emit(record: dict) -> None:
        out.write(json.dumps(record) + "\n")

    conn = None
    next_id = args.first_id
    interval = args.interval if args.interval is not None else (
        0.05 if args.mode == "writer" else 0.2)
    while not stopping.is_set():
        t0 = time.time()
        try:
            if conn is None:
                conn = psycopg.connect(args.dsn, autocommit=True)
            if args.mode == "writer":
                conn.execute(f"INSERT INTO {WRITES_TABLE} (id) VALUES (%s)", (next_id,))
                emit({"id": next_id, "t0": t0, "t": time.time(), "ok": True,
                      "host": conn.info.host})
            else:
                in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
                emit({"t": t0, "t1": time.time(),
                      "state": "replica" if in_recovery else "primary"})
        except Exception as e:  # noqa: BLE001 - every failure is a data point
            if args.mode == "writer":
                emit({"id": next_id, "t0": t0, "t": time.time(), "ok": False,
                      "err": str(e).strip().splitlines()[0][:200] if str(e) else repr(e)})
            else:
                emit({"t": t0, "t1": time.time(), "state": "down"})
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            conn = None
            stopping.wait(0.2)
        finally:
            if args.mode == "writer":
                next_id += 1
        stopping.wait(interval)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
