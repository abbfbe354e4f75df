"""The numbers behind ``stackkit report``: per-class F1, run diversity, calibration, sub-tasks.

Every function takes plain arrays (labels, probabilities, predictions) so each can be tested
without an artifacts folder; :mod:`stackkit.report` loads the arrays and lays the numbers out.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform
from sklearn.metrics import confusion_matrix, f1_score

from stackkit import metrics
from stackkit.data.layouts import MASK_CLASSES

N_BINS = 10  # reliability bins of equal width over the top-class confidence
SUBTASKS = {  # the 18 mask classes are mask (3) x gender (2) x age (3)
    "mask": (lambda y: y // 6, ("wear", "incorrect", "none")),
    "gender": (lambda y: (y // 3) % 2, ("male", "female")),
    "age": (lambda y: y % 3, ("<30", "30-59", "60+")),
}


def per_class_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    return f1_score(y, pred, labels=np.arange(n_classes), average=None, zero_division=0)


def normalised_confusion(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Row i: where the samples of true class i went (rows sum to 1; empty rows stay 0)."""
    cm = confusion_matrix(y, pred, labels=np.arange(n_classes)).astype(np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)


def error_correlation(errors: np.ndarray) -> np.ndarray:
    """Pearson correlation of per-sample 0/1 error indicators, (R, n) -> (R, R).

    A run that is always right (or always wrong) has no variance; its correlations are 0.
    """
    e = np.asarray(errors, dtype=np.float64)
    e = e - e.mean(axis=1, keepdims=True)
    norm = np.sqrt((e**2).sum(axis=1))
    cov = e @ e.T
    denom = np.outer(norm, norm)
    corr = np.divide(cov, denom, out=np.zeros_like(cov), where=denom > 0)
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, -1.0, 1.0)


def disagreement(preds: np.ndarray) -> np.ndarray:
    """Share of samples on which runs i and j predict different classes, (R, n) -> (R, R)."""
    p = np.asarray(preds)
    return (p[:, None, :] != p[None, :, :]).mean(axis=2)


def cluster_order(corr: np.ndarray) -> np.ndarray:
    """Order runs so that correlated ones sit together (average linkage on 1 - correlation)."""
    r = len(corr)
    if r < 3:
        return np.arange(r)
    dist = np.clip(1.0 - corr, 0.0, None)
    dist = (dist + dist.T) / 2.0
    np.fill_diagonal(dist, 0.0)
    return leaves_list(linkage(squareform(dist, checks=False), method="average"))


def reliability(y: np.ndarray, proba: np.ndarray, n_bins: int = N_BINS) -> dict:
    """Top-class confidence against accuracy in equal-width bins, and the ECE.

    ECE = sum over bins of (share of samples in the bin) x |accuracy - mean confidence|.
    """
    conf = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(conf, edges[1:-1]), 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins).astype(np.float64)
    safe = np.maximum(count, 1)
    acc = np.bincount(bins, weights=correct, minlength=n_bins) / safe
    mean_conf = np.bincount(bins, weights=conf, minlength=n_bins) / safe
    ece = float(np.sum(count / len(y) * np.abs(acc - mean_conf)))
    return {"edges": edges, "count": count, "accuracy": acc, "confidence": mean_conf, "ece": ece}


def is_mask_layout(classes, folds_meta: dict) -> bool:
    data = folds_meta.get("data") or {}
    return data.get("layout") == "mask" or list(classes) == list(MASK_CLASSES)


def subtask_scores(y: np.ndarray, pred: np.ndarray) -> dict:
    """Accuracy and macro-F1 of mask, gender and age, read off 18-class predictions."""
    out = {}
    for task, (part, names) in SUBTASKS.items():
        yt, pt = part(y), part(pred)
        out[task] = {
            "accuracy": metrics.accuracy(yt, pt),
            "macro_f1": metrics.macro_f1(yt, pt, len(names)),
        }
    return out


def per_fold_macro_f1(y: np.ndarray, pred: np.ndarray, folds: np.ndarray, c: int) -> list:
    return [metrics.macro_f1(y[folds == k], pred[folds == k], c) for k in np.unique(folds)]
