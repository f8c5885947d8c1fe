"""Full training of an exported architecture (`nas train`): the search's data pipeline, tokenizer and
pretraining loop at the full budget, checkpointed and resumable, on one or N processes (DDP).

OUT_DIR holds ``train.json`` (what to train: the export, the protocol text, the budget; `--resume`
reads it), ``checkpoints/`` (see nas.train.checkpoint), ``metrics.jsonl`` (one line per held-out
eval, then one final line with the fine-tuning tasks' scores), ``tensorboard/`` when the
`tensorboard` package is installed, ``train.log``, and at the end a plain Hugging Face model folder:
``config.json``, ``model.safetensors``, ``generation_config.json``, the tokenizer, plus
``architecture.yaml``, ``recipe.yaml`` and ``metrics.json``. nas.train.run_folder reads the folder
back for `--resume`, and refuses a damaged one before training.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nas.cpu import available_cpus
from nas.errors import NasInputError
from nas.model import build_model, fit_vocab
from nas.train.checkpoint import Checkpoint
from nas.train.pretrain import DataParallel, pretrain, resolve_device
from nas.train.run_folder import SPEC_FILE, MetricsLog, TrainSpec, check_resumable, fit_problems, load_spec

if TYPE_CHECKING:
    from nas.arch import ArchConfig
    from nas.data.tokens import TokenData
    from nas.protocol import Pretrain, TrialProtocol
    from nas.train.pretrain import EvalPoint, PretrainOutcome

__all__ = [
    "TrainSpec",
    "plan",
    "train",
    "load_spec",
    "new_run",
    "resume_run",
    "launch_distributed",
    "SPEC_FILE",
]


def plan(
    export_dir: Path,
    trial: str | None,
    tokens: int | None,
    flops: float | None,
    overrides: list[str] | None,
    checkpoint_every: int | None,
    nproc: int,
) -> TrainSpec:
    """Check the inputs and fix what to train; every problem is a NasInputError naming its file or flag."""
    import yaml

    from nas.export import load_architecture, load_metrics

    export_dir = Path(export_dir)
    if not (export_dir / "architecture.yaml").is_file():
        raise NasInputError(str(export_dir), "no architecture.yaml: give a folder written by `nas export`")
    arch = load_architecture(export_dir)
    load_metrics(export_dir)  # read at the end, beside the measured loss: a damaged one is refused now
    if tokens is not None and flops is not None:
        raise NasInputError("--tokens", "give --tokens or --flops, not both")
    # Full training measures its own budget: the trial's cool-downs and rungs (extra budgets) are dropped, and
    # it steps with the target's batch where the protocol names one; --set overrides either.
    recipe = _load_recipe(export_dir, trial, overrides or [])[0]
    target = recipe.target
    batch = [f"pretrain.batch_tokens={target.batch_tokens}"] if target.batch_tokens else []
    rungs = ["pretrain.rungs=null", "target.rung_weights=null"] if recipe.pretrain.rungs else []
    extra = ["pretrain.schedule.cooldowns=[]", *rungs, *_measured_objective(recipe), *batch, *(overrides or [])]
    budget = {"tokens": tokens} if tokens is not None else {"flops": flops} if flops is not None else None
    if budget is None:  # the protocol's target: the budget its trials predicted at (default 20 tokens/param)
        given = {"tokens": target.tokens} if target.tokens else {"flops": target.flops} if target.flops else None
        budget = given or {"tokens": round(target.tokens_per_param * arch.param_count())}
    protocol, source = _load_recipe(export_dir, trial, [*extra, f"pretrain.budget={json.dumps(budget)}"])
    if problems := fit_problems(arch, protocol, nproc):
        raise NasInputError(None, [("--nproc" if key == "nproc" else key, message) for key, message in problems])
    every = checkpoint_every if checkpoint_every is not None else protocol.pretrain.eval_every
    if every < 1:
        raise NasInputError("--checkpoint-every", "must be >= 1 (a full training run always keeps checkpoints)")
    text = yaml.safe_dump(protocol.model_dump(mode="json"), sort_keys=False)
    return TrainSpec(str(export_dir.resolve()), text, source, every, nproc)


def _measured_objective(recipe: TrialProtocol) -> list[str]:
    """An override that makes the held-out loss the objective when the trials' objective is the prediction at
    the target (or reads a rung): full training measures that loss, and without cool-downs it predicts nothing."""
    from nas.protocol import PREDICTED_METRICS, RUNG_METRICS

    refs = {ref for name, objective in recipe.objectives.items() for ref in (objective.weights or {name: 1})}
    return ["objectives={val_loss: minimize}"] if refs & {*PREDICTED_METRICS, *RUNG_METRICS} else []


def _load_recipe(export_dir: Path, trial: str | None, overrides: list[str]) -> tuple[TrialProtocol, str]:
    """The protocol to train with (``--trial``, or the export's recipe.yaml) and where it came from."""
    from nas.protocol import load_protocol, parse_protocol
    from nas.userfiles import read_text

    if trial is not None:
        return load_protocol(trial, overrides), trial
    recipe = export_dir / "recipe.yaml"
    if not recipe.is_file():
        raise NasInputError(str(recipe), "missing: the export has no recipe; name a protocol with --trial")
    text = read_text(recipe)  # not UTF-8, unreadable: a NasInputError naming the file
    return parse_protocol(text, source=str(recipe), overrides=overrides), str(recipe)


def new_run(
    export_dir: Path | None,
    out: Path | None,
    trial: str | None,
    tokens: int | None,
    flops: float | None,
    overrides: list[str] | None,
    checkpoint_every: int | None,
    nproc: int | None,
) -> TrainSpec:
    """Start a `nas train` run in the new folder ``out``: check the inputs (see :func:`plan`), save the
    spec there and return it."""
    from nas.export import check_output_path

    if export_dir is None:
        raise NasInputError("EXPORT_DIR", "give the exported folder to train (or --resume OUT_DIR)")
    if out is None:
        raise NasInputError("--out", "give the output folder: -o OUT_DIR")
    check_output_path(out, "--out")
    if (out / SPEC_FILE).exists():
        raise NasInputError("--out", f"{out} already holds a run: continue it with --resume {out}, or pick another -o")
    spec = plan(export_dir, trial, tokens, flops, overrides, checkpoint_every, nproc or 1)
    spec.save(out)
    return spec


def resume_run(out_dir: Path, nproc: int | None, others_given: bool) -> TrainSpec | None:
    """The saved spec of the run in ``out_dir`` (``nproc``, when given, replaces its process count and is
    saved); None when that run already finished. ``others_given``: settings besides --resume were given.
    A damaged run folder is a NasInputError naming the file (nas.train.run_folder.check_resumable)."""
    spec = load_spec(out_dir)
    if others_given:
        raise NasInputError("--resume", "resume takes the run's own settings; give only --resume OUT_DIR")
    if (out_dir / "metrics.json").is_file() and (out_dir / "model.safetensors").is_file():
        return None
    if nproc is not None:
        spec.nproc = nproc
    check_resumable(out_dir, spec)
    if nproc is not None:
        spec.save(out_dir)
    return spec


def launch_distributed(out_dir: Path, nproc: int) -> int:
    """Train the run in ``out_dir`` on ``nproc`` processes under torchrun (the CPU threads shared among
    them); returns torchrun's exit code."""
    import subprocess
    import sys

    env = {**os.environ, "NAS_THREADS": str(max(1, available_cpus() // nproc))}
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    argv += ["-m", "nas.train.full", str(out_dir)]
    return subprocess.call(argv, env=env)


def train(
    out_dir: Path,
    spec: TrainSpec,
    on_step: Callable[[int, float, float], None] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train (or resume) the run in ``out_dir``; returns the final metrics. Under torchrun each rank
    calls this with RANK / WORLD_SIZE / LOCAL_RANK in its environment."""
    from nas.export import export_architecture, load_architecture
    from nas.protocol import parse_protocol
    from nas.train.baselines import add_baselines
    from nas.train.finetune import evaluate_tasks

    out_dir = Path(out_dir)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    protocol = parse_protocol(spec.protocol_text, source=str(out_dir / SPEC_FILE))
    config = protocol.pretrain
    device = _join(resolve_device(config), world, local_rank)
    tokens = _shared_tokens(protocol, rank, world)
    arch, _ = fit_vocab(load_architecture(spec.export_dir), tokens.vocab_size, config.seq_len)
    model = build_model(arch, tokens.tokenizer, device, config.seed)
    parallel = _data_parallel(model, rank, world, local_rank, device)
    key = f"{arch.arch_hash()}-{protocol.content_hash}"
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    checkpoint = Checkpoint(out_dir / "checkpoints", spec.checkpoint_every, key=key, keep=2, shapes=shapes)
    metrics_out = MetricsLog(out_dir, enabled=rank == 0)
    if rank == 0:
        log(
            f"training {arch.summary()} ({arch.param_count():,} params) for {_total_steps(arch, config)} steps of "
            f"{config.batch_tokens:,} tokens on {world} x {device.type}; "
            f"checkpoints every {spec.checkpoint_every} steps"
        )
    outcome = _pretrain_logged(model, arch, tokens, config, checkpoint, parallel, metrics_out, on_step, log)
    if outcome.resumed_from_step is not None and rank == 0:
        log(f"resumed from the checkpoint at step {outcome.resumed_from_step}")
    if outcome.cause is not None:
        metrics_out.close()
        raise RuntimeError(f"training stopped: {outcome.cause}")
    result = _final_metrics(outcome, world)
    if rank == 0:
        scores = evaluate_tasks(
            protocol, model, arch, tokens.tokenizer, on_task=lambda name: log(f"fine-tuning evaluation: {name}")
        )
        result.update(scores)
        add_baselines(protocol, tokens.tokenizer, result, log)
        _compare_prediction(spec, result, log)
        metrics_out.write(result)
        metrics_out.close()
        _save_model(out_dir, model, arch, tokens, spec, result, export_architecture)
        log(f"done: held-out loss {result['val_loss']:.4f} after {outcome.steps} steps; model in {out_dir}")
    if world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return result


def _compare_prediction(spec: TrainSpec, result: dict[str, Any], log: Callable[[str], None]) -> None:
    """Put the search's prediction beside the measured loss when this run trained the budget it was
    made for (within 5 %): ``predicted_val_loss``, its std and ``prediction_error`` (relative)."""
    from nas.export import load_metrics

    exported = load_metrics(spec.export_dir) or {}
    predicted, target = exported.get("predicted_val_loss"), exported.get("target_tokens")
    if not isinstance(predicted, float) or not isinstance(target, float) or not math.isfinite(predicted):
        return
    if abs(result["tokens"] - target) > 0.05 * target:
        log(f"the search predicted {predicted:.4f} at {target:,.0f} tokens; this run trained {result['tokens']:,}")
        return
    result["predicted_val_loss"] = predicted
    result["predicted_val_loss_std"] = exported.get("predicted_val_loss_std")
    result["prediction_error"] = (result["val_loss"] - predicted) / result["val_loss"]
    std = result["predicted_val_loss_std"] or math.nan
    log(
        f"predicted {predicted:.4f} ± {std:.4f} by the search; measured {result['val_loss']:.4f} "
        f"({100 * result['prediction_error']:+.1f} %)"
    )


def _join(device: torch.device, world: int, local_rank: int) -> torch.device:
    """This process's device; with several processes, its own GPU and the joined process group."""
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def _shared_tokens(protocol: TrialProtocol, rank: int, world: int) -> TokenData:
    """The token cache: rank 0 builds it; the others read it after the barrier."""
    from nas.data.tokens import prepare_tokens

    if rank == 0:
        tokens = prepare_tokens(protocol)
    if world > 1:
        torch.distributed.barrier()
    if rank != 0:
        tokens = prepare_tokens(protocol)
    return tokens


def _data_parallel(
    model: torch.nn.Module, rank: int, world: int, local_rank: int, device: torch.device
) -> DataParallel:
    """This process's DataParallel: the model wrapped in DistributedDataParallel when there are several."""
    if world == 1:
        return DataParallel(rank, world)
    from torch.nn.parallel import DistributedDataParallel

    ddp_model = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
    return DataParallel(rank, world, ddp_model)


def _total_steps(arch: ArchConfig, config: Pretrain) -> int:
    """Steps of the run's token or FLOP budget (`plan` always gives one of the two)."""
    budget = config.budget
    if budget.tokens is not None:
        tokens: float = budget.tokens
    elif budget.flops is not None:
        tokens = budget.flops / arch.flops_per_token(config.seq_len)
    else:
        raise ValueError("a full training run needs a token or FLOP budget, not a time budget")
    return math.ceil(tokens / config.batch_tokens)


def _pretrain_logged(
    model: torch.nn.Module,
    arch: ArchConfig,
    tokens: TokenData,
    config: Pretrain,
    checkpoint: Checkpoint,
    parallel: DataParallel,
    metrics_out: MetricsLog,
    on_step: Callable[[int, float, float], None] | None,
    log: Callable[[str], None],
) -> PretrainOutcome:
    """Pretraining whose evals go to metrics.jsonl, TensorBoard and the log (rank 0), never pruned."""

    def reporter(point: EvalPoint) -> bool:
        metrics_out.eval_point(point)
        if parallel.rank == 0:
            log(f"step {point.step}: held-out loss {point.val_loss:.4f} (lr {point.lr:.2e})")
        return False

    def step_callback(step: int, loss: float, tps: float) -> None:
        metrics_out.train_step(step, loss, tps)
        if on_step is not None:
            on_step(step, loss, tps)

    return pretrain(
        model,
        tokens.train,
        tokens.val,
        config,
        arch.flops_per_token(config.seq_len),
        reporter=reporter,
        on_step=step_callback if parallel.rank == 0 else None,
        checkpoint=checkpoint,
        parallel=parallel,
    )


def _final_metrics(outcome: PretrainOutcome, world: int) -> dict[str, Any]:
    from nas.train.metrics import perplexity

    return {
        "final": True,
        "steps": outcome.steps,
        "tokens": outcome.tokens,
        "val_loss": outcome.final_val_loss,
        "val_ppl": perplexity(outcome.final_val_loss),
        "train_seconds": outcome.train_seconds,
        "tokens_per_second": outcome.tokens_per_second,
        "resumed_from_step": outcome.resumed_from_step,
        "processes": world,
    }


def _save_model(out_dir: Path, model: Any, arch: Any, tokens: Any, spec: TrainSpec, result: dict, export: Any) -> None:
    """A plain Hugging Face folder: from_pretrained and pipeline("text-generation") load it."""
    import transformers

    model.config.pad_token_id = tokens.pad_id
    model.config.eos_token_id = tokens.eos_id
    model.config.bos_token_id = tokens.eos_id
    model.generation_config = transformers.GenerationConfig(
        pad_token_id=tokens.pad_id, eos_token_id=tokens.eos_id, bos_token_id=tokens.eos_id
    )
    model.save_pretrained(out_dir)
    tokens.tokenizer.save_pretrained(out_dir)
    export(arch, out_dir, metrics={k: v for k, v in result.items() if v is not None})
    (out_dir / "recipe.yaml").write_text(spec.protocol_text)


def main() -> None:
    """torchrun's entry: `python -m torch.distributed.run --nproc_per_node N -m nas.train.full OUT_DIR`."""
    import sys

    out_dir = Path(sys.argv[1])
    threads = os.environ.get("NAS_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    rank = int(os.environ.get("RANK", "0"))

    def log(line: str) -> None:
        if rank == 0:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            print(f"{stamp} {line}", flush=True)
            with (out_dir / "train.log").open("a") as f:
                f.write(f"{stamp} {line}\n")

    train(out_dir, load_spec(out_dir), log=log)


if __name__ == "__main__":
    main()
