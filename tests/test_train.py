"""`nas train`: full training of an exported architecture, killed and resumed, and data parallel."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nas.cli import main
from nas.errors import NasInputError
from nas.export import export_architecture
from nas.train.full import launch_distributed, load_spec, new_run, resume_run


@pytest.fixture
def exported(tmp_path: Path, micro_protocol, micro_arch) -> Path:
    """An export folder as `nas export` writes it: architecture and recipe (the micro protocol)."""
    folder = tmp_path / "export"
    export_architecture(micro_arch, folder)
    protocol = micro_protocol("tasks=[]", "pretrain.eval_every=20")
    (folder / "recipe.yaml").write_text(yaml.safe_dump(protocol.model_dump(mode="json"), sort_keys=False))
    return folder


def nas(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas", *argv], cwd=cwd, capture_output=True, text=True, timeout=600)


def evals(out: Path) -> list[dict]:
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "final" not in r]


def test_train_loss_falls_and_the_folder_loads_and_generates(exported, tmp_path, capsys):
    import transformers

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(["train", str(exported), "--tokens", str(300 * 512), "-o", str(out), "--quiet"])
    assert info.value.code in (0, None), capsys.readouterr()
    rows = evals(out)
    assert [r["step"] for r in rows] == list(range(20, 301, 20))
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 1.0  # 300 steps: the loss falls well below the start
    final = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["final"] and final["steps"] == 300 and final["val_loss"] == pytest.approx(rows[-1]["val_loss"])

    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) > 0
    generate = transformers.pipeline("text-generation", model=str(out), device="cpu")
    text = generate("Mira is a baker", max_new_tokens=12, do_sample=False)[0]["generated_text"]
    assert text.startswith("Mira is a baker") and len(tokenizer(text).input_ids) > len(
        tokenizer("Mira is a baker").input_ids
    )


def test_the_search_prediction_is_compared_with_the_measured_loss(tmp_path, micro_protocol, micro_arch, capsys):
    """An export whose trial predicted the loss at its target, trained by default at that target:
    metrics.json puts the prediction beside the measurement; the trial's cool-downs are not run again."""
    folder = tmp_path / "export"
    tokens = 40 * 512
    export_architecture(
        micro_arch,
        folder,
        metrics={"predicted_val_loss": 5.0, "predicted_val_loss_std": 0.2, "target_tokens": 1.0 * tokens},
    )
    protocol = micro_protocol(
        "tasks=[]", "pretrain.schedule.kind=wsd", "pretrain.schedule.cooldowns=[0.5]", f"target.tokens={tokens}"
    )
    (folder / "recipe.yaml").write_text(yaml.safe_dump(protocol.model_dump(mode="json"), sort_keys=False))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(["train", str(folder), "-o", str(out), "--quiet"])  # the budget: the recipe's target
    assert info.value.code in (0, None), capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tokens"] == tokens
    assert metrics["predicted_val_loss"] == 5.0 and metrics["predicted_val_loss_std"] == 0.2
    assert metrics["prediction_error"] == pytest.approx((metrics["val_loss"] - 5.0) / metrics["val_loss"])
    assert "predicted 5.0000 ± 0.2000 by the search; measured" in (out / "train.log").read_text()
    assert yaml.safe_load((out / "recipe.yaml").read_text())["pretrain"]["schedule"]["cooldowns"] == []

    other = tmp_path / "other"  # another budget: no comparison, only a note
    with pytest.raises(SystemExit):
        main(["train", str(folder), "--tokens", str(2 * tokens), "-o", str(other), "--quiet"])
    assert "prediction_error" not in json.loads((other / "metrics.json").read_text())
    assert "the search predicted 5.0000 at 20,480 tokens; this run trained 40,960" in (other / "train.log").read_text()


def train_here(*argv: str, capsys) -> tuple[int, str]:
    """`nas ARGV` in this process (no second start-up of torch): (exit code, stdout)."""
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    return info.value.code or 0, capsys.readouterr().out


