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

__all__ = ["export_architecture", "load_architecture", "load_metrics"]

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


def load_architecture(folder: str | Path) -> ArchConfig:
    """The ArchConfig of an exported folder; bad or missing files raise NasInputError."""
    path = Path(folder) / ARCH_FILE
    if not path.is_file():
        raise NasInputError(path, "no such file; is this a folder written by `nas export`?")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise NasInputError(path, f"not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise NasInputError(path, "must be a mapping of architecture knobs")
    try:
        return ArchConfig(**raw)
    except ValidationError as exc:
        raise NasInputError(path, validation_problems(exc, fields=ArchConfig.model_fields)) from None


def load_metrics(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / METRICS_FILE
    return json.loads(path.read_text()) if path.is_file() else None
