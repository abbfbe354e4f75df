"""Pseudo labels per fold: confident test predictions as extra training rows for fold k's model.

Fold k's round-2 model may only learn from labels that nothing fitted on fold k's labels made
(contract 1.1). So ``pseudo_label`` reads the ensemble's recipe (``ensemble.json``: its selected
candidate, parameters, blend components and whether bias offsets were applied), and for every fold
k redoes it without fold k (:func:`stackkit.cv.per_fold.fold_test_proba`): the runs' fold-k test
logits, combined by the meta-level CV's fold-k learner. Each test sample's most probable class is
its label and that probability its confidence; a sample is kept for fold k when its confidence
clears the threshold of its class (``threshold``, or the class's own entry in
``class_thresholds``). Two caps, applied per fold, keep the added rows from tilting the class
balance; each class keeps its most confident samples (ties: sample_id order):

- ``max_per_class``: at most N samples of any one class per fold.
- ``balance``: each class at most ``ceil(share * T)`` samples, where ``share`` is the class's
  share of fold k's training labels and ``T`` the number of samples that cleared the thresholds
  for fold k (after ``max_per_class``). Classes with too few confident samples keep what they
  have (nothing is invented).

The set is written to ``pseudo/<name>/pseudo.parquet`` (CONTRACT.md): one row per (test sample,
fold) chosen, with the fold it may train; the metadata holds the ensemble's name and content hash,
the folds hash, the rule, the per-class and per-fold counts and a hash of the rows, so that the
same rows always give the same hash. An ensemble made on another folds.parquet, or whose runs
changed since, is refused; if no sample clears the threshold in any fold, nothing is written.

    >>> result = pseudo_label(Store("artifacts"), "lr", threshold=0.95, balance=True)
    >>> result.table          # class, candidates, chosen, mean_confidence (over folds)
    >>> result.per_fold       # fold, chosen
"""

from __future__ import annotations

import hashlib
import json
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
from stackkit.contract.store import Store, file_sha256, read_json
from stackkit.cv.per_fold import BLEND, fold_test_proba
from stackkit.tables import AsTable

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.9  # high: a wrong pseudo label teaches the next model the ensemble's mistake
FLOAT32_SLACK = 1e-6  # probabilities are stored as float32: 0.9 must clear a threshold of 0.9
TEST_PROBA_FILE = "test_proba.parquet"
ENSEMBLE_FILE = "ensemble.json"


@dataclass
class PseudoSet(AsTable):
    """A written pseudo-label set: the rows, their metadata, and a per-class summary
    (``to_frame()``; the rows themselves are ``frame``)."""

    name: str
    frame: pd.DataFrame  # sample_id, fold, label, confidence (by fold, then sample_id)
    meta: dict
    table: pd.DataFrame  # class, candidates, chosen, mean_confidence (summed over folds)
    path: Path
    per_fold: pd.DataFrame  # fold, chosen

    def to_frame(self) -> pd.DataFrame:
        return self.table

    def headline(self) -> str:
        return (
            f"pseudo set {self.name!r}: {len(self.frame)} rows over {len(self.per_fold)} folds "
            f"from {self.meta['n_test']} test samples; wrote {self.path}"
        )


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


def _read_ensemble(store: Store, ensemble: str, folds: schema.Folds) -> tuple[dict, str]:
    """The ensemble's ensemble.json (checked to be made on these folds) and its content hash."""
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
    inputs = info.get("inputs") if isinstance(info, dict) else None
    made_on = inputs.get("folds_hash") if isinstance(inputs, dict) else None
    if not isinstance(made_on, str):
        raise ContractError(f"{where(ENSEMBLE_FILE)}: lacks inputs.folds_hash")
    if made_on != folds.hash:
        raise ContractError(
            f"{where(ENSEMBLE_FILE)}: made on another fold assignment (folds_hash {made_on[:12]}… "
            f"!= {folds.hash[:12]}… of folds.parquet); refit the ensemble"
        )
    runs = inputs.get("runs")
    if (
        not isinstance(runs, list)
        or not runs
        or not all(isinstance(r, dict) and isinstance(r.get("run"), str) for r in runs)
    ):
        raise ContractError(f"{where(ENSEMBLE_FILE)}: lacks inputs.runs (a list of runs)")
    if not isinstance(info.get("meta"), str):
        raise ContractError(f"{where(ENSEMBLE_FILE)}: lacks 'meta' (the selected candidate)")
    # content, not file bytes: a refit that writes the same ensemble gives the same hash
    content = {k: v for k, v in info.items() if k not in ("created", "command")}
    h = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode())
    h.update(file_sha256(d / TEST_PROBA_FILE).encode())
    return info, h.hexdigest()


def _recipe(info: dict, where: str) -> tuple[str, dict, list[str], bool]:
    """(selected candidate, --param values, blend components, bias applied) of an ensemble."""
    meta = info["meta"]
    params = info.get("cli_params") or {}
    components: list[str] = []
    if meta == BLEND:
        got = (info.get("params") or {}).get("candidates")
        if not isinstance(got, list) or not got:
            raise ContractError(f"{where}: a blend without params.candidates (its components)")
        components = [str(m) for m in got]
    return meta, params, components, info.get("bias_offsets") is not None


