"""Export an architecture as a plain Hugging Face model folder, and read one back.

The folder holds ``config.json`` (loads with ``AutoConfig.from_pretrained`` and
``AutoModelForCausalLM.from_config``), ``architecture.yaml`` (our ArchConfig, the source of truth)
and ``metrics.json`` when metrics are known.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nas.arch import ArchConfig
from nas.errors import NasInputError, validation_problems

__all__ = ["export_architecture", "load_architecture", "load_metrics", "check_output_path"]

ARCH_FILE = "architecture.yaml"
METRICS_FILE = "metrics.json"


def export_architecture(
    arch: ArchConfig,
    out_dir: str | Path,
    metrics: dict[str, Any] | None = None,
    **token_ids: int | None,
) -> Path:
    """Write ``config.json``, ``architecture.yaml`` and (if given) ``metrics.json`` to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arch.to_hf_config(**token_ids).save_pretrained(out)
    header = f"# nas ArchConfig (hash {arch.arch_hash()}); config.json is derived from it.\n"
    (out / ARCH_FILE).write_text(header + yaml.safe_dump(arch.to_dict(), sort_keys=False))
    if metrics is not None:
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float) + "\n")
    return out


def check_output_path(path: str | Path, flag: str, file: bool = False) -> Path:
    """``path`` when a folder (or with ``file``, a file) can be written there: its folder exists or can be
    made. Else a NasInputError naming ``flag`` and the path (a folder path that is a file, a path under a
    file, a folder that cannot be written). Nothing is created or removed."""
    from nas.userfiles import folder_problem

    if problem := folder_problem(path, file):
        raise NasInputError(flag, problem)
    return Path(path)


def load_architecture(folder: str | Path) -> ArchConfig:
    """The ArchConfig of an exported folder; bad or missing files raise NasInputError."""
    from nas.userfiles import parse_yaml, read_text

    path = Path(folder) / ARCH_FILE
    try:
        found = path.is_file()
    except OSError as exc:  # a name too long
        raise NasInputError(path, f"not a usable path ({exc.strerror or exc})") from None
    if not found:
        raise NasInputError(path, "no such file; is this a folder written by `nas export`?")
    raw = parse_yaml(read_text(path), str(path))
    if not isinstance(raw, dict):
        raise NasInputError(path, "must be a mapping of architecture knobs")
    try:
        return ArchConfig(**raw)
    except ValidationError as exc:
        raise NasInputError(path, validation_problems(exc, fields=ArchConfig.model_fields)) from None


def load_metrics(folder: str | Path) -> dict[str, Any] | None:
    """The export's metrics (None without a metrics.json); one that is not a JSON object is a NasInputError."""
    from nas.userfiles import read_text

    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        metrics = json.loads(read_text(path))
    except (ValueError, RecursionError) as exc:
        raise NasInputError(path, f"not valid JSON: {exc}") from None
    if not isinstance(metrics, dict):
        raise NasInputError(path, f"must be a JSON object of metrics (got {type(metrics).__name__})")
    return metrics
