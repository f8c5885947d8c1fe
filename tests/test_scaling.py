"""Loss extrapolation to the target budget: the shared-exponent fit and its uncertainty."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nas.scaling import (
    MIN_TREND_CURVES,
    PRIOR_BETA,
    StudyFit,
    fit_beta,
    fit_size_trend,
    predict_loss,
    predict_with_trend,
    target_tokens,
)


def _curves(beta=0.35, noise=0.0, seed=0, budgets=(60e3, 120e3, 200e3)):
    rng = np.random.default_rng(seed)
    archs = [(3.2, 40.0), (3.0, 60.0), (3.4, 25.0), (2.9, 90.0), (3.1, 50.0)]  # (E, B)
    curves = [[[d, e + b * d**-beta + noise * rng.standard_normal()] for d in budgets] for e, b in archs]
    return archs, curves


def test_the_shared_exponent_is_recovered_and_the_extrapolation_is_exact_without_noise():
    archs, curves = _curves()
    fit = fit_beta(curves)
    assert fit.identified and fit.dof == 4 and fit.n_curves == 5  # 5 spare points, one spent on beta
    assert fit.low <= fit.beta <= fit.high and abs(fit.beta - 0.35) < 0.003
    for (e, b), points in zip(archs, curves, strict=True):
        truth = e + b * 1.6e6**-0.35  # 8x the largest measured budget
        prediction = predict_loss(points, 1.6e6, fit)
        assert prediction is not None and abs(prediction.value - truth) / truth < 0.002


def test_noise_widens_the_uncertainty_and_the_interval_covers_the_truth():
    covered = 0
    for seed in range(20):
        archs, curves = _curves(noise=0.01, seed=seed)
        fit = fit_beta(curves)
        e, b = archs[0]
        prediction = predict_loss(curves[0], 1.6e6, fit)
        assert prediction is not None and prediction.std > 0
        covered += abs(prediction.value - (e + b * 1.6e6**-0.35)) <= 2 * prediction.std
    assert covered >= 16  # about 95 % of 2-sigma intervals


def test_two_points_per_curve_cannot_tell_beta_so_the_prior_range_stands_in():
    _, curves = _curves(budgets=(60e3, 200e3))
    fit = fit_beta(curves)
    assert not fit.identified and (fit.beta, fit.low, fit.high) == PRIOR_BETA
    alone = fit_beta(_curves()[1][:1])  # one curve of three points: beta would interpolate it exactly
    assert not alone.identified and (alone.beta, alone.low, alone.high) == PRIOR_BETA
    prediction = predict_loss(curves[0], 1.6e6, fit)
    assert prediction is not None and prediction.std > 0  # the spread over the prior range
    assert predict_loss(curves[0][:1], 1.6e6, fit) is None  # one point predicts nothing
    assert predict_loss([[1e5, math.nan], [2e5, 3.0]], 1.6e6, fit) is None  # non-finite points are dropped


def test_target_tokens():
    assert target_tokens(1e6, 6e6, 5_000_000, None, 20) == 5e6
    assert target_tokens(1e6, 6e6, None, 6e12, 20) == pytest.approx(1e6)
    assert target_tokens(1e6, 6e6, None, None, 20) == 2e7


def test_the_fit_never_predicts_a_negative_loss_or_one_that_rises_with_data():
    rising = [[1e5, 3.0], [2e5, 3.1], [4e5, 3.2]]  # noise that rises: B = 0, a flat prediction
    fit = fit_beta([rising])
    prediction = predict_loss(rising, 1e7, fit)
    assert prediction is not None and prediction.value == pytest.approx(3.1, abs=1e-6)
    steep = [[1e4, 9.0], [2e4, 5.0], [4e4, 2.0]]  # unconstrained, E would be far below zero
    prediction = predict_loss(steep, 1e8, fit_beta([steep]))
    assert prediction is not None and prediction.value >= 0


SIZES = (5e4, 1e5, 2.5e5, 6e5, 1.5e6, 4e6)


def _trend_curves(deviations=(0.0,) * 6, noise=0.0, seed=0, budgets=(5e4, 1e5, 2e5)):
    """Losses from L(N, D) = 2.5 + 40·N^-0.3 + 300·D^-0.4, each architecture offset by its deviation."""
    rng = np.random.default_rng(seed)
    truth = lambda n, d: 2.5 + 40 * n**-0.3 + 300 * d**-0.4  # noqa: E731
    curves = [
        (n, [[d, truth(n, d) + dev + noise * rng.standard_normal()] for d in budgets])
        for n, dev in zip(SIZES, deviations, strict=True)
    ]
    return truth, curves


def test_the_size_trend_is_recovered_and_predicts_a_larger_model_at_8x():
    truth, curves = _trend_curves()
    trend = fit_size_trend(curves)
    assert trend is not None and trend.n_curves == 6
    assert abs(trend.alpha - 0.3) < 0.06 and abs(trend.beta - 0.4) < 0.06 and trend.spread < 1e-3
    for n, points in curves:
        prediction = predict_with_trend(points, n, 1.6e6, trend, own_weight=0.0)
        assert prediction is not None and prediction.trend_curves == 6
        assert abs(prediction.value - truth(n, 1.6e6)) / truth(n, 1.6e6) < 0.003
    bigger = predict_with_trend(curves[-1][1], 1e7, 1.6e6, trend, 0.0)  # a size the study has not trained
    assert bigger is not None and abs(bigger.value - truth(1e7, 1.6e6)) / truth(1e7, 1.6e6) < 0.01


def test_own_weight_carries_a_trials_deviation_from_the_trend_and_its_std_the_rest():
    deviations = (0.05, -0.05, 0.1, -0.1, 0.0, 0.0)
    truth, curves = _trend_curves(deviations)
    trend = fit_size_trend(curves)
    assert trend is not None and 0.04 < trend.spread < 0.1  # the deviations the trend cannot see
    n, points = curves[2]  # 0.1 above the trend
    at = {w: predict_with_trend(points, n, 1.6e6, trend, w) for w in (0.0, 0.5, 1.0)}
    deviation = points[-1][1] - trend.at(n, points[-1][0])
    assert all(p is not None for p in at.values())
    assert at[1.0].value - at[0.0].value == pytest.approx(deviation)  # type: ignore[union-attr]
    assert at[0.5].value - at[0.0].value == pytest.approx(deviation / 2)  # type: ignore[union-attr]
    assert at[0.0].std == pytest.approx(math.sqrt(trend.sigma2 + trend.spread**2))  # type: ignore[union-attr]
    assert at[1.0].std == pytest.approx(math.sqrt(trend.sigma2))  # type: ignore[union-attr]
    # the same architecture at another size than its own ranks by the trend: bigger predicted better
    assert predict_with_trend(points, 1e7, 1.6e6, trend, 0.0).value < at[0.0].value  # type: ignore[union-attr]


def test_the_trend_needs_enough_trials_of_enough_sizes():
    _, curves = _trend_curves()
    assert fit_size_trend(curves[: MIN_TREND_CURVES - 1]) is None
    same_sizes = [(SIZES[i % 2], points) for i, (_, points) in enumerate(curves)]
    assert fit_size_trend(same_sizes) is None  # 2 distinct sizes cannot tell alpha
    unknown = [(math.nan, points) for _, points in curves]  # a damaged count is left out
    assert fit_size_trend(unknown) is None
    one_point = [(n, points[-1:]) for n, points in curves]
    assert fit_size_trend(one_point) is None


def test_study_fit_falls_back_to_each_trials_own_curve_and_says_which_it_used():
    _, curves = _trend_curves(noise=0.002)
    fit = StudyFit.of(curves)
    assert fit.trend is not None and "size trend" in fit.describe() and "own weight 0" in fit.describe()
    prediction = fit.predict(curves[0][1], curves[0][0], 1.6e6)
    assert prediction is not None and prediction.trend_curves == 6
    own = StudyFit.of(curves, size_trend=False)
    assert own.trend is None and "data exponent beta" in own.describe() and "spare points" in own.describe()
    alone = own.predict(curves[0][1], curves[0][0], 1.6e6)
    assert alone is not None and alone.trend_curves == 0
    assert alone == predict_loss(curves[0][1], 1.6e6, fit_beta([c for _, c in curves]))
    few = StudyFit.of(curves[:3])  # too few trials for a trend: the own-curve rule
    assert few.trend is None and few.predict(curves[0][1], curves[0][0], 1.6e6) == predict_loss(
        curves[0][1], 1.6e6, fit_beta([c for _, c in curves[:3]])
    )


def test_the_reach_penalty_raises_a_prediction_by_how_far_it_reaches_and_widens_its_std():
    """r·ln(D / last tokens) of the prediction is added to it and, in quadrature, to its std; nothing at r = 0,
    or at a target within the trial's points; the same for the own-curve rule. A protocol's target sets it."""
    from nas.protocol import Target

    _, curves = _trend_curves(noise=0.002)
    points, size = curves[0][1], curves[0][0]
    last = max(t for t, _ in points)
    plain, penalised = StudyFit.of(curves), StudyFit.of(curves, reach_penalty=0.02)
    for target in (1.6e6, 8 * last):
        p, q = plain.predict(points, size, target), penalised.predict(points, size, target)
        assert p is not None and q is not None
        shift = p.value * 0.02 * math.log(target / last)
        assert q.value == pytest.approx(p.value + shift)
        assert q.std == pytest.approx(math.hypot(p.std, shift))
    within = last / 2
    assert penalised.predict(points, size, within) == plain.predict(points, size, within)
    own = StudyFit.of(curves, size_trend=False, reach_penalty=0.02).predict(points, size, 1.6e6)
    bare = StudyFit.of(curves, size_trend=False).predict(points, size, 1.6e6)
    assert own is not None and bare is not None and own.value > bare.value
    fit = StudyFit.for_target(curves, Target(reach_penalty=0.02, own_weight=0.5))
    assert (fit.reach_penalty, fit.own_weight) == (0.02, 0.5) and "reach penalty 0.02" in fit.describe()
    assert StudyFit.for_target(curves, Target(own_weight=0.5), own_weight=1.0).own_weight == 1.0


def test_a_shape_aware_trend_recovers_a_shape_term_and_leaves_size_alone():
    from nas.scaling import fit_size_trend, predict_with_trend

    rng = np.random.default_rng(0)
    curves, shapes, truth = [], [], []
    for i in range(12):
        size = 1e5 * 2 ** (i % 6)
        aspect = float(rng.uniform(0, 3))
        shape = (aspect, 3.0, 1.0, 0.0)

        def loss(tokens, size=size, aspect=aspect):
            return 2.0 + 3.0 * (size / 1e5) ** -0.3 + 40.0 * tokens**-0.3 + 0.05 * aspect

        curves.append((size, [(t, loss(t)) for t in (1e5, 2e5, 4e5)]))
        shapes.append(shape)
        truth.append(loss(1e6))
    trend = fit_size_trend(curves, shapes)
    assert trend is not None and trend.shape_coef[0] == pytest.approx(0.05, abs=0.01)
    for (size, points), shape, want in zip(curves, shapes, truth, strict=True):
        assert predict_with_trend(points, size, 1e6, trend, 0.0, shape).value == pytest.approx(want, rel=0.01)
    plain = fit_size_trend(curves)
    assert plain is not None and plain.shape_coef == () and plain.spread > trend.spread


def test_single_point_trials_join_the_size_trend_only_when_asked_and_never_open_it(monkeypatch):
    """A trial stopped at its first rung has one point. The trend is fitted once 5 trials of two or more points
    (3 sizes) are in, whatever single points there are; with TREND_SINGLE_POINTS the single points join the fit."""
    import nas.scaling as scaling

    truth, curves = _trend_curves()
    singles = [(n, [[5e4, truth(n, 5e4) + 0.3]]) for n in (2e6, 4e6)]  # larger models, well above the trend
    assert fit_size_trend([*curves[:4], *singles]) is None  # 4 curves of two points: not yet
    plain = fit_size_trend([*curves, *singles])
    assert plain == fit_size_trend(curves) and plain is not None and plain.n_curves == 6
    monkeypatch.setattr(scaling, "TREND_SINGLE_POINTS", True)
    joined = fit_size_trend([*curves, *singles])
    assert joined is not None and joined.n_curves == 8 and joined != plain
    assert joined.at(3e6, 5e4) > plain.at(3e6, 5e4)  # the single points pull the trend up where they lie
    assert fit_size_trend([*curves[:4], *singles]) is None
