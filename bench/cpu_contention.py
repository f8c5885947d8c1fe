"""Pretraining throughput of one trial on a shared CPU: alone, beside a busy process, and two at once.

Each setting runs the trial's pretraining loop (`nas.train.pretrain.pretrain`, `tiny` x `cpu-tiny`,
the architecture `nas protocols run` draws by default; held-out evals moved past the window) in fresh
worker processes, in two modes:

  - today: torch's own defaults, as `nas` ran before nas/cpu.py (a thread per core, libgomp's
    waiting threads spin about 3 ms);
  - default: `nas.cpu.configure()` before torch is imported, as the `nas` command does now (threads
    fitted to the CPUs and to other processes' load, about 0.3 ms of spinning);

and, with ``--variant LABEL:VAR=VALUE,...``, today's plus the given environment (e.g.
``passive:OMP_WAIT_POLICY=PASSIVE`` or ``t1:OMP_NUM_THREADS=1``); an item ``configure`` starts from the
default instead (``static:configure,OMP_NUM_THREADS=2`` keeps two threads throughout).

Settings:
  - alone: one trial;
  - busy: one trial beside one busy single-threaded process (a Python loop, there first);
  - two: two trials at once, of the same mode (the second starts while the first trains);
  - late (only with ``--settings``): as busy, but the busy process starts as the window opens, beside
    a trial that has trained alone until then.

Each trial builds its model and warms up; then all train together for ``--seconds``, and tokens/s is
counted between step boundaries inside that window, less its first ``--skip`` seconds. "ratio" is a
setting's tokens/s (summed over both trials for "two") over the same mode's alone figure in the same
run. Targets (issue 15): busy >= 0.6, two together >= 0.7, and default alone no slower than today.
"threads" is each trial's torch thread count at the start and, if it changed, at the end.
"others' cores" is how many cores processes outside the benchmark kept busy during the window (the
worst of the repeats): above ~0.1 the machine was not quiet and the figures are disturbed.

    python bench/cpu_contention.py                      # about 3 minutes on 2 cores
    python bench/cpu_contention.py --repeats 2 --record # append to bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
CLEAN = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "MKL_NUM_THREADS", "NAS_CPU_DEFAULTS")
SETTINGS = ("alone", "busy", "two")
TARGETS = {"busy": 0.6, "two": 0.7, "late": 0.6}


def worker(configure: bool, seconds: float, skip: float) -> None:
    """One trial's pretraining: build the model, print "ready", train (warming up) until a start time arrives
    on stdin, then train on to start + ``seconds``; print the tokens/s between step boundaries inside
    [start + ``skip``, start + ``seconds``] and this process's CPU seconds there."""
    settings = None
    if configure:
        from nas.cpu import configure as configure_cpu

        settings = configure_cpu()
    import torch

    from nas.data.tokens import prepare_tokens
    from nas.model import build_model, fit_vocab
    from nas.protocol import Budget, load_protocol
    from nas.space import load_space, random_samples
    from nas.train.pretrain import pretrain

    protocol = load_protocol("cpu-tiny", [f"cache_dir={ROOT / 'runs' / 'cache'}", "tasks=[]"])
    tokens = prepare_tokens(protocol)
    arch = next(s.arch for s in random_samples(load_space("tiny"), 64, 0) if s.arch is not None)
    arch, _ = fit_vocab(arch, tokens.vocab_size, protocol.pretrain.seq_len)
    config = protocol.pretrain.model_copy(update={"budget": Budget(tokens=10**9), "eval_every": 10**6, "device": "cpu"})
    flops = arch.flops_per_token(config.seq_len)
    model = build_model(arch, tokens.tokenizer, torch.device("cpu"), config.seed)
    print(json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)

    window = {"start": math.inf, "deadline": math.inf}
    stamps: list[float] = []
    cpu: list[float] = []
    counts: list[int] = []  # torch threads at each step in the window

    class Stop(Exception):
        pass

    def on_step(step: int, loss: float, tps: float) -> None:
        now = time.time()
        if window["start"] == math.inf and select.select([sys.stdin], [], [], 0)[0]:
            window["start"] = float(sys.stdin.readline())
            window["deadline"] = window["start"] + seconds
        if now >= window["start"] + skip:
            stamps.append(now)
            cpu.append(time.process_time())
            counts.append(torch.get_num_threads())
        if now >= window["deadline"]:
            raise Stop

    try:
        while True:
            pretrain(model, tokens.train, tokens.val, config, flops, on_step=on_step)
    except Stop:
        pass
    span = stamps[-1] - stamps[0] if len(stamps) > 1 else math.nan
    report = {
        "tokens_per_second": (len(stamps) - 1) * config.batch_tokens / span if len(stamps) > 1 else 0.0,
        "cpu_seconds": cpu[-1] - cpu[0] if cpu else 0.0,
        "span": [stamps[0], stamps[-1]] if stamps else [],
        "settings": settings.describe() if settings else "torch defaults",
        "threads_end": torch.get_num_threads(),
        "threads_mean": statistics.mean(counts) if counts else math.nan,
    }
    print(json.dumps(report), flush=True)


