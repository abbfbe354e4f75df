"""`blend`: Caruana selection over the meta candidates, cross-validated over the same folds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from stackkit import metrics
from stackkit.cv import stacking
from stackkit.cv.blend import BLEND, Blend, cross_val_blend
from stackkit.cv.runs import RUNS
from stackkit.cv.stacking import choose
from stackkit.fit import cross_validate, fit_ensemble, refit, resolve_metas
from stackkit.leaderboard import leaderboard
from stackkit.meta.caruana import CaruanaSelection
from stackkit.meta.defaults import SIMPLICITY
from stackkit.meta.registry import make_learner


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STACKKIT_CACHE", str(tmp_path / "cache"))


METAS = ["vote", "lr", "knn"]


def _inputs(store):
    rs = store.load_runs(None, store.read_folds())
    return rs, stacking.features(rs), rs.folds.labels, rs.folds.fold_ids


def test_auto_is_the_seven_then_the_runs_then_blend():
    assert resolve_metas("auto") == [*SIMPLICITY, RUNS, BLEND]
    assert resolve_metas("blend") == [*SIMPLICITY, RUNS, BLEND]
    assert resolve_metas("lr,knn,blend") == ["lr", "knn", BLEND]
    assert resolve_metas("lr,runs") == resolve_metas("lr,run:run00") == ["lr", RUNS]


def test_blend_cv_chooses_weights_on_the_other_folds_only(store):
    """Fold k's blend comes from a CaruanaSelection fitted on the other folds' meta-level OOF
    rows of the candidates (log-probabilities as its "runs"); scored on the whole OOF vector."""
    _rs, X, y, f = _inputs(store)
    cands = stacking.cross_val_many(METAS, X, y, f, 18)
    res = cross_val_blend(cands, y, f, 18)
    L = np.hstack([np.log(np.clip(c.oof_proba, metrics.EPS, None)) for c in cands])
    want = np.zeros_like(res.oof_proba)
    for k in range(5):
        sel = CaruanaSelection(n_classes=18).fit(L[f != k], y[f != k])
        want[f == k] = sel.predict_proba(L[f == k])
    np.testing.assert_allclose(res.oof_proba, want)
    assert res.meta == BLEND
    assert res.scores["macro_f1"] == pytest.approx(
        f1_score(y, want.argmax(1), average="macro", labels=range(18), zero_division=0)
    )


def test_blend_refit_mixes_the_refitted_candidates(store):
    rs, X, y, f = _inputs(store)
    cands = stacking.cross_val_many(METAS, X, y, f, 18)
    blend, test_proba = refit(BLEND, cands, rs, n_jobs=1)
    assert isinstance(blend, Blend)
    assert sum(blend.weights.values()) == pytest.approx(1.0)
    Xt = stacking.test_features(rs)
    sel = CaruanaSelection(n_classes=18).fit(
        np.hstack([np.log(np.clip(c.oof_proba, metrics.EPS, None)) for c in cands]), y
    )
    mixed = sum(
        w * make_learner(m, n_classes=18).fit(X, y).predict_proba(Xt)
        for m, w in zip(METAS, sel.weights_)
        if w > 0
    )
    np.testing.assert_allclose(blend.predict_proba(Xt), mixed, atol=1e-10)
    np.testing.assert_allclose(test_proba, mixed, atol=1e-10)
    # refits made in the CV pool are the same learners
    pooled = stacking.cross_val_many(METAS, X, y, f, 18, X_test=Xt)
    _, again = refit(BLEND, pooled, rs, n_jobs=1)
    np.testing.assert_allclose(again, mixed, atol=1e-10)
    assert blend.run_weights_.sum() == pytest.approx(1.0)


def test_fit_with_blend_writes_it_like_any_pick(store, monkeypatch):
    res = fit_ensemble(store, meta="vote,lr,knn,blend", name="b")
    assert [c.meta for c in res.candidates] == [*METAS, BLEND]
    board = json.loads((store.ensemble_dir("b") / "leaderboard.json").read_text())
    assert [c["meta"] for c in board["candidates"]] == [*METAS, BLEND]
    # with the blend picked, ensemble.json carries its weights and the test probabilities are
    # its mix of the candidates' refits
    monkeypatch.setattr(stacking, "choose", lambda results: results[-1])
    forced = fit_ensemble(store, meta="vote,lr,knn,blend", name="forced")
    ens = json.loads((store.ensemble_dir("forced") / "ensemble.json").read_text())
    assert ens["meta"] == BLEND and set(ens["learner"]["weights"]) <= set(METAS)
    assert sum(ens["run_weights"].values()) == pytest.approx(1.0)
    rs = _inputs(store)[0]
    _, want = refit(BLEND, forced.candidates, rs, n_jobs=1)
    np.testing.assert_allclose(forced.test_proba, want, atol=1e-10)
    np.testing.assert_allclose(forced.oof_proba, forced.candidates[-1].oof_proba)


def test_nested_and_loro_handle_a_blend(store):
    res = fit_ensemble(store, meta="vote,lr,blend", name="n", nested=True)
    assert set(res.nested_picks) <= {"vote", "lr", BLEND}
    assert 0.0 <= res.nested_macro_f1 <= 1.0
    board = leaderboard(store, meta="vote,lr,blend")
    # leave-one-run-out uses the best single learner, never the blend (which would redo every
    # candidate's CV for each run)
    single = choose([c for c in board.candidates if c.meta != BLEND])
    assert board.loro_meta == single.meta
    rs = store.load_runs(None, store.read_folds())
    (rest,) = cross_validate(rs.subset(rs.names[1:]), [single.meta], None)
    assert board.runs[0]["loro_delta"] == pytest.approx(
        single.scores["macro_f1"] - rest.scores["macro_f1"]
    )


def test_blend_cv_is_cached_with_its_candidates(store, monkeypatch):
    import stackkit.fit as fit_mod

    rs = store.load_runs(None, store.read_folds())
    first = cross_validate(rs, ["vote", "lr", BLEND], None)
    calls = []
    real = fit_mod.cross_val_blend
    monkeypatch.setattr(fit_mod, "cross_val_blend", lambda *a: calls.append(a) or real(*a))
    again = cross_validate(rs, ["vote", "lr", BLEND], None)
    assert calls == []  # answered from the cache
    np.testing.assert_array_equal(again[-1].oof_proba, first[-1].oof_proba)
    other = cross_validate(rs, ["vote", "knn", BLEND], None)  # other candidates: computed anew
    assert len(calls) == 1 and other[-1].meta == BLEND
