"""Several small trials per GPU (issue 16): trials per hour with K = 1, 2, 4, 8 workers on one device.

For each space (`tiny`: 0.1-1.5M non-embedding params; `llama-gqa`: the 10-30M ones) and each K, one
`nas search --devices D --workers-per-device K` trains the same number of trials (random sampler, no
pruner, the gpu-files protocol at a short budget, tasks off unless --tasks) into its own journal study;
the figures are the product's own (`nas status --json`: trials per hour from the first trial's start to
the last one's end on that placement, the median tokens/s of one trial) and the wall time of the whole
command. Every K trains the same architectures: the first K's study warm-starts the others (one journal
per space). The ratio is trials per hour against the fewest K in the same run. A first, untimed search
trains the tokenizer and fills the token cache, so no timed worker pays for it.

    python bench/gpu_packing.py                                   # on a GPU: records to bench/RESULTS.md
    python bench/gpu_packing.py --device cpu --spaces tiny --ks 1,2 --trials 2 --tokens 8192 --no-record \
        --set pretrain.seq_len=128 --set pretrain.compile=false  # the same code path on 2 CPU cores: ~2.5 min
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import command_line, machine, record

ROOT = Path(__file__).resolve().parent.parent
SPACES = ("tiny", "llama-gqa")


class Terminated(BaseException):
    """SIGTERM from outside (`timeout` in bench/gpu_run.sh): not a failed setting; the run ends here."""


def on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated


def stop_group(proc: subprocess.Popen[str], grace: float) -> None:
    """Ctrl-C to ``proc``'s process group (the search and the workers it started), then a kill."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.communicate(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def nas(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """`python -m nas ARGS` from ``cwd`` in its own process group; past ``timeout`` the whole group gets
    Ctrl-C, then a kill, and so it does when this script is stopped (its own session would outlive it). A
    failure stops this setting."""
    argv = [sys.executable, "-m", "nas", *args]
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc, grace=20)
        raise SystemExit(f"nas {args[0]} timed out after {timeout:.0f}s (its workers stopped)") from None
    except BaseException:  # Terminated, Ctrl-C
        stop_group(proc, grace=5)
        raise
    if proc.returncode != 0:
        tail = out[-3000:] + err[-3000:]
        raise SystemExit(f"nas {' '.join(args)} failed ({proc.returncode}):\n{tail}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def fit_to_space(args: argparse.Namespace, space: str) -> list[str]:
    """Overrides that fit the protocol's windows to the space: gpu-files trains 1024-token windows, longer
    than `tiny` (256) and `llama-gqa` (512) take. The windows shrink to the shortest ``max_seq_len`` of the
    space's architectures, and the micro-batch grows by the same factor, so a forward pass sees as many
    tokens as the protocol's. Nothing when the windows already fit."""
    from nas.protocol import load_protocol
    from nas.space import load_space, random_samples

    pretrain = load_protocol(args.trial, [*args.set, f"pretrain.budget.tokens={args.tokens}"]).pretrain
    longest = min(s.arch.max_seq_len for s in random_samples(load_space(space), 64, 0) if s.arch is not None)
    if longest >= pretrain.seq_len:
        return []
    micro = (pretrain.micro_batch_size or pretrain.batch_size) * pretrain.seq_len // longest
    return [f"pretrain.seq_len={longest}", f"pretrain.micro_batch_size={min(micro, pretrain.batch_tokens // longest)}"]


def overrides(args: argparse.Namespace, work: Path, fit: list[str]) -> list[str]:
    sets = [f"cache_dir={work / 'cache'}", f"pretrain.budget.tokens={args.tokens}"]
    if not args.tasks:
        sets += [f"tasks.{t}.enabled=false" for t in ("claims", "qa", "answer")]
    sets += args.set + fit
    return [x for s in sets for x in ("--set", s)]


