"""The artifact contract (CONTRACT.md, version 1) in one place: names, dtypes and validators.

Every read and every write of folds, runs, ensembles and pseudo-label sets goes through the
functions here (``stackkit.contract.store`` does the I/O). A validator returns a normalised frame
(canonical dtypes) or raises :class:`~stackkit.contract.errors.ContractError` with one line that names
the run, the file and the first offending row.

Readers accept any integer width for integer columns and any float width for logits, as long as
every value fits the rule; writers always write the exact dtypes of the contract.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from stackkit.contract.errors import ContractError

if TYPE_CHECKING:  # pandas is imported where a frame is made or checked: reading runs needs none
    import pandas as pd

CONTRACT_VERSION = 1
META_KEY = b"stackkit"  # parquet schema-metadata key holding a JSON object

FOLDS_FILE = "folds.parquet"
OOF_FILE = "oof.parquet"
TEST_FILE = "test.parquet"
RUN_FILE = "run.json"
PSEUDO_FILE = "pseudo.parquet"
ENSEMBLE_FILES = (
    "oof_proba.parquet",
    "test_proba.parquet",
    "submission.csv",
    "leaderboard.json",
    "ensemble.json",
)

META_NAMES = ("vote", "caruana", "lr", "svm", "knn", "rf", "xgboost", "blend")  # blend: added

FOLDS_COLUMNS = {"sample_id": "string", "group": "string", "label": "int16", "fold": "int8"}
RUN_INFO_REQUIRED = (
    "run",
    "model",
    "classes",
    "n_folds",
    "folds_hash",
    "seed",
    "tta",
    "metrics",
    "created",
    "versions",
    "config",
    "pseudo",
)


RUN_INFO_TYPES = (  # (key, type, in words): what the readers rely on
    ("run", str, "a string"),
    ("model", str, "a string"),
    ("classes", list, "a list of class names"),
    ("n_folds", int, "an integer"),
    ("folds_hash", str, "a string"),
    ("seed", int, "an integer"),
)


def logit_columns(n_classes: int) -> list[str]:
    return [f"logit_{c}" for c in range(n_classes)]


def prob_columns(n_classes: int) -> list[str]:
    return [f"prob_{c}" for c in range(n_classes)]


def numbers(column: pa.ChunkedArray) -> np.ndarray:
    """A numeric column without nulls as numpy (a view of it when it is one chunk). Not
    ``to_numpy``: pyarrow converts through its pandas layer, and imports pandas to do it."""
    return column.combine_chunks().to_tensor().to_numpy()


def folds_hash(sample_ids, folds) -> str:
    """sha256 of the lines ``sample_id,fold`` sorted by sample_id, joined with ``\\n``."""
    order = np.argsort(np.asarray(sample_ids, dtype=object).astype(str), kind="stable")
    ids = np.asarray(sample_ids, dtype=object)[order]
    fs = np.asarray(folds)[order]
    text = "\n".join(f"{s},{int(f)}" for s, f in zip(ids, fs))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------
# helpers shared by the validators


def _row(df: pd.DataFrame, pos: int) -> str:
    sid = df["sample_id"].iloc[pos] if "sample_id" in df.columns else None
    return f"row {pos}" + (f" (sample_id {sid!r})" if sid is not None else "")


def _fail(where: str, msg: str) -> ContractError:
    return ContractError(f"{where}: {msg}".replace("\n", " "))


def _require_columns(df: pd.DataFrame, columns: list[str], where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise _fail(where, f"missing column(s) {', '.join(missing)}")


def _string_column(df: pd.DataFrame, col: str, where: str) -> pd.Series:
    import pandas as pd

    s = df[col]
    bad = s.isna().to_numpy()
    if not (pd.api.types.is_string_dtype(s) or pd.api.types.is_object_dtype(s)):
        raise _fail(where, f"column {col} must be string, got {s.dtype}")
    if isinstance(s.dtype, pd.StringDtype):  # as parquet string columns read: every value a str
        values, notstr = s, bad
    else:
        values = s.astype(object)
        notstr = np.array([not isinstance(v, str) for v in values]) | bad
    if notstr.any():
        raise _fail(where, f"{_row(df, int(np.argmax(notstr)))}: {col} is not a string")
    empty = (values.str.len() == 0).fillna(False).to_numpy(dtype=bool)
    if empty.any():
        raise _fail(where, f"row {int(np.argmax(empty))}: {col} is empty")
    return values.astype("string")


def _int_column(df: pd.DataFrame, col: str, lo: int, hi: int, dtype: str, where: str) -> np.ndarray:
    import pandas as pd

    s = df[col]
    if not pd.api.types.is_integer_dtype(s):
        raise _fail(where, f"column {col} must be integer, got {s.dtype}")
    v = s.to_numpy()
    bad = (v < lo) | (v >= hi)
    if bad.any():
        pos = int(np.argmax(bad))
        raise _fail(where, f"{_row(df, pos)}: {col} {v[pos]} is outside [{lo}, {hi})")
    return v.astype(dtype)


def _unique_ids(df: pd.DataFrame, where: str) -> None:
    dup = df["sample_id"].duplicated().to_numpy()
    if dup.any():
        raise _fail(where, f"{_row(df, int(np.argmax(dup)))}: duplicate sample_id")


# --------------------------------------------------------------------------------------------
# folds.parquet


@dataclass
class Folds:
    """A validated fold assignment: ``columns`` holds the contract's four columns as arrays in
    file row order (``sample_id`` and ``group`` object arrays of str, ``label`` int16, ``fold``
    int8); ``frame`` is the same as a pandas DataFrame, made on first use (reading runs for the
    meta stage never needs it, nor pandas). Made by :func:`validate_folds` or
    :func:`folds_from_table`, never by hand."""

    columns: dict[str, np.ndarray]
    classes: tuple[str, ...]
    n_folds: int
    seed: int
    meta: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_samples(self) -> int:
        return len(self.columns["fold"])

    @cached_property
    def frame(self) -> pd.DataFrame:
        import pandas as pd

        c = self.columns
        return pd.DataFrame(
            {
                "sample_id": pd.array(c["sample_id"], dtype="string"),
                "group": pd.array(c["group"], dtype="string"),
                "label": c["label"],
                "fold": c["fold"],
            }
        )

    @cached_property
    def hash(self) -> str:
        return folds_hash(self.columns["sample_id"], self.columns["fold"])

    @cached_property
    def rows_hash(self) -> str:
        """sha256 of the rows as the meta stage sees them: sample_id, label and fold, in file
        order (the contract's ``hash`` covers only sample_id and fold, in any order)."""
        c = self.columns
        rows = [c["sample_id"].tolist(), c["label"].tolist(), c["fold"].tolist()]
        return hashlib.sha256(json.dumps(rows).encode("utf-8")).hexdigest()

    @cached_property
    def index(self) -> pd.Index:
        """sample_id -> position in ``frame``."""
        import pandas as pd

        return pd.Index(self.columns["sample_id"])

    def positions(self, ids) -> np.ndarray:
        """Where each of ``ids`` (any sequence) sits in file order (int64), -1 where it is not a
        sample: what ``index.get_indexer`` gives, without pandas."""
        pos = self._positions
        return np.fromiter((pos.get(s, -1) for s in ids), np.int64, len(ids))

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.columns["sample_id"].tolist())}

    @property
    def labels(self) -> np.ndarray:
        return self.columns["label"].astype(np.int64)

    @property
    def fold_ids(self) -> np.ndarray:
        return self.columns["fold"].astype(np.int64)

    def metadata(self) -> dict:
        out = dict(self.meta)
        out.update(
            version=CONTRACT_VERSION,
            classes=list(self.classes),
            n_folds=self.n_folds,
            seed=self.seed,
        )
        return out


