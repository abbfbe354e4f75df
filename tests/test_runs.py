"""Single runs as candidates of ``auto`` (contract 1.1): a dominant run is never beaten by a stack
that CV says loses to it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from stackkit import metrics
from stackkit.contract.store import Store
from stackkit.cv import stacking
from stackkit.cv.runs import RunColumns, run_candidates
from stackkit.cv.stacking import choose
from stackkit.data.synthetic import make_case
from stackkit.fit import fit_ensemble


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STACKKIT_CACHE", str(tmp_path / "cache"))


def dominant_case(seed: int = 0):
    """Three runs: ``strong`` right on ~90% of rows, two that are pure noise."""
    case = make_case(n_groups=120, n_test=140, n_runs=3, seed=seed)
    rng = np.random.default_rng(seed)
    y = case.folds.frame.set_index("sample_id")["label"]

    def logits(df, truth, scale):
        df = df.copy()
        cols = [c for c in df.columns if c.startswith("logit_")]
        noise = rng.normal(0, 1.0, (len(df), len(cols)))
        if truth is not None:
            noise[np.arange(len(df)), truth] += scale
        df[cols] = noise.astype(np.float32)
        return df

    names = list(case.oof)
    oof, test = {}, {}
    for i, (old, new) in enumerate(zip(names, ["strong", "noise1", "noise2"])):
        o, t = case.oof[old], case.test[old]
        truth = y.loc[o["sample_id"]].to_numpy() if i == 0 else None
        tt = case.test_labels.loc[t["sample_id"]].to_numpy() if i == 0 else None
        oof[new], test[new] = logits(o, truth, 3.2), logits(t, tt, 3.2)
    return dataclasses.replace(case, oof=oof, test=test)


def test_run_candidates_score_as_the_runs_own_oof(store):
    rs = store.load_runs(None, store.read_folds())
    y = rs.folds.labels
    for i, cand in enumerate(run_candidates(rs)):
        assert cand.meta == f"run:{rs.names[i]}"
        want = f1_score(y, rs.oof[i].argmax(1), average="macro", labels=range(18), zero_division=0)
        assert cand.scores["macro_f1"] == pytest.approx(want, abs=1e-12)
    # as a learner, a run is the softmax of its columns, of the OOF and of the test features
    est = RunColumns("run01", 1, 3, 18).fit(None)
    np.testing.assert_allclose(est.predict_proba(stacking.features(rs)), metrics.softmax(rs.oof[1]))
    mean_p = metrics.softmax(rs.test[1], axis=-1).mean(0)
    np.testing.assert_allclose(est.predict_proba(stacking.test_features(rs)), mean_p, atol=1e-5)
    assert list(est.run_weights_) == [0.0, 1.0, 0.0]


def test_ties_go_to_a_run():
    from stackkit.cv.result import CVResult

    def r(m, f1):
        return CVResult(m, np.zeros((1, 2)), {"macro_f1": f1}, 0.0)

    assert choose([r("vote", 0.7), r("run:a", 0.7), r("blend", 0.7)]).meta == "run:a"


def test_a_dominant_run_is_picked_and_its_test_probabilities_are_used(tmp_path):
    store = Store(tmp_path / "art")
    dominant_case().write(store)
    res = fit_ensemble(store, meta="vote,caruana,lr,runs,blend", name="auto")
    runs = {c.meta: c for c in res.candidates if c.meta.startswith("run:")}
    assert set(runs) == {"run:strong", "run:noise1", "run:noise2"}
    # the pick is never a stack that CV says loses to a run
    assert res.selected.scores["macro_f1"] >= max(r.scores["macro_f1"] for r in runs.values())
    board = json.loads((store.ensemble_dir("auto") / "leaderboard.json").read_text())
    assert "run:strong" in [c["meta"] for c in board["candidates"]]
    # a stack that mixes a dominant run with noise: here CV says the run alone is best
    only = fit_ensemble(store, meta="vote,runs", name="pick")
    assert only.selected.meta == "run:strong"
    rs = only.runset
    i = rs.names.index("strong")
    np.testing.assert_allclose(only.test_proba, metrics.softmax(rs.test[i], axis=-1).mean(0))
    ens = json.loads((store.ensemble_dir("pick") / "ensemble.json").read_text())
    assert ens["meta"] == "run:strong" and ens["run_weights"] == {"strong": 1.0, "noise1": 0.0,
                                                                   "noise2": 0.0}  # fmt: skip
    assert ens["learner"] == {"learner": "run", "run": "strong"}
    assert ens["scores"]["estimate_picks"] == ["run:strong"] * 5
    # each fold chose the run, so the estimate is the run's own OOF score
    assert ens["scores"]["estimate_macro_f1"] == pytest.approx(
        ens["scores"]["best_run_oof_macro_f1"], abs=1e-9
    )


def test_nested_cv_counts_the_runs_too(tmp_path):
    """--nested redoes the choice with the runs among the candidates: with a dominant run, every
    outer fold picks it, and the nested predictions are its own OOF rows."""
    store = Store(tmp_path / "art")
    dominant_case().write(store)
    res = fit_ensemble(store, meta="vote,runs,blend", name="b", nested=True)
    assert "run:strong" in res.nested_picks
    assert set(res.nested_picks) <= {"vote", "blend", "run:strong", "run:noise1", "run:noise2"}
    res = fit_ensemble(store, meta="vote,runs", name="n", nested=True)
    assert res.nested_picks == ["run:strong"] * 5
    rs = res.runset
    y = rs.folds.labels
    own = f1_score(y, rs.oof[rs.names.index("strong")].argmax(1), average="macro",
                   labels=range(18), zero_division=0)  # fmt: skip
    assert res.nested_macro_f1 == pytest.approx(own, abs=1e-12)
