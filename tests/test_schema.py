"""The contract's rules, checked on hand-made frames."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from stackkit.contract import schema
from stackkit.contract.errors import ContractError

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


@pytest.mark.parametrize(
    ("change", "meta", "message"),
    [
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
    ],
)
def test_validate_folds_refuses(change, meta, message):
    with pytest.raises(ContractError, match=None) as exc:
        schema.validate_folds(change(folds_frame()), meta, "folds.parquet")
    assert message in str(exc.value)
    assert str(exc.value).startswith("folds.parquet: ")


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
