"""Damaged `nas train` output folders: `nas train --resume` on each ends with exit 2 naming the damaged
file (train.json, metrics.jsonl, a checkpoint file, the export it names), before any training; and
`nas train -o` refuses an output path that is a file or lies under one, leaving the file as it was.

One micro run (20 steps, a checkpoint every 10) is trained once per module; each case damages a copy.
A last line of metrics.jsonl cut short (a kill in the middle of writing it) is not damage: it is dropped.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from nas.cli import main
from tests.bad_input.harness import Case, check
from tests.conftest import MICRO_OVERRIDES

STEPS = 20  # x 512 tokens; checkpoints at steps 10 and 20, evals at 10 and 20


@pytest.fixture(scope="module")
def trained(tmp_path_factory, micro_cache) -> Path:
    """A finished micro run whose final model is removed: `--resume` finds its last checkpoint."""
    from nas.arch import ArchConfig
    from nas.export import export_architecture
    from nas.protocol import load_protocol

    root = tmp_path_factory.mktemp("run-folder")
    export = root / "export"
    export_architecture(ArchConfig(vocab_size=512, max_seq_len=64, n_layers=1, d_model=32, n_heads=2), export)
    overrides = [f"cache_dir={micro_cache}", *MICRO_OVERRIDES, "tasks=[]", "pretrain.eval_every=10"]
    protocol = load_protocol("cpu-tiny", overrides)
    (export / "recipe.yaml").write_text(yaml.safe_dump(protocol.model_dump(mode="json"), sort_keys=False))
    run = root / "run"
    with pytest.raises(SystemExit) as info:
        main(
            ["train", str(export), "--tokens", str(STEPS * 512), "-o", str(run), "--checkpoint-every", "10", "--quiet"]
        )
    assert info.value.code in (0, None)
    for name in ("metrics.json", "model.safetensors"):
        (run / name).unlink()
    return run


# ---- ways to damage a run folder (each takes the copy's folder) ---------------------------------------
def spec_text(text: str | bytes) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        path = run / "train.json"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    return damage


def spec_edit(**changes) -> Callable[[Path], None]:
    """train.json with keys replaced (a value of ... removes the key)."""

    def damage(run: Path) -> None:
        spec = json.loads((run / "train.json").read_text())
        for key, value in changes.items():
            if value is ...:
                spec.pop(key)
            else:
                spec[key] = value
        (run / "train.json").write_text(json.dumps(spec))

    return damage


def protocol_edit(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        spec = json.loads((run / "train.json").read_text())
        protocol = yaml.safe_load(spec["protocol_text"])
        edit(protocol)
        spec["protocol_text"] = yaml.safe_dump(protocol)
        (run / "train.json").write_text(json.dumps(spec))

    return damage


def export_damage(text: str, name: str = "architecture.yaml") -> Callable[[Path], None]:
    """The export train.json names, copied beside the run with its file ``name`` replaced by ``text``."""

    def damage(run: Path) -> None:
        spec = json.loads((run / "train.json").read_text())
        export = run.parent / "export-copy"
        shutil.copytree(spec["export_dir"], export)
        (export / name).write_text(text)
        spec["export_dir"] = str(export)
        (run / "train.json").write_text(json.dumps(spec))

    return damage


def metrics_lines(*lines: str | bytes) -> Callable[[Path], None]:
    """metrics.jsonl: its first line, then ``lines`` (each ended by a newline)."""

    def damage(run: Path) -> None:
        first = (run / "metrics.jsonl").read_bytes().split(b"\n")[0]
        body = [first, *(line if isinstance(line, bytes) else line.encode() for line in lines)]
        (run / "metrics.jsonl").write_bytes(b"\n".join(body) + b"\n")

    return damage


def newest(run: Path) -> Path:
    return run / "checkpoints" / f"step-{STEPS:08d}"


def file_bytes(name: str, make: Callable[[bytes], bytes | None]) -> Callable[[Path], None]:
    """The newest checkpoint's ``name`` rewritten as ``make(old bytes)`` (None: removed)."""

    def damage(run: Path) -> None:
        path = newest(run) / name
        data = make(path.read_bytes())
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data)

    return damage


