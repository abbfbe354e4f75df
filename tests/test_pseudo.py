"""stackkit.pseudo and `stackkit pseudo-label`: thresholds, caps, metadata, refusals, CLI."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from stackkit.cli import app
from stackkit.contract import schema
from stackkit.contract.errors import ContractError, StackkitError
from stackkit.contract.store import write_json, write_parquet
from stackkit.data.folds import make_folds
from stackkit.data.synthetic import run_info
from stackkit.metrics import softmax
from stackkit.pseudo import parse_class_thresholds, pseudo_label, rows_hash, select

C = 18


def peaked(labels, confs, n_classes=C) -> np.ndarray:
    """Rows whose top class is ``labels`` with probability ``confs``; the rest spread evenly."""
    labels, confs = np.asarray(labels), np.asarray(confs, float)
    p = np.tile(((1 - confs) / (n_classes - 1))[:, None], (1, n_classes))
    p[np.arange(len(labels)), labels] = confs
    return p


def write_ensemble(store, proba=None, ids=None, name="ens", folds_hash=None, fold_proba=None):
    """An ensemble as `stackkit fit --meta vote` records it, over runs whose test logits make
    ``proba`` the test probabilities of every fold (``fold_proba``: one array per fold).

    With neither, the ensemble is a vote over the store's runs."""
    folds = store.read_folds()
    if proba is not None or fold_proba is not None:
        per_fold = fold_proba if fold_proba is not None else [proba] * folds.n_folds
        m = len(per_fold[0])
        ids = [f"t{i:04d}.jpg" for i in range(m)] if ids is None else list(ids)
        for old in store.run_names():  # the runs' test ids must agree: one run of its own
            shutil.rmtree(store.run_dir(old))
        oof = pd.DataFrame({"sample_id": folds.frame["sample_id"], "fold": folds.frame["fold"]})
        oof = pd.concat([oof, pd.DataFrame(np.zeros((len(oof), C), np.float32),
                                           columns=schema.logit_columns(C))], axis=1)  # fmt: skip
        test = pd.concat(
            [
                pd.DataFrame({"sample_id": ids, "fold": np.full(m, k, np.int8)})
                for k in range(folds.n_folds)
            ],
            ignore_index=True,
        )
        logits = np.log(np.clip(np.vstack(per_fold), 1e-12, None)).astype(np.float32)
        test = pd.concat([test, pd.DataFrame(logits, columns=schema.logit_columns(C))], axis=1)
        store.write_run("p", oof, test, run_info("p", folds), folds)
    runs = store.load_runs(None, folds)
    d = store.ensemble_dir(name)
    test_proba = softmax(runs.test, axis=-1).mean(axis=(0, 1))
    write_parquet(schema.proba_frame(runs.test_ids, test_proba), d / "test_proba.parquet")
    inputs = {
        "runs": [{"run": r, "hash": h} for r, h in runs.hashes.items()],
        "folds_hash": folds.hash if folds_hash is None else folds_hash,
    }
    write_json(
        {"name": name, "inputs": inputs, "meta": "vote", "bias_offsets": None}, d / "ensemble.json"
    )
    return d


def fold0(res) -> pd.DataFrame:
    """The rows chosen for fold 0 (with the same probabilities in every fold, each fold's rows)."""
    return res.frame[res.frame["fold"] == 0].reset_index(drop=True)


def chosen(res) -> dict[str, float]:
    f = fold0(res)
    return dict(zip(f["sample_id"], f["confidence"].astype(float)))


# --------------------------------------------------------------------------------------------
# the rule


def test_threshold_keeps_confident_rows_with_their_top_class(store):
    confs = [0.99, 0.95, 0.9, 0.89, 0.5, 0.3]
    labels = [0, 4, 4, 7, 9, 17]
    write_ensemble(store, peaked(labels, confs))
    res = pseudo_label(store, "ens", threshold=0.9)
    f = fold0(res)
    assert sorted(f["sample_id"]) == ["t0000.jpg", "t0001.jpg", "t0002.jpg"]
    assert f["label"].tolist() == [0, 4, 4]
    np.testing.assert_allclose(f["confidence"], [0.99, 0.95, 0.9], atol=1e-6)
    assert res.frame.dtypes.astype(str).tolist() == ["string", "int8", "int16", "float32"]
    assert res.per_fold["chosen"].tolist() == [3] * 5  # the same probabilities in every fold


