"""The Plotly report: from a real micro study, from a synthetic 2,000-trial study, empty, and in a browser."""

import math
import random
import re
import shutil
import subprocess
import time

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution

from nas.arch import ArchConfig
from nas.report import build_report

FIGURE_DIV = re.compile(r'<div id="([0-9a-f-]+)" class="plotly-graph-div"')


PHASES = {"data": 2.0, "build": 0.5, "proxies": 0.5, "pretrain": 18.0, "eval": 3.0, "latency": 1.0, "task qa": 4.0}


def synthetic_study(
    n: int,
    directions=("minimize",),
    seed: int = 0,
    scramble_early: bool = False,
    timed: bool = False,
    baselines: bool = False,
) -> optuna.Study:
    rng = random.Random(seed)
    study = optuna.create_study(study_name=f"synthetic-{n}", directions=list(directions))
    for key, value in {
        "nas.space_name": "tiny",
        "nas.space_hash": "s" * 16,
        "nas.protocol_name": "cpu-tiny",
        "nas.protocol_hash": "p" * 16,
        "nas.version": "test",
        "nas.objectives": {f"o{i}" if i else "val_loss": d for i, d in enumerate(directions)},
    }.items():
        study.set_user_attr(key, value)
    dists = {
        "n_layers": IntDistribution(1, 4),
        "n_heads": CategoricalDistribution([2, 4]),
        "attention": CategoricalDistribution(["full", "sliding"]),
    }
    trials = []
    for _ in range(n):
        params = {
            "n_layers": rng.randint(1, 4),
            "n_heads": rng.choice([2, 4]),
            "attention": rng.choice(["full", "sliding"]),
        }
        arch = ArchConfig(
            vocab_size=2048,
            max_seq_len=256,
            d_model=32 * params["n_heads"],
            n_heads=params["n_heads"],
            n_layers=params["n_layers"],
            attention=params["attention"],
            window=32 if params["attention"] == "sliding" else None,
        )
        loss = 4.0 - 0.3 * params["n_layers"] - 0.2 * params["n_heads"] / 2 + rng.gauss(0, 0.05)
        pruned = rng.random() < 0.3
        steps = 4 if pruned else 10
        curve = [[s * 10, s * 20480, loss + 3.0 * math.exp(-s / 3)] for s in range(steps + 1)]
        if scramble_early:
            curve[1][2] = rng.uniform(3.0, 6.0)  # an early loss that says nothing about the final one
        counts = arch.counts()
        speed = rng.uniform(5e3, 2e4)
        metrics = {"val_loss": curve[-1][2], "tokens_trained": curve[-1][1], "tokens_per_second": speed}
        attrs = {  # as nas.search.records.write_claim and write_result write them
            "arch": arch.to_dict(),
            "arch_hash": arch.arch_hash(),
            "summary": arch.summary(),
            **counts,
            "nas_status": "trained",
            "curve": curve,
            "tokens_per_second": speed,
            "metrics": {**metrics, "qa.f1": rng.random()},
            "wall_seconds": 30.0,
            **({"phase_seconds": {**PHASES, "other": 1.0}} if timed else {}),
            **(
                {"task_baselines": {"qa.f1": 0.07}, "baseline_predictors": {"qa.f1": "first 2 words"}}
                if baselines
                else {}
            ),
        }
        values = [curve[-1][2]] + ([counts["params"]] if len(directions) > 1 else [])
        if pruned:
            attrs["cause"] = "pruned at step 40"
            trials.append(
                optuna.trial.create_trial(
                    params=params, distributions=dists, user_attrs=attrs, state=optuna.trial.TrialState.PRUNED
                )
            )
        else:
            trials.append(
                optuna.trial.create_trial(params=params, distributions=dists, user_attrs=attrs, values=values)
            )
    study.add_trials(trials)
    return study


def test_report_of_2000_trials_is_fast_and_small(tmp_path):
    study = synthetic_study(2000, directions=("minimize", "minimize"))
    started = time.perf_counter()
    report = build_report(study, tmp_path / "big.html")
    elapsed = time.perf_counter() - started
    size = report.path.stat().st_size
    assert elapsed < 30 and size < 30e6, (elapsed, size)
    text = report.path.read_text()
    assert text.count("plotly.js v") <= 2 and len(FIGURE_DIV.findall(text)) == len(report.figures) >= 7
    titles = [t for t, _ in report.figures]
    assert {
        "Optimisation history",
        "Learning curves (held-out loss vs tokens)",
        "Parameter importances",
        "Parallel coordinates",
        "Pareto fronts: quality vs cost",
        "Hypervolume history",
        "Top 10 % vs all: knob distributions",
        "Proxy check",
    } <= set(titles)
    assert "Spearman&#x27;s rho" in text or "Spearman's rho" in text
    assert "Kendall&#x27;s tau" in text or "Kendall's tau" in text
    assert (
        "id='leaderboard-table'" in text
        and "<a href='#proxy-check'>Proxy check</a>" in text
        and text.count("<tr>") > 1400
    )