def validate_folds_meta(meta: dict | None, where: str) -> tuple[tuple[str, ...], int, int]:
    if not isinstance(meta, dict):
        raise _fail(where, "schema metadata key 'stackkit' is missing or not a JSON object")
    if meta.get("version") != CONTRACT_VERSION:
        raise _fail(where, f"contract version {meta.get('version')!r} is not {CONTRACT_VERSION}")
    classes = meta.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise _fail(where, "metadata 'classes' must be a non-empty list of class names")
    if len(set(classes)) != len(classes):
        raise _fail(where, "metadata 'classes' has duplicate names")
    k, seed = meta.get("n_folds"), meta.get("seed")
    if not isinstance(k, int) or k < 2:
        raise _fail(where, f"metadata 'n_folds' must be an integer >= 2, got {k!r}")
    if not isinstance(seed, int):
        raise _fail(where, f"metadata 'seed' must be an integer, got {seed!r}")
    if not isinstance(meta.get("data", {}), dict):
        raise _fail(where, f"metadata 'data' must be a JSON object, got {meta['data']!r}")
    return tuple(classes), k, seed


def validate_folds(df: pd.DataFrame, meta: dict | None, where: str = FOLDS_FILE) -> Folds:
    """Check every folds.parquet rule and return a :class:`Folds` with canonical dtypes."""
    import pandas as pd

    classes, k, seed = validate_folds_meta(meta, where)
    _require_columns(df, list(FOLDS_COLUMNS), where)
    if len(df) == 0:
        raise _fail(where, "has no rows")
    df = df.reset_index(drop=True)
    out = pd.DataFrame(
        {
            "sample_id": _string_column(df, "sample_id", where),
            "group": _string_column(df, "group", where),
            "label": _int_column(df, "label", 0, len(classes), "int16", where),
            "fold": _int_column(df, "fold", 0, k, "int8", where),
        }
    )
    _unique_ids(out, where)
    per_group = out.groupby("group", sort=False)["fold"].transform("nunique").to_numpy()
    if (per_group > 1).any():
        pos = int(np.argmax(per_group > 1))
        g = out["group"].iloc[pos]
        folds = sorted(out.loc[out["group"] == g, "fold"].unique().tolist())
        raise _fail(where, f"{_row(out, pos)}: group {g!r} straddles folds {folds}")
    present = set(out["fold"].unique().tolist())
    empty = [f for f in range(k) if f not in present]
    if empty:
        raise _fail(where, f"fold(s) {empty} have no rows (n_folds is {k})")
    columns = {c: out[c].to_numpy(dtype=object) for c in ("sample_id", "group")}
    columns.update(label=out["label"].to_numpy(), fold=out["fold"].to_numpy())
    return Folds(columns, classes, k, seed, meta={kk: v for kk, v in meta.items()})


