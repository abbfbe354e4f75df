"""stackkit.predict: the saved ensemble model applied to the runs' test logits gives fit's test
probabilities again, for every meta learner, a blend, a single-run pick and with bias offsets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stackkit import metrics
from stackkit.contract.errors import StackkitError
from stackkit.cv import stacking
from stackkit.fit import fit_ensemble, refit, write_ensemble
from stackkit.predict import MODEL_DIR, Ensemble, fold_mean_features, load_ensemble


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STACKKIT_CACHE", str(tmp_path / "cache"))


def _parquet(path, ids):
    df = pd.read_parquet(path).set_index("sample_id").loc[list(ids)]
    return df.filter(like="prob_").to_numpy(dtype=np.float64)


def _check_parity(store, res):
    ens = load_ensemble(res.path)
    assert ens.meta == res.selected.meta and ens.runs == res.runset.names
    proba = ens.predict_logits(res.runset.test)
    np.testing.assert_allclose(proba, res.test_proba, rtol=0, atol=1e-12)
    written = _parquet(res.path / "test_proba.parquet", res.runset.test_ids)
    assert np.abs(proba - written).max() < 1e-4
    return ens


def test_fold_mean_features_are_fits(store):
    rs = store.load_runs(None, store.read_folds())
    np.testing.assert_array_equal(fold_mean_features(rs.test), stacking.test_features(rs))


@pytest.mark.parametrize(
    ("meta", "params"),
    [
        ("vote", None),
        ("caruana", None),
        ("lr", None),
        ("knn", None),
        ("svm", {"svm": {"n_components": 30}}),
        ("rf", {"rf": {"n_estimators": 10}}),
        ("xgboost", {"xgboost": {"n_estimators": 5}}),
    ],
)
def test_every_learner_predicts_its_test_proba_again(store, meta, params):
    res = fit_ensemble(store, meta=meta, params=params, n_jobs=1)
    _check_parity(store, res)


def test_a_blend_predicts_its_test_proba_again(store):
    """The blend written as the pick (whatever the CV chose): its weights and components."""
    params = {"rf": {"n_estimators": 10}}
    res = fit_ensemble(store, meta="vote,lr,rf,blend", name="b", params=params, n_jobs=1)
    res.learner, res.test_proba = refit("blend", res.candidates, res.runset, params, 1)
    res.selected = next(c for c in res.candidates if c.meta == "blend")
    write_ensemble(store, res, params, None)
    ens = _check_parity(store, res)
    assert set(ens.learner.learners) == set(ens.learner.weights) and ens.learner.weights


def test_bias_offsets_are_applied_again(store):
    res = fit_ensemble(store, meta="svm", name="svm-bias", tune_bias=True, n_jobs=1)
    assert res.bias_offsets is not None  # else this test checks nothing
    ens = _check_parity(store, res)
    np.testing.assert_array_equal(ens.offsets, res.bias_offsets)


def test_a_single_run_pick_needs_only_its_name_through_fit(store):
    res = fit_ensemble(store, meta="runs", name="one-run", n_jobs=1)
    assert res.selected.meta.startswith("run:")
    assert sorted(p.name for p in (res.path / MODEL_DIR).iterdir()) == ["model.json"]
    _check_parity(store, res)


def test_a_blend_with_runs_among_its_components(store):
    res = fit_ensemble(store, meta="runs,blend", name="br", n_jobs=1)
    res.learner, res.test_proba = refit("blend", res.candidates, res.runset, None, 1)
    res.selected = next(c for c in res.candidates if c.meta == "blend")
    write_ensemble(store, res, None, None)
    ens = _check_parity(store, res)
    assert any(m.startswith("run:") for m in ens.learner.weights)  # a run weighted in the mix


def test_a_single_run_pick_needs_only_its_name(store, tmp_path):
    rs = store.load_runs(None, store.read_folds())
    ens = Ensemble(tmp_path, f"run:{rs.names[1]}", rs.names, rs.hashes, 18, [], None, None)
    expected = metrics.softmax(rs.test[1], axis=-1).mean(axis=0)  # fit's run_test_proba
    np.testing.assert_allclose(ens.predict_logits(rs.test), expected, rtol=0, atol=1e-12)


def test_the_model_folder_holds_no_pickle(store):
    res = fit_ensemble(store, meta="lr", name="plain", n_jobs=1)
    model = res.path / MODEL_DIR
    doc = json.loads((model / "model.json").read_text())
    assert doc["meta"] == "lr" and doc["runs"] == res.runset.names and doc["n_classes"] == 18
    files = sorted(str(f.relative_to(model)) for f in model.rglob("*") if f.is_file())
    assert files == ["learner/arrays.npz", "learner/learner.json", "model.json"]
    json.loads((model / "learner" / "learner.json").read_text())
    with np.load(model / "learner" / "arrays.npz", allow_pickle=False) as z:  # a zip of .npy
        assert all(not z[k].dtype.hasobject for k in z.files)


def test_logits_of_the_wrong_shape_are_refused(store):
    res = fit_ensemble(store, meta="vote", name="v", n_jobs=1)
    ens = load_ensemble(res.path)
    with pytest.raises(StackkitError, match=r"expected \(runs=3, folds, samples, classes=18\)"):
        ens.predict_logits(res.runset.test[:, :, :, :17])
    with pytest.raises(StackkitError, match=r"model\.json: not found"):
        load_ensemble(store.ensemble_dir("nothing"))