def state_edit(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    """The newest checkpoint's state.pt saved again as ``edit(state)`` (or the edited state, when it returns None)."""

    def damage(run: Path) -> None:
        path = newest(run) / "state.pt"
        state = torch.load(path, weights_only=True)
        replaced = edit(state)
        torch.save(state if replaced is None else replaced, path)

    return damage


def other_weights(run: Path) -> None:
    from safetensors.torch import save_file

    save_file({"model.embed_tokens.weight": torch.zeros(3, 3)}, newest(run) / "model.safetensors")


def a_folder(name: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        (run / name).unlink()
        (run / name).mkdir()

    return damage


SPEC = "{tmp}/run/train.json"
METRICS = "{tmp}/run/metrics.jsonl"
STATE = f"{{tmp}}/run/checkpoints/step-{STEPS:08d}/state.pt"
WEIGHTS = f"{{tmp}}/run/checkpoints/step-{STEPS:08d}/model.safetensors"
REMOVE_HINT = f"remove {{tmp}}/run/checkpoints/step-{STEPS:08d} to resume from step-{STEPS // 2:08d}"

DAMAGES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    # train.json
    "train.json not JSON": (spec_text("{not json"), (SPEC, "not valid JSON")),
    "train.json cut in half": (spec_text('{"export_dir": "/x", "protocol_te'), (SPEC, "not valid JSON")),
    "train.json empty": (spec_text(""), (SPEC, "not valid JSON")),
    "train.json binary": (spec_text(b"\xff\xfe\x00garbage\x80"), (SPEC, "not utf-8 text")),
    "train.json latin-1": (spec_text('{"export_dir": "caf\xe9"}'.encode("latin-1")), (SPEC, "byte 19")),
    "train.json a list": (spec_text("[1, 2]"), (SPEC, "must be a JSON object")),
    "train.json null": (spec_text("null"), (SPEC, "must be a JSON object")),
    "train.json nested deep": (spec_text("[" * 100_000 + "]" * 100_000), (SPEC, "not valid JSON")),
    "train.json is a folder": (a_folder("train.json"), ("{tmp}/run", "no train.json here")),
    "train.json missing": (lambda run: (run / "train.json").unlink(), ("{tmp}/run", "no train.json here")),
    "export_dir missing": (spec_edit(export_dir=...), (SPEC, "export_dir: missing")),
    "protocol_text missing": (spec_edit(protocol_text=...), (SPEC, "protocol_text: missing")),
    "checkpoint_every missing": (spec_edit(checkpoint_every=...), (SPEC, "checkpoint_every: missing")),
    "export_dir a number": (spec_edit(export_dir=5), (SPEC, "export_dir: must be a string")),
    "export_dir empty": (spec_edit(export_dir=" "), (SPEC, "export_dir: is empty")),
    "protocol_text a list": (spec_edit(protocol_text=["a"]), (SPEC, "protocol_text: must be a string")),
    "checkpoint_every a string": (spec_edit(checkpoint_every="10"), (SPEC, "checkpoint_every: must be a whole")),
    "checkpoint_every zero": (spec_edit(checkpoint_every=0), (SPEC, "checkpoint_every: must be >= 1")),
    "checkpoint_every true": (spec_edit(checkpoint_every=True), (SPEC, "checkpoint_every: must be a whole")),
    "checkpoint_every a float": (spec_edit(checkpoint_every=2.5), (SPEC, "checkpoint_every: must be a whole")),
    "nproc negative": (spec_edit(nproc=-1), (SPEC, "nproc: must be >= 1")),
    "nproc not splitting the batch": (spec_edit(nproc=3), (SPEC, "nproc: the batch of")),
    "unknown key": (spec_edit(extra=1), (SPEC, "extra: unknown key")),
    "export_dir gone": (spec_edit(export_dir="/nonexistent/export"), (SPEC, "export_dir: /nonexistent/export")),
    "export_dir a name too long": (spec_edit(export_dir="/x" * 3000), (SPEC, "export_dir: /x/x", "is not a folder")),
    "protocol_text not YAML": (spec_edit(protocol_text="a: [1, 2"), (SPEC, "protocol_text", "not valid YAML")),
    "protocol_text a YAML list": (spec_edit(protocol_text="- 1\n- 2\n"), (SPEC, "protocol_text", "YAML mapping")),
    "protocol_text a bad value": (
        protocol_edit(lambda p: p["pretrain"].update(seq_len=-4)),
        (SPEC, "protocol_text", "pretrain.seq_len"),
    ),
    "protocol_text a time budget": (
        protocol_edit(lambda p: p["pretrain"].update(budget={"seconds": 5})),
        (SPEC, "protocol_text: pretrain.budget", "not a time budget"),
    ),
    "protocol_text seq_len over the arch": (
        protocol_edit(lambda p: p["pretrain"].update(seq_len=128)),
        (SPEC, "protocol_text: pretrain.seq_len", "exceeds the architecture's max_seq_len 64"),
    ),
    "export architecture.yaml not YAML": (export_damage("a: [1"), ("export-copy/architecture.yaml", "not valid YAML")),
    "export architecture.yaml bad knob": (
        export_damage("vocab_size: 512\nmax_seq_len: 64\nn_layers: many\nd_model: 32\nn_heads: 2\n"),
        ("export-copy/architecture.yaml", "n_layers"),
    ),
    "export metrics.json not JSON": (
        export_damage('{"val_loss": ', "metrics.json"),
        ("export-copy/metrics.json", "not valid JSON"),
    ),
    "export metrics.json a list": (export_damage("[]", "metrics.json"), ("export-copy/metrics.json", "JSON object")),
    # metrics.jsonl
    "metrics garbage line": (metrics_lines("garbage", "{}"), (METRICS, "line 2", "not valid JSON")),
    "metrics cut line in the middle": (
        metrics_lines('{"step": 20, "val_lo', '{"final": true}'),
        (METRICS, "line 2", "not valid JSON"),
    ),
    "metrics a list row": (metrics_lines("[1, 2]"), (METRICS, "line 2", "must be a JSON object")),
    "metrics step a string": (
        metrics_lines('{"step": "20", "val_loss": 3.0}'),
        (METRICS, "line 2", "step must be a whole number"),
    ),
    "metrics step negative": (metrics_lines('{"step": -1, "val_loss": 3.0}'), (METRICS, "line 2", "step must be")),
    "metrics step true": (metrics_lines('{"step": true, "val_loss": 3.0}'), (METRICS, "line 2", "step must be")),
    "metrics val_loss a string": (
        metrics_lines('{"step": 20, "val_loss": "low"}'),
        (METRICS, "line 2", "val_loss must be a number"),
    ),
    "metrics empty object": (metrics_lines("{}"), (METRICS, "line 2", "neither an eval")),
    "metrics no step": (metrics_lines('{"val_loss": 3.0}'), (METRICS, "line 2", "neither an eval")),
    "metrics not UTF-8": (metrics_lines(b'{"step": 20, "val_loss": 3.0, "x": "\xff"}'), (METRICS, "not utf-8 text")),
    "metrics a folder": (a_folder("metrics.jsonl"), (METRICS, "is not a file")),
    # what else the folder holds
    "checkpoints a file": (
        lambda run: shutil.rmtree(run / "checkpoints") or (run / "checkpoints").write_text("x"),
        ("{tmp}/run/checkpoints", "is a file; a `nas train` run keeps a folder here"),
    ),
    "train.log a folder": (a_folder("train.log"), ("{tmp}/run/train.log", "is a folder")),
    # the newest checkpoint
    "state.pt truncated": (file_bytes("state.pt", lambda b: b[: len(b) // 2]), (STATE, "truncated or corrupt")),
    "state.pt garbage": (file_bytes("state.pt", lambda b: b"garbage" * 100), (STATE, "truncated or corrupt")),
    "state.pt empty": (file_bytes("state.pt", lambda b: b""), (STATE, "truncated or corrupt", REMOVE_HINT)),
    "state.pt missing": (file_bytes("state.pt", lambda b: None), (STATE, "missing (the save is incomplete)")),
    "state.pt a list": (state_edit(lambda s: [1, 2]), (STATE, "holds a list, not a checkpoint state")),
    "state.pt step a string": (state_edit(lambda s: s.update(step="20")), (STATE, "step: must be a whole number")),
    "state.pt step another folder's": (state_edit(lambda s: s.update(step=30)), (STATE, "does not match its folder")),
    "state.pt no optimizer": (state_edit(lambda s: s.pop("optimizer")), (STATE, "optimizer: missing")),
    "state.pt optimizer a list": (state_edit(lambda s: s.update(optimizer=[])), (STATE, "optimizer: must be")),
    "state.pt curve garbage": (state_edit(lambda s: s.update(curve=[{"step": 1}])), (STATE, "curve: must be")),
    "state.pt rng garbage": (state_edit(lambda s: s.update(rng={"torch": 3})), (STATE, "rng: must be")),
    "state.pt train_seconds NaN": (
        state_edit(lambda s: s.update(train_seconds=float("nan"))),
        (STATE, "train_seconds: must be"),
    ),
    "state.pt annealed garbage": (state_edit(lambda s: s.update(annealed="x")), (STATE, "annealed: must be")),
    "weights truncated": (file_bytes("model.safetensors", lambda b: b[: len(b) // 2]), (WEIGHTS, "truncated")),
    "weights garbage": (file_bytes("model.safetensors", lambda b: b"\x00" * 64), (WEIGHTS, "truncated or corrupt")),
    "weights empty": (file_bytes("model.safetensors", lambda b: b""), (WEIGHTS, "truncated or corrupt")),
    "weights missing": (file_bytes("model.safetensors", lambda b: None), (WEIGHTS, "missing", REMOVE_HINT)),
    "weights of another model": (other_weights, (WEIGHTS, "do not match the model's")),
}

CASES = {name: Case(("train", "--resume", "{tmp}/run", "--quiet"), culprit) for name, (_, culprit) in DAMAGES.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_damaged_run_folder_is_refused_naming_the_file(name, trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    DAMAGES[name][0](run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "train.log"}
    check(CASES[name], tmp_path, capsys)
    assert not (run / "model.safetensors").exists()  # nothing trained
    assert {p: p.read_bytes() for p in before} == before  # the damaged files were left for the user to see


def test_an_undamaged_copy_resumes(trained, tmp_path, capsys):
    """The control: the same copy, undamaged, resumes from its last checkpoint and finishes."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    check(Case(("train", "--resume", str(run), "--quiet"), (), code=0), tmp_path, capsys)
    assert (run / "model.safetensors").is_file()
    assert json.loads((run / "metrics.json").read_text())["resumed_from_step"] == STEPS


@pytest.mark.parametrize(
    "tail, kept",
    [
        (b'{"step": 30, "val_lo', None),  # a kill mid-write: the cut line is dropped from the file
        (b'{"time": 1.0, "st\xc3', None),  # cut inside a UTF-8 character
        (b'{"step": 30, "val_loss": 2.5}', b'{"step": 30, "val_loss": 2.5}\n'),  # whole, without its newline
    ],
)
def test_a_last_metrics_line_cut_short_is_dropped(tail, kept, trained, tmp_path):
    from nas.train.full import resume_run

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = (run / "metrics.jsonl").read_bytes()
    (run / "metrics.jsonl").write_bytes(before + tail)
    assert resume_run(run, None, others_given=False) is not None
    assert (run / "metrics.jsonl").read_bytes() == before + (kept or b"")
    assert all(json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines())


def _a_file(tmp: Path) -> None:
    (tmp / "file").write_text("keep me\n")


OUTPUT_CASES = {
    "-o an existing file": Case(
        ("train", "{tmp}/export", "-o", "{tmp}/file", "--tokens", "512"), ("--out", "{tmp}/file", "is a file")
    ),
    "-o under a file": Case(
        ("train", "{tmp}/export", "-o", "{tmp}/file/sub", "--tokens", "512"),
        ("--out", "{tmp}/file/sub", "lies under {tmp}/file, which is a file"),
    ),
    "-o two levels under a file": Case(
        ("train", "{tmp}/export", "-o", "{tmp}/file/a/b", "--tokens", "512"), ("--out", "{tmp}/file/a/b")
    ),
    "-o a name too long": Case(
        ("train", "{tmp}/export", "-o", "{tmp}/" + "y" * 300, "--tokens", "512"), ("--out", "File name too long")
    ),
    "an export whose metrics.json is damaged": Case(
        ("train", "{tmp}/export", "-o", "{tmp}/new", "--tokens", "512"),
        ("{tmp}/export/metrics.json", "not valid JSON"),
        setup=lambda tmp: (tmp / "export" / "metrics.json").write_text("{oops"),
    ),
    "--resume a file": Case(("train", "--resume", "{tmp}/file"), ("{tmp}/file", "no train.json here")),
    "--resume a name too long": Case(("train", "--resume", "{tmp}/" + "x" * 5000), ("no train.json here",)),
    "--resume under a file": Case(("train", "--resume", "{tmp}/file/run"), ("{tmp}/file/run", "no train.json here")),
}


@pytest.mark.parametrize("name", list(OUTPUT_CASES))
def test_train_output_path_that_is_or_lies_under_a_file(name, trained, tmp_path, capsys):
    shutil.copytree(json.loads((trained / "train.json").read_text())["export_dir"], tmp_path / "export")
    _a_file(tmp_path)
    check(OUTPUT_CASES[name], tmp_path, capsys)
    assert (tmp_path / "file").read_text() == "keep me\n" and not (tmp_path / "new").exists()


# ---- an export folder written by hand: its architecture.yaml and recipe.yaml ------------------------------
ARCH = "vocab_size: 512\nmax_seq_len: 64\nn_layers: 1\nd_model: 32\nn_heads: 2\n"


def _export(arch: str = ARCH, recipe: bytes | None = None) -> Callable[[Path], None]:
    """``{tmp}/export`` with ``arch`` as its architecture.yaml (and ``recipe`` as its recipe.yaml)."""

    def setup(tmp: Path) -> None:
        (tmp / "export").mkdir()
        (tmp / "export" / "architecture.yaml").write_text(arch)
        if recipe is not None:
            (tmp / "export" / "recipe.yaml").write_bytes(recipe)

    return setup


def _knob(line: str) -> str:
    """ARCH with the knob of ``line`` ('knob: value') replaced or added."""
    knob = line.split(":")[0]
    kept = [row for row in ARCH.splitlines() if not row.startswith(f"{knob}:")]
    return "\n".join([*kept, line]) + "\n"


# A knob that is a list (a mapping, a date) where the architecture takes one value; before: a TypeError (an
# unhashable list, float() of a list or a date), an OverflowError, or the list silently dropped.
KNOBS = {
    "n_layers a list": ("n_layers: [1, 2]", "n_layers: expected one value, got a list [1, 2]"),
    "n_heads a list": ("n_heads: [2, 4]", "n_heads: expected one value, got a list [2, 4]"),
    "position a list": ("position: [rope]", "position: expected one value, got a list ['rope']"),
    "family a list": ("family: [llama]", "family: expected one value, got a list ['llama']"),
    "family a mapping": ("family: {name: llama}", "family: expected one value, got a mapping {'name': 'llama'}"),
    "activation a list": ("activation: [silu, gelu]", "activation: expected one value, got a list"),
    "attention a list": ("attention: [full]", "attention: expected one value, got a list ['full']"),
    "qk_norm a list": ("qk_norm: [true]", "qk_norm: expected one value, got a list [True]"),
    "window a list": ("window: [8]", "window: expected one value, got a list [8]"),
    "rope_theta a list": ("rope_theta: [1, 2]", "rope_theta: expected one value, got a list [1, 2]"),
    "rope_theta a date": ("rope_theta: 2024-01-01", "rope_theta: expected one value, got a date 2024-01-01"),
    "rope_theta past a float": ("rope_theta: 1" + "0" * 400, "rope_theta: Input should be a valid number"),
}
RECIPES = {
    "recipe.yaml latin-1": ("name: x\ndescription: café\n".encode("latin-1"), "byte 24 (0xe9 0a)"),
    "recipe.yaml UTF-16": ("name: x\n".encode("utf-16"), "it looks like UTF-16"),
    "recipe.yaml binary": (bytes(range(256)) * 4, "it looks binary"),
    "recipe.yaml gzip": (b"\x1f\x8b\x08\x00\xff\xfe", "it looks gzip-compressed"),
}
TRAIN = ("train", "{tmp}/export", "--tokens", "1000", "-o", "{tmp}/out")
ARCH_FILE = "{tmp}/export/architecture.yaml: "
EXPORT_CASES = {
    **{
        f"train: {name}": Case((*TRAIN, "--trial", "cpu-tiny"), (ARCH_FILE + fragment,), setup=_export(_knob(line)))
        for name, (line, fragment) in KNOBS.items()
    },
    **{
        f"trials run --arch: {name}": Case(
            ("trials", "run", "cpu-tiny", "--arch", "{tmp}/export"), (ARCH_FILE + fragment,), setup=_export(_knob(line))
        )
        for name, (line, fragment) in KNOBS.items()
    },
    **{
        f"train: {name}": Case(
            TRAIN, ("{tmp}/export/recipe.yaml: not utf-8 text", fragment), setup=_export(recipe=recipe)
        )
        for name, (recipe, fragment) in RECIPES.items()
    },
    "trials run --arch: a name too long": Case(
        ("trials", "run", "cpu-tiny", "--arch", "{tmp}/" + "x" * 300), ("architecture.yaml: not a usable path",)
    ),
}


@pytest.mark.parametrize("name", list(EXPORT_CASES))
def test_an_export_with_a_bad_file_is_refused_naming_it(name, tmp_path, capsys):
    check(EXPORT_CASES[name], tmp_path, capsys)
    assert not (tmp_path / "out").exists()  # refused before the run folder is made


def test_the_hand_written_export_reads(tmp_path):
    """The control: the export the cases above damage reads as it is."""
    from nas.export import load_architecture

    _export()(tmp_path)
    assert load_architecture(tmp_path / "export").n_layers == 1
