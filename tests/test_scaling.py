"""Loss extrapolation to the target budget: the shared-exponent fit and its uncertainty."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nas.scaling import PRIOR_BETA, fit_beta, predict_loss, target_tokens


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
