"""Trial protocols: YAML → validated :class:`TrialProtocol` (data, tokenizer, budget, tasks, objectives).

Every problem in a file is reported at once with its key path; ``--set key.path=value`` overrides
are checked against the schema before they are applied (a task is addressed by its name or index:
``tasks.qa.steps=40``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, model_validator

from nas.arch import COUNT_NAMES
from nas.errors import NasInputError, did_you_mean, validation_problems
from nas.overrides import apply_key_overrides, fields_at
from nas.protocol_data import (  # noqa: F401  (also read from here)
    BuiltinCorpus,
    BuiltinTaskData,
    Cleaning,
    Count,
    DataConfig,
    FilesCorpus,
    FilesTaskData,
    HubCorpus,
    Real,
    Seed,
    Strict,
    TaskData,
    Validation,
)
from nas.protocol_pretrain import Budget, Optimizer, Pretrain, Schedule, Target  # noqa: F401  (also read from here)
from nas.resources import read_text
from nas.userfiles import parse_yaml

__all__ = [
    "TrialProtocol",
    "Task",
    "load_protocol",
    "parse_protocol",
    "apply_overrides",
    "KIND_METRICS",
    "CHOICE_METRIC",
    "TRIAL_METRICS",
]

KIND_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "precision", "recall", "macro_f1"),
    "qa": ("exact_match", "f1", "perplexity"),  # perplexity: of the gold answer span (lower is better)
    "generation": ("perplexity", "exact_match"),
}
# A generation task whose examples carry candidate completions (builtin data, or files with choices_field) also
# reports how often the most likely candidate is the right one.
CHOICE_METRIC = "choice_accuracy"
# Metrics every trial reports, besides the architecture counts and the task metrics.
TRIAL_METRICS = (
    "val_loss",
    "val_ppl",
    "tokens_per_second",
    "latency_ms_per_token",
    "peak_memory_mb",
    "train_seconds",
    "tokens_trained",
)
# Reported when the schedule has cool-downs (held-out losses at several budgets to extrapolate from).
PREDICTED_METRICS = ("predicted_val_loss", "predicted_val_loss_std", "target_tokens")
# Reported with pretrain.rungs: the index (0: the budget itself) of the highest rung the trial reached.
RUNG_METRICS = ("rung",)
DEFAULT_CACHE_DIR = "runs/cache"  # the default --runs-dir's cache (under_runs_dir moves it with --runs-dir)


class TokenizerConfig(Strict):
    kind: Literal["train", "path"] = "train"
    vocab_size: Count = Field(default=2048, ge=300)  # byte-level: 256 bytes + merges + specials
    min_frequency: Count = Field(default=2, ge=1)
    path: str | None = None

    @model_validator(mode="after")
    def _path_given(self) -> TokenizerConfig:
        if self.kind == "path" and not self.path:
            raise ValueError("kind 'path' needs 'path': a local Hugging Face tokenizer folder")
        return self


# ---- pretraining ----------------------------------------------------------------------------
class Latency(Strict):
    prompt_tokens: Count = Field(default=32, ge=1)
    new_tokens: Count = Field(default=32, ge=1)
    repeats: Count = Field(default=5, ge=5)


# ---- tasks ----------------------------------------------------------------------------------
class Task(Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
    kind: Literal["classification", "qa", "generation"]
    # false: checked, but not run (not in TrialProtocol.tasks); `--set tasks.NAME.enabled=true` runs it
    enabled: bool = True
    data: TaskData = TaskData()
    steps: Count = Field(default=60, ge=1)
    lr: Real = Field(default=1e-3, gt=0, le=10)
    batch_size: Count = Field(default=16, ge=1)
    max_length: Count = Field(default=256, ge=8)
    weight_decay: Real = Field(default=0.0, ge=0, le=10)
    max_answer_tokens: Count = Field(default=16, ge=1)  # qa
    max_new_tokens: Count = Field(default=12, ge=1)  # generation
    eval_batch_size: Count = Field(default=32, ge=1)
    # fine-tuning batches drawn this many at a time, their examples sorted by length, so that a batch pads
    # little (Hugging Face Trainer's group_by_length, in small groups); 1: plain random batches. Off by
    # default: on the builtin qa it cut padding 1.68x -> 1.16x but also the skill (bench/RESULTS.md)
    length_grouping: Count = Field(default=1, ge=1, le=1024)
    # null: the whole model is fine-tuned; N: only the top N transformer layers, the final norm and the head
    # (0: the head alone, a probe of the pretrained features); the embeddings and lower layers stay frozen
    train_layers: Count | None = Field(default=None, ge=0)
    # fine-tune this many times from the same pretrained weights (seeds seed, seed + 1000, ...) and report each
    # metric's mean over the runs: less fine-tuning noise, at that many times the task's cost (bench/RESULTS.md,
    # finetune_noise: on the builtin qa the fine-tuning seed is most of a metric's noise)
    repeats: Count = Field(default=1, ge=1, le=64)

    @model_validator(mode="after")
    def _choices_for_generation(self) -> Task:
        files = self.data.files
        if self.kind != "generation" and files is not None and files.choices_field is not None:
            problem = f"only a generation task has candidate completions, not {self.kind}"
            raise ValueError(f"data.files.choices_field: {problem}")
        return self

    def metrics(self) -> list[str]:
        """The metrics this task reports (each also per grade, see :meth:`grades`)."""
        files = self.data.files if self.data.source == "files" else None
        choices = self.kind == "generation" and (files is None or files.choices_field is not None)
        return [*KIND_METRICS[self.kind], *([CHOICE_METRIC] if choices else [])]

    def grades(self) -> list[str]:
        """The grades this task's metrics are also reported by (builtin data only)."""
        return list(self.data.builtin.grades) if self.data.source == "builtin" else []


