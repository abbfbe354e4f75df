"""One run as a learner (``run:<name>`` picked by ``auto``, or a blend's component): the
softmax of its columns of the meta features. Saved ensembles name it
``stackkit.cv.runs.RunColumns``, which resolves to this class."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from stackkit import metrics


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
