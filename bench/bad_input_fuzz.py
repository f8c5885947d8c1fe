"""How often does hostile or careless input break the exit-code contract? (issue 15)

Mutates the shipped search spaces and trial protocols at random (a scalar replaced by a hostile value, a
line dropped, repeated or re-indented, bytes spliced in, the file cut short, an alias bomb appended), runs
`nas spaces validate FILE` / `nas protocols validate FILE` in-process on each, and counts how each run ended:
exit 0 (the mutation was harmless), 2 (bad input, one message), 1, a traceback (any other exception), or a
hang (over 10 s, stopped by SIGALRM). The contract: no tracebacks, no hangs.

    python bench/bad_input_fuzz.py --cases 600 --seed 0 [--record]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from nas.resources import shipped_dir, shipped_names  # noqa: E402

HOSTILE = [
    ".inf",
    "-.inf",
    ".nan",
    "-1",
    "0",
    "1" + "0" * 40,
    "1.0e308",
    "true",
    "false",
    "null",
    "~",
    "''",
    "x",
    "[]",
    "{}",
    "[1, 2]",
    "{a: 1}",
    "'10**10**10'",
    "'9**9**9'",
    "'__import__(\"os\")'",
    "'(' * 3000",
    "*undefined",
    "&a [*a]",
    '"\\udcff"',
    "'" + "[" * 200 + "'",
    "2**64",
    "-0.0",
    "1e-400",
    "'a' * 10**9",
]
BOMB = 'bomb_a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"bomb_{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


def mutate(text: str, rng: random.Random) -> bytes:
    lines = text.splitlines()
    kind = rng.choice(["value", "value", "value", "drop", "repeat", "indent", "bytes", "cut", "bomb", "expr"])
    i = rng.randrange(len(lines))
    if kind == "value":
        candidates = [j for j, line in enumerate(lines) if ": " in line and not line.lstrip().startswith("#")]
        j = rng.choice(candidates)
        key, _, _ = lines[j].partition(": ")
        lines[j] = f"{key}: {rng.choice(HOSTILE)}"
    elif kind == "expr":
        lines.append(f"# expr\nderived_extra: {rng.choice(HOSTILE)}")
    elif kind == "drop":
        del lines[i]
    elif kind == "repeat":
        lines.insert(i, lines[i])
    elif kind == "indent":
        lines[i] = " " * rng.choice([1, 3, 7]) + lines[i]
    elif kind == "bomb":
        lines.append(BOMB)
    data = "\n".join(lines).encode()
    if kind == "bytes":
        at = rng.randrange(len(data))
        data = data[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))) + data[at:]
    elif kind == "cut":
        data = data[: rng.randrange(len(data))]
    return data


class Hang(Exception):
    pass


def run_case(argv: list[str], limit: float = 10.0) -> tuple[str, float]:
    from nas.cli import main

    def alarm(signum, frame):  # noqa: ARG001
        raise Hang()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    start = time.perf_counter()
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            main(argv)
        outcome = "returned"
    except SystemExit as exc:
        outcome = f"exit {exc.code}"
    except Hang:
        outcome = "hang"
    except BaseException as exc:  # noqa: BLE001
        outcome = f"traceback {type(exc).__name__}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if outcome.startswith("exit") and "Traceback" in err.getvalue():
        outcome = "traceback (printed)"
    return outcome, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/nas-fuzz"))
    parser.add_argument("--record", action="store_true", help="append the result to bench/RESULTS.md")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    sources = [("spaces", shipped_dir("search_spaces") / f"{n}.yaml") for n in shipped_names("search_spaces")]
    sources += [("trials", shipped_dir("trials") / f"{n}.yaml") for n in shipped_names("trials")]
    outcomes: Counter[str] = Counter()
    examples: dict[str, str] = {}
    slowest = 0.0
    for k in range(args.cases):
        verb, source = rng.choice(sources)
        path = args.out / f"case-{k}.yaml"
        path.write_bytes(mutate(source.read_text(), rng))
        outcome, seconds = run_case([verb, "validate", str(path)])
        slowest = max(slowest, seconds)
        outcomes[outcome] += 1
        if outcome.startswith(("traceback", "hang", "returned")):
            examples.setdefault(outcome, str(path))
    broken = sum(n for o, n in outcomes.items() if o.startswith(("traceback", "hang", "returned")))
    lines = [
        f"{args.cases} mutated shipped spaces and protocols (seed {args.seed}), "
        "`nas spaces|trials validate` in-process:",
        "",
        "| outcome | runs |",
        "|---|---|",
        *[f"| {o} | {n} |" for o, n in sorted(outcomes.items())],
        "",
        f"broken (traceback, hang or no exit): {broken} of {args.cases}; slowest run {slowest:.2f} s",
    ]
    lines += [f"- {o}: e.g. {p}" for o, p in examples.items()]
    from _results import record

    record("bad_input_fuzz: the exit-code contract under random mutations", "\n".join(lines), no_record=not args.record)


if __name__ == "__main__":
    main()