def search(
    args: argparse.Namespace, work: Path, space: str, k: int, n_trials: int, name: str, like: str | None = None
) -> dict[str, Any]:
    """One study of ``n_trials`` trials by ``k`` workers on the device: its placement figures and wall time.
    ``like``: a study of the same space whose architectures go first (the same ones at every K)."""
    storage = f"journal:{work / (space + '.journal')}"
    argv = ["search", "--study", name, "--space", space, "--trial", args.trial, "--storage", storage]
    argv += ["--warm-start", like] if like else []
    argv += ["--runs-dir", str(work / "runs"), "--n-trials", str(n_trials), "--sampler", "random", "--pruner", "none"]
    argv += ["--seed", "0", "--devices", args.device, "--workers-per-device", str(k), "--quiet"]
    started = time.perf_counter()
    fit = fit_to_space(args, space)
    nas(*argv, *overrides(args, work, fit), cwd=ROOT, timeout=args.timeout)
    wall = time.perf_counter() - started
    status = json.loads(nas("status", name, "--storage", storage, "--json", cwd=ROOT, timeout=120).stdout)
    (use,) = status["placement"] or [None]
    if use is None:
        raise SystemExit(f"{name}: no trained trial recorded its placement")
    memory = [t["metrics"].get("peak_memory_mb") for t in status["trials"] if t["metrics"].get("peak_memory_mb")]
    return {
        "space": space,
        "k": k,
        "trials": use["trained"],
        "wall_s": wall,
        "trials_per_hour": use["trials_per_hour"],
        "tokens_per_second": use["tokens_per_second"],
        "peak_memory_mb": max(memory) if memory else None,
        "fit": ", ".join(fit) or "the protocol's",
    }


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "| space | K workers | trials | wall s | trials/h | x fewest K | tokens/s of one trial (median) | "
        "peak MiB/trial | windows |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: (r["space"], r["k"])):
        base = min((r for r in rows if r["space"] == row["space"]), key=lambda r: r["k"])
        memory = f"{row['peak_memory_mb']:,.0f}" if row["peak_memory_mb"] else "-"
        lines.append(
            f"| {row['space']} | {row['k']} | {row['trials']} | {row['wall_s']:.0f} | {row['trials_per_hour']:,.0f} | "
            f"{row['trials_per_hour'] / base['trials_per_hour']:.2f} (K={base['k']}) | "
            f"{row['tokens_per_second']:,.0f} | {memory} | {row['fit']} |"
        )
    head = (
        f"Machine: {machine()}. Device {args.device}; protocol {args.trial} at {args.tokens:,} tokens per trial, "
        f"tasks {'on' if args.tasks else 'off'}{', ' + ', '.join(args.set) if args.set else ''}; {args.trials} trials "
        f"per search (random sampler, seed 0; every K trains the first K's architectures first, through "
        f"--warm-start). Command: `{command_line()}`\n\n"
    )
    return head + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="0", help="the device to pack: a GPU index or cpu (default 0)")
    parser.add_argument("--ks", default="1,8,2,4", help="workers per device, in the order run (default 1,8,2,4)")
    parser.add_argument("--spaces", default=",".join(SPACES), help=f"spaces (default {','.join(SPACES)})")
    parser.add_argument("--trial", default="gpu-files", help="the trial protocol (default gpu-files)")
    parser.add_argument("--trials", type=int, default=16, help="trials per search, the same for every K")
    parser.add_argument("--tokens", type=int, default=1_000_000, help="pretraining tokens per trial")
    parser.add_argument("--tasks", action="store_true", help="keep the protocol's fine-tuning tasks on")
    parser.add_argument("--set", action="append", default=[], help="more protocol overrides (key=value)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed per search")
    parser.add_argument("--deadline", type=float, help="start no new search after this many seconds")
    parser.add_argument("--partial", type=Path, help="rewrite the table so far to this file after every setting")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    args.ks = [int(k) for k in args.ks.split(",")]
    signal.signal(signal.SIGTERM, on_sigterm)
    work = Path(tempfile.mkdtemp(prefix="gpu_packing_"))
    try:
        env_note = os.environ.get("CUDA_VISIBLE_DEVICES")
        if env_note is not None:
            print(f"note: CUDA_VISIBLE_DEVICES={env_note} is replaced per worker by --devices")
        rows: list[dict[str, Any]] = []
        missed: list[str] = []
        deadline = time.monotonic() + args.deadline if args.deadline else math.inf
        spaces = args.spaces.split(",")
        # Every space's warm-up first, then each K for every space, in --ks order: a run cut short by --deadline
        # (or a kill) still holds the first Ks of every space (gpu_run.sh asks for 1 and 8 first).
        settings = [(space, "warmup") for space in spaces] + [(space, str(k)) for k in args.ks for space in spaces]
        first: dict[str, str] = {}  # each space's first K's study: its architectures go first at every other K
        for space, k in settings:
            if time.monotonic() > deadline:
                missed.append(f"{space} K={k}: not started (--deadline {args.deadline:.0f}s passed)")
                continue
            try:
                if k == "warmup":  # the tokenizer and the token cache, untimed
                    search(args, work, space, 1, 1, f"warmup-{space}")
                    continue
                rows.append(search(args, work, space, int(k), args.trials, f"pack-{space}-k{k}", first.get(space)))
                first.setdefault(space, f"pack-{space}-k{k}")
            except SystemExit as exc:  # one failed setting must not lose the rest
                missed.append(f"{space} K={k}: {str(exc).splitlines()[0][:200]}")
                continue
            print(json.dumps(rows[-1]), flush=True)
            if args.partial:  # what is measured so far survives a kill from outside
                args.partial.write_text(table(rows, args) + "\n")
        body = table(rows, args) if rows else "No setting finished."
        if missed:
            body += "\n\nNot measured: " + "; ".join(missed)
        record("gpu_packing: trials per hour with K workers on one device", body, args.no_record)
    except Terminated:
        raise SystemExit("gpu_packing: stopped from outside (SIGTERM); the table so far is in --partial") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
