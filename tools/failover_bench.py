#!/usr/bin/env python3
"""Failover benchmark on real clusters (the tier-2 harness), not a timed test.

    sudo .venv/bin/python tools/failover_bench.py --runs 3 --profile fast --out bench-results

Each run forms a fresh 3-node cluster (network namespaces, real PostgreSQL 14 + Patroni
+ Raft, the product's patroni.yml) and plays the failure scenarios on it one after the
other, with a writer inserting sequential ids through the read-write multi-host DSN and
one writability probe per node:

  leader_cut    pull the leader's cable; restore it once the new primary is idle
  leader_crash  kill -9 the leader's Patroni and PostgreSQL; restart Patroni later
  switchover    patronictl switchover --candidate <sync standby> --force
  replica_cut   pull the synchronous standby's cable; restore it
  quorum_loss   pull both replicas' cables; restore them

Prints per scenario: time to a new primary, client write outage (longest gap between
acknowledged writes), acknowledged writes lost, time until the old leader stops
accepting writes, time to rejoin (median / p95 / max over the runs).  Writes raw JSON
(DIR/<profile>-results.json) and a timeline PNG of one run (DIR/<profile>-timeline.png).
Profiles: default (ttl 30, loopWait 10, retryTimeout 10: the product's defaults) and
fast (ttl 20, loopWait 5, retryTimeout 5).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.realcluster import harness as h  # noqa: E402

DEFAULT_SCENARIOS = ["leader_cut", "leader_crash", "switchover", "replica_cut", "quorum_loss"]
COLUMNS = [
    ("new_leader_s", "new primary (s)"),
    ("write_outage_s", "write outage (s)"),
    ("acked_writes_lost", "acked writes lost"),
    ("old_leader_readonly_s", "old leader read-only (s)"),
    ("rejoin_s", "rejoin (s)"),
    ("service_back_s", "writes back after restore (s)"),
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def stats(values: list, total: bool = False) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if total:
        return f"{sum(values)} (max {max(values)})"
    return (f"{percentile(values, 0.5):.1f} / {percentile(values, 0.95):.1f} / "
            f"{max(values):.1f}")


def table(results: list[dict], profile: str) -> str:
    scenarios = []
    for r in results:
        if r["scenario"] not in scenarios:
            scenarios.append(r["scenario"])
    head = ["scenario", "runs ok"] + [title for _, title in COLUMNS]
    lines = [f"Profile {profile} (median / p95 / max over runs; lost writes: total)",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sc in scenarios:
        rows = [r for r in results if r["scenario"] == sc]
        ok = [r for r in rows if not r.get("error")]
        cells = [sc, f"{len(ok)}/{len(rows)}"]
        for key, _ in COLUMNS:
            vals = [r.get(key) for r in ok if r.get(key) is not None]
            cells.append(stats(vals, total=key == "acked_writes_lost"))
        lines.append("| " + " | ".join(cells) + " |")
    extra = [r for r in results if r.get("demote_shutdown_s") is not None]
    if extra:
        lines.append("")
        for sc in sorted({r["scenario"] for r in extra}):
            rows = [r for r in extra if r["scenario"] == sc]
            lines.append(f"{sc}: the cut-off leader began demoting at "
                         + ", ".join(f"{r['demote_started_s']}s" for r in rows)
                         + "; its PostgreSQL shutdown then took "
                         + ", ".join(f"{r['demote_shutdown_s']}s" for r in rows))
    rejoins: dict[str, int] = {}
    for r in results:
        if r.get("rejoined_by"):
            key = f"{r['scenario']}: {r['rejoined_by']}"
            rejoins[key] = rejoins.get(key, 0) + 1
    if rejoins:
        lines.append("old leader rejoined by: " + ", ".join(
            f"{k} x{n}" for k, n in rejoins.items()))
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = result["t_event"]
    probes = result["probes"]
    names = sorted(probes)
    colors = {"primary": "tab:red", "replica": "tab:green", "down": "lightgrey"}
    fig, ax = plt.subplots(figsize=(12, 1.0 + 0.6 * (len(names) + 2)))
    for i, name in enumerate(names):
        series = probes[name]
        for (t, state), nxt in zip(series, series[1:] + [None]):
            end = nxt[0] if nxt else t + 0.2
            ax.barh(i, end - t, left=t - t0, height=0.6, color=colors.get(state, "black"),
                    linewidth=0)
    y_w = len(names)
    ok = [w["t"] - t0 for w in result["writes"] if w.get("ok")]
    bad = [w["t"] - t0 for w in result["writes"] if not w.get("ok")]
    ax.scatter(ok, [y_w] * len(ok), s=6, color="tab:blue", label="write acknowledged")
    ax.scatter(bad, [y_w + 0.3] * len(bad), s=14, marker="x", color="black",
               label="write failed")
    for t, label in result["events"]:
        if abs(t - t0) < 600 and not label.startswith(("start", "healthy")):
            ax.axvline(t - t0, color="grey", linestyle=":", linewidth=0.8)
            ax.text(t - t0, y_w + 0.8, label, rotation=30, fontsize=7, va="bottom")
    ax.set_yticks(list(range(len(names))) + [y_w], names + ["writer"])
    ax.set_xlabel("seconds since the failure")
    ax.set_ylim(-0.5, y_w + 2.5)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    ax.legend(handles + ax.get_legend_handles_labels()[0],
              [f"probe: {k}" for k in colors] + ax.get_legend_handles_labels()[1],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    ax.set_title(f"{result['scenario']} ({result['profile']} profile): who is primary, "
                 f"write success over time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", choices=sorted(h.PROFILES), default="default")
    parser.add_argument("--out", default=str(REPO / "bench-results"))
    parser.add_argument("--scenarios", default=",".join(DEFAULT_SCENARIOS),
                        help="comma-separated, from: " + ", ".join(h.SCENARIOS))
    parser.add_argument("--plot-scenario", default="leader_cut")
    parser.add_argument("--report", metavar="RESULTS_JSON",
                        help="only print the table of an earlier run's results JSON")
    args = parser.parse_args(argv)
    if args.report:
        data = json.loads(Path(args.report).read_text())
        results = [s for s in data["results"] if s["scenario"] != "formation"]
        print(table(results, data["profile"]))
        return 0
    problem = h.environment_problem()
    if problem:
        print(f"cannot run: {problem}", file=sys.stderr)
        return 2
    h.install_signal_handlers()
    h.sweep_stale_state()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runtime = h.ensure_runtime()
    scenarios = [s for s in args.scenarios.split(",") if s]
    summaries: list[dict] = []
    plotted: dict | None = None
    started = time.time()
    for run in range(1, args.runs + 1):
        cluster = None
        for name in scenarios:
            try:
                if cluster is None:
                    cluster = h.Cluster(runtime, 3, args.profile, label=f"run{run}")
                    cluster.start()
                    summaries.append({"scenario": "formation", "profile": args.profile,
                                      "run": run, "formation_s": round(
                                          cluster.formed_at - cluster.created_at, 2)})
                result = h.SCENARIOS[name](cluster, args.profile)
                summary = {"run": run, **result.summary()}
                summaries.append(summary)
                print(json.dumps(summary), flush=True)
                if plotted is None and name == args.plot_scenario:
                    plotted = result.to_json()
                    (out / f"{args.profile}-timeline-run.json").write_text(json.dumps(plotted))
            except Exception as e:  # noqa: BLE001 - record, rebuild, carry on
                traceback.print_exc()
                summaries.append({"run": run, "scenario": name, "profile": args.profile,
                                  "error": f"{type(e).__name__}: {e}"})
                if cluster is not None:
                    cluster.save_logs(out / f"{args.profile}-failed-run{run}-{name}")
                    cluster.stop()
                    cluster.remove_files()
                cluster = None
        if cluster is not None:
            cluster.stop()
            cluster.remove_files()
    results = [s for s in summaries if s["scenario"] != "formation"]
    formations = [s["formation_s"] for s in summaries if s["scenario"] == "formation"]
    report = table(results, args.profile)
    report += f"\nformation (s): {', '.join(str(f) for f in formations)}"
    report += f"\nwall time: {time.time() - started:.0f}s"
    (out / f"{args.profile}-results.json").write_text(json.dumps(
        {"profile": args.profile, "runs": args.runs, "results": summaries}, indent=1))
    (out / f"{args.profile}-table.md").write_text(report + "\n")
    if plotted:
        plot(plotted, out / f"{args.profile}-timeline.png")
    print()
    print(report)
    return 0 if all(not r.get("error") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