def folds_from_table(table: pa.Table, meta: dict | None, where: str = FOLDS_FILE) -> Folds | None:
    """The :class:`Folds` of a folds.parquet table read by pyarrow, checked with numpy (no
    pandas): None unless its four columns have the contract's types (strings, integers, no
    nulls) and its rows obey every rule of :func:`validate_folds`, which then names the problem.
    The metadata's problems are named here, as there."""
    classes, k, seed = validate_folds_meta(meta, where)
    if table.num_rows == 0 or not set(FOLDS_COLUMNS) <= set(table.column_names):
        return None
    cols = {c: table.column(c) for c in FOLDS_COLUMNS}
    if any(col.null_count for col in cols.values()):
        return None
    if not all(pa.types.is_string(cols[c].type) or pa.types.is_large_string(cols[c].type)
               for c in ("sample_id", "group")):  # fmt: skip
        return None
    if not all(pa.types.is_integer(cols[c].type) for c in ("label", "fold")):
        return None
    # to_pylist, not to_numpy: pyarrow converts strings to numpy through pandas
    ids, groups = (np.array(cols[c].to_pylist(), dtype=object) for c in ("sample_id", "group"))
    label, fold = numbers(cols["label"]), numbers(cols["fold"])
    n = len(ids)
    unique_ids, unique_groups = set(ids.tolist()), set(groups.tolist())
    if (
        len(unique_ids) != n  # a duplicate sample_id
        or "" in unique_ids
        or "" in unique_groups
        or label.min() < 0
        or label.max() >= len(classes)
        or fold.min() < 0
        or fold.max() >= k
        or len(set(zip(groups.tolist(), fold.tolist()))) != len(unique_groups)  # straddles
        or not np.bincount(fold, minlength=k).all()  # a fold without rows
    ):
        return None
    columns = {"sample_id": ids, "group": groups}
    columns.update(label=label.astype("int16"), fold=fold.astype("int8"))
    return Folds(columns, classes, k, seed, meta={kk: v for kk, v in meta.items()})


