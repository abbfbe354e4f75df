"""Which images each fold model trains on and which it is scored on.

The image table lists the train samples in folds.parquet order, then the test samples. A fold
model trains on the train samples of the other folds plus the test images pseudo-labelled *for
that fold* (contract 1.1: a pseudo row of fold k trains fold k's model and no other, since its
label came from models that never saw fold k), and is validated on its own fold's train samples
only: pseudo rows never enter a validation split, so the OOF rows stay the original train
samples.

    >>> table = image_table(dataset, folds, pseudo_frame)
    >>> for split in build_splits(table, folds.n_folds): ...
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from stackkit.contract import schema
from stackkit.contract.errors import StackkitError
from stackkit.data.layouts import Dataset

log = logging.getLogger(__name__)


@dataclass
class ImageTable:
    ids: np.ndarray  # sample ids: train rows (folds.parquet order), then test rows
    paths: list[str]
    labels: np.ndarray  # class index of a train row; -1 on test rows
    fold: np.ndarray  # fold of a train row; -1 on test rows
    group: np.ndarray  # group (person) of a train row, from folds.parquet; "" on test rows
    n_train: int
    usable: np.ndarray  # False where the image could not be decoded (--skip-bad-images)
    pseudo_pos: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # test rows
    pseudo_fold: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # their fold
    pseudo_label: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def test_positions(self) -> np.ndarray:
        return np.arange(self.n_train, len(self.ids))


@dataclass
class Split:
    fold: int
    train: np.ndarray  # positions in the image table
    val: np.ndarray
    train_labels: np.ndarray  # the label each training position is trained on (pseudo included)


def image_table(ds: Dataset, folds: schema.Folds, pseudo: pd.DataFrame | None = None) -> ImageTable:
    """Align the dataset to folds.parquet (same ids, same classes) and append the test images."""
    _check_matches(ds, folds)
    tr = ds.train.set_index("sample_id").loc[folds.frame["sample_id"].to_numpy(dtype=object)]
    labels = tr["label"].to_numpy(dtype=np.int64)
    differ = int((labels != folds.labels).sum())
    if differ:
        log.warning(
            "%d train label(s) differ from folds.parquet (label fix / age boundary)", differ
        )
    pseudo_pos = np.zeros(0, np.int64)
    if pseudo is not None and len(pseudo):
        pos = pd.Index(ds.test["sample_id"]).get_indexer(pseudo["sample_id"].to_numpy(dtype=object))
        if (pos < 0).any():
            sid = pseudo["sample_id"].iloc[int(np.argmax(pos < 0))]
            raise StackkitError(
                f"pseudo-label set: sample_id {sid!r} is not a test image of the data"
            )
        pseudo_pos = len(tr) + pos.astype(np.int64)
    n = len(tr) + len(ds.test)
    return ImageTable(
        ids=np.concatenate(
            [tr.index.to_numpy(dtype=object), ds.test["sample_id"].to_numpy(dtype=object)]
        ),
        paths=[*tr["path"], *ds.test["path"]],
        labels=np.concatenate([labels, np.full(len(ds.test), -1, dtype=np.int64)]),
        fold=np.concatenate([folds.fold_ids, np.full(len(ds.test), -1)]),
        group=np.concatenate(
            [folds.frame["group"].astype(str).to_numpy(dtype=object), np.full(len(ds.test), "")]
        ),
        n_train=len(tr),
        usable=np.ones(n, dtype=bool),
        pseudo_pos=pseudo_pos,
        pseudo_fold=np.zeros(0, np.int64) if pseudo is None else _col(pseudo, "fold"),
        pseudo_label=np.zeros(0, np.int64) if pseudo is None else _col(pseudo, "label"),
    )


def _col(df: pd.DataFrame, name: str) -> np.ndarray:
    return df[name].to_numpy(dtype=np.int64)


def _check_matches(ds: Dataset, folds: schema.Folds) -> None:
    if list(ds.classes) != list(folds.classes):
        raise StackkitError(
            f"folds.parquet has {folds.n_classes} classes ({', '.join(folds.classes[:3])}, …), the data "
            f"has {len(ds.classes)} ({', '.join(ds.classes[:3])}, …): re-run `stackkit folds --data`"
        )
    have = pd.Index(ds.train["sample_id"])
    missing = ~folds.index.isin(have)
    extra = ~have.isin(folds.index)
    if missing.any() or extra.any():
        what = (
            f"sample_id {folds.index[int(np.argmax(missing))]!r} is not in the data"
            if missing.any()
            else f"the data's sample_id {have[int(np.argmax(extra))]!r} is not in folds.parquet"
        )
        raise StackkitError(
            f"folds.parquet does not match {ds.root}: {what} "
            f"({int(missing.sum())} missing, {int(extra.sum())} extra); re-run `stackkit folds --data`"
        )


def build_splits(table: ImageTable, n_folds: int) -> list[Split]:
    """One split per fold: train = other folds + this fold's pseudo rows; val = this fold's
    train rows."""
    is_train = np.arange(len(table.ids)) < table.n_train
    out = []
    for k in range(n_folds):
        in_fold = is_train & (table.fold == k)
        own = np.flatnonzero(is_train & ~in_fold & table.usable)
        mine = (table.pseudo_fold == k) & table.usable[table.pseudo_pos]
        train = np.concatenate([own, table.pseudo_pos[mine]])
        labels = np.concatenate([table.labels[own], table.pseudo_label[mine]])
        out.append(Split(k, train, np.flatnonzero(in_fold & table.usable), labels))
    return out


def inner_slice(table: ImageTable, split: Split, fraction: float, seed: int) -> np.ndarray:
    """Hold whole groups of the training folds out of ``split.train`` to choose an epoch on.

    Returns a mask over ``split.train``: ``round(fraction x groups)`` of the training folds'
    groups (at least one, never all), drawn with ``seed``; pseudo rows are never in it. Fold
    ``split.fold``'s own rows are not in ``split.train`` at all.
    """
    original = split.train[split.train < table.n_train]
    groups = np.unique(table.group[original].astype(str))
    if len(groups) < 2:
        raise StackkitError(
            f"epoch_selection inner: fold {split.fold}'s training folds have {len(groups)} "
            "group(s); an inner slice needs at least 2 (use epoch_selection: fixed)"
        )
    n = min(len(groups) - 1, max(1, round(fraction * len(groups))))
    held = np.random.default_rng(seed).choice(groups, size=n, replace=False)
    return np.isin(table.group[split.train].astype(str), held) & (split.train < table.n_train)
