"""Greedy ensemble selection with replacement (Caruana et al., 2004), optimising macro-F1.

Start from the ``init_size`` best single runs (sorted initialisation), then ``max_iter`` times add
the run, with replacement, whose addition gives the best score of the argmax of the running mean
of softmax probabilities. The trajectory is kept whole; the fitted weights come from its best
prefix (the shortest one reaching the best score), so the extra steps only ever cost time.

Ties between candidates, in this order (``_pick``): (1) toward a run already in the ensemble, so
duplicates and no-op runs do not enter; (2) the lower log loss of the candidate ensemble;
(3) the lower run index. Scores within ``TIE_TOL`` of each other count as equal.

    >>> sel = CaruanaSelection(n_classes=18).fit(X, y)   # X: (n, R*18) logits, run-major
    >>> sel.weights_, sel.predict_proba(X_test)
"""

from __future__ import annotations

import logging
from functools import partial
from numbers import Integral
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from stackkit.meta.base import INPUT_DTYPES, fit_input
from stackkit.meta.features import N_CLASSES_CONSTRAINT, by_rows
from stackkit.metrics import EPS, macro_f1_from_counts, softmax

log = logging.getLogger(__name__)

TIE_TOL = 1e-12  # scores this close are equal: sums of the same counts in another order differ
METRICS = ("macro_f1", "accuracy")


