"""vote: the mean of the runs' softmax probabilities; nothing is learned."""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from stackkit.meta.base import INPUT_DTYPES, _r, fit_input
from stackkit.meta.features import N_CLASSES_CONSTRAINT, by_rows, split_runs
from stackkit.metrics import softmax

log = logging.getLogger(__name__)


class VoteLearner(ClassifierMixin, BaseEstimator):
    """Mean of the runs' softmax probabilities: no parameters learned."""

    _name = "vote"
    _parameter_constraints: ClassVar[dict] = {"n_classes": N_CLASSES_CONSTRAINT}

    def __init__(self, n_classes: int | None = None):
        self.n_classes = n_classes

    def fit(self, X, y):
        self._validate_params()
        fit_input(self, X, y)
        self.run_weights_ = np.full(self.n_runs_, 1.0 / self.n_runs_)
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=INPUT_DTYPES, reset=False)
        c = self.n_classes_
        return by_rows(lambda x: softmax(split_runs(x, c), axis=2).mean(axis=1), X, c)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # checks it is fitted first
        return self.classes_[proba.argmax(axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.poor_score = True  # it learns nothing: the runs' columns decide
        return tags

    def summary_(self) -> dict:
        check_is_fitted(self)
        return {"learner": "vote", "params": self.get_params(), "features": "softmax mean",
                "n_runs": int(self.n_runs_), "run_weights": _r(self.run_weights_)}  # fmt: skip
