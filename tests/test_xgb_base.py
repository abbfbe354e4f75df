"""xgboost's base (``base="lr"``): the trees boost from the logistic regression's log-probabilities,
checked against xgboost's own ``base_margin`` API and against the regression alone."""

from __future__ import annotations

import numpy as np
import pytest
from xgboost import XGBClassifier

from stackkit.contract.errors import StackkitError
from stackkit.meta.features import RunFeatures
from stackkit.meta.registry import make_learner, parse_params

C = 6


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    n, r = 600, 3
    y = rng.integers(0, C, n)
    X = rng.normal(size=(n, r * C))
    X[np.arange(n), y] += 2.0  # run 0 knows a lot, run 1 a little
    X[np.arange(n), C + y] += 0.7
    X[:, 2 * C : 3 * C] += 0.8 * np.sin(3 * X[:, :C])  # something non-linear for the trees
    return X, y, rng.normal(size=(150, r * C))


def _tempered(p, scale):
    """softmax(scale * log p): the base's probabilities at the margin's scale."""
    q = np.exp(scale * np.log(p))
    return q / q.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_no_learning_rate_is_the_regression_alone(data, scale):
    """With learning_rate 0 the trees add nothing: the probabilities are the base's at the
    margin's scale, in fitting (the margin of the training rows) and in predicting alike."""
    X, y, Xt = data
    params = {"learning_rate": 0.0, "n_estimators": 2, "base_scale": scale}
    xgb = make_learner("xgboost", C, params).fit(X, y)
    lr = make_learner("lr", C).fit(X, y)
    want = _tempered(lr.predict_proba(Xt), scale)
    np.testing.assert_allclose(xgb.predict_proba(Xt), want, rtol=0, atol=1e-6)


def _reference(ours) -> XGBClassifier:
    """xgboost itself, with our learner's settings."""
    return XGBClassifier(
        n_estimators=ours.n_estimators, max_depth=ours.max_depth,
        learning_rate=ours.learning_rate, subsample=ours.subsample,
        colsample_bytree=ours.colsample_bytree, min_child_weight=ours.min_child_weight,
        reg_lambda=ours.reg_lambda, max_bin=ours.max_bin, tree_method="hist", n_jobs=1,
        random_state=ours.random_state,
    )  # fmt: skip


def test_the_same_as_xgboost_with_base_margin(data):
    """The learner is xgboost fitted on its features with the regression's log-probabilities as
    ``base_margin``, the same trees number for number."""
    X, y, Xt = data
    params = {"n_estimators": 8}
    ours = make_learner("xgboost", C, params).fit(X, y)
    lr = make_learner("lr", C).fit(X, y)
    feats = RunFeatures(C, "logprob", True, "both", "none").fit(X, y)
    ref = _reference(ours)
    s = ours.base_scale
    ref.fit(feats.transform(X, np.float32), y, base_margin=s * np.log(lr.predict_proba(X)))
    want = ref.predict_proba(
        feats.transform(Xt, np.float32), base_margin=s * np.log(lr.predict_proba(Xt))
    )
    np.testing.assert_allclose(ours.predict_proba(Xt), want, rtol=0, atol=1e-6)


def test_base_none_is_plain_boosting(data):
    X, y, Xt = data
    ours = make_learner("xgboost", C, {"n_estimators": 8, "base": "none"}).fit(X, y)
    assert ours.base_ is None and "base" not in ours.summary_()
    feats = RunFeatures(C, "logprob", True, "both", "none").fit(X, y)
    ref = _reference(ours).fit(feats.transform(X, np.float32), y)
    np.testing.assert_allclose(
        ours.predict_proba(Xt), ref.predict_proba(feats.transform(Xt, np.float32)), atol=1e-6
    )


def test_the_trees_learn_what_the_regression_misses(data):
    """On held-out rows the boosted learner beats its base in log loss (the non-linear part)."""
    X, y, _ = data
    tr, te = np.arange(450), np.arange(450, 600)
    lr = make_learner("lr", C).fit(X[tr], y[tr]).predict_proba(X[te])
    xgb = make_learner("xgboost", C).fit(X[tr], y[tr]).predict_proba(X[te])

    def nll(p):
        return -np.mean(np.log(p[np.arange(len(te)), y[te]]))

    assert nll(xgb) < nll(lr)