def test_report_single_objective_and_proxy_warning(tmp_path):
    faithful = build_report(synthetic_study(60), tmp_path / "r.html")
    assert "Hypervolume history" not in [t for t, _ in faithful.figures]
    text = faithful.path.read_text()
    assert "not drawn: it needs a study with exactly two objectives" in text  # said, not silently absent
    assert "Best: trial" in text and "nas export synthetic-60 --trial" in text
    assert not any("short-trial score" in w for w in faithful.warnings)
    scrambled = build_report(synthetic_study(60, scramble_early=True), tmp_path / "s.html")
    assert any(w.startswith("Low rank correlation for the short-trial score") for w in scrambled.warnings)
    assert "Low rank correlation for the short-trial score" in scrambled.path.read_text()


def test_report_says_where_the_time_went(tmp_path):
    """Each phase's seconds summed over the trained trials (pruned ones too), stacked in one bar."""
    study = synthetic_study(40, timed=True)
    trained = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    report = build_report(study, tmp_path / "t.html")
    (figure,) = [f for title, f in report.figures if title == "Where the time went"]
    assert {bar.name: bar.x[0] for bar in figure.data} == {
        name: len(trained) * seconds for name, seconds in {**PHASES, "other": 1.0}.items()
    }
    assert figure.data[3].text[0] == "pretrain 60 %" and figure.layout.barmode == "stack"
    text = report.path.read_text()
    assert "<a href='#where-the-time-went'>Where the time went</a>" in text
    assert f"{len(trained) * 30 / 60:,.1f} trial-minutes over {len(trained)} trained trials: pretrain 60 % · " in text

    untimed = build_report(synthetic_study(10), tmp_path / "u.html")  # a study older than the phases
    assert "Where the time went" not in [t for t, _ in untimed.figures]
    assert "No trained trial recorded the time of its phases." in untimed.path.read_text()


def test_report_shows_task_metrics_beside_their_baselines(tmp_path):
    from nas.report.figures import history, pareto
    from nas.search import TrialRecord

    text = build_report(synthetic_study(20, baselines=True), tmp_path / "b.html").path.read_text()
    assert "<p class='baselines'>baselines (no model): qa.f1: first 2 words 0.07</p>" in text  # under the leaderboard
    assert re.search(r"<th>qa\.f1</th><td>0\.\d+ \(baseline: first 2 words 0\.07\)</td>", text)  # the best card
    assert "baselines (no model)" not in build_report(synthetic_study(20), tmp_path / "o.html").path.read_text()

    def record(number, f1):
        return TrialRecord(
            number,
            "complete",
            "trained",
            [f1],
            metrics={"qa.f1": f1},
            counts={"params": 1000.0 * number},
            task_baselines={"qa.f1": 0.07},
            baseline_predictors={"qa.f1": "first 2 words"},
        )

    done = [record(i, 0.1 * i) for i in range(1, 5)]
    for figure in (history(done, "qa.f1", minimize=False), pareto(done, "qa.f1", minimize=False)):
        lines = [shape for shape in figure.layout.shapes if shape.line.dash == "dash"]
        assert lines and all(shape.y0 == shape.y1 == 0.07 for shape in lines)  # a dashed line at the baseline
    assert not history(done, "val_loss", minimize=True).layout.shapes  # an objective with no baseline: none


def test_report_of_an_empty_study(tmp_path):
    study = optuna.create_study(study_name="empty")
    report = build_report(study, tmp_path / "e.html")
    text = report.path.read_text()
    assert "no completed trial yet" in text and not report.figures