# --------------------------------------------------------------------------------------------
# runs/<run>/oof.parquet, test.parquet, run.json


def _logits(df: pd.DataFrame, n_classes: int, where: str) -> np.ndarray:
    import pandas as pd

    have = sorted(
        (c for c in df.columns if isinstance(c, str) and c.startswith("logit_")),
        key=lambda c: (len(c), c),
    )
    if have != logit_columns(n_classes):
        raise _fail(
            where,
            f"has logit columns {_span(have)}, expected logit_0 … logit_{n_classes - 1} "
            f"for the {n_classes} classes of folds.parquet",
        )
    cols = logit_columns(n_classes)
    for c in cols:
        if not pd.api.types.is_float_dtype(df[c]) and not pd.api.types.is_integer_dtype(df[c]):
            raise _fail(where, f"column {c} must be float, got {df[c].dtype}")
    x = df[cols].to_numpy(dtype=np.float64)
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)  # what is stored: 1e300 is finite here, inf there
    bad = ~np.isfinite(x32).all(axis=1)
    if bad.any():
        pos = int(np.argmax(bad))
        col = cols[int(np.argmax(~np.isfinite(x32[pos])))]
        raise _fail(
            where,
            f"{_row(df, pos)}: {col} is {x[pos, cols.index(col)]} "
            "(logits must be finite float32 numbers)",
        )
    return x32


def _span(cols: list[str]) -> str:
    if not cols:
        return "none"
    return f"{cols[0]} … {cols[-1]} ({len(cols)})" if len(cols) > 2 else ", ".join(cols)


def _frame(ids, folds, logits: np.ndarray) -> pd.DataFrame:
    import pandas as pd

    out = pd.DataFrame({"sample_id": pd.array(ids, dtype="string"), "fold": folds.astype("int8")})
    return pd.concat([out, pd.DataFrame(logits, columns=logit_columns(logits.shape[1]))], axis=1)


def validate_oof(df: pd.DataFrame, folds: Folds, where: str) -> pd.DataFrame:
    """OOF rows: exactly the folds' sample ids once each, with their folds, finite logits."""
    _require_columns(df, ["sample_id", "fold"], where)
    df = df.reset_index(drop=True)
    ids = _string_column(df, "sample_id", where)
    df = df.assign(sample_id=ids)
    _unique_ids(df, where)
    pos = folds.index.get_indexer(ids.to_numpy(dtype=object))
    if (pos < 0).any():
        r = int(np.argmax(pos < 0))
        raise _fail(where, f"{_row(df, r)}: sample_id is not in folds.parquet")
    if len(df) != len(folds.frame):
        seen = np.zeros(len(folds.frame), bool)
        seen[pos] = True
        first = folds.frame["sample_id"].iloc[int(np.argmax(~seen))]
        raise _fail(
            where,
            f"has {len(df)} rows for {len(folds.frame)} samples of folds.parquet; "
            f"first missing sample_id {first!r}",
        )
    fold = _int_column(df, "fold", 0, folds.n_folds, "int8", where)
    expected = folds.fold_ids[pos]
    bad = fold != expected
    if bad.any():
        r = int(np.argmax(bad))
        raise _fail(
            where,
            f"{_row(df, r)}: fold {fold[r]} disagrees with folds.parquet (fold {expected[r]})",
        )
    x = _logits(df, folds.n_classes, where)
    return _frame(ids.to_numpy(dtype=object), fold, x)


