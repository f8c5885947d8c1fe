"""bench/load.py --report: the figures of its runs (JSON lines) as RESULTS.md tables."""

from __future__ import annotations

import json
import math
from pathlib import Path


def _pct(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f} %"


def _cpu_share(r: dict) -> str:
    """The workers' CPU seconds per trained trial over the mean trial time (the stand-in sleeps: all of it is
    coordination and start-up); what the coordination would cost each worker on a core of its own."""
    if "worker_cpu_seconds" not in r or not r["trained"]:
        return "-"
    return _pct(r["worker_cpu_seconds"] / r["trained"] / r["mean_trial_seconds"])


def report(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    runs = [r for r in rows if "trained" in r]
    one = {r["storage"]: r["trials_per_hour"] for r in runs if r["workers"] == 1 and not r["faults"]}
    lines = [
        "| date | storage | workers | faults | trained / --n-trials | lost | doubled | stuck RUNNING "
        "| told after failed | retries (resume steps) | worker restarts | peak connections (max) "
        "| coordination / trial time | worker CPU / trial time | trials per hour | vs N x one worker | mean trial s "
        "| wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        base = one.get(r["storage"])
        ratio = f"{r['trials_per_hour'] / (r['workers'] * base):.2f}" if base and not r["faults"] else "-"
        steps = ", ".join(f"{s}: {n}" for s, n in r["resume_steps"]) or "-"
        conns = f"{r['peak_connections']} ({r['max_connections']})" if "peak_connections" in r else "-"
        when = r.get("date", "-") + (f" ({r['label']})" if "label" in r else "")  # label: which code ran it
        lines.append(
            f"| {when} | {r['storage']} | {r['workers']} | {', '.join(r['faults']) or 'none'} "
            f"| {r['trained']} / {r['n_trials']} | {r['lost']} | {r['doubled']} | {r['stuck_running']} "
            f"| {r['told_after_failed']} | {r['retries']} ({steps}) "
            f"| {r['restarts']} | {conns} | {_pct(r['coordination_share'])} | {_cpu_share(r)} "
            f"| {r['trials_per_hour']:,.0f} | {ratio} "
            f"| {r['mean_trial_seconds']:.1f} | {r['wall_seconds']:.0f} |"
        )
    out = ["\n".join(lines)]
    for r in runs:
        if r.get("events"):
            out.append(
                f"- {r['storage']}, {r['workers']} workers, faults {', '.join(r['faults'])}: " + "; ".join(r["events"])
            )
        if r.get("failed_logs"):
            out.append(f"  - worker errors: {' / '.join(r['failed_logs'])}")
    for r in rows:
        if "ask_latency_s" in r:
            sizes = sorted({int(s) for v in r["ask_latency_s"].values() for s in v})
            table = [
                "| sampler | " + " | ".join(f"ask at {s:,} trials" for s in sizes) + " |",
                "|---" * (len(sizes) + 1) + "|",
            ]
            for name, v in r["ask_latency_s"].items():
                table.append(f"| {name} | " + " | ".join(f"{v[str(s)]:.3f} s" for s in sizes) + " |")
            out.append("ask() latency (median of 5; ask and the space's sampling, PostgreSQL):\n\n" + "\n".join(table))
        if "memory" in r:
            mem = "; ".join(
                f"{k}: {v['peak_rss_mb']:.0f} MB ({', '.join(v['loaded']) or 'no torch'})"
                for k, v in r["memory"].items()
            )
            out.append(f"One worker's peak memory (VmHWM: join, one stand-in trial, exit): {mem}")
    return "\n\n".join(out)