def test_threshold_on_real_ensemble_probabilities(store):
    """vote: fold k's labels are the argmax of the mean of the runs' fold-k softmax, no more."""
    write_ensemble(store)
    runs = store.load_runs(None, store.read_folds())
    for t in (0.3, 0.6):
        res = pseudo_label(store, "ens", threshold=t, name=f"t{t}")
        for k in range(5):
            p = softmax(runs.test[:, k], axis=-1).mean(axis=0)  # (m, C), sorted test ids
            rows = res.frame[res.frame["fold"] == k]
            keep = p.max(axis=1) >= t - 1e-6
            assert rows["sample_id"].tolist() == list(runs.test_ids[keep])
            assert rows["label"].tolist() == p[keep].argmax(axis=1).tolist()
            np.testing.assert_allclose(rows["confidence"], p[keep].max(axis=1), atol=1e-6)
        assert len(res.frame) > 0


def test_max_per_class_keeps_the_most_confident(store):
    labels = [3, 3, 3, 3, 5, 5]
    confs = [0.92, 0.99, 0.95, 0.97, 0.91, 0.93]
    write_ensemble(store, peaked(labels, confs))
    res = pseudo_label(store, "ens", threshold=0.9, max_per_class=2)
    assert set(chosen(res)) == {"t0001.jpg", "t0003.jpg", "t0004.jpg", "t0005.jpg"}
    row = res.table.set_index("class").loc[schema_class(store, 3)]
    assert (row["candidates"], row["chosen"]) == (4 * 5, 2 * 5)  # summed over the 5 folds
    assert row["mean_confidence"] == pytest.approx(0.98, abs=1e-6)


def test_ties_break_by_sample_id_whatever_the_row_order(store):
    labels, confs = [2] * 5, [0.95] * 5
    ids = [f"t{i:04d}.jpg" for i in (4, 1, 3, 0, 2)]
    write_ensemble(store, peaked(labels, confs), ids=ids)
    res = pseudo_label(store, "ens", max_per_class=2)
    assert fold0(res)["sample_id"].tolist() == ["t0000.jpg", "t0001.jpg"]


def test_class_threshold_overrides_the_global_one(store):
    labels = [0, 1, 1, 2]
    confs = [0.85, 0.85, 0.75, 0.95]
    write_ensemble(store, peaked(labels, confs))
    cls = schema_class(store, 1)
    res = pseudo_label(store, "ens", threshold=0.9, class_thresholds={cls: 0.8})
    assert set(chosen(res)) == {"t0001.jpg", "t0003.jpg"}
    with pytest.raises(StackkitError, match="no test sample clears"):
        pseudo_label(store, "ens", threshold=0.9, class_thresholds={schema_class(store, 2): 0.99},
                     force=True)  # fmt: skip


def schema_class(store, c: int) -> str:
    return store.read_folds().classes[c]


def test_balance_caps_each_class_at_its_train_share(store):
    """Per fold: each class at most its share of fold k's training labels."""
    folds = store.read_folds()
    train = folds.labels[folds.fold_ids != 0]
    share = np.bincount(train, minlength=C) / len(train)
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(60, int), rng.integers(0, C, 40)]  # class 0 over-represented
    confs = rng.uniform(0.91, 1.0, len(labels))
    write_ensemble(store, peaked(labels, confs))
    res = pseudo_label(store, "ens", balance=True)
    counts = np.bincount(fold0(res)["label"], minlength=C)
    cand = np.bincount(labels, minlength=C)
    caps = np.ceil(share * len(labels) - 1e-9)
    np.testing.assert_array_equal(counts, np.minimum(cand, caps))
    assert counts[0] < cand[0]
    kept0 = np.sort(fold0(res).query("label == 0")["confidence"].to_numpy())
    assert kept0.min() >= np.sort(confs[labels == 0])[-len(kept0)] - 1e-6
    assert res.meta["rule"]["balance"] is True


def test_select_matches_a_loop_reference(rng):
    proba = softmax(rng.normal(0, 3, (400, 6)))
    thr = np.array([0.5, 0.6, 0.7, 0.5, 0.9, 0.4])
    got, cand = select(proba, thr, max_per_class=7)
    label, conf = proba.argmax(1), proba.max(1)
    expected = []
    for c in range(6):
        idx = [i for i in range(400) if label[i] == c and conf[i] >= thr[c]]
        assert cand[c] == len(idx)
        expected += sorted(idx, key=lambda i: (-conf[i], i))[:7]
    np.testing.assert_array_equal(got, np.sort(expected))


