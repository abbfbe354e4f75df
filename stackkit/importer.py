"""``stackkit import``: bring logits made anywhere else into a run, checked like any other.

Accepted inputs, for both the OOF and the test file:

- parquet or CSV with a ``sample_id`` column, an optional ``fold`` column and C score columns:
  ``logit_0 … logit_{C-1}`` (or ``prob_0 …``), else every other numeric column in file order;
- ``.npy`` of shape (n, C) (test also (K, n, C), one slice per fold model) beside a sample-id
  list (``--oof-ids`` / ``--test-ids``: a text file of one id per line, or a CSV with a
  ``sample_id`` column).

``kind="proba"`` takes probabilities and stores their logs (a valid logit, CONTRACT.md);
probabilities given as logits are imported but warned about. OOF rows need a fold column, unless
the caller declares (``made_on_these_folds``, ``--made-on-these-folds``) that every row was
predicted by a model trained without its fold of folds.parquet: OOF scores made on another split
look far better than they are and make every meta learner's CV score a lie, so this is never
assumed. run.json records where the folds came from. Test rows without a fold column are taken
as already averaged over the fold models and repeated once per fold (logged). The run is
validated in full before anything is written.

    >>> import_run(Store(), "lgbm", oof="oof.csv", test="test.csv", kind="proba")
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from stackkit import metrics
from stackkit.contract import schema
from stackkit.contract.errors import StackkitError
from stackkit.contract.names import check_name
from stackkit.contract.store import Store

log = logging.getLogger(__name__)

KINDS = ("logits", "proba")
DECLARE = "--made-on-these-folds"


def _read_ids(path: Path | None, what: str) -> np.ndarray:
    if path is None:
        raise StackkitError(f"{what}: a .npy file needs its sample-id list (--{what}-ids FILE)")
    path = Path(path)
    if not path.is_file():
        raise StackkitError(f"{path}: file not found")
    if path.suffix.lower() == ".csv":
        df = pd.read_csv(path, dtype=str)
        if "sample_id" not in df.columns:
            raise StackkitError(f"{path}: no sample_id column")
        return df["sample_id"].to_numpy(dtype=object)
    return np.array([s for s in path.read_text().splitlines() if s.strip()], dtype=object)


def _read_table(path: Path, ids_path: Path | None, what: str, n_folds: int) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise StackkitError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return _rows(pd.read_parquet(path), path)
        if suffix == ".csv":
            return _rows(pd.read_csv(path, dtype={"sample_id": str}), path)
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            raise StackkitError(f"{path}: unsupported file type {suffix!r} (parquet, csv or npy)")
    except StackkitError:
        raise
    except Exception as exc:  # a damaged file: one line naming it
        raise StackkitError(f"{path}: cannot be read ({str(exc).splitlines()[0]})") from None
    if arr.dtype.kind not in "fiu":  # complex (the imaginary part would be dropped), text, bool
        raise StackkitError(f"{path}: holds {arr.dtype} values; scores must be real numbers")
    ids = _read_ids(ids_path, what)
    if arr.ndim == 3 and what == "test":
        if arr.shape[0] != n_folds or arr.shape[1] != len(ids):
            raise StackkitError(
                f"{path}: shape {arr.shape} is not (K={n_folds}, {len(ids)} ids, C)"
            )
        parts = [_scores_frame(ids, arr[k], k) for k in range(n_folds)]
        return pd.concat(parts, ignore_index=True)
    if arr.ndim != 2 or arr.shape[0] != len(ids):
        raise StackkitError(f"{path}: shape {arr.shape} is not ({len(ids)} ids, C)")
    return _scores_frame(ids, arr, None)


def _rows(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    if len(df) == 0:
        raise StackkitError(f"{path}: has no rows (only a header)")
    return df


def _scores_frame(ids, scores: np.ndarray, fold: int | None) -> pd.DataFrame:
    df = pd.DataFrame(scores, columns=[f"score_{c}" for c in range(scores.shape[1])])
    df.insert(0, "sample_id", ids)
    if fold is not None:
        df.insert(1, "fold", fold)
    return df


def _score_columns(df: pd.DataFrame, n_classes: int, path: Path) -> list[str]:
    for prefix in ("logit_", "prob_", "score_"):
        cols = [f"{prefix}{c}" for c in range(n_classes)]
        if all(c in df.columns for c in cols):
            return cols
    cols = [
        c
        for c in df.columns
        if c not in ("sample_id", "fold") and pd.api.types.is_numeric_dtype(df[c])
    ]
    if len(cols) != n_classes:
        raise StackkitError(
            f"{path}: found {len(cols)} score columns, folds.parquet has {n_classes} classes"
        )
    return cols


def _scores(df: pd.DataFrame, cols: list[str], path: Path) -> np.ndarray:
    """The score columns as float64; text, categories and booleans are refused, naming them."""
    for c in cols:
        s = df[c]
        if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
            text = s.notna() & pd.to_numeric(s.astype(object), errors="coerce").isna()
            if text.any():
                r = int(np.argmax(text.to_numpy()))
                raise StackkitError(
                    f"{path}: column {c} holds text ({s.iloc[r]!r} in row {r}); "
                    "scores must be numbers"
                )
            raise StackkitError(f"{path}: column {c} has dtype {s.dtype}; scores must be numbers")
    return df[cols].to_numpy(dtype=np.float64)


def _to_logits(df: pd.DataFrame, n_classes: int, kind: str, path: Path) -> pd.DataFrame:
    if "sample_id" not in df.columns:
        raise StackkitError(f"{path}: no sample_id column")
    cols = _score_columns(df, n_classes, path)
    x = _scores(df, cols, path)
    if kind == "proba":
        if (x < 0).any() or (x > 1 + 1e-6).any():
            r = int(np.argmax(((x < 0) | (x > 1 + 1e-6)).any(axis=1)))
            raise StackkitError(f"{path}: row {r}: values outside [0, 1] for --kind proba")
        with np.errstate(divide="ignore"):
            x = np.log(np.clip(x, metrics.EPS, None))
    elif _look_like_probabilities(x):
        log.warning("%s: every row lies in [0, 1] and sums to 1: these look like probabilities; "
                    "if so, import them with --kind proba (--force replaces the run)", path)  # fmt: skip
    # float64 still: the contract's validator refuses values float32 cannot hold
    out = pd.DataFrame(x, columns=schema.logit_columns(n_classes))
    out.insert(0, "sample_id", df["sample_id"].astype(str).to_numpy())
    if "fold" in df.columns:
        out.insert(1, "fold", df["fold"].to_numpy())
    return out


def _look_like_probabilities(x: np.ndarray) -> bool:
    return bool(
        len(x) and (x >= 0).all() and (x <= 1).all() and np.allclose(x.sum(axis=1), 1, atol=1e-3)
    )


def import_run(
    store: Store,
    run: str,
    oof: Path,
    test: Path,
    kind: str = "logits",
    oof_ids: Path | None = None,
    test_ids: Path | None = None,
    model: str = "external",
    force: bool = False,
    made_on_these_folds: bool = False,
) -> Path:
    """Convert, validate and write ``runs/<run>/`` (nothing is written if any check fails).
    ``made_on_these_folds``: the caller declares that OOF rows without a fold column were each
    predicted by a model trained without that row's fold of folds.parquet."""
    if kind not in KINDS:
        raise StackkitError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    check_name(run, "run")
    if (store.run_dir(run) / schema.RUN_FILE).exists() and not force:
        raise StackkitError(
            f"run {run!r} already exists in {store.root / 'runs'} (--force replaces it)"
        )
    folds = store.read_folds()
    c, k = folds.n_classes, folds.n_folds
    o = _to_logits(_read_table(oof, oof_ids, "oof", k), c, kind, Path(oof))
    if "fold" in o.columns:
        fold_source = "the OOF file's fold column"
    elif made_on_these_folds:
        fold_source = f"declared by the user ({DECLARE}): folds.parquet's folds, no fold column"
        pos = folds.index.get_indexer(o["sample_id"].to_numpy(dtype=object))
        o.insert(1, "fold", np.where(pos >= 0, folds.fold_ids[np.maximum(pos, 0)], 0))
    else:
        raise StackkitError(
            f"{oof}: no fold column, so nothing shows each row was predicted by a model that "
            f"never saw its fold of folds.parquet; add the column, or pass {DECLARE} if it was"
        )
    t = _to_logits(_read_table(test, test_ids, "test", k), c, kind, Path(test))
    if "fold" not in t.columns:
        log.info("%s has no fold column: taking each row as the fold models' average", test)
        t = pd.concat([t.assign(fold=f) for f in range(k)], ignore_index=True)
    where = f"run {run!r}: {oof}"
    o = schema.validate_oof(o, folds, where)
    t = schema.validate_test(t, folds, f"run {run!r}: {test}")
    info = {
        "run": run,
        "model": model,
        "classes": list(folds.classes),
        "n_folds": k,
        "folds_hash": folds.hash,
        "seed": folds.seed,
        "tta": [],
        "metrics": run_metrics(o, folds),
        "created": pd.Timestamp.now(tz="UTC").isoformat(),
        "versions": _versions(),
        "config": {
            "imported_from": {
                "oof": str(oof),
                "test": str(test),
                "kind": kind,
                "folds": fold_source,
            }
        },
        "pseudo": None,
    }
    return store.write_run(run, o, t, info, folds)


def run_metrics(oof: pd.DataFrame, folds: schema.Folds) -> dict:
    """run.json's ``metrics``: OOF macro-F1, accuracy and log loss, overall and per fold."""
    pos = folds.index.get_indexer(oof["sample_id"].to_numpy(dtype=object))
    logits = np.empty((len(folds.frame), folds.n_classes))
    logits[pos] = oof[schema.logit_columns(folds.n_classes)].to_numpy()
    s = metrics.scores(folds.labels, metrics.softmax(logits), folds.fold_ids)
    per_fold = []
    for k in range(folds.n_folds):
        m = folds.fold_ids == k
        sk = metrics.scores(folds.labels[m], metrics.softmax(logits[m]))
        per_fold.append(
            {
                "fold": k,
                "macro_f1": sk["macro_f1"],
                "accuracy": sk["accuracy"],
                "log_loss": sk["log_loss"],
            }
        )
    return {
        "oof_macro_f1": s["macro_f1"],
        "oof_accuracy": s["accuracy"],
        "oof_log_loss": s["log_loss"],
        "per_fold": per_fold,
    }


def _versions() -> dict:
    import platform

    from stackkit import __version__

    return {"python": platform.python_version(), "stackkit": __version__}
