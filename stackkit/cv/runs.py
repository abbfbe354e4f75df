"""Single runs as candidates of ``auto`` (contract 1.1): ``run:<name>`` competes with the stacks.

A run's "meta-level CV predictions" are its own OOF softmax probabilities (each row predicted by
a fold model that never saw it), so its ``cv_macro_f1`` is the run's own OOF macro-F1 and no
learner is fitted. When a run is the pick, the test probabilities are that run's fold-averaged
test probabilities; inside a ``blend`` it is one more component.

    >>> cands = run_candidates(runset)          # [CVResult("run:effnet", ...), ...]
    >>> RunColumns(index=0, n_classes=18).predict_proba(X)   # run 0's softmax, from the features
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from stackkit import metrics
from stackkit.contract.store import RunSet
from stackkit.cv.result import CVResult

RUNS = "runs"  # in a --meta list: every run is a candidate (``auto`` holds it)
PREFIX = "run:"


def is_run(meta: str) -> bool:
    return meta.startswith(PREFIX)


def candidate_name(run: str) -> str:
    return f"{PREFIX}{run}"


def run_candidates(runset: RunSet) -> list[CVResult]:
    """One candidate per run: its OOF softmax probabilities and their scores."""
    y, f = runset.folds.labels, runset.folds.fold_ids
    out = []
    for i, name in enumerate(runset.names):
        p = metrics.softmax(runset.oof[i])
        out.append(CVResult(candidate_name(name), p, metrics.scores(y, p, f), 0.0, {}))
    return out


def run_test_proba(runset: RunSet, meta: str) -> np.ndarray:
    """The fold-averaged test softmax probabilities of the run named by ``meta``."""
    i = runset.names.index(meta[len(PREFIX) :])
    return metrics.softmax(runset.test[i], axis=-1).mean(axis=0)


class RunColumns(ClassifierMixin, BaseEstimator):
    """One run as a learner: the softmax of its columns of the features (run-major logits, or
    the test features' log mean probabilities). ``fit`` learns nothing."""

    def __init__(self, run: str = "", index: int = 0, n_runs: int = 1, n_classes: int = 2):
        self.run = run
        self.index = index
        self.n_runs = n_runs
        self.n_classes = n_classes

    def fit(self, X, y=None):
        self.classes_ = np.arange(self.n_classes)
        return self

    def predict_proba(self, X) -> np.ndarray:
        c = self.n_classes
        return metrics.softmax(np.asarray(X)[:, self.index * c : (self.index + 1) * c])

    def predict(self, X) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    @property
    def run_weights_(self) -> np.ndarray:
        w = np.zeros(self.n_runs)
        w[self.index] = 1.0
        return w

    def summary_(self) -> dict:
        return {"learner": "run", "run": self.run}


def run_learner(runset: RunSet, meta: str) -> RunColumns:
    run = meta[len(PREFIX) :]
    return RunColumns(run, runset.names.index(run), runset.n_runs, runset.folds.n_classes).fit(None)
