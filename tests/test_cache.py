"""The CV cache: `.npy` + JSON entries keyed by the inputs; nothing in it is trusted or executed."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from stackkit.cv import stacking
from stackkit.cv.cache import CVCache, cache_dir, entry_key, inputs_key
from stackkit.fit import cross_validate


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STACKKIT_CACHE", str(tmp_path / "cache"))


class Planted:
    """Unpickling this creates a file: the proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _count_cv(monkeypatch):
    calls = []
    real = stacking.cross_val_many
    monkeypatch.setattr(
        stacking, "cross_val_many", lambda *a, **k: calls.append(a[0]) or real(*a, **k)
    )
    return calls


def test_entries_are_npy_and_json_and_answer_the_same_call(store, monkeypatch):
    rs = store.load_runs(None, store.read_folds())
    first = cross_validate(rs, ["vote", "lr"], None)
    files = sorted(p.suffix for p in (cache_dir() / "cv").iterdir())
    assert files == [".json", ".json", ".npy", ".npy"]
    calls = _count_cv(monkeypatch)
    again = cross_validate(rs, ["vote", "lr"], None)
    assert calls == []
    for a, b in zip(first, again):
        assert a.meta == b.meta and a.scores == b.scores
        np.testing.assert_array_equal(a.oof_proba, b.oof_proba)
    # another parameter is another key
    cross_validate(rs, ["lr"], {"lr": {"C": 0.5}})
    assert calls == [["lr"]]


def test_a_changed_default_is_not_answered_from_the_cache(store, monkeypatch):
    """A result cached under other defaults (a release that changed xgboost's, say) is
    recomputed, not read back as if the current defaults had made it; a blend over it too."""
    from stackkit.meta import defaults

    rs = store.load_runs(None, store.read_folds())
    cross_validate(rs, ["vote", "lr", "blend"], None)
    calls = _count_cv(monkeypatch)
    cross_validate(rs, ["vote", "lr", "blend"], None)
    assert calls == []
    monkeypatch.setitem(defaults.LR, "C", 0.5)  # what a new release's default would do
    import stackkit.fit as fit_mod

    blends, real_blend = [], fit_mod.cross_val_blend
    monkeypatch.setattr(fit_mod, "cross_val_blend", lambda *a: blends.append(1) or real_blend(*a))
    cross_validate(rs, ["vote", "lr", "blend"], None)
    assert calls == [["vote", "lr"]] and blends == [1]


def test_a_planted_pickle_is_never_executed(store, monkeypatch, tmp_path):
    rs = store.load_runs(None, store.read_folds())
    (ref,) = cross_validate(rs, ["lr"], None, use_cache=False)
    marker = tmp_path / "pwned"
    evil = pickle.dumps(Planted(marker))
    assert not marker.exists()
    cache = CVCache()
    npy, js = cache.paths(entry_key(inputs_key(rs), "lr", {"lr": {}}))
    npy.parent.mkdir(parents=True)
    npy.write_bytes(evil)  # a pickle where the array should be, with a JSON that vouches for it
    import hashlib
    import json

    key = entry_key(inputs_key(rs), "lr", {"lr": {}})
    js.write_text(json.dumps({"key": key, "meta": "lr", "scores": {}, "seconds": 0, "params": {},
                              "npy_sha256": hashlib.sha256(evil).hexdigest()}))  # fmt: skip
    # and the old joblib layout's pickles, everywhere a reader might look
    for p in [cache_dir() / "joblib" / "output.pkl", cache_dir() / "cv" / "output.pkl"]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(evil)
    calls = _count_cv(monkeypatch)
    (got,) = cross_validate(rs, ["lr"], None)
    assert not marker.exists()
    assert calls == [["lr"]]  # recomputed
    np.testing.assert_allclose(got.oof_proba, ref.oof_proba, atol=1e-12)
    # the bad entry was replaced by a good one
    calls.clear()
    cross_validate(rs, ["lr"], None)
    assert calls == [] and not marker.exists()


@pytest.mark.parametrize(
    "damage",
    ["truncate_npy", "garbage_json", "other_key", "wrong_shape", "nan", "json_list", "no_npy"],
)
def test_corrupt_or_foreign_entries_are_recomputed(store, monkeypatch, damage):
    rs = store.load_runs(None, store.read_folds())
    (ref,) = cross_validate(rs, ["vote"], None)
    key = entry_key(inputs_key(rs), "vote", {"vote": {}})
    cache = CVCache()
    npy, js = cache.paths(key)
    if damage == "truncate_npy":
        npy.write_bytes(npy.read_bytes()[:100])
    elif damage == "garbage_json":
        js.write_text("{not json")
    elif damage == "json_list":
        js.write_text("[1, 2]")
    elif damage == "no_npy":
        npy.unlink()
    else:  # a consistent entry whose content is wrong for this key
        import dataclasses

        bad = {"other_key": ref, "wrong_shape": dataclasses.replace(ref, oof_proba=ref.oof_proba[:5]),
               "nan": dataclasses.replace(ref, oof_proba=np.full_like(ref.oof_proba, np.nan))}[damage]  # fmt: skip
        put_key = dict(key, meta="lr") if damage == "other_key" else key
        cache.put(put_key, bad)
        if damage == "other_key":  # a foreign entry planted under this key's file names
            onpy, ojs = cache.paths(put_key)
            os.replace(onpy, npy)
            os.replace(ojs, js)
    calls = _count_cv(monkeypatch)
    (got,) = cross_validate(rs, ["vote"], None)
    assert calls == [["vote"]]
    np.testing.assert_array_equal(got.oof_proba, ref.oof_proba)
    assert got.scores == ref.scores


def test_an_unwritable_cache_is_not_fatal(store, tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    monkeypatch.setenv("STACKKIT_CACHE", str(ro / "inner"))
    rs = store.load_runs(None, store.read_folds())
    try:
        (res,) = cross_validate(rs, ["vote"], None)
    finally:
        ro.chmod(0o700)
    assert res.meta == "vote"


def test_writes_leave_no_temporary_files(store):
    rs = store.load_runs(None, store.read_folds())
    cross_validate(rs, ["vote", "lr", "blend"], None)
    names = [p.name for p in (cache_dir() / "cv").iterdir()]
    assert len(names) == 6 and not [n for n in names if n.startswith(".")]


def test_run_scores_are_cached_by_the_runs_content(store, monkeypatch):
    """A warm leaderboard reads each run's own scores from the cache (no softmax over its OOF
    logits); a run whose file changes is scored again; the values equal the computed ones."""
    import pandas as pd

    from stackkit import leaderboard as lb

    folds = store.read_folds()
    runset = store.load_runs(None, folds)
    cold = lb.run_scores(runset, use_cache=True)
    assert cold == lb.run_scores(runset, use_cache=False)
    scored = []
    from stackkit import metrics

    real = metrics.scores
    monkeypatch.setattr(metrics, "scores", lambda *a, **k: scored.append(1) or real(*a, **k))
    assert lb.run_scores(runset, use_cache=True) == cold and scored == []
    path = store.run_dir(runset.names[0]) / "oof.parquet"
    df = pd.read_parquet(path)
    df["logit_0"] += 3.0
    df.to_parquet(path, index=False)
    changed = store.load_runs(None, folds)
    rows = lb.run_scores(changed, use_cache=True)
    assert len(scored) == 1  # only the changed run
    assert rows[0] == lb.run_scores(changed, use_cache=False)[0] != cold[0]
