"""Bad input, one row each: a one-line error naming the run, the file and the first offending
row; a non-zero exit; nothing written."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from stackkit.cli import app


def _rewrite(path, fn):
    """Read a parquet file, change the frame, write it back bypassing every validator."""
    table = pq.read_table(path)
    df = fn(table.to_pandas())
    new = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(new.replace_schema_metadata(table.schema.metadata), path)


def _json(path, fn):
    info = json.loads(path.read_text())
    fn(info)
    path.write_text(json.dumps(info))


def missing_folds(s):
    s.folds_path.unlink()


def missing_ids(s):
    _rewrite(s.run_dir("run01") / "oof.parquet", lambda d: d.iloc[5:])


def extra_ids(s):
    def f(d):
        extra = d.iloc[[0]].assign(sample_id="stranger/img0")
        return pd.concat([d, extra], ignore_index=True)

    _rewrite(s.run_dir("run01") / "oof.parquet", f)


def duplicate_ids(s):
    _rewrite(s.run_dir("run01") / "oof.parquet", lambda d: pd.concat([d, d.iloc[[3]]]))


def wrong_fold(s):
    def f(d):
        d = d.copy()
        d.loc[7, "fold"] = (d.loc[7, "fold"] + 1) % 5
        return d

    _rewrite(s.run_dir("run01") / "oof.parquet", f)


def hash_mismatch(s):
    _json(s.run_dir("run01") / "run.json", lambda i: i.update(folds_hash="0" * 64))


def class_count(s):
    _json(s.run_dir("run01") / "run.json", lambda i: i.update(classes=i["classes"][:-1]))


def extra_logit(s):
    _rewrite(s.run_dir("run01") / "oof.parquet", lambda d: d.assign(logit_18=0.0))


def class_names(s):
    def f(i):
        i["classes"][2] = "renamed"

    _json(s.run_dir("run01") / "run.json", f)


def nan_logit(s):
    def f(d):
        d = d.copy()
        d.loc[11, "logit_4"] = np.nan
        return d

    _rewrite(s.run_dir("run01") / "oof.parquet", f)


def inf_logit(s):
    def f(d):
        d = d.copy()
        d.loc[0, "logit_0"] = np.inf
        return d

    _rewrite(s.run_dir("run02") / "test.parquet", f)


def other_test_ids(s):
    def f(d):
        d = d.copy()
        d.loc[d["sample_id"] == d["sample_id"].iloc[0], "sample_id"] = "other.jpg"
        return d

    _rewrite(s.run_dir("run02") / "test.parquet", f)


def missing_test_fold(s):
    _rewrite(s.run_dir("run01") / "test.parquet", lambda d: d.drop(index=[d.index[-1]]))


def group_straddles(s):
    def f(d):
        d = d.copy()
        g = d["group"].iloc[0]
        first = d.index[d["group"] == g][0]
        d.loc[first, "fold"] = (d.loc[first, "fold"] + 1) % 5
        return d

    _rewrite(s.folds_path, f)


def not_parquet(s):
    (s.run_dir("run01") / "oof.parquet").write_text("sample_id,fold\nnot,parquet\n")


def truncated(s):
    p = s.run_dir("run00") / "test.parquet"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def no_runs(s):
    import shutil

    shutil.rmtree(s.root / "runs")


CASES = [
    # (mutation, extra CLI args, substrings the one-line error must contain)
    (missing_folds, [], ["folds.parquet", "not found"]),
    (missing_ids, [], ["run 'run01'", "runs/run01/oof.parquet", "first missing sample_id"]),
    (extra_ids, [], ["run 'run01'", "oof.parquet", "row 840", "'stranger/img0'", "not in folds"]),
    (duplicate_ids, [], ["run 'run01'", "oof.parquet", "row 840", "duplicate sample_id"]),
    (wrong_fold, [], ["run 'run01'", "oof.parquet", "row 7", "disagrees with folds.parquet"]),
    (
        hash_mismatch,
        ["--runs", "run00,run01"],
        ["run 'run01'", "run.json", "folds_hash", "does not match"],
    ),
    (class_count, [], ["run 'run01'", "run.json", "17 classes", "18"]),
    (extra_logit, [], ["run 'run01'", "oof.parquet", "logit", "18 classes"]),
    (class_names, [], ["run 'run01'", "run.json", "class 2", "'renamed'"]),
    (nan_logit, [], ["run 'run01'", "oof.parquet", "row 11", "logit_4", "finite"]),
    (inf_logit, [], ["run 'run02'", "test.parquet", "row 0", "logit_0", "finite"]),
    (other_test_ids, [], ["run 'run02'", "test.parquet", "'other.jpg'", "test ids"]),
    (missing_test_fold, [], ["run 'run01'", "test.parquet", "lacks rows for fold(s) [4]"]),
    (group_straddles, [], ["folds.parquet", "row 0", "straddles folds"]),
    (not_parquet, [], ["run 'run01'", "oof.parquet", "not a readable parquet file"]),
    (truncated, [], ["run 'run00'", "test.parquet", "not a readable parquet file"]),
    (None, ["--meta", "magic"], ["--meta", "unknown meta learner 'magic'"]),
    (None, ["--runs", "run00,nope"], ["--runs", "unknown run 'nope'"]),
    (None, ["--runs", ","], ["--runs", "empty"]),
    (no_runs, [], ["no runs"]),
]


@pytest.mark.parametrize(
    ("mutate", "args", "expected"), CASES, ids=[c[0].__name__ if c[0] else c[1][0] for c in CASES]
)
def test_bad_input_is_refused_with_one_line(store, mutate, args, expected):
    if mutate is not None:
        mutate(store)
    args = args or ["--meta", "vote"]
    result = CliRunner().invoke(app, ["fit", *args, "--artifacts", str(store.root), "--no-cache"])
    assert result.exit_code == 1, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for part in expected:
        assert part in err, f"{part!r} not in {err!r}"
    assert "Traceback" not in result.output
    assert not (store.root / "ensembles").exists()  # nothing written