def environment(mode: str, variants: dict[str, dict[str, str]]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    env.update({k: v for k, v in variants.get(mode, {}).items() if k != "configure"})
    return env | {"TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}


def busy_jiffies() -> int:
    """CPU time spent by every process on this machine so far (user + nice + system + irq), in clock ticks."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:3]) + sum(fields[5:7])


def process_jiffies(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def measure(mode: str, setting: str, args: argparse.Namespace, variants: dict[str, dict[str, str]]) -> dict:
    """Run one setting of one mode: the trials' tokens/s and the cores other processes used meanwhile."""
    argv = [sys.executable, __file__, "--worker", "--seconds", str(args.seconds), "--skip", str(args.skip)]
    env = environment(mode, variants)
    argv += ["--configure"] if mode == "default" or "configure" in variants.get(mode, {}) else []
    procs: list[subprocess.Popen] = []
    busy = None
    hz = os.sysconf("SC_CLK_TCK")
    try:
        if setting == "busy":  # the busy process is there first: a trial sees it when it starts
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(1.0)
        threads = []
        for _ in range(2 if setting == "two" else 1):  # the second trial starts while the first trains
            procs.append(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True))
            threads.append(json.loads(procs[-1].stdout.readline())["threads"])  # type: ignore[union-attr]
        start = time.time() + 2.0
        for p in procs:
            p.stdin.write(f"{start}\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        if setting == "late":  # the busy process comes when the window opens, to a trial that ran alone
            time.sleep(max(0.0, start - time.time()))
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(max(0.0, start + args.skip - time.time()))
        before = busy_jiffies(), process_jiffies(busy.pid) if busy else 0
        time.sleep(max(0.0, start + args.seconds - time.time()))
        after = busy_jiffies(), process_jiffies(busy.pid) if busy else 0
        reports = [json.loads(p.stdout.readline()) | {"threads": n} for p, n in zip(procs, threads, strict=True)]  # type: ignore[union-attr]
    finally:
        for p in [*procs, *([busy] if busy else [])]:
            if p.poll() is None:
                p.kill()
            p.wait()
    window = args.seconds - args.skip
    ours = sum(r["cpu_seconds"] for r in reports) + (after[1] - before[1]) / hz
    return {
        "tokens_per_second": [r["tokens_per_second"] for r in reports],
        "threads": [_threads(r) for r in reports],
        "settings": reports[0]["settings"],
        "others": max(0.0, ((after[0] - before[0]) / hz - ours) / window),
    }


def _threads(report: dict) -> str:
    """A trial's torch threads: "2" throughout, or "2>1 (1.10)": 2 at the start, 1 at the end, 1.10 on average
    over the window's steps."""
    start, end, mean = report["threads"], report["threads_end"], report["threads_mean"]
    if start == end and mean == start:
        return str(start)
    return f"{start}>{end} ({mean:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per setting")
    parser.add_argument("--skip", type=float, default=2.0, help="seconds left out at the window's start")
    parser.add_argument("--repeats", type=int, default=1, help="repetitions of the whole set (interleaved)")
    parser.add_argument("--modes", default="today,default", help="comma-separated: today, default, variant labels")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--variant", action="append", default=[], help="LABEL:VAR=VALUE,... (today's + env)")
    parser.add_argument("--record", action="store_true", help="append the section to bench/RESULTS.md")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--configure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.configure, args.seconds, args.skip)
        return

    variants = {}
    for text in args.variant:
        label, _, assignments = text.partition(":")
        variants[label] = dict((a + "=").split("=")[:2] for a in assignments.split(",") if a)
    modes = args.modes.split(",")
    for mode in [m for m in modes if m not in ("today", "default", *variants)]:
        parser.error(f"unknown mode {mode!r}: give it with --variant {mode}:VAR=VALUE")
    settings = args.settings.split(",")
    for setting in [s for s in settings if s not in (*SETTINGS, "late")]:
        parser.error(f"unknown setting {setting!r}: alone, busy, two or late")
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    figures: dict[tuple[str, str], list[float]] = {}
    others: dict[tuple[str, str], list[float]] = {}
    counts: dict[tuple[str, str], list[str]] = {}
    described: dict[str, str] = {}
    for rep in range(args.repeats):
        for setting in settings:
            for mode in modes if rep % 2 == 0 else modes[::-1]:
                got = measure(mode, setting, args, variants)
                figures.setdefault((mode, setting), []).append(sum(got["tokens_per_second"]))
                others.setdefault((mode, setting), []).append(got["others"])
                threads = "+".join(got["threads"])
                counts.setdefault((mode, setting), []).append(threads)
                described[mode] = got["settings"]
                each = " + ".join(f"{x:,.0f}" for x in got["tokens_per_second"])
                print(
                    f"rep {rep} {mode:>8} {setting:>5}: {each} tokens/s ({threads} threads); "
                    f"other processes {got['others']:.2f} cores",
                    flush=True,
                )
    elapsed = time.perf_counter() - began
    load_after = os.getloadavg()[0]

    lines = [
        "| mode | setting | threads | tokens/s (median; sum of two) | min-max | ratio | target | others' cores |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in modes:
        alone = statistics.median(figures[(mode, "alone")]) if (mode, "alone") in figures else None
        for setting in settings:
            values = figures[(mode, setting)]
            median = statistics.median(values)
            ratio = f"{median / alone:.2f}" if alone else "-"
            target = f">= {TARGETS[setting]}" if setting in TARGETS else "-"
            spread = f"{min(values):,.0f}-{max(values):,.0f}"
            noise = f"{max(others[(mode, setting)]):.2f}"
            threads = ", ".join(sorted(set(counts[(mode, setting)])))
            lines.append(
                f"| {mode} | {setting} | {threads} | {median:,.0f} | {spread} | {ratio} | {target} | {noise} |"
            )
    if ("today", "alone") in figures and ("default", "alone") in figures:
        today, new = (statistics.median(figures[(m, "alone")]) for m in ("today", "default"))
        lines.append(f"\nDefault alone over today alone: {new / today:.2f} (target >= 1.0 within noise).")
    lines.append(
        "\n" + "; ".join(f"{m}: {d}" for m, d in described.items()) + f". {args.repeats} repeat(s) of "
        f"{args.seconds:.0f} s windows ({args.skip:.0f} s skipped), {elapsed:.0f} s in all; 1-minute load "
        f"average {load_before:.1f} before, {load_after:.1f} after."
    )
    from _results import record

    record(
        "cpu_contention: a trial alone, beside a busy process, two at once", "\n".join(lines), no_record=not args.record
    )


if __name__ == "__main__":
    main()