class Objective(Strict):
    direction: Literal["minimize", "maximize"]
    weights: dict[str, Real] | None = None  # a weighted sum of metrics


class TaskGate(Strict):
    """Fine-tune only promising trials: a trial runs the tasks when its held-out loss is at most the
    ``quantile`` of the held-out losses of the study's completed trials so far; the first ``min_trials``
    always do. Not with a task metric in the objectives (a skipped trial would have no value)."""

    quantile: Real = Field(gt=0, le=1)
    min_trials: Count = Field(default=3, ge=0, le=1_000_000)


class Confirm(Strict):
    """When the search has its trials, train the ``top`` architectures again, each ``seeds`` more times with
    new pretraining seeds: they are ranked by their mean, with the spread shown, and the repeats measure the
    study's noise, which marks the trials that tie with the best (nas.search.confirm). ``confirm: K`` is
    ``confirm: {top: K}``."""

    top: Count = Field(ge=1, le=1000)
    seeds: Count = Field(default=1, ge=1, le=64)


def _confirm_shorthand(value: Any) -> Any:
    return {"top": value} if isinstance(value, int | float | str) and not isinstance(value, bool) else value


class TrialProtocol(Strict):
    name: str = "protocol"
    description: str = ""
    cache_dir: str = DEFAULT_CACHE_DIR
    data: DataConfig = DataConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    pretrain: Pretrain = Pretrain()
    latency: Latency = Latency()
    tasks: list[Task] = []
    # default: val_loss; predicted_val_loss when a target is given and the schedule has cool-downs
    objectives: dict[str, Objective] = {"val_loss": Objective(direction="minimize")}
    target: Target = Target()
    task_gate: TaskGate | None = None
    confirm: Annotated[Confirm | None, BeforeValidator(_confirm_shorthand)] = None

    source: str = Field(default="<string>", exclude=True)
    # where the token cache lies for this run: ``cache_dir``, or under --runs-dir while cache_dir is the default
    # (under_runs_dir); not a key of the file, and not hashed (a location does not change what a trial measures)
    cache_root: str | None = Field(default=None, exclude=True)
    text: str = Field(default="", exclude=True)
    disabled_tasks: list[str] = Field(default=[], exclude=True)  # names of the tasks with enabled: false

    @model_validator(mode="before")
    @classmethod
    def _objective_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("objectives"), dict):
            data = dict(data)
            data["objectives"] = {
                k: {"direction": v} if isinstance(v, str) else v for k, v in data["objectives"].items()
            }
        return data

    @model_validator(mode="after")
    def _default_objective(self) -> TrialProtocol:
        """No objectives given, a target and cool-downs given: the objective is the prediction at the target."""
        given = self.model_fields_set
        if "target" in given and "objectives" not in given and self.pretrain.anneals:
            self.objectives = {"predicted_val_loss": Objective(direction="minimize")}
        rungs, weights = self.pretrain.rungs, self.target.rung_weights
        if weights is not None and (rungs is None or len(weights) != len(rungs)):
            have = "no pretrain.rungs" if rungs is None else f"{len(rungs)} pretrain.rungs"
            raise ValueError(f"target.rung_weights: give one weight per rung ({have}), got {len(weights)}")
        return self

    @model_validator(mode="after")
    def _check_names(self) -> TrialProtocol:
        """Task names are distinct; tasks with ``enabled: false`` are then left out (a trial never sees them);
        every objective names a metric that the remaining tasks report."""
        problems = []
        names = [t.name for t in self.tasks]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"task name '{dup}' is used twice")
        self.disabled_tasks = [t.name for t in self.tasks if not t.enabled]
        self.tasks = [t for t in self.tasks if t.enabled]
        known = self.metric_names()
        if not self.objectives:
            problems.append("objectives: give at least one")
        for name, objective in self.objectives.items():
            refs = list(objective.weights or {}) if objective.weights else [name]
            for ref in refs:
                if ref not in known:
                    problems.append(f"objectives.{name}: unknown metric '{ref}'{did_you_mean(ref, known)}")
        if self.task_gate is not None and self.tasks:
            task_metrics = set(known) - set(self.pretraining_metric_names())
            for name, objective in self.objectives.items():
                if used := sorted(set(objective.weights or {name: 1}) & task_metrics):
                    problems.append(
                        f"task_gate: objectives.{name} uses task metric '{used[0]}', which a gated trial skips"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def pretraining_metric_names(self) -> list[str]:
        """The metrics a trial reports without its tasks."""
        return (
            list(TRIAL_METRICS)
            + list(COUNT_NAMES)
            + (list(PREDICTED_METRICS) if self.pretrain.anneals else [])
            + (list(RUNG_METRICS) if self.pretrain.rungs else [])
        )

    def metric_names(self) -> list[str]:
        """Every metric a trial of this protocol reports."""
        names = self.pretraining_metric_names()
        for task in self.tasks:
            names += [f"{task.name}.{m}" for m in task.metrics()]
            names += [f"{task.name}.{g}.{m}" for g in task.grades() for m in task.metrics()]
        return names

    @property
    def cache_path(self) -> str:
        """The token cache's folder for this run (see ``cache_root``)."""
        return self.cache_root or self.cache_dir

    @property
    def content_hash(self) -> str:
        """Hash of the validated content (overrides included), for study metadata and checkpoints."""
        canonical = json.dumps(self._hashed(), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def _hashed(self) -> dict[str, Any]:
        """The content that names a protocol, with the version of how a trial measures (MEASURE): a
        study or checkpoint made under another version is not resumed as if it were the same run.
        Keys added since are left out while at their default."""
        content = self.model_dump(mode="json")
        if not content["pretrain"]["schedule"]["cooldowns"]:
            del content["pretrain"]["schedule"]["cooldowns"]
        default = Target().model_dump(mode="json")
        for key in ("prediction", "own_weight", "rung_weights", "reach_penalty"):  # added since: hashed only when set
            if content["target"][key] == default[key]:
                del content["target"][key], default[key]
        if content["target"] == default:
            del content["target"]
        if content["pretrain"]["optimizer"]["lr_width_base"] is None:  # added since: hashed only when set
            del content["pretrain"]["optimizer"]["lr_width_base"]
        if content["pretrain"]["optimizer"]["lr_width_scope"] == "model":  # added since: hashed only when set
            del content["pretrain"]["optimizer"]["lr_width_scope"]
        if content["pretrain"]["rungs"] is None:  # added since: hashed only when set
            del content["pretrain"]["rungs"]
        if content["task_gate"] is None:
            del content["task_gate"]
        del content["confirm"]  # what the search does after its trials, not how a trial measures
        for task in content["tasks"]:  # every task left is enabled
            del task["enabled"]
            if task["train_layers"] is None:  # added since: hashed only when set
                del task["train_layers"]
            if task["length_grouping"] == 1:  # added since: hashed only when set
                del task["length_grouping"]
            if task["repeats"] == 1:  # added since: hashed only when set
                del task["repeats"]
            files = task["data"]["files"]
            if files is not None and files["choices_field"] is None:  # added since: hashed only when set
                del files["choices_field"]
        return {**content, "measure": MEASURE}

    def objective_values(self, metrics: dict[str, float]) -> list[float]:
        """The objectives' values, in order, from a trial's metrics."""
        values = []
        for name, objective in self.objectives.items():
            if objective.weights:
                values.append(sum(w * float(metrics[m]) for m, w in objective.weights.items()))
            else:
                values.append(float(metrics[name]))
        return values


HIDDEN = ("source", "text", "disabled_tasks", "cache_root")  # TrialProtocol fields that are not keys of the file
# How a trial measures: 2 = training windows read without repeats per epoch, held-out windows spread
# over the whole held-out split (1, before: random windows, the first eval_tokens held-out tokens).
MEASURE = 2


def under_runs_dir(protocol: TrialProtocol, runs_dir: Path) -> TrialProtocol:
    """``protocol`` with its token cache under ``runs_dir`` while its ``cache_dir`` is the default
    (``runs/cache``, the default --runs-dir's): the cache follows --runs-dir. A cache_dir the file sets stays."""
    if protocol.cache_dir != DEFAULT_CACHE_DIR or Path(runs_dir) == Path(DEFAULT_CACHE_DIR).parent:
        return protocol
    return protocol.model_copy(update={"cache_root": str(Path(runs_dir) / "cache")})


# ---- loading --------------------------------------------------------------------------------
def load_protocol(name_or_path: str | Path, overrides: list[str] | None = None) -> TrialProtocol:
    """Load a protocol by shipped name or path, apply ``--set`` overrides, validate."""
    path, text = read_text("trials", name_or_path)
    return parse_protocol(text, source=str(path), default_name=path.stem, overrides=overrides)


def parse_protocol(
    text: str, source: str = "<string>", default_name: str = "protocol", overrides: list[str] | None = None
) -> TrialProtocol:
    raw = parse_yaml(text, source)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise NasInputError(source, f"a trial protocol must be a YAML mapping, got {type(raw).__name__}")
    raw.setdefault("name", default_name)
    if overrides:
        raw = apply_overrides(raw, overrides)
    try:
        protocol = TrialProtocol.model_validate(raw)
    except ValidationError as exc:
        raise NasInputError(source, _problems(exc)) from None
    protocol.source = source
    protocol.text = text
    return protocol


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for path, message in validation_problems(exc):
        if "unknown key" in message:
            fields = _fields_at(path.split(".")[:-1])
            key = path.split(".")[-1]
            message = f"unknown key '{key}'{did_you_mean(key, fields)}; allowed keys: {', '.join(fields)}"
        problems.append((path, message))
    return problems


def _fields_at(path: list[str]) -> list[str]:
    return fields_at(TrialProtocol, path, hidden=HIDDEN)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a raw protocol mapping (see
    nas.overrides); a list item (a task) is addressed by its name or index."""
    return apply_key_overrides(raw, overrides, TrialProtocol, hidden=HIDDEN)