# --------------------------------------------------------------------------------------------
# what is written


def test_metadata_and_round_trip(store):
    d = write_ensemble(store, peaked([0, 0, 5, 17], [0.99, 0.93, 0.97, 0.6]))
    res = pseudo_label(store, "ens", threshold=0.9, max_per_class=5, name="p1")
    folds = store.read_folds()
    df, meta = store.read_pseudo("p1", folds)
    assert res.path == store.pseudo_dir("p1") / "pseudo.parquet"
    assert df.equals(res.frame.astype(schema.PSEUDO_COLUMNS))
    assert meta["version"] == 1
    assert meta["ensemble"] == "ens"
    assert meta["rows_hash"] == rows_hash(df)
    assert meta["folds_hash"] == folds.hash
    assert meta["rule"] == {
        "threshold": 0.9, "class_thresholds": {}, "max_per_class": 5, "balance": False,
    }  # fmt: skip
    assert meta["per_class"] == {
        c: (10 if i == 0 else 5 if i == 5 else 0) for i, c in enumerate(folds.classes)
    }
    assert meta["per_fold"] == {str(k): 3 for k in range(5)}
    assert (meta["n_test"], meta["n_chosen"]) == (4, 15)
    assert meta["ensemble_meta"] == "vote"
    assert math.isnan(res.table["mean_confidence"].iloc[1])
    # hashes are of content: a refit that writes the same ensemble at another time, and the same
    # rows chosen again, give the same hashes (a rerun must not look like a new pseudo set)
    info = json.loads((d / "ensemble.json").read_text())
    write_json(
        dict(info, created="2031-01-01T00:00:00+00:00", command=["again"]), d / "ensemble.json"
    )
    again = pseudo_label(store, "ens", threshold=0.9, max_per_class=5, name="p2")
    assert again.meta["ensemble_hash"] == meta["ensemble_hash"]
    assert again.meta["rows_hash"] == meta["rows_hash"]


def test_default_name_is_the_ensemble(store):
    write_ensemble(store, peaked([1], [0.99]), name="lr")
    assert pseudo_label(store, "lr").path == store.pseudo_dir("lr") / "pseudo.parquet"


def test_a_set_from_other_folds_is_refused(store, small_case):
    write_ensemble(store, peaked([1, 2], [0.99, 0.95]))
    pseudo_label(store, "ens")
    f = small_case.folds
    other = make_folds(
        f.frame["sample_id"], f.frame["group"], f.frame["label"], f.classes, n_folds=5, seed=99
    )
    assert other.hash != f.hash
    store.write_folds(other, force=True)
    with pytest.raises(ContractError, match=r"pseudo\.parquet: made on another fold assignment"):
        store.read_pseudo("ens", store.read_folds())
    with pytest.raises(ContractError, match=r"ensemble\.json: made on another fold assignment"):
        pseudo_label(store, "ens", force=True)


# --------------------------------------------------------------------------------------------
# bad input: one table


def _run_changed(store):
    write_ensemble(store, peaked([0], [0.99]))
    d = store.run_dir("p")
    df = pd.read_parquet(d / "test.parquet")
    df["logit_0"] += 1.0
    write_parquet(df, d / "test.parquet")


def _edit_ensemble(**changes):
    def setup(store):
        d = write_ensemble(store, peaked([0], [0.99]))
        info = json.loads((d / "ensemble.json").read_text())
        info.update(changes)
        write_json({k: v for k, v in info.items() if v is not None}, d / "ensemble.json")

    return setup


def _no_folds_hash(store):
    d = write_ensemble(store, peaked([0], [0.99]))
    write_json({"name": "ens", "inputs": {"runs": []}, "meta": "vote"}, d / "ensemble.json")