def validate_test(df: pd.DataFrame, folds: Folds, where: str) -> pd.DataFrame:
    """Test rows: K rows per test sample, one per fold model, finite logits."""
    _require_columns(df, ["sample_id", "fold"], where)
    df = df.reset_index(drop=True)
    if len(df) == 0:
        raise _fail(where, "has no rows")
    ids = _string_column(df, "sample_id", where)
    df = df.assign(sample_id=ids)
    fold = _int_column(df, "fold", 0, folds.n_folds, "int8", where)
    dup = df.assign(fold=fold).duplicated(["sample_id", "fold"]).to_numpy()
    if dup.any():
        r = int(np.argmax(dup))
        raise _fail(where, f"{_row(df, r)}: a second row for fold {fold[r]}")
    counts = df.groupby("sample_id", sort=False)["sample_id"].transform("size").to_numpy()
    short = counts < folds.n_folds
    if short.any():
        r = int(np.argmax(short))
        sid = ids.iloc[r]
        have = sorted(int(f) for f in fold[(ids == sid).to_numpy()])
        lacking = [f for f in range(folds.n_folds) if f not in have]
        raise _fail(where, f"{_row(df, r)}: test sample lacks rows for fold(s) {lacking}")
    x = _logits(df, folds.n_classes, where)
    return _frame(ids.to_numpy(dtype=object), fold, x)


def validate_run_info(info: object, folds: Folds, where: str) -> dict:
    if not isinstance(info, dict):
        raise _fail(where, "is not a JSON object")
    missing = [k for k in RUN_INFO_REQUIRED if k not in info]
    if missing:
        raise _fail(where, f"missing key(s) {', '.join(missing)}")
    for key, kind, what in RUN_INFO_TYPES:
        v = info[key]
        if (
            not isinstance(v, kind)
            or isinstance(v, bool)
            or (key == "classes" and not all(isinstance(c, str) for c in v))
        ):
            raise _fail(where, f"{key!r} must be {what}, got {json.dumps(v)[:60]}")
    if list(info["classes"]) != list(folds.classes):
        if len(info["classes"]) != folds.n_classes:
            raise _fail(
                where, f"has {len(info['classes'])} classes, folds.parquet has {folds.n_classes}"
            )
        i = next(i for i, (a, b) in enumerate(zip(info["classes"], folds.classes)) if a != b)
        raise _fail(
            where,
            f"class {i} is named {info['classes'][i]!r}, folds.parquet names it {folds.classes[i]!r}",
        )
    if info["n_folds"] != folds.n_folds:
        raise _fail(
            where, f"n_folds {info['n_folds']} disagrees with folds.parquet ({folds.n_folds})"
        )
    if info["folds_hash"] != folds.hash:
        raise _fail(
            where,
            f"folds_hash {str(info['folds_hash'])[:12]}… does not match folds.parquet "
            f"({folds.hash[:12]}…): the run was made on another fold assignment",
        )
    return info


def validate_ensemble_info(info: object, where: str) -> dict:
    """ensemble.json: the keys every reader relies on, with their types."""
    if not isinstance(info, dict):
        raise _fail(where, "is not a JSON object")
    missing = [k for k in ("name", "meta", "inputs", "scores") if k not in info]
    if missing:
        raise _fail(where, f"missing key(s) {', '.join(missing)}; refit the ensemble")
    inputs, scores = info["inputs"], info["scores"]
    runs = inputs.get("runs") if isinstance(inputs, dict) else None
    if (
        not isinstance(runs, list)
        or not runs
        or not all(isinstance(r, dict) and isinstance(r.get("run"), str) for r in runs)
        or not isinstance(inputs.get("folds_hash"), str)
    ):
        raise _fail(where, "'inputs' must hold 'runs' (a list of {run, hash}) and 'folds_hash'")
    if not isinstance(scores, dict) or not isinstance(info["meta"], str):
        raise _fail(where, "'scores' must be a JSON object and 'meta' a string")
    return info