def run_probabilities(X: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, R*C) run-major logits -> (n, R, C) softmax probabilities (a row's runs lie together)."""
    if X.shape[1] % n_classes:
        raise ValueError(
            f"X has shape {X.shape}: {X.shape[1]} columns are not a multiple of "
            f"n_classes={n_classes}"
        )

    def rows(x):
        return softmax(x.reshape(len(x), -1, n_classes)).reshape(len(x), -1)

    return by_rows(rows, X, X.shape[1]).reshape(len(X), -1, n_classes)


def count_predictions(pred: np.ndarray, y: np.ndarray, n_classes: int):
    """Per row of ``pred`` (m, n) against ``y`` (n,): true positives and predictions per class,
    two (m, n_classes) integer arrays."""
    m = pred.shape[0]
    flat = (np.arange(m) * n_classes)[:, None] + pred
    tp = np.bincount(flat[pred == y], minlength=m * n_classes).reshape(m, n_classes)
    n_pred = np.bincount(flat.ravel(), minlength=m * n_classes).reshape(m, n_classes)
    return tp, n_pred


def score_counts(tp: np.ndarray, n_pred: np.ndarray, n_true: np.ndarray, metric: str):
    """Macro-F1 over every class (scikit-learn's: a class never true nor predicted scores 0 and
    still counts) or accuracy, from per-class counts; one score per row of ``tp``."""
    if metric == "accuracy":
        return tp.sum(axis=-1) / n_true.sum()
    return macro_f1_from_counts(tp, n_pred, n_true)


def score_predictions(pred: np.ndarray, y: np.ndarray, n_classes: int, metric: str) -> np.ndarray:
    """Score each row of ``pred`` (m, n) against ``y`` (n,)."""
    tp, n_pred = count_predictions(pred, y, n_classes)
    return score_counts(tp, n_pred, np.bincount(y, minlength=n_classes), metric)


def _pick(scores: np.ndarray, counts: np.ndarray, log_loss) -> int:
    """Index of the best candidate: highest score, then already chosen (count > 0), then lowest
    log loss (``log_loss(indices)`` -> their losses, asked only when needed), then lowest index."""
    tied = scores >= scores.max() - TIE_TOL
    if (tied & (counts > 0)).any():
        tied &= counts > 0
    cands = np.flatnonzero(tied)
    if len(cands) > 1:
        losses = np.asarray(log_loss(cands))
        cands = cands[losses <= losses.min() + TIE_TOL]
    return int(cands[0])


class CaruanaSelection(ClassifierMixin, BaseEstimator):
    """Weighted mean of the runs' softmax probabilities, weights by greedy selection.

    Parameters
    ----------
    n_classes : classes per run; None takes the number of distinct labels in ``y``.
    max_iter : greedy additions after the initialisation.
    init_size : runs in the sorted initialisation (distinct, best first).
    metric : "macro_f1" or "accuracy", the score maximised.
    """

    _parameter_constraints: ClassVar[dict] = {
        "n_classes": N_CLASSES_CONSTRAINT,
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "init_size": [Interval(Integral, 1, None, closed="left")],  # and at most the runs
        "metric": [StrOptions(set(METRICS))],
    }

    def __init__(
        self,
        n_classes: int | None = None,
        max_iter: int = 50,  # AutoGluon uses 25-100; the best prefix makes extra steps harmless
        init_size: int = 1,  # start from the best single run; more gives a smoother start
        metric: str = "macro_f1",  # what the competition scores
    ):
        self.n_classes = n_classes
        self.max_iter = max_iter
        self.init_size = init_size
        self.metric = metric

    def _check_params(self, n_runs: int) -> None:
        if self.init_size > n_runs:
            raise ValueError(f"init_size must be an int in [1, {n_runs}], got {self.init_size!r}")

    def fit(self, X, y):
        self._validate_params()
        X, y, c = fit_input(self, X, y)  # y: class indices now; classes_ set
        P = run_probabilities(X, c)  # (n, R, C)
        n, n_runs = P.shape[:2]
        self._check_params(n_runs)

        n_true = np.bincount(y, minlength=c)
        hi, lo = P.max(axis=1), P.min(axis=1)  # (n, C): bounds over runs, for the pruning
        p_true = P[np.arange(n), :, y]  # (n, R): each run's probability of the true class
        single = score_predictions(P.argmax(axis=2).T, y, c, self.metric)
        counts = np.zeros(n_runs, dtype=np.int64)
        indices: list[int] = []
        for _ in range(self.init_size):  # sorted initialisation: the best distinct runs
            r = _pick(
                np.where(counts > 0, -np.inf, single),
                np.zeros(n_runs),
                lambda i: _nll(p_true[:, i]),
            )
            counts[r] += 1
            indices.append(r)
        k = self.init_size
        mean = P[:, indices].mean(axis=1)  # running mean of the ensemble's probabilities
        mean_true = p_true[:, indices].mean(axis=1)
        trajectory = [float(score_predictions(mean.argmax(axis=1)[None], y, c, self.metric)[0])]

        for _ in range(self.max_iter):
            scores = _candidate_scores(P, hi, lo, mean, k, y, n_true, self.metric)
            r = _pick(scores, counts, partial(_added_nll, mean_true, p_true, k))
            mean += (P[:, r] - mean) / (k + 1)  # incremental running mean
            mean_true += (p_true[:, r] - mean_true) / (k + 1)
            k += 1
            counts[r] += 1
            indices.append(r)
            trajectory.append(float(scores[r]))

        traj = np.asarray(trajectory)
        best_step = int(np.flatnonzero(traj >= traj.max() - TIE_TOL)[0])  # shortest best prefix
        self.n_selected_ = self.init_size + best_step
        kept = np.bincount(indices[: self.n_selected_], minlength=n_runs)
        self.weights_ = kept / kept.sum()
        self.run_weights_ = self.weights_
        self.trajectory_ = traj
        self.indices_ = np.asarray(indices)
        self.best_score_ = float(traj[best_step])
        log.debug(
            "caruana: %s %.5f after %d of %d picks, weights %s",
            self.metric, self.best_score_, self.n_selected_, len(indices), np.round(self.weights_, 3),
        )  # fmt: skip
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "weights_")
        X = validate_data(self, X, dtype=INPUT_DTYPES, reset=False)
        used = np.flatnonzero(self.weights_)
        c = len(self.classes_)
        runs = X.reshape(len(X), -1, c)[:, used]
        return np.einsum("r,nrc->nc", self.weights_[used], softmax(runs))

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # checks it is fitted first
        return self.classes_[proba.argmax(axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.poor_score = True  # a weighted vote: the runs' columns decide
        return tags

    def summary_(self) -> dict:
        check_is_fitted(self, "weights_")
        return {
            "meta": "caruana",
            "params": self.get_params(),
            "weights": [float(w) for w in self.weights_],
            "best_score": self.best_score_,
            "prefix_length": int(self.n_selected_),
            "indices": [int(i) for i in self.indices_],
            "trajectory": [float(s) for s in self.trajectory_],
        }


def _candidate_scores(P, hi, lo, mean, k, y, n_true, metric) -> np.ndarray:
    """Score of the ensemble after adding each run once more: the argmax of k*mean + P[:, r]
    (the new mean times k+1), for every r at once.

    Row i can leave its current class t for j only if k*(mean_t - mean_j) <= P_rj - P_rt for some
    run r, which is at most hi_j - lo_t (``hi``/``lo``: the max/min over runs, per class). Rows
    where no class is that close keep t for every candidate and are counted once; only the
    others are re-decided (most rows at k=1, a few percent by k=50). Exact, not a heuristic."""
    c = mean.shape[1]
    rows_all = np.arange(len(mean))
    top = mean.argmax(axis=1)
    gap = k * (mean[rows_all, top][:, None] - mean)
    near = gap <= hi - lo[rows_all, top][:, None] + 1e-9  # slack for rounding
    open_ = near.sum(axis=1) > 1  # the top class always counts itself
    settled = ~open_
    tp, n_pred = count_predictions(top[settled][None], y[settled], c)
    if settled.any():
        rows = np.flatnonzero(open_)
        mean, P, y = mean[rows], P[rows], y[rows]
    pred = (k * mean[:, None, :] + P).argmax(axis=2).T  # (R, open rows)
    tp_open, n_pred_open = count_predictions(pred, y, c)
    return score_counts(tp + tp_open, n_pred + n_pred_open, n_true, metric)


def _added_nll(mean_true: np.ndarray, p_true: np.ndarray, k: int, runs: np.ndarray):
    """Log loss of the ensemble (k members, true-class mean ``mean_true``) plus each of ``runs``."""
    return _nll((k * mean_true[:, None] + p_true[:, runs]) / (k + 1))


def _nll(p_true: np.ndarray) -> np.ndarray:
    """Log loss of each column of true-class probabilities (n, m) -> (m,)."""
    return -np.log(np.clip(p_true, EPS, 1.0)).mean(axis=0)
