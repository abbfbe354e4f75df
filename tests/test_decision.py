"""Bias tuning: the exact line search against brute force, a known shift recovered, never worse,
zero when already optimal, and the honest in-CV version."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone

from stackkit.meta.bias import BiasTuner, cross_val_bias, line_search, score_labels
from stackkit.metrics import log_softmax, macro_f1


def quantised_case(rng, n=40, c=4):
    """Log-probabilities on a 0.1 grid, so every breakpoint is a multiple of 0.1 (up to rounding)
    and a grid of t = 0.005 + 0.01 k never lands on one."""
    y = rng.integers(0, c, n)
    lp = np.round(rng.uniform(-3, 0, (n, c)) + 1.0 * np.eye(c)[y], 1)
    offsets = np.round(rng.uniform(-0.5, 0.5, c), 1)
    return lp, y, offsets


@pytest.mark.parametrize("seed", range(8))
def test_line_search_matches_brute_force(seed):
    lp, y, offsets = quantised_case(np.random.default_rng(seed))
    grid = np.arange(-6.0, 6.0, 0.01) + 0.005
    c_all = lp.shape[1]
    for c in range(c_all):
        score, point = line_search(lp, y, offsets, c)
        o = np.tile(offsets, (len(grid), 1))
        o[:, c] = grid
        preds = (lp[None] + o[:, None, :]).argmax(axis=2)
        brute = np.array([score_labels(y, p, c_all) for p in preds])
        assert score == pytest.approx(brute.max(), abs=1e-12)
        o = offsets.copy()
        o[c] = point
        assert macro_f1(y, (lp + o).argmax(1), c_all) == pytest.approx(score, abs=1e-12)
        # of the best intervals, the one nearest 0: the grid is best all the way from there
        best = np.isclose(brute, brute.max(), atol=1e-12)
        nearest = grid[best][np.argmin(np.abs(grid[best]))]
        between = (grid >= min(point, nearest)) & (grid <= max(point, nearest))
        assert best[between].all()


def shifted_case():
    """Classes 0 and 1 separated exactly by lp1 - lp0 = -1.5 (class-1 rows in [-1.3, -0.5], class-0
    rows in [-2.5, -1.7]): class 1 is under-predicted by a shift of 1.5. Class 2 is far away."""
    u = np.linspace(0.2, 1.0, 9)
    n = len(u)
    lp = np.full((3 * n, 3), -8.0)
    lp[:n, 0], lp[:n, 1] = 0.0, -1.5 - u  # class 0 rows
    lp[n : 2 * n, 0], lp[n : 2 * n, 1] = 0.0, -1.5 + u  # class 1 rows, all predicted 0
    lp[2 * n :, 2] = 0.0
    return lp, np.repeat([0, 1, 2], n)


def test_recovers_a_known_shift():
    lp, y = shifted_case()
    tuner = BiasTuner().fit(lp, y)
    assert tuner.score_before_ < 0.6 and tuner.score_ == 1.0
    # offsets are defined up to a common constant: the relative shift is what is recovered, at
    # the midpoint of the separating interval (1.3, 1.7)
    assert tuner.offsets_[1] - tuner.offsets_[0] == pytest.approx(1.5, abs=1e-9)
    assert tuner.offsets_[2] == 0.0
    np.testing.assert_array_equal(tuner.predict(lp), y)


def test_zero_offsets_when_already_optimal(rng):
    y = rng.integers(0, 5, 200)
    lp = log_softmax(3.0 * np.eye(5)[y] + rng.uniform(0, 1, (200, 5)))  # every argmax right
    tuner = BiasTuner().fit(lp, y)
    np.testing.assert_array_equal(tuner.offsets_, 0.0)
    assert tuner.score_ == tuner.score_before_ == 1.0 and tuner.n_rounds_ == 1


@pytest.mark.parametrize("seed", range(5))
def test_never_worse_and_score_is_honest_about_itself(seed):
    rng = np.random.default_rng(seed)
    y = rng.choice(6, 500, p=[0.4, 0.25, 0.15, 0.1, 0.07, 0.03])
    lp = log_softmax(1.5 * np.eye(6)[y] + rng.normal(0, 1, (500, 6)) + [0.8, 0.4, 0, 0, 0, 0])
    tuner = BiasTuner().fit(lp, y)
    before = macro_f1(y, lp.argmax(1), 6)
    after = macro_f1(y, tuner.predict(lp), 6)
    assert tuner.score_before_ == pytest.approx(before, abs=1e-12)
    assert tuner.score_ == pytest.approx(after, abs=1e-12)
    assert after >= before
    # a fixed point: no single class can still gain
    for c in range(6):
        assert line_search(lp, y, tuner.offsets_, c)[0] <= tuner.score_ + 1e-12


def test_score_labels_equals_sklearn(rng):
    y = rng.integers(0, 4, 100)
    pred = rng.integers(0, 6, 100)
    assert score_labels(y, pred, 6) == pytest.approx(macro_f1(y, pred, 6), abs=1e-12)


def test_transform_predict_summary_and_protocol(rng):
    lp, y = shifted_case()
    tuner = BiasTuner(max_rounds=5)
    params = tuner.get_params()
    fitted = clone(tuner).fit(lp, y)
    assert tuner.get_params() == params and fitted.get_params() == params
    out = fitted.transform(lp)
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0)
    np.testing.assert_array_equal(out.argmax(1), fitted.predict(lp))
    np.testing.assert_array_equal(lp, shifted_case()[0])  # the input is untouched
    summary = json.loads(json.dumps(fitted.summary_()))
    assert summary["macro_f1_after"] == 1.0 and len(summary["offsets"]) == 3
    with pytest.raises(ValueError, match=r"expected 3 columns"):
        fitted.predict(lp[:, :2])


@pytest.mark.parametrize(
    ("params", "lp", "y", "message"),
    [
        ({}, np.zeros((3, 1)), [0, 0, 0], r"2-D with >= 2 classes"),
        ({}, np.zeros(3), [0, 0, 0], r"2-D with >= 2 classes"),
        ({}, np.full((2, 2), -np.inf), [0, 1], r"non-finite"),
        ({}, np.zeros((2, 2)), [0, 2], r"labels must lie in \[0, 2\)"),
        ({}, np.zeros((2, 2)), [0.0, 1.0], r"integer labels"),
        ({}, np.zeros((2, 2)), [0, 1, 1], r"2 integer labels"),
        ({"max_rounds": 0}, np.zeros((2, 2)), [0, 1], r"max_rounds must be an int >= 1"),
        ({"tol": -1.0}, np.zeros((2, 2)), [0, 1], r"tol must be >= 0"),
    ],
)
def test_bad_input(params, lp, y, message):
    with pytest.raises(ValueError, match=message):
        BiasTuner(**params).fit(lp, np.asarray(y))


def test_cross_val_bias_fits_on_the_other_folds(small_case):
    names = sorted(small_case.oof)
    lp = log_softmax(small_case.oof[names[0]].filter(like="logit_").to_numpy(np.float64))
    y, fold = np.asarray(small_case.folds.labels), np.asarray(small_case.folds.fold_ids)
    out, offsets = cross_val_bias(lp, y, fold, max_rounds=3)
    assert out.shape == lp.shape and offsets.shape == (5, 18)
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0)
    for k in range(5):
        held = fold == k
        tuner = BiasTuner(max_rounds=3).fit(lp[~held], y[~held])
        np.testing.assert_array_equal(offsets[k], tuner.offsets_)
        np.testing.assert_allclose(out[held], tuner.transform(lp[held]))
    with pytest.raises(ValueError, match="at least 2 folds"):
        cross_val_bias(lp, y, np.zeros(len(y)))
    with pytest.raises(ValueError, match="fold_ids has shape"):
        cross_val_bias(lp, y, fold[:-1])


@pytest.mark.slow
def test_in_cv_gain_on_reference_case():
    """On the reference case the honest (in-CV) gain of bias tuning is positive."""
    from stackkit.data.synthetic import make_case

    case = make_case(n_groups=1000, n_test=7, n_runs=2, seed=3)
    lp = log_softmax(case.oof["run00"].filter(like="logit_").to_numpy(np.float64))
    y, fold = np.asarray(case.folds.labels), np.asarray(case.folds.fold_ids)
    out, _ = cross_val_bias(lp, y, fold)
    assert macro_f1(y, out.argmax(1), 18) > macro_f1(y, lp.argmax(1), 18) + 0.01
