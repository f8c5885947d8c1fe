"""The `nas train` output folder as `--resume` reads it: ``train.json`` (the :class:`TrainSpec`),
``metrics.jsonl`` (:class:`MetricsLog`) and ``checkpoints/`` (nas.train.checkpoint).

A folder that does not read back is bad input: every damaged file (not JSON, not UTF-8, a key missing
or of the wrong type, a garbage line, a truncated or corrupt checkpoint, an export folder gone) is a
NasInputError naming the file and the key or line, raised by :func:`check_resumable` before any
training starts. One exception: a last line of ``metrics.jsonl`` cut short (a kill in the middle of
writing it) is dropped, and cut from the file so that the next row starts on a line of its own; the
resumed run writes that eval again.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.errors import NasInputError
from nas.userfiles import decode, read_text

if TYPE_CHECKING:
    from nas.arch import ArchConfig
    from nas.protocol import TrialProtocol

__all__ = [
    "SPEC_FILE",
    "METRICS_JSONL",
    "TrainSpec",
    "load_spec",
    "fit_problems",
    "check_resumable",
    "read_metrics",
    "MetricsLog",
]

SPEC_FILE = "train.json"
METRICS_JSONL = "metrics.jsonl"


@dataclass
class TrainSpec:
    export_dir: str
    protocol_text: str  # YAML, overrides and the budget applied
    protocol_source: str
    checkpoint_every: int
    nproc: int = 1

    def save(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / SPEC_FILE).write_text(json.dumps(asdict(self), indent=1))


_SPEC_TYPES = {"export_dir": str, "protocol_text": str, "protocol_source": str, "checkpoint_every": int, "nproc": int}


def load_spec(out_dir: Path) -> TrainSpec:
    """The run's ``train.json``, every key present and of its type (else a NasInputError naming them)."""
    path = Path(out_dir) / SPEC_FILE
    if not _is(path, "file"):
        raise NasInputError(str(out_dir), f"no {SPEC_FILE} here: not a `nas train` output folder (nothing to resume)")
    raw = _json(path, read_text(path), "")
    names = [f.name for f in fields(TrainSpec)]
    if not isinstance(raw, dict):
        raise NasInputError(path, f"must be a JSON object with the keys {', '.join(names)} (got {_kind(raw)})")
    problems = [(key, f"unknown key; {SPEC_FILE} holds {', '.join(names)}") for key in raw if key not in names]
    for name, kind in _SPEC_TYPES.items():
        if name not in raw:
            if name != "nproc":  # written since data parallelism came; 1 before
                problems.append((name, "missing"))
        elif not isinstance(raw[name], kind) or isinstance(raw[name], bool):
            what = "a string" if kind is str else "a whole number"
            problems.append((name, f"must be {what} (got {_kind(raw[name])})"))
        elif kind is int and raw[name] < 1:
            problems.append((name, f"must be >= 1 (got {raw[name]})"))
        elif name in ("export_dir", "protocol_text") and not raw[name].strip():
            problems.append((name, "is empty"))
    if problems:
        raise NasInputError(path, problems)
    return TrainSpec(**raw)


def _is(path: Path, kind: str) -> bool:
    """Whether ``path`` is a file (a folder); False too for a name the system refuses (too long, ...)."""
    try:
        return path.is_file() if kind == "file" else path.is_dir()
    except OSError:
        return False


def fit_problems(arch: ArchConfig, protocol: TrialProtocol, nproc: int) -> list[tuple[str, str]]:
    """(key, message) for each way the protocol does not fit a full training run of ``arch`` on ``nproc``."""
    config, problems = protocol.pretrain, []
    if config.seq_len > arch.max_seq_len:
        too_long = f"{config.seq_len} exceeds the architecture's max_seq_len {arch.max_seq_len}"
        problems.append(("pretrain.seq_len", too_long))
    if config.budget.tokens is None and config.budget.flops is None:
        problems.append(("pretrain.budget", "a full training run needs a token or FLOP budget, not a time budget"))
    if config.batch_size % nproc:
        problems.append(("nproc", f"the batch of {config.batch_size} sequences does not split over {nproc} processes"))
    return problems


