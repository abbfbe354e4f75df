"""Pseudo labels: the test samples an ensemble is confident about, as extra training rows.

``pseudo_label`` reads ``ensembles/<ensemble>/test_proba.parquet`` and ``ensemble.json``, takes
each test sample's most probable class as its label and that probability as its confidence, and
keeps the samples whose confidence clears the threshold of their class (``threshold``, or the
class's own entry in ``class_thresholds``). Two caps keep the added rows from tilting the class
balance; each class keeps its most confident samples (ties: sample_id order):

- ``max_per_class``: at most N samples of any one class.
- ``balance``: each class at most ``ceil(share * T)`` samples, where ``share`` is the class's
  share of the train labels (folds.parquet) and ``T`` the number of samples that cleared the
  thresholds (after ``max_per_class``). Easy classes that would be over-represented are trimmed
  to their train share; classes with too few confident samples keep what they have (nothing is
  invented), so the set never over-represents a class by more than one sample.

The set is written to ``pseudo/<name>/pseudo.parquet`` (CONTRACT.md) with the ensemble's name and
content hash, the folds hash, the rule and the per-class counts. An ensemble made on another
folds.parquet is refused; if no sample clears the threshold, nothing is written.

    >>> result = pseudo_label(Store("artifacts"), "lr", threshold=0.95, balance=True)
    >>> result.table          # class, candidates, chosen, mean_confidence
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stackkit.contract import schema
from stackkit.contract.errors import ContractError, StackkitError
from stackkit.contract.names import check_name
from stackkit.contract.store import Store, file_sha256, read_json, read_parquet

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.9  # high: a wrong pseudo label teaches the next model the ensemble's mistake
FLOAT32_SLACK = 1e-6  # probabilities are stored as float32: 0.9 must clear a threshold of 0.9
TEST_PROBA_FILE = "test_proba.parquet"
ENSEMBLE_FILE = "ensemble.json"


@dataclass
class PseudoSet:
    """A written pseudo-label set: the rows, their metadata, and a per-class summary."""

    name: str
    frame: pd.DataFrame  # sample_id, label, confidence (sorted by sample_id)
    meta: dict
    table: pd.DataFrame  # class, candidates, chosen, mean_confidence (of the chosen)
    path: Path


def parse_class_thresholds(items: Iterable[str] | None) -> dict[str, float]:
    """``["none_male_60+=0.8", ...]`` -> ``{"none_male_60+": 0.8}`` (the CLI's CLASS=T form)."""
    out: dict[str, float] = {}
    for item in items or ():
        cls, sep, value = item.rpartition("=")
        try:
            t = float(value)
        except ValueError:
            t = None
        if not sep or not cls.strip() or t is None:
            raise StackkitError(
                f"--class-threshold must look like CLASS=T (e.g. 'none_male_60+=0.8'), got {item!r}"
            )
        out[cls.strip()] = t
    return out


def _check_rule(
    threshold: float, max_per_class: int | None, class_thresholds: Mapping[str, float], classes
) -> np.ndarray:
    """Validate the rule; return the threshold of every class, in class-index order."""
    if not 0 < threshold <= 1:
        raise StackkitError(f"threshold must lie in (0, 1], got {threshold}")
    if max_per_class is not None and max_per_class < 1:
        raise StackkitError(f"max_per_class must be at least 1, got {max_per_class}")
    per_class = np.full(len(classes), float(threshold))
    for cls, t in class_thresholds.items():
        if cls not in classes:
            raise StackkitError(
                f"class_thresholds: unknown class {cls!r} (classes of folds.parquet: {', '.join(classes)})"
            )
        if not 0 < t <= 1:
            raise StackkitError(
                f"class_thresholds: threshold of {cls!r} must lie in (0, 1], got {t}"
            )
        per_class[classes.index(cls)] = t
    return per_class


def _read_ensemble(
    store: Store, ensemble: str, folds: schema.Folds
) -> tuple[pd.DataFrame, dict, str]:
    """The ensemble's validated test probabilities, its ensemble.json, and its content hash."""
    d = store.ensemble_dir(ensemble)
    if not d.is_dir():
        base = store.root / "ensembles"
        have = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        raise StackkitError(
            f"ensemble {ensemble!r}: {store.rel(d)} does not exist "
            f"(ensembles present: {', '.join(have) or 'none'}; make one with `stackkit fit`)"
        )
    where = lambda f: f"ensemble {ensemble!r}: {store.rel(d / f)}"  # noqa: E731
    info = read_json(d / ENSEMBLE_FILE, where(ENSEMBLE_FILE))
    made_on = (info.get("inputs") or {}).get("folds_hash") if isinstance(info, dict) else None
    if not isinstance(made_on, str):
        raise ContractError(f"{where(ENSEMBLE_FILE)}: lacks inputs.folds_hash")
    if made_on != folds.hash:
        raise ContractError(
            f"{where(ENSEMBLE_FILE)}: made on another fold assignment (folds_hash {made_on[:12]}… "
            f"!= {folds.hash[:12]}… of folds.parquet); refit the ensemble"
        )
    df, _ = read_parquet(d / TEST_PROBA_FILE, where(TEST_PROBA_FILE))
    have = [c for c in df.columns if isinstance(c, str) and c.startswith("prob_")]
    if len(have) != folds.n_classes:
        raise ContractError(
            f"{where(TEST_PROBA_FILE)}: has {len(have)} prob columns for the {folds.n_classes} "
            "classes of folds.parquet"
        )
    if len(df) == 0:
        raise ContractError(f"{where(TEST_PROBA_FILE)}: has no rows")
    df = schema.validate_proba(df.reset_index(drop=True), folds.n_classes, where(TEST_PROBA_FILE))
    return df, info, file_sha256(d / TEST_PROBA_FILE, d / ENSEMBLE_FILE)


def select(
    proba: np.ndarray,
    thresholds: np.ndarray,
    max_per_class: int | None = None,
    train_share: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices chosen (in row order) and candidates per class; see the module docstring.

    Rows must already be in a canonical order (sorted sample_id), which breaks confidence ties.
    """
    n_classes = proba.shape[1]
    label = proba.argmax(axis=1)
    conf = proba[np.arange(len(proba)), label]
    ok = conf >= thresholds[label] - FLOAT32_SLACK
    candidates = np.bincount(label[ok], minlength=n_classes)
    # most confident first; a stable sort keeps row (sample_id) order among equals
    order = np.argsort(-conf, kind="stable")
    order = order[ok[order]]
    caps = np.full(n_classes, len(proba))
    if max_per_class is not None:
        caps = np.minimum(caps, max_per_class)
    if train_share is not None:
        total = int(np.minimum(candidates, caps).sum())
        caps = np.minimum(caps, np.ceil(train_share * total - 1e-9).astype(int))
    lab = label[order]
    by_class = np.argsort(lab, kind="stable")  # keeps the confidence order within a class
    first = np.searchsorted(lab[by_class], lab[by_class], side="left")
    rank = np.empty(len(order), dtype=np.int64)  # rank of each candidate within its class
    rank[by_class] = np.arange(len(order)) - first
    chosen = np.sort(order[rank < caps[lab]])
    return chosen, candidates


def pseudo_label(
    store: Store,
    ensemble: str,
    threshold: float = DEFAULT_THRESHOLD,
    max_per_class: int | None = None,
    class_thresholds: Mapping[str, float] | None = None,
    name: str | None = None,
    balance: bool = False,
    force: bool = False,
) -> PseudoSet:
    """Choose confident test samples of ``ensemble`` and write ``pseudo/<name>/`` (name: ensemble)."""
    class_thresholds = dict(class_thresholds or {})
    check_name(ensemble, "ensemble")
    name = check_name(ensemble if name is None else name, "pseudo set")
    store.refuse_to_replace(
        store.pseudo_dir(name) / schema.PSEUDO_FILE, f"pseudo set {name!r}", force
    )
    folds = store.read_folds()
    classes = list(folds.classes)
    thresholds = _check_rule(threshold, max_per_class, class_thresholds, classes)
    df, info, ens_hash = _read_ensemble(store, ensemble, folds)

    df = df.sort_values("sample_id", kind="stable").reset_index(drop=True)
    proba = df[schema.prob_columns(folds.n_classes)].to_numpy(dtype=np.float64)
    share = (
        np.bincount(folds.labels, minlength=folds.n_classes) / len(folds.labels)
        if balance
        else None
    )
    chosen, candidates = select(proba, thresholds, max_per_class, share)
    where = f"ensemble {ensemble!r}: {store.rel(store.ensemble_dir(ensemble) / TEST_PROBA_FILE)}"
    if len(chosen) == 0:
        best = float(proba.max())
        raise StackkitError(
            f"{where}: no test sample clears the threshold (highest confidence {best:.3f}); "
            "nothing written; try a lower --threshold"
        )

    label = proba[chosen].argmax(axis=1)
    frame = pd.DataFrame(
        {
            "sample_id": df["sample_id"].to_numpy(dtype=object)[chosen],
            "label": label.astype(np.int16),
            "confidence": proba[chosen, label].astype(np.float32),
        }
    ).astype(schema.PSEUDO_COLUMNS)
    counts = np.bincount(label, minlength=folds.n_classes)
    mean_conf = [
        float(frame["confidence"][label == c].mean()) if counts[c] else math.nan
        for c in range(folds.n_classes)
    ]
    table = pd.DataFrame(
        {"class": classes, "candidates": candidates, "chosen": counts, "mean_confidence": mean_conf}
    )
    meta = {
        "ensemble": ensemble,
        "ensemble_hash": ens_hash,
        "ensemble_meta": info.get("meta"),
        "folds_hash": folds.hash,
        "rule": {
            "threshold": float(threshold),
            "class_thresholds": {k: float(v) for k, v in sorted(class_thresholds.items())},
            "max_per_class": max_per_class,
            "balance": bool(balance),
        },
        "per_class": {c: int(n) for c, n in zip(classes, counts)},
        "n_test": len(df),
        "n_chosen": len(frame),
        "created": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    path = store.write_pseudo(name, frame, meta, folds.n_classes)
    log.info(
        "pseudo set %r: %d of %d test samples from ensemble %r -> %s",
        name, len(frame), len(df), ensemble, path,
    )  # fmt: skip
    meta = dict(meta, version=schema.CONTRACT_VERSION)
    return PseudoSet(name, frame, meta, table, path)