def meta_json(meta: dict) -> bytes:
    return json.dumps(meta, sort_keys=True).encode("utf-8")


# --------------------------------------------------------------------------------------------
# ensembles/<name>/ and pseudo/<name>/


def proba_frame(ids, proba: np.ndarray) -> pd.DataFrame:
    """``sample_id, prob_0 … prob_{C-1}`` (float32, rows renormalised to sum to 1)."""
    import pandas as pd

    p = np.asarray(proba, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    out = pd.DataFrame({"sample_id": pd.array(list(ids), dtype="string")})
    return pd.concat(
        [out, pd.DataFrame(p.astype(np.float32), columns=prob_columns(p.shape[1]))], axis=1
    )


def validate_proba(df: pd.DataFrame, n_classes: int, where: str) -> pd.DataFrame:
    _require_columns(df, ["sample_id", *prob_columns(n_classes)], where)
    _string_column(df, "sample_id", where)
    _unique_ids(df, where)
    p = df[prob_columns(n_classes)].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(p).all(axis=1) | (p < 0).any(axis=1) | (np.abs(p.sum(axis=1) - 1) > 1e-4)
    if bad.any():
        raise _fail(where, f"{_row(df, int(np.argmax(bad)))}: probabilities are not a distribution")
    return df


# version 1.1: ``fold`` (int8), the one fold whose model may train on the row's label. A version 1
# set (no fold column) is still read; runners refuse it (its labels came from all fold models).
PSEUDO_COLUMNS = {"sample_id": "string", "fold": "int8", "label": "int16", "confidence": "float32"}
PSEUDO_COLUMNS_V1 = {"sample_id": "string", "label": "int16", "confidence": "float32"}


def validate_pseudo(
    df: pd.DataFrame, meta: dict | None, n_classes: int, where: str, n_folds: int | None = None
) -> pd.DataFrame:
    """A pseudo-label set in canonical dtypes; with a ``fold`` column each (sample_id, fold) at
    most once and every fold in [0, n_folds) (when ``n_folds`` is given)."""
    import pandas as pd

    if not isinstance(meta, dict) or meta.get("version") != CONTRACT_VERSION:
        raise _fail(where, "schema metadata 'stackkit' is missing or not version 1")
    for key in ("ensemble", "ensemble_hash", "folds_hash", "rule", "per_class"):
        if key not in meta:
            raise _fail(where, f"metadata lacks {key!r}")
    _require_columns(df, list(PSEUDO_COLUMNS_V1), where)
    df = df.reset_index(drop=True)
    ids = _string_column(df, "sample_id", where)
    df = df.assign(sample_id=ids)
    out = {"sample_id": ids}
    if "fold" in df.columns:
        out["fold"] = _int_column(df, "fold", 0, n_folds or 128, "int8", where)
        dup = df.duplicated(["sample_id", "fold"]).to_numpy()
        if dup.any():
            raise _fail(where, f"{_row(df, int(np.argmax(dup)))}: sample_id twice in one fold")
    else:
        _unique_ids(df, where)
    out["label"] = _int_column(df, "label", 0, n_classes, "int16", where)
    conf = df["confidence"].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(conf) | (conf < 0) | (conf > 1)
    if bad.any():
        raise _fail(where, f"{_row(df, int(np.argmax(bad)))}: confidence must lie in [0, 1]")
    out["confidence"] = conf.astype(np.float32)
    return pd.DataFrame(out)