BAD = [
    ("threshold 0", {"threshold": 0.0}, None, r"threshold must lie in \(0, 1\], got 0\.0"),
    ("threshold > 1", {"threshold": 1.5}, None, r"threshold must lie in \(0, 1\], got 1\.5"),
    ("threshold < 0", {"threshold": -0.1}, None, r"threshold must lie in"),
    ("max_per_class 0", {"max_per_class": 0}, None, r"max_per_class must be at least 1, got 0"),
    ("unknown class", {"class_thresholds": {"mask_cat": 0.5}}, None, r"unknown class 'mask_cat'"),
    ("class thr > 1", {"class_thresholds": {"wear_male_<30": 2.0}}, None, r"'wear_male_<30' must lie in"),
    ("missing ensemble", {"ensemble": "nope"}, None, r"ensembles/nope does not exist \(ensembles present: ens"),
    ("run changed", {}, _run_changed, r"ensemble\.json: run 'p' changed after the ensemble was fitted; refit"),
    ("no meta", {}, _edit_ensemble(meta=None), r"ensemble\.json: lacks 'meta'"),
    ("blend, no parts", {}, _edit_ensemble(meta="blend"), r"ensemble\.json: a blend without params\.candidates"),
    ("no runs", {}, _edit_ensemble(inputs={"folds_hash": None}), r"ensemble\.json: lacks inputs\.folds_hash"),
    ("other folds", {}, lambda s: write_ensemble(s, peaked([0], [0.99]), folds_hash="ab" * 32), r"ensemble\.json: made on another fold"),
    ("no folds hash", {}, _no_folds_hash, r"ensemble\.json: lacks inputs\.folds_hash"),
    ("nothing clears", {"threshold": 0.999}, None, r"no test sample clears the threshold in any fold \(highest confidence 0\.950\).*lower --threshold"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "kwargs", "setup", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input(store, case, kwargs, setup, message):
    if setup is None:
        write_ensemble(store, peaked([0, 1], [0.95, 0.9]))
    else:
        setup(store)
    kwargs = {"ensemble": "ens", **kwargs}
    with pytest.raises(StackkitError, match=message) as info:
        pseudo_label(store, **kwargs)
    assert "\n" not in str(info.value)
    assert not store.pseudo_dir("ens").exists()


@pytest.mark.parametrize("item", ["wear_male_<30", "=0.5", "wear_male_<30=high", "x=="])
def test_parse_class_thresholds_rejects(item):
    with pytest.raises(StackkitError, match="must look like CLASS=T"):
        parse_class_thresholds([item])


def test_parse_class_thresholds():
    assert parse_class_thresholds(["none_male_60+=0.8", " wear_female_<30 = 0.95"]) == {
        "none_male_60+": 0.8,
        "wear_female_<30": 0.95,
    }
    assert parse_class_thresholds(None) == {}


# --------------------------------------------------------------------------------------------
# CLI

runner = CliRunner()


def test_cli_prints_the_table_and_writes(store):
    write_ensemble(store, peaked([0, 0, 0, 6, 17], [0.99, 0.97, 0.95, 0.9, 0.2]))
    args = ["pseudo-label", "--ensemble", "ens", "--artifacts", str(store.root)]
    res = runner.invoke(app, [*args, "--max-per-class", "2", "--class-threshold", "incorrect_male_<30=0.85", "--name", "p"])  # fmt: skip
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["class", "candidates", "chosen", "mean", "confidence"]
    row = next(line for line in lines if line.startswith("wear_male_<30"))
    assert row.split() == ["wear_male_<30", "15", "10", "0.980"]  # 3 and 2 in each of 5 folds
    assert "fold 0: 3, fold 1: 3, fold 2: 3, fold 3: 3, fold 4: 3" in lines[-2]
    assert "chose 15 rows over 5 folds from 5 test samples" in lines[-1]
    _, meta = store.read_pseudo("p", store.read_folds())
    assert meta["rule"]["class_thresholds"] == {"incorrect_male_<30": 0.85}
    assert meta["rule"]["max_per_class"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--threshold", "1.5"], "threshold must lie in (0, 1]"),
        (["--class-threshold", "cat=0.5"], "unknown class 'cat'"),
        (["--class-threshold", "cat"], "must look like CLASS=T"),
        (["--threshold", "0.999"], "lower --threshold"),
    ],
)
def test_cli_errors_are_one_line(store, extra, message):
    write_ensemble(store, peaked([0], [0.95]))
    res = runner.invoke(
        app, ["pseudo-label", "--ensemble", "ens", "--artifacts", str(store.root), *extra]
    )
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ")
    assert message in res.stderr
    assert "Traceback" not in res.output


def test_cli_missing_ensemble(store):
    res = runner.invoke(app, ["pseudo-label", "--ensemble", "gone", "--artifacts", str(store.root)])
    assert res.exit_code == 1
    assert "ensembles/gone does not exist (ensembles present: none" in res.stderr
