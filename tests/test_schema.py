"""The contract's rules, checked on hand-made frames."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stackkit.contract import schema
from stackkit.contract.errors import ContractError
from stackkit.contract.store import Store

META = {"version": 1, "classes": ["a", "b", "c"], "n_folds": 2, "seed": 7}


def folds_frame():
    return pd.DataFrame(
        {
            "sample_id": ["s1", "s2", "s3", "s4"],
            "group": ["g1", "g1", "g2", "g3"],
            "label": [0, 1, 2, 0],
            "fold": [0, 0, 1, 1],
        }
    )


def test_folds_hash_is_sha256_of_sorted_lines():
    ids, folds = ["b", "a", "c"], [1, 0, 1]
    expected = hashlib.sha256(b"a,0\nb,1\nc,1").hexdigest()
    assert schema.folds_hash(ids, folds) == expected


def test_validate_folds_normalises_dtypes():
    f = schema.validate_folds(folds_frame(), META)
    assert f.frame["label"].dtype == np.int16 and f.frame["fold"].dtype == np.int8
    assert f.classes == ("a", "b", "c") and f.n_folds == 2 and f.seed == 7
    assert f.hash == schema.folds_hash(["s1", "s2", "s3", "s4"], [0, 0, 1, 1])


# (change to folds_frame(), metadata, what the one-line refusal says)
BAD_FOLDS = [
    (
        lambda d: d.assign(label=[0, 1, 3, 0]),
        META,
        "row 2 (sample_id 's3'): label 3 is outside [0, 3)",
    ),
    (lambda d: d.assign(fold=[0, 0, 0, 0]), META, "fold(s) [1] have no rows"),
    (lambda d: d.assign(fold=[0, 1, 1, 1]), META, "group 'g1' straddles folds [0, 1]"),
    (
        lambda d: d.assign(sample_id=["s1", "s1", "s3", "s4"]),
        META,
        "row 1 (sample_id 's1'): duplicate",
    ),
    (lambda d: d.assign(sample_id=["s1", "", "s3", "s4"]), META, "row 1: sample_id is empty"),
    (lambda d: d.drop(columns="group"), META, "missing column(s) group"),
    (lambda d: d.assign(fold=[0.0, 0.0, 1.0, 1.0]), META, "column fold must be integer"),
    (lambda d: d, None, "schema metadata key 'stackkit' is missing"),
    (lambda d: d, {**META, "version": 2}, "contract version 2"),
    (lambda d: d, {**META, "classes": ["a", "a", "c"]}, "duplicate names"),
    (lambda d: d, {**META, "n_folds": 1}, "'n_folds' must be an integer >= 2"),
    (lambda d: d.assign(sample_id=["s1", None, "s3", "s4"]), META, "sample_id is not a string"),
    (lambda d: d.assign(group=["g1", "g1", None, "g3"]), META, "group is not a string"),
    (lambda d: d.assign(group=["g1", "g1", "", "g3"]), META, "row 2: group is empty"),
    (lambda d: d.assign(label=[0, None, 2, 0]), META, "column label must be integer"),
    (lambda d: d.assign(fold=[0, 0, -1, 1]), META, "fold -1 is outside [0, 2)"),
    (lambda d: d.assign(label=[True, False, True, True]), META, "column label must be integer"),
    (lambda d: d.assign(sample_id=[1, 2, 3, 4]), META, "column sample_id must be string"),
    (lambda d: d.iloc[:0], META, "has no rows"),
]


@pytest.mark.parametrize(("change", "meta", "message"), BAD_FOLDS)
def test_validate_folds_refuses(change, meta, message):
    with pytest.raises(ContractError, match=None) as exc:
        schema.validate_folds(change(folds_frame()), meta, "folds.parquet")
    assert message in str(exc.value)
    assert str(exc.value).startswith("folds.parquet: ")


def write_folds_file(path, df: pd.DataFrame, meta: dict | None) -> None:
    """folds.parquet as any writer might make it (pyarrow's own types, no validation)."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    if meta is not None:
        table = table.replace_schema_metadata(
            {**table.schema.metadata, schema.META_KEY: schema.meta_json(meta)}
        )
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path / schema.FOLDS_FILE)


