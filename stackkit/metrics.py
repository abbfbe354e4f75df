"""Scores, always on the whole vector of predictions (never averaged per batch or per fold).

``macro_f1`` is scikit-learn's ``f1_score(average="macro")`` over every class of the label
space (a class never predicted and never present scores 0 and still counts), so scores of
different ensembles over the same classes are comparable.

Plain numpy, no scikit-learn or scipy import: ``stackkit leaderboard`` on a warm cache loads only
this, the runs and the cached results (importing scikit-learn costs more than reading 10 runs).
``tests/test_metrics.py`` checks every function against scikit-learn's and scipy's.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-15


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """``scipy.special.log_softmax`` in float64 (logits may be float32): shifted by the max,
    so large logits neither overflow nor lose the small ones."""
    z = np.array(logits, dtype=np.float64)  # a copy: shifted in place below
    z -= z.max(axis=axis, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=axis, keepdims=True))
    return z


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """``scipy.special.softmax`` in float64 (logits may be float32)."""
    z = np.array(logits, dtype=np.float64)
    z -= z.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


def f1_from_counts(tp: np.ndarray, n_pred: np.ndarray, n_true: np.ndarray) -> np.ndarray:
    """Per-class F1 from counts (true positives, predictions, truths; weighted tallies allowed):
    2TP / (predicted + true), 0 for a class never true nor predicted (scikit-learn's
    ``zero_division=0``)."""
    tp = np.asarray(tp, dtype=np.float64)
    denom = np.asarray(n_true, dtype=np.float64) + np.asarray(n_pred, dtype=np.float64)
    shape = np.broadcast_shapes(tp.shape, denom.shape)
    return np.divide(2.0 * tp, denom, out=np.zeros(shape), where=denom > 0)


def macro_f1_from_counts(tp: np.ndarray, n_pred: np.ndarray, n_true: np.ndarray) -> np.ndarray:
    """Macro-F1 over the last axis from per-class counts: the mean of :func:`f1_from_counts`
    over every class, as scikit-learn's ``f1_score(average="macro")`` over every label. One score
    per leading index: the greedy searches (caruana, bias offsets, the bootstrap) update counts
    instead of rescoring labels."""
    return f1_from_counts(tp, n_pred, n_true).mean(axis=-1)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """scikit-learn's ``f1_score(labels=range(n_classes), average="macro", zero_division=0)``,
    from per-class counts. Labels outside ``[0, n_classes)`` are refused."""
    y_true = np.asarray(y_true).ravel().astype(np.int64, copy=False)
    y_pred = np.asarray(y_pred).ravel().astype(np.int64, copy=False)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"macro_f1: {len(y_true)} labels against {len(y_pred)} predictions")
    for what, v in (("labels", y_true), ("predictions", y_pred)):
        if len(v) and (v.min() < 0 or v.max() >= n_classes):
            raise ValueError(f"macro_f1: {what} outside [0, {n_classes})")
    tp = np.bincount(y_true[y_true == y_pred], minlength=n_classes)
    n_pred = np.bincount(y_pred, minlength=n_classes)
    n_true = np.bincount(y_true, minlength=n_classes)
    return float(macro_f1_from_counts(tp, n_pred, n_true))


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def log_loss(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (probabilities clipped at 1e-15)."""
    p = np.asarray(proba, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(p)), np.asarray(y_true)], EPS, 1.0))))


def scores(y_true: np.ndarray, proba: np.ndarray, folds: np.ndarray | None = None) -> dict:
    """macro-F1, accuracy and log loss of ``proba`` on the whole vector; with ``folds``, also
    each fold's macro-F1 and their standard deviation (the spread, not the score)."""
    c = proba.shape[1]
    pred = np.asarray(proba).argmax(axis=1)
    out = {
        "macro_f1": macro_f1(y_true, pred, c),
        "accuracy": accuracy(y_true, pred),
        "log_loss": log_loss(y_true, proba),
    }
    if folds is not None:
        per = [macro_f1(y_true[folds == k], pred[folds == k], c) for k in np.unique(folds)]
        out["per_fold_macro_f1"] = per
        out["macro_f1_std"] = float(np.std(per))
    return out