def test_report_of_a_real_micro_study(tmp_path, monkeypatch, micro_cache, capsys):
    from nas.cli import main
    from tests.conftest import MICRO_SPACE, micro_sets

    monkeypatch.chdir(tmp_path)
    (tmp_path / "micro.yaml").write_text(MICRO_SPACE)
    for argv in (
        ["search", "--study", "real", "--n-trials", "4", "--quiet", "--pruner", "median", *micro_sets(micro_cache)],
        ["report", "real"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "reports/real.html" in out
    text = (tmp_path / "reports/real.html").read_text()
    assert "study</th><td>real" in text and len(FIGURE_DIV.findall(text)) >= 6
    # The proxy check ranks with nas.proxy, on the zero-cost scores every trial recorded at initialisation.
    assert "zero-cost: SNIP at initialisation" in text and "zero-cost: gradient norm at initialisation" in text
    assert "<a href='#where-the-time-went'>Where the time went</a>" in text
    assert re.search(r"over 4 trained trials: [^<]*pretrain \d+ %", text)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.browser
@pytest.mark.skipif(_chromium() is None, reason="no Chromium found (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    report = build_report(synthetic_study(200, directions=("minimize", "minimize")), tmp_path / "b.html")
    profile = tmp_path / "profile"
    result = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=20000",
            "--dump-dom",
            report.path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    dom = result.stdout
    ids = FIGURE_DIV.findall(report.path.read_text())
    assert ids and len(ids) == len(report.figures)
    for figure_id in ids:
        start = dom.index(f'id="{figure_id}"')
        end = dom.find('class="plotly-graph-div"', start + 10)
        chunk = dom[start : end if end > 0 else len(dom)]
        assert 'class="main-svg"' in chunk, f"figure {figure_id} did not render"
    errors = re.search(r'<div id="js-errors"[^>]*>(.*?)</div>', dom, re.S)
    assert errors is not None and errors.group(1).strip() == "", errors.group(1) if errors else dom[:500]
    assert "Uncaught" not in result.stderr


def test_png_export_says_clearly_when_no_chromium(tmp_path, monkeypatch):
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    report = build_report(synthetic_study(20), tmp_path / "p.html", png_dir=tmp_path / "png")
    assert any("PNG export needs a Chromium" in w for w in report.warnings)
    assert not (tmp_path / "png").exists()


@pytest.mark.browser
@pytest.mark.skipif(_chromium() is None, reason="no Chromium found (apt-get install chromium)")
def test_png_export_with_chromium(tmp_path):
    report = build_report(synthetic_study(30), tmp_path / "p.html", png_dir=tmp_path / "png")
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert len(pngs) == len(report.figures) and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_the_proxy_check_ranks_the_prediction_unless_it_is_the_objective():
    from nas.report.fidelity import proxy_scores
    from nas.search import TrialRecord

    def record(number, value, predicted):
        metrics = {"val_loss": value, "predicted_val_loss": predicted, "non_embedding_params": 1000.0 * number}
        return TrialRecord(number, "complete", "trained", [value], metrics=metrics, curve=[[0, 0, 9.0], [10, 1, value]])

    done = [record(i, 5.0 - 0.1 * i, 4.0 - 0.1 * i) for i in range(1, 6)]
    scores, rows = proxy_scores(done, minimize=True)
    assert "predicted_val_loss" in scores and scores["predicted_val_loss"] == [-(4.0 - 0.1 * i) for i in range(1, 6)]
    assert next(r for r in rows if r.name == "predicted_val_loss").rho == pytest.approx(1.0)
    as_objective = [
        TrialRecord(r.number, r.state, r.status, [r.metrics["predicted_val_loss"]], metrics=r.metrics) for r in done
    ]
    assert "predicted_val_loss" not in proxy_scores(as_objective, minimize=True)[0]


def test_the_prediction_figure_uses_the_studys_size_trend_and_its_rule():
    """Six trained trials of six sizes: the figure's title is the size trend with the study's own weight,
    its diamonds are StudyFit's predictions at the target; with own-curve, the shared exponent."""
    from nas.protocol import Target
    from nas.report.fidelity import prediction
    from nas.scaling import StudyFit
    from nas.search.records import TrialRecord

    truth = lambda n, d: 2.5 + 40 * n**-0.3 + 300 * d**-0.4  # noqa: E731
    sizes = (5e4, 1e5, 2.5e5, 6e5, 1.5e6, 4e6)
    records = [
        TrialRecord(
            i,
            "complete",
            "trained",
            [1.0],
            counts={"non_embedding_params": n},
            metrics={"target_tokens": 1.6e6},
            annealed=[[d, truth(n, d) + 0.01 * (-1) ** i] for d in (5e4, 1e5, 2e5)],
        )
        for i, n in enumerate(sizes)
    ]
    fig = prediction(records, Target(own_weight=0.5))
    assert fig.layout.title.text.startswith("size trend L(N, D)") and "own weight 0.5" in fig.layout.title.text
    fit = StudyFit.of([(n, r.annealed) for n, r in zip(sizes, records, strict=True)], own_weight=0.5)
    diamonds = [t for t in fig.data if t.marker.symbol == "diamond"]
    expected = [fit.predict(r.annealed, n, 1.6e6) for n, r in zip(sizes, records, strict=True)]
    assert [t.y[0] for t in diamonds] == pytest.approx([p.value for p in expected if p is not None])
    own = prediction(records, Target(prediction="own-curve"))
    assert own.layout.title.text.startswith("data exponent beta = ")


def test_a_top_10_percent_of_one_trial_is_not_drawn(tmp_path):
    report = build_report(synthetic_study(12), tmp_path / "few.html")
    assert "Top 10 % vs all: knob distributions" not in [t for t, _ in report.figures]
    assert "not drawn: the top 10 % needs at least 30 trained trials (11 so far)" in report.path.read_text()  # 1 failed
