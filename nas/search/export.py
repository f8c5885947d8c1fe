"""Export from a study: which trials (`--best`, `--pareto K`, `--trial N`), and each as a Hugging Face
folder with its tokenizer, metrics, the protocol as ``recipe.yaml`` and a README with the recipe for
full training (nas.export writes the architecture part).

A trial whose stored record is damaged (see nas.search.records) is never exported: `--best` and
`--pareto` rank only undamaged trials (:func:`damaged_notes` says which were left out), and `--trial N`
of a damaged trial is bad input naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from nas.errors import NasInputError
from nas.search.ranking import leaderboard, refitted_predictions
from nas.search.records import TrialRecord, read_trials
from nas.search.storage import study_context, study_info

__all__ = ["check_export_choice", "export_targets", "export_from_study", "damaged_notes"]


def check_export_choice(trial: int | None, best: bool, pareto: int | None) -> None:
    """Exactly one of ``trial``, ``best`` or ``pareto`` (checked before the study is opened)."""
    if sum(x is not None and x is not False for x in (trial, best or None, pareto)) != 1:
        raise NasInputError("export", "give exactly one of --trial N, --best, --pareto K")


def export_targets(
    study: optuna.Study, out: Path, trial: int | None = None, best: bool = False, pareto: int | None = None
) -> list[tuple[int, Path]]:
    """(trial number, folder) pairs for exactly one of ``trial``, ``best`` or ``pareto``."""
    check_export_choice(trial, best, pareto)
    if trial is not None:
        return [(trial, out)]
    ranked = [r for r in leaderboard(study) if r.rank is not None]
    if best:
        if len(study.directions) > 1:
            raise NasInputError("--best", "the study has several objectives: use --pareto K or --trial N")
        if not ranked:
            raise NasInputError("--best", f"study '{study.study_name}' has no completed trial yet")
        return [(ranked[0].number, out)]
    front = [r for r in ranked if r.pareto][:pareto]
    if not front:
        raise NasInputError("--pareto", f"study '{study.study_name}' has no completed trial yet")
    return [(r.number, out / f"trial-{r.number}") for r in front]


def damaged_notes(study: optuna.Study) -> list[str]:
    """One line per trained trial left out of the ranking because its stored record is damaged."""
    rows = [r for r in leaderboard(study) if r.damage and (r.trained or r.state == "?")]
    return [f"trial {r.number} skipped: {r.cause}" for r in rows]


def export_from_study(study: optuna.Study, number: int, out_dir: Path, runs_dir: Path = Path("runs")) -> Path:
    """The foundation's export folder for one trial, plus the trained tokenizer, metrics, the protocol
    as recipe.yaml, a README recipe for full training, and the weights when they were kept. A trial
    that cannot be exported (damaged, never sampled, its weights gone) is refused before anything is written."""
    from nas.arch import ArchConfig
    from nas.data.tokens import prepare_tokens
    from nas.export import check_output_path, export_architecture
    from nas.protocol import under_runs_dir

    record = _exportable(study, number, runs_dir)
    check_output_path(out_dir, "--out")
    _, protocol = study_context(study)
    arch = ArchConfig(**record.arch)
    tokens = prepare_tokens(under_runs_dir(protocol, runs_dir))  # the search's cache, under --runs-dir
    metrics = {
        **record.metrics,
        "trial": number,
        "study": study.study_name,
        "state": record.state,
        "arch_hash": arch.arch_hash(),
    }
    if record.task_baselines:  # what a trivial predictor scores on each task metric, with no model
        metrics["task_baselines"] = record.task_baselines
        metrics["baseline_predictors"] = record.baseline_predictors
    out = export_architecture(
        arch,
        out_dir,
        metrics=metrics,
        pad_token_id=tokens.pad_id,
        eos_token_id=tokens.eos_id,
        bos_token_id=tokens.eos_id,
    )
    tokens.tokenizer.save_pretrained(out)
    (out / "recipe.yaml").write_text(study_info(study).protocol_text or "")
    if record.artifact_weights:
        from optuna.artifacts import download_artifact

        path = str(out / "model.safetensors")
        download_artifact(artifact_store=_store(study, runs_dir), artifact_id=record.artifact_weights, file_path=path)
    (out / "README.md").write_text(_readme(study, record, arch, out))
    return out


def _exportable(study: optuna.Study, number: int, runs_dir: Path) -> TrialRecord:
    """Trial ``number``'s record, when it can be exported; else a NasInputError naming the trial."""
    trials, unreadable = read_trials(study)
    found = {t.number: t for t in trials}
    count = len(trials) + len(unreadable)
    if not 0 <= number < count:
        raise NasInputError("--trial", f"study '{study.study_name}' has no trial {number} (0..{count - 1})")
    record = (
        TrialRecord.from_trial(found[number]) if number in found else next(r for r in unreadable if r.number == number)
    )
    if record.damage:
        raise NasInputError("--trial", f"trial {number} cannot be exported: {record.shown_cause()}")
    if not record.arch:
        raise NasInputError("--trial", f"trial {number} has no architecture ({record.cause or 'not sampled'})")
    refit = refitted_predictions(study, [TrialRecord.from_trial(t) for t in trials])
    if number in refit:  # the prediction refitted on every trained trial, as the leaderboard ranks by
        value, std = refit[number]
        record.metrics = record.metrics | {"predicted_val_loss": value, "predicted_val_loss_std": std}
    if record.artifact_weights:
        try:
            _store(study, runs_dir).open_reader(record.artifact_weights).close()
        except Exception as exc:  # the store's own errors for a missing or unreadable artifact
            where = runs_dir / study.study_name / "artifacts"
            raise NasInputError(
                "--trial",
                f"trial {number}: its kept weights '{record.artifact_weights}' cannot be read from {where} "
                f"({type(exc).__name__}); give --runs-dir where the study's artifacts are",
            ) from None
    return record