@pytest.mark.slow
def test_sigkill_then_resume_continues_without_a_restart(exported, tmp_path, capsys):
    out = tmp_path / "killed"
    steps = 360
    argv = ["train", str(exported), "--tokens", str(steps * 512), "-o", str(out), "--checkpoint-every", "40", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "nas", *argv], cwd=tmp_path, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        saves = sorted((out / "checkpoints").glob("step-*")) if (out / "checkpoints").is_dir() else []
        if saves and int(saves[-1].name.split("-")[1]) >= 80:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = max(r["step"] for r in evals(out))
    assert killed_at < steps

    code, _ = train_here("train", "--resume", str(out), "--quiet", capsys=capsys)  # a new process's state
    assert code == 0
    log = (out / "train.log").read_text()
    assert "resumed from the checkpoint at step" in log
    resumed_from = json.loads((out / "metrics.json").read_text())["resumed_from_step"]
    assert 80 <= resumed_from <= killed_at and resumed_from % 40 == 0
    rows = evals(out)
    assert [r["step"] for r in rows] == list(range(20, steps + 1, 20))  # every eval once: no restart, no gap

    straight = tmp_path / "straight"
    code, _ = train_here(
        "train", str(exported), "--tokens", str(steps * 512), "-o", str(straight), "--quiet", capsys=capsys
    )
    assert code == 0
    assert evals(straight)[-1]["val_loss"] == pytest.approx(rows[-1]["val_loss"], abs=1e-4)
    code, stdout = train_here("train", "--resume", str(out), capsys=capsys)
    assert code == 0 and "already finished" in stdout


