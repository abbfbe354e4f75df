"""Bad values, one row each (issue 11): every one is refused in one line naming the option or
the file, with a non-zero exit, no traceback and nothing written. Rows marked ``early`` must be
refused before any work: before a run is read (``Store.load_runs`` and ``Store.read_run`` are
booby-trapped for them)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from stackkit.cli import app
from stackkit.contract.store import Store


@dataclass
class Ctx:
    store: Store
    tmp: Path
    case: object  # the small synthetic case of conftest (folds, runs' frames)


def fit(*args):
    return lambda ctx: ["fit", "--meta", "lr", *args]


# --------------------------------------------------------------------------------------------
# files handed to `stackkit import`: run00's scores, spoiled one way each


def _oof(ctx) -> pd.DataFrame:
    return ctx.case.oof["run00"].copy()


def _import(ctx, oof_name: str, *extra) -> list[str]:
    test = ctx.tmp / "test.parquet"
    ctx.case.test["run00"].to_parquet(test)
    return ["import", "ext", "--oof", str(ctx.tmp / oof_name), "--test", str(test), *extra]


def npy_of(dtype):
    def build(ctx):
        o = _oof(ctx)
        x = o.filter(like="logit_").to_numpy()
        np.save(ctx.tmp / "o.npy", x.astype(dtype) if dtype != "str" else x.astype(str))
        (ctx.tmp / "ids.txt").write_text("\n".join(o["sample_id"]))
        return _import(ctx, "o.npy", "--oof-ids", str(ctx.tmp / "ids.txt"), "--made-on-these-folds")

    return build


def category_column(ctx):
    o = _oof(ctx)  # categories of numbers as text: parquet keeps those as a category column
    o["logit_3"] = o["logit_3"].astype(str).astype("category")
    o.to_parquet(ctx.tmp / "o.parquet")
    return _import(ctx, "o.parquet")


def header_only_csv(ctx):
    _oof(ctx).iloc[:0].to_csv(ctx.tmp / "o.csv", index=False)
    return _import(ctx, "o.csv")


def text_in_logits(ctx):
    o = _oof(ctx).astype({"logit_3": object})
    o.loc[o.index[2], "logit_3"] = "abc"
    o.to_csv(ctx.tmp / "o.csv", index=False)
    return _import(ctx, "o.csv")


def huge_logit_import(ctx):
    o = _oof(ctx).astype({"logit_0": np.float64})
    o.loc[o.index[4], "logit_0"] = 1e300
    o.to_parquet(ctx.tmp / "o.parquet")
    return _import(ctx, "o.parquet")


def no_fold_column(ctx):
    _oof(ctx).drop(columns="fold").to_parquet(ctx.tmp / "o.parquet")
    return _import(ctx, "o.parquet")


# --------------------------------------------------------------------------------------------
# an artifacts folder spoiled one way each, then `fit` or `report`


def _run_json(ctx, run, **changes):
    path = ctx.store.run_dir(run) / "run.json"
    info = json.loads(path.read_text())
    info.update(changes)
    path.write_text(json.dumps(info))


def run_json(**changes):
    def build(ctx):
        _run_json(ctx, "run01", **changes)
        return ["fit", "--meta", "vote"]

    return build


def huge_stored_logit(ctx):
    path = ctx.store.run_dir("run02") / "oof.parquet"
    df = pq.read_table(path).to_pandas().astype({"logit_5": np.float64})
    df.loc[7, "logit_5"] = -1e300
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    return ["fit", "--meta", "vote"]


def folds_data_not_object(ctx):
    table = pq.read_table(ctx.store.folds_path)
    meta = json.loads(table.schema.metadata[b"stackkit"])
    meta["data"] = "mask"
    table = table.replace_schema_metadata({b"stackkit": json.dumps(meta).encode()})
    pq.write_table(table, ctx.store.folds_path)
    return ["fit", "--meta", "vote"]


def ensemble_without(*keys):
    def build(ctx):
        d = ctx.store.root / "ensembles" / "bare"
        d.mkdir(parents=True)
        info = {"name": "bare", "meta": "vote", "inputs": {"runs": [], "folds_hash": ""},
                "scores": {}}  # fmt: skip
        (d / "ensemble.json").write_text(json.dumps({k: v for k, v in info.items()
                                                     if k not in keys}))  # fmt: skip
        (d / "leaderboard.json").write_text(json.dumps({"selected": "vote", "candidates": []}))
        return ["report", "--ensemble", "bare"]

    return build


def run_links_outside(ctx):
    outside = ctx.tmp / "elsewhere"
    shutil.copytree(ctx.store.run_dir("run00"), outside)
    (ctx.store.root / "runs" / "linked").symlink_to(outside, target_is_directory=True)
    return ["fit", "--meta", "vote", "--runs", "linked,run01"]


# --------------------------------------------------------------------------------------------
# the table: (id, command builder, substrings of the one-line error, refused before any work)

CASES = [
    ("param-text", fit("--param", "lr.C=abc"),
     ["--param lr.C=abc", "'C' parameter of LRLearner", "Got 'abc'"], True),
    ("param-negative", fit("--param", "lr.C=-1"), ["--param lr.C=-1", "(0.0, inf]"], True),
    ("param-nan", fit("--param", "lr.C=nan"), ["--param lr.C=nan", "Got nan"], True),
    ("param-float-for-int", fit("--param", "rf.n_estimators=1.5", "--meta", "rf"),
     ["--param rf.n_estimators=1.5", "must be an int in the range [1, inf)"], True),
    ("param-xgboost-range", fit("--param", "xgboost.max_depth=-3", "--meta", "xgboost"),
     ["--param xgboost.max_depth=-3", "'max_depth' parameter of XGBLearner"], True),
    ("param-caruana-text", fit("--param", "caruana.max_iter=abc", "--meta", "caruana"),
     ["--param caruana.max_iter=abc", "'max_iter' parameter of CaruanaSelection"], True),
    ("param-features", fit("--param", "lr.features=bogus"),
     ["--param lr.features=bogus", "'features' parameter", "'logprob'"], True),
    ("param-n-jobs-text", fit("--param", "lr.n_jobs=abc"), ["--param lr.n_jobs=abc"], True),
    ("param-knn-zero", fit("--param", "knn.n_neighbors=0", "--meta", "knn"),
     ["--param knn.n_neighbors=0", "[1, inf)"], True),
    ("param-knn-too-many", fit("--param", "knn.n_neighbors=100000", "--meta", "knn"),
     ["--param knn.n_neighbors=100000", "smallest training split"], True),
    ("param-learner-not-fitted", fit("--param", "rf.n_estimators=abc", "--meta", "vote"),
     ["--param rf.n_estimators=abc"], True),
    ("param-unknown-name", fit("--param", "lr.Cee=1"), ["--param lr.Cee", "no parameter"], True),
    ("param-leaderboard", lambda ctx: ["leaderboard", "--param", "svm.C=0"],
     ["--param svm.C=0", "'C' parameter of SVMLearner"], True),
    ("n-jobs-zero", fit("--n-jobs", "0"), ["--n-jobs 0"], True),
    ("n-jobs-zero-leaderboard", lambda ctx: ["leaderboard", "--n-jobs", "0"], ["--n-jobs 0"], True),
    ("npy-complex", npy_of(np.complex128), ["o.npy", "complex128", "real numbers"], True),
    ("npy-string", npy_of("str"), ["o.npy", "<U", "real numbers"], True),
    ("category-logit", category_column, ["o.parquet", "logit_3", "category"], True),
    ("header-only-csv", header_only_csv, ["o.csv", "no rows"], True),
    ("text-in-logit", text_in_logits, ["o.csv", "logit_3", "'abc'", "row 2"], True),
    ("import-1e300", huge_logit_import,
     ["run 'ext'", "o.parquet", "logit_0 is 1e+300", "float32"], True),
    ("import-no-fold-column", no_fold_column,
     ["o.parquet", "no fold column", "--made-on-these-folds"], True),
    ("read-1e300", huge_stored_logit,
     ["run 'run02'", "oof.parquet", "row 7", "logit_5 is -1e+300", "float32"], False),
    ("classes-number", run_json(classes=18), ["run 'run01'", "run.json", "'classes'", "18"],
     False),
    ("classes-null", run_json(classes=None), ["run 'run01'", "run.json", "'classes'", "null"],
     False),
    ("model-object", run_json(model={"name": "x"}), ["run 'run01'", "run.json", "'model'"], False),
    ("folds-data-not-object", folds_data_not_object,
     ["folds.parquet", "'data' must be a JSON object"], True),
    ("report-no-inputs", ensemble_without("inputs"),
     ["ensemble 'bare'", "ensemble.json", "missing key(s) inputs"], True),
    ("report-no-scores", ensemble_without("scores"),
     ["ensemble 'bare'", "ensemble.json", "missing key(s) scores"], True),
    ("run-links-outside", run_links_outside, ["'linked'", "symbolic link", "outside"], True),
]  # fmt: skip


@pytest.fixture
def booby_trap(monkeypatch):
    """Make reading a run fail loudly: an early refusal never gets there."""

    def boom(*args, **kwargs):
        raise AssertionError("a run was read before the bad value was refused")

    def arm():
        monkeypatch.setattr(Store, "load_runs", boom)
        monkeypatch.setattr(Store, "read_run", boom)

    return arm


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(("build", "expected", "early"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_bad_value_is_refused_in_one_line(store, small_case, tmp_path, booby_trap, build,
                                          expected, early):  # fmt: skip
    ctx = Ctx(store, tmp_path, small_case)
    args = build(ctx)
    before = _tree(store.root)
    if early:
        booby_trap()
    result = CliRunner().invoke(app, [*args, "--artifacts", str(store.root), "--no-cache"]
                                if args[0] in ("fit", "leaderboard")
                                else [*args, "--artifacts", str(store.root)])  # fmt: skip
    assert result.exit_code == 1, result.output
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for part in expected:
        assert part in err[-1], f"{part!r} not in {err[-1]!r}"
    assert _tree(store.root) == before  # nothing written


def test_probabilities_given_as_logits_are_imported_with_a_warning(store, small_case, tmp_path):
    """Probabilities passed as logits are valid logits (softmax keeps their order), so they are
    imported, but the warning names the file and the fix."""
    o = small_case.oof["run00"]
    p = pd.DataFrame(np.exp(o.filter(like="logit_").to_numpy()))
    p = p.div(p.sum(axis=1), axis=0).add_prefix("logit_")
    o[["sample_id", "fold"]].reset_index(drop=True).join(p).to_parquet(tmp_path / "p.parquet")
    small_case.test["run00"].to_parquet(tmp_path / "t.parquet")
    result = CliRunner().invoke(app, ["import", "probs", "--oof", str(tmp_path / "p.parquet"),
                                      "--test", str(tmp_path / "t.parquet"),
                                      "--artifacts", str(store.root)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "p.parquet: every row lies in [0, 1] and sums to 1" in result.stderr
    assert "--kind proba" in result.stderr
