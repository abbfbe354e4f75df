"""stackkit.cv.per_fold: fold k's test probabilities come only from what never saw fold k's labels."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from stackkit.contract.schema import validate_folds
from stackkit.cv import stacking
from stackkit.cv.blend import _stack
from stackkit.cv.per_fold import fold_test_features, fold_test_proba
from stackkit.meta.bias import cross_val_bias
from stackkit.meta.caruana import CaruanaSelection
from stackkit.meta.registry import make_learner
from stackkit.metrics import softmax

LR = {"lr": {"max_iter": 50}}


@pytest.fixture(scope="module")
def runset(small_case, tmp_path_factory):
    from stackkit.contract.store import Store

    s = Store(tmp_path_factory.mktemp("pf") / "artifacts")
    small_case.write(s)
    return s.load_runs(None, s.read_folds())


def _lr_reference(runset):
    """By hand: lr fitted on the rows outside fold k, applied to the fold-k models' test logits."""
    X, y, f = stacking.features(runset), runset.folds.labels, runset.folds.fold_ids
    out, oof = [], np.zeros((len(y), runset.folds.n_classes))
    for k in range(runset.folds.n_folds):
        est = make_learner("lr", runset.folds.n_classes, LR["lr"]).fit(X[f != k], y[f != k])
        Xt = runset.test[:, k].transpose(1, 0, 2).reshape(len(runset.test_ids), -1)
        out.append(est.predict_proba(Xt))
        oof[f == k] = est.predict_proba(X[f == k])
    return np.stack(out), oof


def test_a_learner_is_the_meta_level_cv_fold_learner(runset):
    got = fold_test_proba(runset, "lr", LR)
    ref, _ = _lr_reference(runset)
    np.testing.assert_allclose(got, ref, atol=1e-10)
    assert got.shape == (5, len(runset.test_ids), 18)


def test_fold_k_does_not_depend_on_fold_k_labels(runset):
    """Permuting fold 0's labels changes every fold's prediction but fold 0's."""
    rng = np.random.default_rng(0)
    base = fold_test_proba(runset, "lr", LR)
    folds = runset.folds
    y = folds.labels.copy()
    held = folds.fold_ids == 0
    y[held] = rng.permutation(y[held])
    frame = folds.frame.assign(label=y.astype(np.int16))
    changed = replace(runset, folds=validate_folds(frame, folds.metadata()))
    got = fold_test_proba(changed, "lr", LR)
    np.testing.assert_allclose(got[0], base[0], atol=1e-12)
    assert np.abs(got[1:] - base[1:]).max() > 1e-3


def test_vote_and_a_single_run(runset):
    vote = fold_test_proba(runset, "vote")
    np.testing.assert_allclose(vote, softmax(runset.test, axis=-1).mean(axis=0), atol=1e-12)
    run = runset.names[1]
    got = fold_test_proba(runset, f"run:{run}")
    np.testing.assert_allclose(got, softmax(runset.test[1], axis=-1), atol=1e-12)


def test_bias_offsets_are_the_fold_k_offsets(runset):
    got = fold_test_proba(runset, "lr", LR, bias=True)
    ref, oof = _lr_reference(runset)
    _, offsets = cross_val_bias(np.log(np.clip(oof, 1e-15, None)), runset.folds.labels,
                                runset.folds.fold_ids)  # fmt: skip
    for k in range(5):
        want = softmax(np.log(np.clip(ref[k], 1e-15, None)) + offsets[k], axis=-1)
        np.testing.assert_allclose(got[k], want, atol=1e-9)


def test_blend_weights_for_fold_k_are_chosen_without_fold_k(runset):
    parts = ["vote", "lr"]
    got = fold_test_proba(runset, "blend", LR, components=parts)
    ref_lr, oof_lr = _lr_reference(runset)
    oof_vote = softmax(runset.oof, axis=-1).mean(axis=0)
    test_vote = softmax(runset.test, axis=-1).mean(axis=0)
    L = _stack([oof_vote, oof_lr])
    y, f = runset.folds.labels, runset.folds.fold_ids
    for k in range(5):
        sel = CaruanaSelection(n_classes=18).fit(L[f != k], y[f != k])
        want = sel.predict_proba(_stack([test_vote[k], ref_lr[k]]))
        np.testing.assert_allclose(got[k], want, atol=1e-9)


def test_fold_test_features_are_run_major(runset):
    Xt = fold_test_features(runset, 2)
    r, c = len(runset.names), runset.folds.n_classes
    np.testing.assert_array_equal(Xt[:, c : 2 * c], runset.test[1, 2])
    assert Xt.shape == (len(runset.test_ids), r * c)


def test_the_recipe_redone_per_fold_is_the_one_fit_recorded(tmp_path, small_case):
    """pseudo-label redoes the pick per fold; its fold-k blend weights are exactly those fit
    recorded in ensemble.json's per_fold (chosen without fold k). (The fold-k bias offsets are
    checked against cross_val_bias above.)"""
    import json

    from stackkit.contract.store import Store
    from stackkit.fit import fit_ensemble

    s = Store(tmp_path / "artifacts")
    small_case.write(s)
    fit_ensemble(
        s, meta="vote,lr,blend", name="b", params=LR, tune_bias=True, use_cache=False, n_jobs=1
    )
    info = json.loads((s.ensemble_dir("b") / "ensemble.json").read_text())
    assert info["meta"] == "blend", info["meta"]
    rs = s.load_runs(None, s.read_folds())
    got: dict = {}
    fold_test_proba(rs, "blend", LR, info["params"]["candidates"], info["bias_offsets"] is not None,
                    details=got)  # fmt: skip
    rec = info["per_fold"]
    assert len(got["blend_weights"]) == 5
    for a, b in zip(got["blend_weights"], rec["blend_weights"]):
        assert a.keys() == b.keys()
        assert all(abs(a[m] - b[m]) < 1e-12 for m in a)
