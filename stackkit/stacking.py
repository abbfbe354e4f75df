"""Meta-level cross-validation on the stored folds, and choosing among meta learners.

The meta predictions for fold k always come from a learner fitted on the other folds' OOF rows
(``PredefinedSplit`` over the fold column of folds.parquet), so every score here is computed on
predictions the scoring rows never trained. Scores are computed once on the whole OOF vector.

    >>> X, y, folds = features(runset), runset.folds.labels, runset.folds.fold_ids
    >>> res = cross_val_meta("lr", X, y, folds, n_classes=18)
    >>> res.scores["macro_f1"]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.model_selection import PredefinedSplit

from stackkit import metrics
from stackkit.engine import parallel_backend
from stackkit.store import RunSet

log = logging.getLogger(__name__)


def features(runset: RunSet) -> np.ndarray:
    """OOF logits as the meta learners' input: (n_train, R*C), run-major."""
    r, n, c = runset.oof.shape
    return np.ascontiguousarray(runset.oof.transpose(1, 0, 2).reshape(n, r * c))


def test_features(runset: RunSet) -> np.ndarray:
    """Test input: per run, the log of the fold models' mean softmax probability, (n_test, R*C)."""
    r, _, m, c = runset.test.shape
    mean_p = metrics.softmax(runset.test, axis=-1).mean(axis=1)  # (R, m, C)
    logp = np.log(np.clip(mean_p, metrics.EPS, None)).astype(np.float32)
    return np.ascontiguousarray(logp.transpose(1, 0, 2).reshape(m, r * c))


@dataclass
class CVResult:
    """One meta learner's cross-validated OOF probabilities and their scores."""

    meta: str
    oof_proba: np.ndarray
    scores: dict
    seconds: float
    params: dict = field(default_factory=dict)

    def row(self) -> dict:
        """The leaderboard.json candidate entry (CONTRACT.md)."""
        return {
            "meta": self.meta,
            "cv_macro_f1": self.scores["macro_f1"],
            "cv_macro_f1_std": self.scores["macro_f1_std"],
            "cv_accuracy": self.scores["accuracy"],
            "cv_log_loss": self.scores["log_loss"],
            "seconds": round(self.seconds, 3),
        }


def _fit_predict(est, X, y, train, test):
    est = clone(est).fit(X[train], y[train])
    return test, est.predict_proba(X[test])


def cross_val_proba(
    estimator,
    X: np.ndarray,
    y: np.ndarray,
    fold_ids: np.ndarray,
    n_classes: int,
    n_jobs: int = 1,
    engine: str = "local",
) -> np.ndarray:
    """OOF probabilities: rows of fold k predicted by ``estimator`` fitted on the other folds.

    ``engine="ray"`` fits the folds on a Ray cluster (joblib's Ray backend, every fold at once
    unless ``n_jobs`` > 1 says otherwise); the result is the same as with ``"local"``.
    """
    out = np.zeros((len(y), n_classes), dtype=np.float64)
    splits = PredefinedSplit(fold_ids).split()
    if engine != "local" and n_jobs == 1:
        n_jobs = -1
    with parallel_backend(engine):
        parts = Parallel(n_jobs=n_jobs)(
            delayed(_fit_predict)(estimator, X, y, tr, te) for tr, te in splits
        )
    for test, proba in parts:
        out[test] = proba
    return out


def cross_val_meta(
    meta: str,
    X: np.ndarray,
    y: np.ndarray,
    fold_ids: np.ndarray,
    n_classes: int,
    params: dict | None = None,
    n_jobs: int = 1,
    engine: str = "local",
) -> CVResult:
    """Cross-validate one named meta learner over the stored folds."""
    from stackkit.meta import make_learner

    est = make_learner(meta, n_classes=n_classes, params=(params or {}).get(meta))
    t0 = time.perf_counter()
    proba = cross_val_proba(est, X, y, fold_ids, n_classes, n_jobs=n_jobs, engine=engine)
    seconds = time.perf_counter() - t0
    scores = metrics.scores(y, proba, fold_ids)
    log.info(
        "%-8s CV macro-F1 %.4f (± %.4f over folds) in %.1fs",
        meta,
        scores["macro_f1"],
        scores["macro_f1_std"],
        seconds,
    )
    return CVResult(meta, proba, scores, seconds, dict((params or {}).get(meta) or {}))


def choose(results: Sequence[CVResult]) -> CVResult:
    """The best CV macro-F1; a tie goes to the simpler learner (meta.SIMPLICITY order)."""
    from stackkit.meta import SIMPLICITY

    rank = {m: i for i, m in enumerate(SIMPLICITY)}
    best = max(r.scores["macro_f1"] for r in results)
    tied = [r for r in results if r.scores["macro_f1"] >= best - 1e-12]
    return min(tied, key=lambda r: rank.get(r.meta, len(rank)))


def nested_cv(
    metas: Sequence[str],
    X: np.ndarray,
    y: np.ndarray,
    fold_ids: np.ndarray,
    n_classes: int,
    params: dict | None = None,
    tune_bias: bool = False,
    n_jobs: int = 1,
    progress=None,
    engine: str = "local",
) -> tuple[np.ndarray, list[str]]:
    """An honest estimate of the whole procedure: for each outer fold, the selection (and bias
    tuning, if asked) is redone on the other folds alone, then the pick predicts the outer fold.

    Returns the nested OOF probabilities and the meta learner picked in each outer fold.
    """
    from stackkit.decision import BiasTuner
    from stackkit.meta import make_learner

    out = np.zeros((len(y), n_classes))
    picks = []
    for k in np.unique(fold_ids):
        inner = fold_ids != k
        Xi, yi, fi = X[inner], y[inner], fold_ids[inner]
        res = [cross_val_meta(m, Xi, yi, fi, n_classes, params, n_jobs, engine) for m in metas]
        pick = choose(res)
        picks.append(pick.meta)
        est = make_learner(pick.meta, n_classes=n_classes, params=(params or {}).get(pick.meta))
        proba = est.fit(Xi, yi).predict_proba(X[~inner])
        if tune_bias:
            tuner = BiasTuner().fit(_log(pick.oof_proba), yi)
            proba = metrics.softmax(tuner.transform(_log(proba)))
        out[~inner] = proba
        log.info("nested: outer fold %d picked %s", k, pick.meta)
        if progress is not None:
            progress(k)
    return out, picks


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p, metrics.EPS, None))