def _check_runs(store: Store, info: dict, where: str) -> list[str]:
    """The ensemble's runs, each still present and unchanged since the fit."""
    names = []
    for r in info["inputs"]["runs"]:
        run = r["run"]
        if run not in store.run_names():
            raise StackkitError(f"{where}: its run {run!r} is no longer complete in runs/")
        if r.get("hash") and store.run_hash(run) != r["hash"]:
            raise StackkitError(
                f"{where}: run {run!r} changed after the ensemble was fitted; refit the ensemble"
            )
        names.append(run)
    return names


def rows_hash(frame: pd.DataFrame) -> str:
    """A hash of a pseudo set's rows (sample_id, fold, label, confidence), order-independent."""
    df = frame.sort_values(["fold", "sample_id"], kind="stable")
    h = hashlib.sha256()
    for col in ("sample_id", "fold", "label"):
        h.update("\x1f".join(map(str, df[col].tolist())).encode())
    h.update(df["confidence"].to_numpy(dtype=np.float32).tobytes())
    return h.hexdigest()


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
    n_jobs: int | None = None,
) -> PseudoSet:
    """Choose confident test samples of ``ensemble`` per fold and write ``pseudo/<name>/``
    (name: the ensemble's). See the module docstring."""
    from stackkit.fit import resolve_n_jobs
    from stackkit.meta.registry import resolve_factors

    class_thresholds = dict(class_thresholds or {})
    check_name(ensemble, "ensemble")
    name = check_name(ensemble if name is None else name, "pseudo set")
    store.refuse_to_replace(
        store.pseudo_dir(name) / schema.PSEUDO_FILE, f"pseudo set {name!r}", force
    )
    folds = store.read_folds()
    classes = list(folds.classes)
    thresholds = _check_rule(threshold, max_per_class, class_thresholds, classes)
    info, ens_hash = _read_ensemble(store, ensemble, folds)
    where = f"ensemble {ensemble!r}: {store.rel(store.ensemble_dir(ensemble) / ENSEMBLE_FILE)}"
    meta_name, params, components, bias = _recipe(info, where)
    # factors=auto made concrete as the fit made it (its saved --param values are the user's)
    params = resolve_factors(params, [meta_name, *components], folds.meta.get("data"))
    runset = store.load_runs(_check_runs(store, info, where), folds)

    proba = fold_test_proba(
        runset, meta_name, params, components, bias,
        n_jobs=resolve_n_jobs(n_jobs, int(np.prod(runset.test.shape[1:]))),
    )  # fmt: skip
    ids = runset.test_ids  # sorted sample_id order: breaks confidence ties
    parts, candidates = [], np.zeros(folds.n_classes, dtype=np.int64)
    for i, k in enumerate(np.unique(folds.fold_ids)):
        train = folds.labels[folds.fold_ids != k]
        share = np.bincount(train, minlength=folds.n_classes) / len(train) if balance else None
        chosen, cand = select(proba[i], thresholds, max_per_class, share)
        candidates += cand
        label = proba[i][chosen].argmax(axis=1)
        parts.append(
            pd.DataFrame(
                {
                    "sample_id": ids[chosen],
                    "fold": np.full(len(chosen), k, dtype=np.int8),
                    "label": label.astype(np.int16),
                    "confidence": proba[i][chosen, label].astype(np.float32),
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True).astype(schema.PSEUDO_COLUMNS)
    if len(frame) == 0:
        best = float(proba.max())
        raise StackkitError(
            f"{where}: no test sample clears the threshold in any fold (highest confidence "
            f"{best:.3f}); nothing written; try a lower --threshold"
        )
    label = frame["label"].to_numpy()
    counts = np.bincount(label, minlength=folds.n_classes)
    mean_conf = [
        float(frame["confidence"][label == c].mean()) if counts[c] else math.nan
        for c in range(folds.n_classes)
    ]
    table = pd.DataFrame(
        {"class": classes, "candidates": candidates, "chosen": counts, "mean_confidence": mean_conf}
    )
    per_fold = (
        frame.groupby("fold", observed=True).size().reindex(np.unique(folds.fold_ids), fill_value=0)
    )
    per_fold = pd.DataFrame({"fold": per_fold.index.astype(int), "chosen": per_fold.to_numpy()})
    meta = {
        "ensemble": ensemble,
        "ensemble_hash": ens_hash,
        "ensemble_meta": meta_name,
        "folds_hash": folds.hash,
        "per_fold_method": (
            "fold k's labels: the runs' fold-k test logits combined by the meta-level CV's fold-k "
            "learner (fitted without fold k's labels)"
        ),
        "rule": {
            "threshold": float(threshold),
            "class_thresholds": {k: float(v) for k, v in sorted(class_thresholds.items())},
            "max_per_class": max_per_class,
            "balance": bool(balance),
        },
        "per_class": {c: int(n) for c, n in zip(classes, counts)},
        "per_fold": {str(f): int(n) for f, n in zip(per_fold["fold"], per_fold["chosen"])},
        "n_test": len(ids),
        "n_chosen": len(frame),
        "rows_hash": rows_hash(frame),
    }
    path = store.write_pseudo(name, frame, meta, folds.n_classes)
    log.debug(
        "pseudo set %r: %d rows over %d folds (%d test samples) from ensemble %r -> %s",
        name, len(frame), len(per_fold), len(ids), ensemble, path,
    )  # fmt: skip
    meta = dict(meta, version=schema.CONTRACT_VERSION)
    return PseudoSet(name, frame, meta, table, path, per_fold)