def test_two_classes_boost_from_the_log_odds(data):
    """xgboost's binary objective takes one margin: the log-odds of the second class."""
    X, y, Xt = data
    X2 = X[:, np.r_[0:2, C : C + 2, 2 * C : 2 * C + 2]]
    keep = y < 2
    Xb, yb = X2[keep], y[keep]
    params = {"learning_rate": 0.0, "n_estimators": 2, "base_scale": 0.5}
    xgb = make_learner("xgboost", 2, params).fit(Xb, yb)
    lr = make_learner("lr", 2).fit(Xb, yb)
    Xt2 = Xt[:, np.r_[0:2, C : C + 2, 2 * C : 2 * C + 2]]
    want = _tempered(lr.predict_proba(Xt2), 0.5)
    np.testing.assert_allclose(xgb.predict_proba(Xt2), want, atol=1e-6)


def test_a_class_missing_from_training(data):
    """With n_classes=C and a class absent from the rows, the margin covers the classes present:
    the absent class gets probability 0, the rest are the base's (learning rate 0)."""
    X, y, Xt = data
    keep = y != 3
    xgb = make_learner("xgboost", C, {"learning_rate": 0.0, "n_estimators": 2, "base_scale": 1.0})
    p = xgb.fit(X[keep], y[keep]).predict_proba(Xt)
    lr = make_learner("lr", C).fit(X[keep], y[keep]).predict_proba(Xt)
    assert np.all(p[:, 3] == 0)
    np.testing.assert_allclose(p, lr, atol=1e-6)


def test_rows_in_place_and_run_weights(data):
    """fit(X, y, rows=...) (what the CV workers do) equals fitting on the rows' copy; the run
    weights are the mean of the base's and the trees', a distribution over the runs."""
    X, y, Xt = data
    rows = np.arange(0, 600, 2)
    a = make_learner("xgboost", C, {"n_estimators": 5}).fit(X, y, rows=rows)
    b = make_learner("xgboost", C, {"n_estimators": 5}).fit(X[rows], y[rows])
    np.testing.assert_array_equal(a.predict_proba(Xt), b.predict_proba(Xt))
    trees = a.features_.per_run(np.nan_to_num(a.model_.feature_importances_))
    lr = make_learner("lr", C).fit(X[rows], y[rows])
    np.testing.assert_allclose(a.run_weights_, (trees + lr.run_weights_) / 2, rtol=0, atol=1e-12)
    assert a.run_weights_.argmax() == 0 and abs(a.run_weights_.sum() - 1) < 1e-12
    assert a.summary_()["base"]["learner"] == "lr"


def test_base_param(data):
    X, y, Xt = data
    assert parse_params(["xgboost.base=none"]) == {"xgboost": {"base": None}}  # none: None
    a = make_learner("xgboost", C, {"base": None, "n_estimators": 3}).fit(X, y)
    b = make_learner("xgboost", C, {"base": "none", "n_estimators": 3}).fit(X, y)
    assert a.base_ is None and b.base_ is None
    np.testing.assert_array_equal(a.predict_proba(Xt), b.predict_proba(Xt))
    with pytest.raises(StackkitError, match=r"--param xgboost\.base=tree: .*'base' parameter"):
        make_learner("xgboost", C, {"base": "tree"})
    with pytest.raises(StackkitError, match=r"--param xgboost\.base_scale=-1: "):
        make_learner("xgboost", C, {"base_scale": -1})


def test_on_pure_noise_runs_the_boosted_learner_scores_at_chance():
    """Runs whose logits know nothing of the labels: xgboost's meta-level CV macro-F1 (each fold
    predicted by the base and the trees fitted without it) is at chance, the same predictions'
    mean macro-F1 against permuted labels: over 8 draws the mean gap is within 2.5 standard
    errors of 0 (12 draws of 2,100 rows measured +0.0005, standard error 0.0020)."""
    from stackkit.cv.stacking import cross_val_meta
    from stackkit.metrics import macro_f1

    c, n, gaps = 18, 2100, []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, c, n)
        X = rng.normal(size=(n, 4 * c)).astype(np.float32)
        folds = np.repeat(np.arange(5), -(-n // 5))[rng.permutation(n)]
        pred = cross_val_meta("xgboost", X, y, folds, c).oof_proba.argmax(1)
        chance = np.mean([macro_f1(rng.permutation(y), pred, c) for _ in range(20)])
        gaps.append(macro_f1(y, pred, c) - chance)
    se = np.std(gaps) / np.sqrt(len(gaps))
    assert abs(np.mean(gaps)) < 2.5 * se, (np.mean(gaps), se, gaps)