@pytest.mark.slow
def test_two_processes_match_one(exported, tmp_path, capsys):
    tokens = str(100 * 512)
    code, _ = train_here(
        "train", str(exported), "--tokens", tokens, "-o", str(tmp_path / "one"), "--quiet", capsys=capsys
    )
    two = nas(
        "train", str(exported), "--tokens", tokens, "-o", str(tmp_path / "two"), "--nproc", "2", "--quiet", cwd=tmp_path
    )
    assert code == 0 and two.returncode == 0, two.stdout + two.stderr
    a, b = evals(tmp_path / "one"), evals(tmp_path / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b, strict=True):  # same global batch, DDP-averaged gradients: the same run within noise
        assert y["val_loss"] == pytest.approx(x["val_loss"], abs=2e-3)
    assert json.loads((tmp_path / "two/metrics.json").read_text())["processes"] == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "nope", "-o", "o"], "nope: no architecture.yaml"),
        (["train", "--resume", "o"], "no train.json here"),
        (["train", "EXPORT"], "--out: give the output folder"),
        (["train", "EXPORT", "-o", "o", "--tokens", "10", "--flops", "1e9"], "give --tokens or --flops, not both"),
        (["train", "EXPORT", "-o", "o", "--nproc", "3"], "does not split over 3 processes"),
        (["train", "/" + "x" * 300, "-o", "o"], "File name too long"),
    ],
)
def test_bad_train_input_exits_2(argv, message, exported, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [str(exported) if a == "EXPORT" else a for a in argv]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_a_run_refused_before_its_first_step_leaves_no_folder(exported, tmp_path, monkeypatch, capsys):
    """The data cannot be prepared (the cache folder lies under a regular file): exit 2, and -o is gone, so
    the same command runs once the input is fixed; an -o that existed keeps its own files."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plain").write_text("a file")
    for out, existed in (tmp_path / "new", False), (tmp_path / "mine", True):
        if existed:
            out.mkdir()
            (out / "notes.txt").write_text("kept")
        with pytest.raises(SystemExit) as info:
            main(["train", str(exported), "-o", str(out), "--set", f"cache_dir={tmp_path / 'plain' / 'cache'}"])
        assert info.value.code == 2 and "cache" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] if existed else not out.exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="no tensorboard (extra: tensorboard)")
def test_tensorboard_event_files(exported, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    with pytest.raises(SystemExit) as info:
        main(["train", str(exported), "--tokens", str(40 * 512), "-o", str(out), "--quiet"])
    assert info.value.code in (0, None), capsys.readouterr()
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val_loss")] == [20, 40]
    assert [e.step for e in events.Scalars("train_loss")] == [10, 20, 30, 40]


def test_new_run_saves_the_spec_and_refuses_missing_or_taken_folders(exported, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(NasInputError) as info:
        new_run(None, out, None, None, None, None, None, None)
    assert str(info.value) == "EXPORT_DIR: give the exported folder to train (or --resume OUT_DIR)"
    with pytest.raises(NasInputError) as info:
        new_run(exported, None, None, None, None, None, None, None)
    assert str(info.value) == "--out: give the output folder: -o OUT_DIR"
    assert not out.exists()

    spec = new_run(exported, out, None, 40 * 512, None, None, None, None)
    assert load_spec(out) == spec and spec.nproc == 1 and spec.checkpoint_every == 20  # the recipe's eval_every
    assert spec.export_dir == str(exported.resolve()) and "budget:\n    tokens: 20480" in spec.protocol_text
    with pytest.raises(NasInputError) as info:
        new_run(exported, out, None, 512, None, None, None, 2)
    assert str(info.value) == f"--out: {out} already holds a run: continue it with --resume {out}, or pick another -o"
    assert load_spec(out) == spec  # the refused call left the run as it was


def test_full_training_steps_with_the_target_s_batch(tmp_path, micro_protocol, micro_arch):
    """A protocol whose trials take small steps (pretrain.batch_tokens) names full training's batch in
    target.batch_tokens: `nas train` uses it, and a --set override still wins."""
    folder = tmp_path / "export"
    export_architecture(micro_arch, folder, metrics={})
    protocol = micro_protocol("tasks=[]", "pretrain.batch_tokens=128", "target.batch_tokens=512")
    (folder / "recipe.yaml").write_text(yaml.safe_dump(protocol.model_dump(mode="json"), sort_keys=False))
    spec = new_run(folder, tmp_path / "a", None, 4096, None, None, None, None)
    assert yaml.safe_load(spec.protocol_text)["pretrain"]["batch_tokens"] == 512
    spec = new_run(folder, tmp_path / "b", None, 4096, None, ["pretrain.batch_tokens=256"], None, None)
    assert yaml.safe_load(spec.protocol_text)["pretrain"]["batch_tokens"] == 256
    plain = micro_protocol("tasks=[]", "pretrain.batch_tokens=128")
    (folder / "recipe.yaml").write_text(yaml.safe_dump(plain.model_dump(mode="json"), sort_keys=False))
    spec = new_run(folder, tmp_path / "c", None, 4096, None, None, None, None)
    assert yaml.safe_load(spec.protocol_text)["pretrain"]["batch_tokens"] == 128


def test_resume_run_keeps_the_run_s_settings(exported, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(NasInputError, match="no train.json here: not a `nas train` output folder"):
        resume_run(out, None, others_given=False)
    spec = new_run(exported, out, None, 40 * 512, None, None, None, None)
    with pytest.raises(NasInputError) as info:
        resume_run(out, None, others_given=True)
    assert str(info.value) == "--resume: resume takes the run's own settings; give only --resume OUT_DIR"
    assert resume_run(out, None, others_given=False) == spec
    resumed = resume_run(out, 2, others_given=False)
    assert resumed is not None and resumed.nproc == 2 and load_spec(out).nproc == 2  # the override is saved
    (out / "metrics.json").write_text("{}")
    assert resume_run(out, None, others_given=False) is not None  # no model yet: not finished
    (out / "model.safetensors").write_bytes(b"")
    assert resume_run(out, None, others_given=False) is None  # finished: nothing to resume


def test_launch_distributed_runs_torchrun_on_the_run_folder(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda argv, env: calls.append((argv, env)) or 3)
    monkeypatch.setattr("nas.train.full.available_cpus", lambda: 8)
    assert launch_distributed(tmp_path, 2) == 3
    ((argv, env),) = calls
    assert argv == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "nas.train.full",
        str(tmp_path),
    ]
    assert env["NAS_THREADS"] == "4" and env["PATH"] == os.environ["PATH"]


def test_full_training_scores_the_tasks_beside_their_baselines(tmp_path, micro_protocol, micro_arch, capsys):
    """The recipe's tasks are fine-tuned after full training; each score is logged, and kept in metrics.json,
    beside what a trivial predictor scores with no model."""
    folder = tmp_path / "export"
    export_architecture(micro_arch, folder, metrics={})
    protocol = micro_protocol()
    protocol = protocol.model_copy(update={"tasks": protocol.tasks[:1]})  # claims only
    (folder / "recipe.yaml").write_text(yaml.safe_dump(protocol.model_dump(mode="json"), sort_keys=False))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(["train", str(folder), "--tokens", str(20 * 512), "-o", str(out), "--quiet"])
    assert info.value.code in (0, None), capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["claims.near.accuracy"] <= 1
    assert metrics["task_baselines"]["claims.chance"] == pytest.approx(1 / 3)
    assert metrics["baseline_predictors"]["claims.far.accuracy"] == "majority class"
    assert "claims.accuracy " in (log := (out / "train.log").read_text()) and "(no model: majority class" in log