def _store(study: optuna.Study, runs_dir: Path) -> optuna.artifacts.FileSystemArtifactStore:
    return optuna.artifacts.FileSystemArtifactStore(str(runs_dir / study.study_name / "artifacts"))


def _readme(study: optuna.Study, record: TrialRecord, arch: Any, out: Path) -> str:
    info = study_info(study)
    folder = out.as_posix()
    ended = (
        f"\nThe trial was **pruned** ({record.shown_cause() or 'stopped early'}): its metrics are those of a "
        "shorter run than the protocol's budget, so compare it with completed trials with care.\n"
        if record.state == "pruned"
        else ""
    )
    has_weights = bool(record.artifact_weights)
    shown = "\n".join(
        (f"| {k} | {v:.5g} |" if isinstance(v, float) else f"| {k} | {v} |") + f" {record.baseline(k)} |"
        for k, v in record.metrics.items()
    )
    weights_line = "\n- `model.safetensors`: the weights after the short trial." if has_weights else ""
    load = (
        "AutoModelForCausalLM.from_pretrained(folder)"
        if has_weights
        else "AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))"
    )
    return f"""# {arch.summary()}

Trial {record.number} of study `{study.study_name}` (space `{info.space_name}`, protocol
`{info.protocol_name}`), architecture hash `{arch.arch_hash()}`:
{arch.param_count():,} parameters ({arch.non_embedding_params():,} non-embedding),
{arch.flops_per_token():,.0f} training FLOPs per token, {arch.kv_cache_bytes_per_token():,.0f} KV-cache bytes per token.
{ended}
| metric | value | baseline (no model) |
|---|---|---|
{shown}

## Files

- `config.json`: the Hugging Face config ({arch.spec.config_class});
  `architecture.yaml`: the nas ArchConfig it came from.
- `tokenizer.json` and friends: the tokenizer the trial trained with.
- `recipe.yaml`: the trial protocol (data, tokenizer, budget, optimizer, schedule, tasks).
- `metrics.json`: the trial's metrics.{weights_line}

## Full training
{_prediction(record.metrics)}
Train it at the full budget with the same data pipeline and tokenizer (`recipe.yaml`); without
`--tokens` or `--flops` it trains at the protocol's target (`target:` in `recipe.yaml`, by default 20
tokens per parameter):

```bash
nas train {folder} -o trained/{arch.arch_hash()}   # --tokens N, --flops F, --resume, --nproc N
```

The architecture also loads in plain `transformers`:

```python
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

folder = "{folder}"
model = {load}
tokenizer = AutoTokenizer.from_pretrained(folder)
```
"""


def _prediction(metrics: dict[str, Any]) -> str:
    """The search's prediction at the target budget beside what the trial measured ('' without one)."""
    import math

    value, std, tokens = (metrics.get(k) for k in ("predicted_val_loss", "predicted_val_loss_std", "target_tokens"))
    if not all(isinstance(v, float | int) and math.isfinite(v) for v in (value, std, tokens)):
        return ""
    measured = metrics.get("val_loss")
    at = f"{measured:.4f} at {metrics.get('tokens_trained', 0):,.0f} tokens" if isinstance(measured, float) else "-"
    return (
        f"\nThe search predicted a held-out loss of {value:.4f} ± {std:.4f} at the target budget of "
        f"{tokens:,.0f} tokens (the trial measured {at}). The prediction extrapolates the trial's "
        "annealed points with the study's fit refitted on all its trained trials (`nas.scaling`); `nas train` "
        "at that budget writes the measured loss and `prediction_error` beside it in `metrics.json`.\n"
    )
