"""`stackkit fit` and `stackkit leaderboard`: honest CV, the contract's outputs, invariances."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from typer.testing import CliRunner

from stackkit.cli import app
from stackkit.contract.schema import validate_folds
from stackkit.contract.store import Store
from stackkit.cv import stacking
from stackkit.cv.result import CVResult
from stackkit.cv.stacking import choose
from stackkit.fit import fit_ensemble
from stackkit.leaderboard import leaderboard


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STACKKIT_CACHE", str(tmp_path / "cache"))


def _read(path):
    return pd.read_parquet(path)


def test_fit_writes_the_contract(store):
    res = fit_ensemble(store, meta="vote,lr", name="e1")
    d = store.ensemble_dir("e1")
    assert sorted(p.name for p in d.iterdir()) == sorted(
        ["oof_proba.parquet", "test_proba.parquet", "submission.csv", "leaderboard.json",
         "ensemble.json", "model", "estimate_oof_proba.parquet", "estimate_candidates.parquet"]
    )  # fmt: skip
    folds = store.read_folds()
    oof = _read(d / "oof_proba.parquet")
    assert list(oof["sample_id"]) == list(folds.frame["sample_id"])
    p = oof.filter(like="prob_").to_numpy()
    assert p.dtype == np.float32 and p.shape == (len(folds.frame), 18)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    test = _read(d / "test_proba.parquet")
    assert sorted(test["sample_id"]) == sorted(res.runset.test_ids) and test["sample_id"].is_unique
    board = json.loads((d / "leaderboard.json").read_text())
    assert board["selected"] == res.selected.meta and board["bias_tuned"] is False
    assert [c["meta"] for c in board["candidates"]] == ["vote", "lr"]
    for c in board["candidates"]:
        assert set(c) == {"meta", "cv_macro_f1", "cv_macro_f1_std", "cv_accuracy", "cv_log_loss",
                          "seconds"}  # fmt: skip
    # cv_macro_f1 is sklearn's f1_score on the whole OOF vector of the selected candidate
    y = folds.labels
    expected = f1_score(y, p.argmax(1), average="macro", labels=range(18), zero_division=0)
    sel = next(c for c in board["candidates"] if c["meta"] == board["selected"])
    assert sel["cv_macro_f1"] == pytest.approx(expected, abs=1e-9)
    per_fold = [
        f1_score(y[folds.fold_ids == k], p.argmax(1)[folds.fold_ids == k], average="macro",
                 labels=range(18), zero_division=0) for k in range(5)
    ]  # fmt: skip
    assert sel["cv_macro_f1_std"] == pytest.approx(np.std(per_fold), abs=1e-9)
    ens = json.loads((d / "ensemble.json").read_text())
    assert ens["inputs"]["folds_hash"] == folds.hash
    # the honest estimate: its number is the macro-F1 of the predictions written beside it
    est = _read(d / "estimate_oof_proba.parquet")
    assert list(est["sample_id"]) == list(folds.frame["sample_id"])
    e = est.filter(like="prob_").to_numpy()
    f1_est = f1_score(y, e.argmax(1), average="macro", labels=range(18), zero_division=0)
    assert ens["scores"]["estimate_macro_f1"] == pytest.approx(f1_est, abs=1e-12)
    assert board["estimate_macro_f1"] == ens["scores"]["estimate_macro_f1"]
    assert "outer-fold" in ens["scores"]["estimate_method"]
    assert len(ens["scores"]["estimate_picks"]) == 5
    assert [r["run"] for r in ens["inputs"]["runs"]] == ["run00", "run01", "run02"]
    sub = pd.read_csv(d / "submission.csv")
    assert list(sub.columns) == ["sample_id", "label"]
    np.testing.assert_array_equal(
        sub.set_index("sample_id").loc[test["sample_id"], "label"],
        test.filter(like="prob_").to_numpy().argmax(1),
    )


def test_meta_cv_is_predefined_split_over_the_stored_folds(store):
    from stackkit.meta.registry import make_learner

    rs = store.load_runs(None, store.read_folds())
    X, y, f = stacking.features(rs), rs.folds.labels, rs.folds.fold_ids
    est = make_learner("lr", n_classes=18)
    ours = stacking.cross_val_proba(est, X, y, f, 18)
    ref = cross_val_predict(est, X, y, cv=PredefinedSplit(f), method="predict_proba")
    np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_one_pool_for_all_learners_equals_one_cv_per_learner(store):
    """cross_val_many fits every learner's folds in one pool, costliest first: each learner's
    OOF probabilities equal a plain PredefinedSplit cross_val_predict of that learner, whatever
    the number of processes."""
    from stackkit.meta.registry import make_learner

    rs = store.load_runs(None, store.read_folds())
    X, y, f = stacking.features(rs), rs.folds.labels, rs.folds.fold_ids
    metas = ["vote", "lr", "rf"]
    params = {"rf": {"n_estimators": 5}}
    one = stacking.cross_val_many(metas, X, y, f, 18, params, n_jobs=1)
    two = stacking.cross_val_many(metas, X, y, f, 18, params, n_jobs=2)
    for m, a, b in zip(metas, one, two):
        est = make_learner(m, n_classes=18, params=params.get(m))
        ref = cross_val_predict(est, X, y, cv=PredefinedSplit(f), method="predict_proba")
        assert a.meta == b.meta == m
        np.testing.assert_allclose(a.oof_proba, ref, atol=1e-10)
        np.testing.assert_allclose(b.oof_proba, ref, atol=1e-10)
        assert a.seconds > 0


def test_nested_cv_redoes_the_selection_inside_each_outer_fold(store):
    """The pooled nested CV equals the plain loop: per outer fold k, cross-validate every
    learner on the other folds, pick, refit the pick on them, predict fold k."""
    from stackkit.meta.registry import make_learner

    rs = store.load_runs(None, store.read_folds())
    X, y, f = stacking.features(rs), rs.folds.labels, rs.folds.fold_ids
    metas = ["vote", "lr", "knn"]
    proba, picks = stacking.nested_cv(metas, X, y, f, 18, n_jobs=2)
    want = np.zeros_like(proba)
    for k in range(5):
        inner = f != k
        res = [stacking.cross_val_meta(m, X[inner], y[inner], f[inner], 18) for m in metas]
        pick = choose(res).meta
        assert picks[k] == pick
        est = make_learner(pick, n_classes=18).fit(X[inner], y[inner])
        want[~inner] = est.predict_proba(X[~inner])
    np.testing.assert_allclose(proba, want, atol=1e-10)


def test_choose_ties_go_to_the_simpler():
    def r(m, f1):
        return CVResult(m, np.zeros((1, 2)), {"macro_f1": f1}, 0.0)

    assert choose([r("xgboost", 0.7), r("lr", 0.7), r("rf", 0.69)]).meta == "lr"
    assert choose([r("xgboost", 0.71), r("vote", 0.7)]).meta == "xgboost"


def test_run_order_and_row_order_change_nothing(store, small_case, tmp_path):
    a = fit_ensemble(store, meta="vote,lr,caruana", runs=["run02", "run00", "run01"], name="a")
    other = Store(tmp_path / "shuffled")
    f = small_case.folds
    shuffled = validate_folds(f.frame.sample(frac=1.0, random_state=5), f.metadata())
    dataclasses.replace(small_case, folds=shuffled).write(other)
    b = fit_ensemble(other, meta="vote,lr,caruana", runs=["run00", "run01", "run02"], name="a")
    for ca, cb in zip(a.candidates, b.candidates):
        assert ca.meta == cb.meta
        assert ca.scores["macro_f1"] == pytest.approx(cb.scores["macro_f1"], abs=1e-9)
    pa = _read(store.ensemble_dir("a") / "oof_proba.parquet").set_index("sample_id").sort_index()
    pb = _read(other.ensemble_dir("a") / "oof_proba.parquet").set_index("sample_id").sort_index()
    np.testing.assert_allclose(pa.to_numpy(), pb.to_numpy(), atol=1e-5)
    np.testing.assert_allclose(a.test_proba, b.test_proba, atol=1e-6)


def test_tune_bias_is_honest_and_recorded(store):
    res = fit_ensemble(store, meta="vote", name="tb", tune_bias=True)
    board = json.loads((store.ensemble_dir("tb") / "leaderboard.json").read_text())
    ens = json.loads((store.ensemble_dir("tb") / "ensemble.json").read_text())
    helped = ens["scores"]["bias_cv_macro_f1"] > res.selected.scores["macro_f1"]
    assert helped  # vote over runs of unequal quality leaves per-class offsets to gain
    assert board["bias_tuned"] is True and len(ens["bias_offsets"]) == 18
    oof = _read(store.ensemble_dir("tb") / "oof_proba.parquet").filter(like="prob_").to_numpy()
    y = store.read_folds().labels
    # what is written and reported is the in-CV shifted OOF, scored on the whole vector
    f1 = f1_score(y, oof.argmax(1), average="macro", labels=range(18), zero_division=0)
    assert ens["scores"]["final_oof_macro_f1"] == pytest.approx(f1, abs=1e-9)
    assert f1 == pytest.approx(ens["scores"]["bias_cv_macro_f1"], abs=1e-9)
    # leaderboard.json names both: the selected entry's CV score before the offsets, and the
    # score of oof_proba.parquet (after them), which agrees with the file exactly
    sel = next(c for c in board["candidates"] if c["meta"] == board["selected"])
    assert sel["cv_macro_f1"] == pytest.approx(res.selected.scores["macro_f1"], abs=1e-12)
    assert board["oof_proba_macro_f1"] == pytest.approx(f1, abs=1e-12)
    assert board["oof_proba_macro_f1"] != sel["cv_macro_f1"]
    # the offsets fitted without each fold are kept for whoever redoes the pick per fold
    assert np.array(ens["per_fold"]["bias_offsets"]).shape == (5, 18)


def test_bias_tuning_that_hurts_in_cv_is_not_applied(store, monkeypatch):
    import stackkit.meta.bias as decision

    def harmful(log_proba, y, fold_ids, **_):
        out = np.full_like(log_proba, -10.0)
        out[:, 0] = 0.0  # every row to class 0
        return out, np.zeros((len(np.unique(fold_ids)), log_proba.shape[1]))

    monkeypatch.setattr(decision, "cross_val_bias", harmful)
    res = fit_ensemble(store, meta="vote", name="nb", tune_bias=True)
    assert res.bias_offsets is None and res.bias_cv_macro_f1 < res.selected.scores["macro_f1"]
    board = json.loads((store.ensemble_dir("nb") / "leaderboard.json").read_text())
    assert board["bias_tuned"] is False
    np.testing.assert_allclose(res.oof_proba, res.selected.oof_proba)


def test_submission_follows_info_csv_for_the_mask_layout(store, small_case, tmp_path):
    data = tmp_path / "data"
    (data / "eval").mkdir(parents=True)
    ids = list(small_case.test["run00"]["sample_id"].unique())[::-1]
    pd.DataFrame({"ImageID": ids, "ans": 0}).to_csv(data / "eval" / "info.csv", index=False)
    f = small_case.folds
    folds = dataclasses.replace(f, meta={**f.meta, "data": {"layout": "mask", "root": str(data)}})
    store.write_folds(folds, force=True)
    fit_ensemble(store, meta="vote", name="mask")
    sub = pd.read_csv(store.ensemble_dir("mask") / "submission.csv")
    assert list(sub.columns) == ["ImageID", "ans"] and list(sub["ImageID"]) == ids


def test_cli_fit_prints_table(store):
    result = CliRunner().invoke(
        app, ["fit", "--meta", "vote,lr", "--name", "cli", "--artifacts", str(store.root)]
    )
    assert result.exit_code == 0, result.output
    assert "CV macro-F1" in result.stdout and "<- picked" in result.stdout
    assert "wrote" in result.stdout
    # the honest estimate is the first number printed; the pick's CV score is called optimistic
    first = result.stdout.splitlines()[0]
    ens = json.loads((store.ensemble_dir("cli") / "ensemble.json").read_text())
    assert (
        first.startswith("honest estimate") and f"{ens['scores']['estimate_macro_f1']:.4f}" in first
    )
    assert "optimistic by selection" in result.stdout
    # on this case vote and lr lose to run00 alone, and fit says so in one sentence
    assert ens["scores"]["estimate_macro_f1"] < ens["scores"]["best_run_oof_macro_f1"]
    assert ens["scores"]["best_run"] == "run00"
    assert "below the best single run's own OOF macro-F1 (run00" in result.stdout
    assert result.output.count("below the best single run") == 1  # said once, not logged again


def test_bad_param_is_refused_before_work(store):
    result = CliRunner().invoke(
        app, ["fit", "--meta", "rf", "--param", "rf.n_estimatorz=3", "--artifacts", str(store.root)]
    )
    assert result.exit_code == 1
    assert "n_estimatorz" in result.stderr


def test_leaderboard_is_cached(store, monkeypatch):
    first = leaderboard(store, meta="vote,lr")
    assert {r["run"] for r in first.runs} == {"run00", "run01", "run02"}
    assert all("loro_delta" in r for r in first.runs)
    calls = []
    real = stacking.cross_val_many
    monkeypatch.setattr(
        stacking, "cross_val_many", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    second = leaderboard(store, meta="vote,lr")
    assert calls == []  # every CV answered from the cache
    assert [c.scores for c in second.candidates] == [c.scores for c in first.candidates]


def test_leaderboard_cli(store):
    result = CliRunner().invoke(app, ["leaderboard", "--meta", "vote,lr",
                                      "--artifacts", str(store.root)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "run00" in result.stdout and "meta candidates" in result.stdout
    assert "honest estimate" in result.stdout and "optimistic by selection" in result.stdout


def test_nested_estimate(store):
    res = fit_ensemble(store, meta="vote,lr", name="n", nested=True)
    assert 0.0 <= res.nested_macro_f1 <= 1.0
    assert len(res.nested_picks) == 5 and set(res.nested_picks) <= {"vote", "lr"}
    board = json.loads((store.ensemble_dir("n") / "leaderboard.json").read_text())
    assert board["nested_macro_f1"] == pytest.approx(res.nested_macro_f1)


def test_workers_are_warmed_only_for_a_pool():
    from joblib import Parallel, delayed

    from stackkit.cv.engine import parallel_backend, warm_local_workers

    assert warm_local_workers(1) is None
    thread = warm_local_workers(2)
    thread.join(timeout=120)
    assert not thread.is_alive()
    # the warmed workers serve the next pool (every local pool runs under the same backend)
    with parallel_backend("local"):
        assert len(Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(4))) == 4
        pids = set(Parallel(n_jobs=2)(delayed(os.getpid)() for _ in range(4)))
    assert thread.worker_pids and pids <= thread.worker_pids


def test_auto_leaves_out_a_learner_above_its_size(store, monkeypatch, caplog):
    """knn's cost grows with rows squared: above ``AUTO_MAX_ROWS['knn']`` training rows ``auto``
    leaves it out and says so; at or below it, or named in --meta, knn is fitted."""
    from stackkit import fit
    from stackkit.meta import defaults

    seen = []

    def stop(runset, metas, *a, **k):
        seen.append(metas)
        raise KeyboardInterrupt  # the candidate list is all this test needs

    monkeypatch.setattr(fit, "cross_validate", stop)
    n = len(store.read_folds().frame)
    for limit, meta in [(n - 1, "auto"), (n, "auto"), (n - 1, "knn,lr")]:
        monkeypatch.setattr(defaults, "AUTO_MAX_ROWS", {"knn": limit})
        with caplog.at_level("INFO", logger="stackkit.fit"), pytest.raises(KeyboardInterrupt):
            fit_ensemble(store, meta=meta, name="e", n_jobs=1)
    assert "knn" not in seen[0] and "lr" in seen[0] and "blend" in seen[0]
    assert "knn" in seen[1] and seen[2] == ["knn", "lr"]
    assert caplog.text.count(f"auto leaves knn out: {n} training rows > {n - 1}") == 1
    assert fit.auto_size_rule(["lr", "knn"], 10**6) == ["lr"]


def test_splits_are_scikit_learns_predefined_split():
    from sklearn.model_selection import PredefinedSplit

    from stackkit.cv.stacking import splits

    fold_ids = np.array([2, 0, 1, -1, 2, 0, 0, 1, 2, -1])
    got = splits(fold_ids)
    want = list(PredefinedSplit(fold_ids).split())
    assert len(got) == len(want) == 3
    for (tr, te), (wtr, wte) in zip(got, want):
        np.testing.assert_array_equal(tr, wtr)
        np.testing.assert_array_equal(te, wte)