def check_resumable(out_dir: Path, spec: TrainSpec) -> None:
    """Everything `--resume` reads, read once before training: the protocol in train.json, the export it
    names, metrics.jsonl (a last line cut short is cut off) and the newest checkpoint (without loading
    its tensors). A damaged file is a NasInputError naming it."""
    from nas.export import load_architecture, load_metrics
    from nas.protocol import parse_protocol
    from nas.train.checkpoint import Checkpoint

    path = Path(out_dir) / SPEC_FILE
    protocol = parse_protocol(spec.protocol_text, source=f"{path}: protocol_text")
    if not _is(Path(spec.export_dir), "folder"):
        raise NasInputError(path, [("export_dir", f"{spec.export_dir} is not a folder (was the export moved?)")])
    arch = load_architecture(spec.export_dir)
    load_metrics(spec.export_dir)  # read at the end, beside the measured loss
    problems = fit_problems(arch, protocol, spec.nproc)
    if problems:
        keyed = [(key if key == "nproc" else f"protocol_text: {key}", message) for key, message in problems]
        raise NasInputError(path, keyed)
    for name, folder in (("checkpoints", True), ("tensorboard", True), ("train.log", False)):
        if (entry := Path(out_dir) / name).exists() and entry.is_dir() != folder:
            want, got = ("folder", "file") if folder else ("file", "folder")
            raise NasInputError(entry, f"is a {got}; a `nas train` run keeps a {want} here")
    read_metrics(Path(out_dir) / METRICS_JSONL, repair=True)
    Checkpoint(Path(out_dir) / "checkpoints", spec.checkpoint_every).check()


# ---- metrics.jsonl ---------------------------------------------------------------------------------
def read_metrics(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` ([] when there is none): each an eval (a whole-number ``step`` and a
    numeric ``val_loss``) or the final row (``"final": true``). A last line cut short is left out, and
    with ``repair`` cut from the file; any other line that is not such a row is a NasInputError naming
    the file and the line. Blank lines are skipped."""
    if not path.is_file():
        if path.exists():
            raise NasInputError(path, "is not a file")
        return []
    data = path.read_bytes()
    *lines, tail = data.split(b"\n")  # tail: what follows the last newline, b"" in a whole file
    rows, offset = [], 0
    for number, line in enumerate(lines, 1):
        if line.strip():
            rows.append(_row(path, number, decode(line, "utf-8", path, base=offset)))
        offset += len(line) + 1
    if tail.strip():
        try:
            json.loads(tail.decode("utf-8"))
        except ValueError:  # the last write was cut short (UnicodeDecodeError is a ValueError too)
            if repair:
                with path.open("r+b") as f:
                    f.truncate(len(data) - len(tail))
            return rows
        rows.append(_row(path, len(lines) + 1, tail.decode("utf-8")))
        if repair:  # a whole row without its newline: end it, so the next row starts a line
            with path.open("ab") as f:
                f.write(b"\n")
    return rows


def _row(path: Path, number: int, line: str) -> dict[str, Any]:
    where = f"line {number}"
    row = _json(path, line, where)
    if not isinstance(row, dict):
        raise NasInputError(path, [(where, f"must be a JSON object (got {_kind(row)})")])
    if row.get("final") is True:
        return row
    step, loss = row.get("step"), row.get("val_loss")
    if "val_loss" not in row or "step" not in row:
        problem = "neither an eval (step, val_loss) nor the final row"
    elif not isinstance(step, int) or isinstance(step, bool) or step < 0:
        problem = f"step must be a whole number >= 0 (got {step!r})"
    elif not isinstance(loss, int | float) or isinstance(loss, bool):
        problem = f"val_loss must be a number (got {_kind(loss)})"
    else:
        return row
    raise NasInputError(path, [(where, problem)])


def _json(path: Path, text: str, where: str) -> Any:
    """``text`` (a whole file, or line ``where`` of it) parsed as JSON; a NasInputError naming the place if not."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"line {exc.lineno} column {exc.colno}" if not where else f"column {exc.colno}"
        raise NasInputError(path, [(where, f"not valid JSON ({exc.msg} at {at}); the file is damaged")]) from None
    except RecursionError:
        raise NasInputError(path, [(where, "not valid JSON (nested too deep); the file is damaged")]) from None


def _kind(value: Any) -> str:
    shown = repr(value)
    return f"{type(value).__name__} {shown[:40]}{'...' if len(shown) > 40 else ''}"


class MetricsLog:
    """metrics.jsonl (append-only; a resumed run skips the evals it already wrote) and TensorBoard."""

    def __init__(self, out_dir: Path, enabled: bool) -> None:
        self.path = out_dir / METRICS_JSONL
        self.enabled = enabled
        self.last_step = -1
        if enabled:
            evals = [row["step"] for row in read_metrics(self.path, repair=True) if "final" not in row]
            self.last_step = max(evals, default=-1)
        self.board = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.board = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:  # the `tensorboard` extra is not installed
                self.board = None

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def eval_point(self, point: Any) -> None:
        if not self.enabled or point.step <= self.last_step:
            return
        self.last_step = point.step
        self.write({"time": time.time(), **point.to_dict()})
        if self.board is not None:
            self.board.add_scalar("val_loss", point.val_loss, point.step)
            self.board.add_scalar("lr", point.lr, point.step)

    def train_step(self, step: int, loss: float, tps: float) -> None:
        if self.board is not None and step % 10 == 0:
            self.board.add_scalar("train_loss", loss, step)
            self.board.add_scalar("tokens_per_second", tps, step)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
