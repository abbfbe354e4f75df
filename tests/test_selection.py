"""Greedy ensemble selection: parity with a from-scratch reference, golden cases, tie-breaks,
invariances and the estimator protocol."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import f1_score
from sklearn.model_selection import PredefinedSplit, cross_val_predict

from stackkit.meta.caruana import TIE_TOL, CaruanaSelection, _pick, score_predictions
from stackkit.metrics import log_loss, macro_f1, softmax


def oof_matrix(case) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    names = sorted(case.oof)
    X = np.hstack([case.oof[n].filter(like="logit_").to_numpy(np.float64) for n in names])
    return X, np.asarray(case.folds.labels), np.asarray(case.folds.fold_ids)


def random_case(rng, n=60, n_runs=4, c=5, noise=1.5):
    y = rng.integers(0, c, n)
    X = np.hstack([2.0 * np.eye(c)[y] + rng.normal(0, noise, (n, c)) for _ in range(n_runs)])
    return X, y


def reference(X, y, c, max_iter, init_size):
    """Caruana selection written plainly: each candidate ensemble rebuilt from scratch and scored
    with scikit-learn; ties by (score, already chosen, log loss, index)."""
    probs = [softmax(X[:, r * c : (r + 1) * c]) for r in range(X.shape[1] // c)]

    def key(members, r, chosen):
        p = np.mean([probs[i] for i in [*members, r]], axis=0)
        score = round(macro_f1(y, p.argmax(1), c), 10)
        return (-score, 0 if r in chosen else 1, round(log_loss(y, p), 10), r), score

    ens: list[int] = []
    for _ in range(init_size):
        r = min((r for r in range(len(probs)) if r not in ens), key=lambda r: key([], r, ())[0])
        ens.append(r)
    p0 = np.mean([probs[i] for i in ens], axis=0)
    trajectory = [macro_f1(y, p0.argmax(1), c)]
    for _ in range(max_iter):
        keys = [key(ens, r, ens) for r in range(len(probs))]
        r = min(range(len(probs)), key=lambda r: keys[r][0])
        ens.append(r)
        trajectory.append(keys[r][1])
    return np.array(ens), np.array(trajectory)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("init_size", [1, 3])
def test_matches_reference(seed, init_size):
    X, y = random_case(np.random.default_rng(seed))
    sel = CaruanaSelection(n_classes=5, max_iter=12, init_size=init_size).fit(X, y)
    indices, trajectory = reference(X, y, 5, 12, init_size)
    np.testing.assert_array_equal(sel.indices_, indices)
    np.testing.assert_allclose(sel.trajectory_, trajectory, atol=1e-9)


@pytest.mark.parametrize("c", [2, 5, 9])
def test_score_equals_sklearn_macro_f1_over_all_classes(rng, c):
    y = rng.integers(0, c - 1, 50)  # the last class never occurs: still counted, as 0
    pred = rng.integers(0, c, (7, 50))
    pred[0] = y  # a perfect row
    expected = [f1_score(y, p, average="macro", labels=range(c), zero_division=0) for p in pred]
    np.testing.assert_allclose(score_predictions(pred, y, c, "macro_f1"), expected, atol=1e-12)
    np.testing.assert_allclose(score_predictions(pred, y, c, "accuracy"), (pred == y).mean(1))


def complementary_runs(n_per_class=10):
    """Run 0 is right on classes {0, 1} and confidently wrong on {2, 3}; run 1 the reverse.
    Alone each scores 0.5; their equal mix is perfect. Run 2 is noise, run 3 a copy of run 0."""
    y = np.repeat(np.arange(4), n_per_class)
    swap = np.array([1, 0, 3, 2])  # the confusion partner of each class

    def run(good):
        z = np.zeros((len(y), 4))
        ok = np.isin(y, good)
        z[ok, y[ok]] = 3.0
        z[~ok, swap[y[~ok]]] = 1.5
        return z

    noise = np.random.default_rng(0).normal(0.0, 0.3, (len(y), 4))
    return np.hstack([run([0, 1]), run([2, 3]), noise, run([0, 1])]), y


def test_golden_complementary_runs():
    X, y = complementary_runs()
    sel = CaruanaSelection(n_classes=4, max_iter=10).fit(X, y)
    np.testing.assert_array_equal(sel.weights_, [0.5, 0.5, 0.0, 0.0])  # noise, copy: weight 0
    assert sel.indices_[:2].tolist() == [0, 1]  # the copy (3) ties run 0 and loses on index
    assert sel.best_score_ == 1.0 and sel.n_selected_ == 2
    assert sel.trajectory_[0] == 0.5
    assert macro_f1(y, sel.predict(X), 4) == 1.0


def test_kept_prefix_is_the_shortest_best():
    X, y = random_case(np.random.default_rng(3), n=300, n_runs=6, noise=2.0)
    sel = CaruanaSelection(n_classes=5, max_iter=30).fit(X, y)
    best = sel.n_selected_ - sel.init_size
    assert sel.best_score_ == sel.trajectory_.max() == sel.trajectory_[best]
    assert (sel.trajectory_[:best] < sel.best_score_ - TIE_TOL).all()
    counts = np.bincount(sel.indices_[: sel.n_selected_], minlength=6)
    np.testing.assert_allclose(sel.weights_, counts / sel.n_selected_)
    assert sel.run_weights_ is sel.weights_
    assert np.isclose(sel.weights_.sum(), 1.0)


@pytest.mark.parametrize(
    ("scores", "counts", "losses", "expected", "why"),
    [
        ([1, 1, 0.5], [0, 1, 0], [0.1, 0.9, 0.0], 1, "already chosen beats lower loss and index"),
        ([0.5, 1, 1], [3, 0, 0], [0.0, 0.3, 0.3], 1, "chosen only counts among the best"),
        ([1, 1, 1], [0, 0, 0], [0.5, 0.2, 0.2], 1, "lower log loss, then lower index"),
        ([1, 1, 1], [0, 2, 2], [0.0, 0.4, 0.3], 2, "log loss among the chosen"),
        ([1, 1 - 1e-13, 0], [0, 0, 0], [0.9, 0.1, 0.0], 1, "scores within TIE_TOL tie"),
        ([1, 1 - 1e-9, 0], [0, 0, 0], [0.9, 0.1, 0.0], 0, "a real difference is no tie"),
    ],
)
def test_tie_breaking(scores, counts, losses, expected, why):
    got = _pick(np.array(scores, float), np.array(counts), lambda i: np.array(losses)[i])
    assert got == expected, why


def test_tie_breaking_end_to_end():
    """Run 1 scores best alone. Adding run 0 instead of run 1 changes no decision and lowers the
    log loss, yet run 1 is added again: ties go to runs already chosen first."""
    y = np.array([0, 0, 1, 1, 2, 2])
    run1 = np.eye(3)[y] * 1.0  # right everywhere, unsure
    run0 = np.eye(3)[y] * 4.0  # right and sure, except one row (wrong, unsure)
    run0[0] = [0.0, 0.5, 0.0]
    X = np.hstack([run0, run1])
    sel = CaruanaSelection(n_classes=3, max_iter=3).fit(X, y)
    p0, p1 = softmax(run0), softmax(run1)
    assert macro_f1(y, ((p1 + p0) / 2).argmax(1), 3) == 1.0  # the tie is real
    assert log_loss(y, (p1 + p0) / 2) < log_loss(y, p1)
    assert sel.indices_.tolist() == [1, 1, 1, 1]
    np.testing.assert_array_equal(sel.weights_, [0.0, 1.0])


def test_duplicate_run_never_enters():
    X, y = random_case(np.random.default_rng(5), n=200, n_runs=3, noise=2.0)
    X = np.hstack([X, X[:, :5]])  # run 3 copies run 0
    sel = CaruanaSelection(n_classes=5, max_iter=20).fit(X, y)
    assert 3 not in sel.indices_


def test_row_permutation_changes_nothing(small_case):
    X, y, _ = oof_matrix(small_case)
    a = CaruanaSelection(n_classes=18, max_iter=15).fit(X, y)
    perm = np.random.default_rng(0).permutation(len(y))
    b = CaruanaSelection(n_classes=18, max_iter=15).fit(X[perm], y[perm])
    np.testing.assert_array_equal(a.indices_, b.indices_)
    np.testing.assert_allclose(a.trajectory_, b.trajectory_, atol=1e-12)


def test_run_permutation_permutes_weights():
    X, y = random_case(np.random.default_rng(7), n=300, n_runs=5, noise=2.0)
    a = CaruanaSelection(n_classes=5, max_iter=20).fit(X, y)
    order = np.array([3, 0, 4, 2, 1])
    Xp = np.hstack([X[:, r * 5 : (r + 1) * 5] for r in order])
    b = CaruanaSelection(n_classes=5, max_iter=20).fit(Xp, y)
    np.testing.assert_array_equal(b.weights_, a.weights_[order])
    np.testing.assert_allclose(b.predict_proba(Xp), a.predict_proba(X), atol=1e-12)


def test_estimator_protocol_and_cross_val_predict(small_case):
    X, y, fold = oof_matrix(small_case)
    est = CaruanaSelection(n_classes=18, max_iter=10, init_size=2)
    params = est.get_params()
    oof = cross_val_predict(est, X, y, cv=PredefinedSplit(fold), method="predict_proba")
    assert oof.shape == (len(y), 18)
    np.testing.assert_allclose(oof.sum(axis=1), 1.0)
    fitted = clone(est).fit(X, y)
    assert fitted.get_params() == params and est.get_params() == params
    assert not hasattr(est, "weights_")
    np.testing.assert_array_equal(fitted.classes_, np.arange(18))
    summary = json.loads(json.dumps(fitted.summary_()))
    assert summary["prefix_length"] == fitted.n_selected_
    assert summary["best_score"] == fitted.best_score_
    assert np.isclose(sum(summary["weights"]), 1.0)


def test_predict_proba_is_the_weighted_mean(small_case):
    X, y, _ = oof_matrix(small_case)
    sel = CaruanaSelection().fit(X, y)  # n_classes inferred: 18 labels present
    expected = sum(w * softmax(X[:, r * 18 : (r + 1) * 18]) for r, w in enumerate(sel.weights_))
    np.testing.assert_allclose(sel.predict_proba(X), expected, atol=1e-12)
    np.testing.assert_array_equal(sel.predict(X), expected.argmax(1))


@pytest.mark.parametrize(
    ("params", "X", "y", "message"),
    [
        ({"n_classes": 4}, np.zeros((4, 10)), [0, 1, 2, 3], r"n_features=10, not a whole .*=4"),
        ({}, np.zeros((4, 9)), [0, 1, 2, 3], r"n_features=9, not a whole number .*n_classes=4"),
        ({"n_classes": 3}, np.zeros((4, 6)), [0, 1, 2, 3], r"with n_classes=3, y must hold"),
        ({}, np.zeros((3, 6)), [0, 1, 2, 0], r"inconsistent numbers of samples: \[3, 4\]"),
        ({}, np.zeros(6), [0, 1], r"Expected 2D array"),
        ({}, np.full((2, 4), np.nan), [0, 1], r"Input X contains NaN"),
        ({}, np.zeros((2, 4)), [0.5, 1.5], r"Unknown label type"),
        ({"metric": "auc"}, np.zeros((2, 4)), [0, 1], r"'metric' parameter"),
        ({"init_size": 3}, np.zeros((2, 4)), [0, 1], r"init_size must be an int in \[1, 2\]"),
        ({"max_iter": -1}, np.zeros((2, 4)), [0, 1], r"'max_iter' parameter"),
    ],
)
def test_bad_input(params, X, y, message):
    with pytest.raises(ValueError, match=message):
        CaruanaSelection(**params).fit(X, np.asarray(y))


def test_predict_proba_checks_width():
    X, y = random_case(np.random.default_rng(0))
    sel = CaruanaSelection(n_classes=5, max_iter=2).fit(X, y)
    with pytest.raises(
        ValueError, match=r"X has 15 features, but CaruanaSelection is expecting 20"
    ):
        sel.predict_proba(X[:, :15])


def test_accuracy_metric():
    X, y = random_case(np.random.default_rng(2), n=200)
    sel = CaruanaSelection(n_classes=5, max_iter=5, metric="accuracy").fit(X, y)
    assert np.isclose(sel.best_score_, (sel.predict(X) == y).mean())


@pytest.mark.slow
def test_speed_reference_size():
    """15k rows x 10 runs x 18 classes, 50 steps: well under a second."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 18, 15_000)
    X = np.hstack(
        [q * 4 * np.eye(18)[y] + rng.normal(0, 1.4, (len(y), 18)) for q in np.linspace(1, 0.45, 10)]
    )
    CaruanaSelection(n_classes=18).fit(X[:500], y[:500])  # warm up
    t = time.process_time()
    CaruanaSelection(n_classes=18).fit(X, y)
    assert time.process_time() - t < 1.0
