"""``factors``: per-factor marginals of the runs' probabilities as meta features (mask layout:
mask 3 x gender 2 x age 3), checked against hand-computed sums, validated like every parameter,
resolved from folds.parquet's layout by ``fit`` and saved with the learner."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stackkit.contract.errors import StackkitError
from stackkit.contract.store import Store
from stackkit.data.layouts import MASK_CLASSES
from stackkit.fit import fit_ensemble
from stackkit.meta.features import FACTORS, LOGPROB_FLOOR, RunFeatures, factor_marginals
from stackkit.meta.persist import load_learner, save_learner
from stackkit.meta.registry import make_learner, parse_params, resolve_factors
from stackkit.metrics import softmax

C = 18


def hand_marginals(p: np.ndarray) -> np.ndarray:
    """Sums over MASK_CLASSES by name: the 3 mask, 2 gender and 3 age values, in that order."""
    names = [n.split("_") for n in MASK_CLASSES]
    values = [("wear", "incorrect", "none"), ("male", "female"), ("<30", "30-59", "60+")]
    cols = []
    for i, vals in enumerate(values):
        for v in vals:
            idx = [j for j, parts in enumerate(names) if parts[i] == v]
            cols.append(sum(p[:, j] for j in idx))
    return np.stack(cols, axis=1)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    n, r = 240, 2
    y = rng.integers(0, C, n)
    X = rng.normal(size=(n, r * C))
    X[np.arange(n), y] += 2.0
    X[np.arange(n), C + y] += 1.0
    return X, y


def test_marginals_are_the_hand_computed_sums_over_the_mask_classes(data):
    X, _ = data
    p = softmax(X[:, :C], axis=1)
    np.testing.assert_allclose(factor_marginals(p, FACTORS["mask"]), hand_marginals(p), atol=1e-12)
    assert FACTORS["mask"] == (3, 2, 3) and len(MASK_CLASSES) == 18


@pytest.mark.parametrize("combine", ["concat", "mean", "both"])
def test_feature_columns_are_class_blocks_then_marginal_blocks_then_pooled(data, combine):
    X, y = data
    p = [softmax(X[:, r * C : (r + 1) * C], axis=1) for r in range(2)]
    m = [hand_marginals(q) for q in p]
    Z = RunFeatures(C, "proba", combine=combine, factors="mask").fit(X, y).transform(X)
    per_run = np.hstack([*p, *m])
    pooled = np.hstack([(p[0] + p[1]) / 2, (m[0] + m[1]) / 2])
    want = {"concat": per_run, "mean": pooled, "both": np.hstack([per_run, pooled])}[combine]
    np.testing.assert_allclose(Z, want, atol=1e-12)
    # log-probabilities: the logs of the same sums, floored as the class columns are
    Zl = RunFeatures(C, "logprob", combine="concat", factors="mask").fit(X, y).transform(X)
    np.testing.assert_allclose(
        Zl[:, 2 * C :], np.maximum(np.log(np.hstack(m)), LOGPROB_FLOOR), atol=1e-9
    )
    # without factors (and "auto" left unresolved) nothing is added
    for f in ("none", "auto"):
        assert RunFeatures(C, "proba", factors=f).fit(X, y).transform(X).shape == (len(X), 2 * C)


def test_per_run_weights_count_each_runs_marginal_columns(data):
    X, y = data
    feats = RunFeatures(C, "proba", combine="both", factors="mask").fit(X, y)
    imp = np.zeros(feats.transform(X[:1]).shape[1])
    imp[2 * C + 8 + 3] = 1.0  # run 1's gender-male marginal
    np.testing.assert_allclose(feats.per_run(imp), [0.0, 1.0])
    imp[:] = 0.0
    imp[-1] = 1.0  # a pooled marginal: split equally
    np.testing.assert_allclose(feats.per_run(imp), [0.5, 0.5])


def test_factors_is_validated_like_every_parameter(data):
    X, y = data
    assert parse_params(["xgboost.factors=mask"]) == {"xgboost": {"factors": "mask"}}
    with pytest.raises(StackkitError, match=r"--param xgboost\.factors=gender"):
        parse_params(["xgboost.factors=gender"])
    for name in ("lr", "knn", "svm", "rf", "xgboost"):
        with pytest.raises(StackkitError, match="factors"):
            make_learner(name, C, {"factors": 3})
    with pytest.raises(ValueError, match=r"3x2x3 = 18 classes, not n_classes=6"):
        make_learner("lr", 6, {"factors": "mask"}).fit(X[:, :12], y % 6)


def test_resolve_factors_follows_the_layout_and_keeps_what_was_given():
    got = resolve_factors(
        {"lr": {"factors": "none"}}, ["lr", "xgboost", "vote"], {"layout": "mask"}
    )
    assert got["lr"] == {"factors": "none"}
    if make_learner("xgboost", C).factors == "auto":
        assert got["xgboost"] == {"factors": "mask"}
    assert "vote" not in got
    other = resolve_factors({"knn": {"factors": "auto"}}, ["knn"], {"layout": "manifest"})
    assert other["knn"] == {"factors": "none"}


@pytest.mark.parametrize(("layout", "want"), [("mask", "mask"), ("manifest", "none")])
def test_fit_passes_the_layouts_factors_to_an_auto_learner(tmp_path, small_case, layout, want):
    folds = dataclasses.replace(small_case.folds, meta={**small_case.folds.meta,
                                                         "data": {"layout": layout}})  # fmt: skip
    store = Store(tmp_path / "a")
    dataclasses.replace(small_case, folds=folds).write(store)
    params = {"lr": {"factors": "auto", "max_iter": 30}}
    res = fit_ensemble(store, meta="lr", params=params, write=False, use_cache=False)
    assert res.learner.factors == want and res.learner.features_.factors_ == want
    k = 8 if want == "mask" else 0
    assert res.learner.features_.transform(np.zeros((1, 3 * C))).shape == (1, 3 * (C + k))


@pytest.mark.parametrize("meta", ["lr", "knn", "svm", "rf", "xgboost"])
def test_a_learner_with_factors_saves_and_reloads_to_the_same_probabilities(tmp_path, data, meta):
    X, y = data
    small = {"rf": {"n_estimators": 5}, "xgboost": {"n_estimators": 5}}.get(meta, {})
    est = make_learner(meta, C, {**small, "factors": "mask"}).fit(X, y)
    save_learner(est, tmp_path / "m")
    back = load_learner(tmp_path / "m")
    assert back.features_.factors_ == "mask" and back.get_params() == est.get_params()
    np.testing.assert_allclose(back.predict_proba(X), est.predict_proba(X), rtol=0, atol=1e-12)


def test_factors_default_table_matches_the_learners():
    """registry.resolve_factors reads meta.defaults.FACTORS_DEFAULT instead of importing the
    learners: it must name exactly the learners taking ``factors``, with their defaults."""
    from stackkit.meta.defaults import FACTORS_DEFAULT
    from stackkit.meta.registry import _classes

    want = {name: cls().factors for name, cls in _classes().items()
            if "factors" in cls().get_params(deep=False)}  # fmt: skip
    assert want == FACTORS_DEFAULT
