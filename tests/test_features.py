"""stackkit.meta.features: run-major logits -> meta features."""

from __future__ import annotations

import numpy as np
import pytest

from stackkit.meta.features import (
    LOGPROB_FLOOR,
    RunFeatures,
    fit_temperature,
    infer_n_classes,
    split_runs,
)
from stackkit.metrics import softmax


@pytest.fixture
def logits(rng):
    """200 rows, 3 runs of 4 classes, labels drawn from the first run's softmax."""
    z = rng.normal(0, 2, size=(200, 3, 4))
    y = np.array([rng.choice(4, p=p) for p in softmax(z[:, 0])])
    return z.reshape(200, 12), y


@pytest.mark.parametrize(
    "shape, n_classes, message",
    [
        ((10, 7), 3, r"X has shape \(10, 7\): its 7 columns are not a whole number of runs"),
        ((10, 0), 3, r"X has shape \(10, 0\)"),
        ((10,), 3, r"X must be 2-D"),
        ((10, 6), 0, r"n_classes=0"),
    ],
)
def test_split_runs_rejects_bad_shapes(shape, n_classes, message):
    with pytest.raises(ValueError, match=message):
        split_runs(np.zeros(shape), n_classes)


def test_split_runs_is_run_major():
    X = np.arange(12.0).reshape(1, 12)
    z = split_runs(X, 4)
    assert z.shape == (1, 3, 4)
    np.testing.assert_array_equal(z[0, 1], [4, 5, 6, 7])


def test_infer_n_classes():
    assert infer_n_classes(np.array([0, 2, 1, 2]), None) == 3
    assert infer_n_classes(np.array([0, 1]), 5) == 5


def test_fit_temperature_recovers_a_known_temperature(rng):
    """Labels drawn from softmax(z); the run reports 3*z, so the best temperature is ~3."""
    z = rng.normal(0, 1.5, size=(20000, 5))
    y = np.array([rng.choice(5, p=p) for p in softmax(z)])
    assert fit_temperature(3.0 * z, y) == pytest.approx(3.0, rel=0.05)
    assert fit_temperature(z / 2.0, y) == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize("combine, width", [("concat", 12), ("mean", 4), ("both", 16)], ids=str)
@pytest.mark.parametrize("kind", ["proba", "logprob"])
def test_feature_widths_and_values(logits, kind, combine, width):
    X, y = logits
    Z = RunFeatures(4, kind, False, combine).fit(X, y).transform(X)
    assert Z.shape == (200, width)
    per_run = softmax(split_runs(X, 4), axis=2)
    if kind == "logprob":
        per_run = np.maximum(np.log(per_run), LOGPROB_FLOOR)
    if combine in ("concat", "both"):
        np.testing.assert_allclose(Z[:, :12], per_run.reshape(200, 12), atol=1e-12)
    if combine in ("mean", "both"):
        np.testing.assert_allclose(Z[:, -4:], per_run.mean(axis=1), atol=1e-12)


def test_probabilities_are_shift_invariant(logits):
    """Logits are any per-row shift of log-probabilities (CONTRACT.md)."""
    X, y = logits
    shifted = X + np.repeat(np.arange(200.0)[:, None] * 7.0, 12, axis=1)
    f = RunFeatures(4, "logprob", True).fit(X, y)
    np.testing.assert_allclose(f.transform(shifted), f.transform(X), atol=1e-9)


def test_temperatures_come_from_the_training_rows_only(logits):
    X, y = logits
    f = RunFeatures(4, "proba", temperature=True).fit(X[:100], y[:100])
    before = f.temperatures_.copy()
    f.transform(X[100:])  # transforming other rows learns nothing
    np.testing.assert_array_equal(f.temperatures_, before)
    expected = [fit_temperature(split_runs(X[:100], 4)[:, r], y[:100]) for r in range(3)]
    np.testing.assert_allclose(before, expected)
    assert not np.allclose(RunFeatures(4, "proba", True).fit(X, y).temperatures_, before)


def test_transform_rejects_another_number_of_runs(logits):
    X, y = logits
    f = RunFeatures(4).fit(X, y)
    with pytest.raises(ValueError, match="fitted on 3 runs of 4 classes"):
        f.transform(X[:, :8])


@pytest.mark.parametrize("param, value", [("kind", "logit"), ("combine", "sum")])
def test_bad_options_are_named(logits, param, value):
    X, y = logits
    with pytest.raises(ValueError, match=f"The '{param}' parameter of RunFeatures must be"):
        RunFeatures(4, **{param: value}).fit(X, y)


@pytest.mark.parametrize(
    "combine, importance, expected",
    [
        ("concat", np.r_[np.ones(4), 3 * np.ones(4), np.zeros(4)], [0.25, 0.75, 0.0]),
        ("mean", np.ones(4), [1 / 3] * 3),
        ("both", np.r_[np.zeros(12), np.ones(4)], [1 / 3] * 3),
        ("concat", np.zeros(12), [1 / 3] * 3),
    ],
)
def test_per_run_weights(logits, combine, importance, expected):
    X, y = logits
    f = RunFeatures(4, combine=combine).fit(X, y)
    np.testing.assert_allclose(f.per_run(importance), expected)