@pytest.mark.parametrize(("change", "meta", "message"), BAD_FOLDS)
def test_read_folds_refuses_as_the_full_validation_does(change, meta, message, tmp_path):
    """read_folds checks a file with numpy first (no pandas): whatever that check lets through
    must be what the full validation accepts, so every refusal above comes out of the file too,
    in the same words."""
    write_folds_file(tmp_path, change(folds_frame()), meta)
    table = pq.read_table(tmp_path / schema.FOLDS_FILE)
    if meta is META:
        assert schema.folds_from_table(table, meta) is None
    with pytest.raises(ContractError) as exc:
        Store(tmp_path).read_folds()
    assert message in str(exc.value)
    assert str(exc.value).startswith("folds.parquet: ")


def test_folds_read_without_pandas_equal_the_full_validation(store):
    """The numpy reading of folds.parquet gives what the pandas validation gives: the same
    columns and dtypes, the same frame, the same hashes."""
    fast = store.read_folds()
    full = schema.validate_folds(*_frame_and_meta(store))
    assert set(fast.columns) == set(full.columns) == set(schema.FOLDS_COLUMNS)
    for c in schema.FOLDS_COLUMNS:
        assert fast.columns[c].dtype == full.columns[c].dtype
        np.testing.assert_array_equal(fast.columns[c], full.columns[c])
    pd.testing.assert_frame_equal(fast.frame, full.frame)
    assert fast.frame.dtypes.astype(str).tolist() == ["string", "string", "int16", "int8"]
    assert (fast.hash, fast.rows_hash) == (full.hash, full.rows_hash)
    assert (fast.classes, fast.n_folds, fast.seed, fast.meta) == (
        full.classes, full.n_folds, full.seed, full.meta)  # fmt: skip


def _frame_and_meta(store):
    import json

    table = pq.read_table(store.folds_path)
    return table.to_pandas(), json.loads(table.schema.metadata[schema.META_KEY])


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.assign(label=[0, 1, 2, 1]),
        lambda d: d.assign(fold=[0, 0, 1, 0]),
        lambda d: d.assign(sample_id=["s1", "s2", "s3", "s5"]),
        lambda d: d.iloc[[1, 0, 2, 3]],
    ],
)
def test_rows_hash_covers_ids_labels_folds_and_their_order(change):
    """The CV cache's key for the rows: a changed label, fold, id or row order changes it (the
    cached OOF arrays depend on each), whichever way the folds were read."""
    base = schema.validate_folds(folds_frame(), META)
    table = pa.Table.from_pandas(folds_frame(), preserve_index=False)
    assert schema.folds_from_table(table, META).rows_hash == base.rows_hash
    assert schema.validate_folds(change(folds_frame()), META).rows_hash != base.rows_hash


def test_positions_are_the_pandas_index_positions():
    f = schema.validate_folds(folds_frame(), META)
    ids = ["s3", "x", "s1", "s4", "", "s2"]
    np.testing.assert_array_equal(f.positions(ids), f.index.get_indexer(ids))


def test_oof_rows_are_reordered_to_canonical_frame():
    folds = schema.validate_folds(folds_frame(), META)
    oof = pd.DataFrame(
        {"sample_id": ["s4", "s3", "s2", "s1"], "fold": [1, 1, 0, 0]}
        | {f"logit_{c}": np.arange(4.0) + c for c in range(3)}
    )
    out = schema.validate_oof(oof, folds, "x")
    assert out["fold"].dtype == np.int8 and out["logit_0"].dtype == np.float32
    assert list(out.columns) == ["sample_id", "fold", "logit_0", "logit_1", "logit_2"]


def test_proba_frame_rows_sum_to_one():
    df = schema.proba_frame(["a", "b"], np.array([[1.0, 3.0], [2.0, 2.0]]))
    p = df[["prob_0", "prob_1"]].to_numpy()
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(p[0], [0.25, 0.75], rtol=1e-6)
