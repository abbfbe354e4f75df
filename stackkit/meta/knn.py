"""knn: distance-weighted nearest neighbours over temperature-scaled run probabilities."""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np
from sklearn.neighbors import KNeighborsClassifier

from stackkit.meta.base import _MetaLearner
from stackkit.meta.defaults import KNN, N_JOBS
from stackkit.meta.features import FEATURE_CONSTRAINTS, N_JOBS_CONSTRAINT

_KNN = KNeighborsClassifier._parameter_constraints

log = logging.getLogger(__name__)


class KNNLearner(_MetaLearner):
    """Distance-weighted k nearest neighbours on per-run probabilities.

    A ``n_neighbors`` larger than the training rows is clamped to them; the k used is recorded
    as ``n_neighbors_`` and in ``summary_()`` (``stackkit fit`` refuses such a k up front)."""

    _name = "knn"
    _parameter_constraints: ClassVar[dict] = {
        **FEATURE_CONSTRAINTS,
        "n_neighbors": [c for c in _KNN["n_neighbors"] if c is not None],  # a k is required
        "weights": _KNN["weights"],
        "n_jobs": N_JOBS_CONSTRAINT,
    }
    # float32 features: half the memory (the fitted model keeps every training row); measured on
    # make_case(2700, 12600, 10 runs), fold 0: probabilities within 1e-8 of float64's (lr moved
    # 1e-4 and svm 1e-6 on float32: they stay float64)
    _feature_dtype = np.float32

    def __init__(
        self,
        n_classes: int | None = None,
        features: str = KNN["features"],
        temperature: bool = KNN["temperature"],
        combine: str = KNN["combine"],
        factors: str = KNN["factors"],
        n_neighbors: int = KNN["n_neighbors"],
        weights: str = KNN["weights"],
        n_jobs: int | None = N_JOBS,
    ):
        self.n_classes = n_classes
        self.features = features
        self.temperature = temperature
        self.combine = combine
        self.factors = factors
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.n_jobs = n_jobs

    def _fit_model(self, Z, y, n_present):
        self.n_neighbors_ = min(self.n_neighbors, len(Z))
        self.model_ = KNeighborsClassifier(
            self.n_neighbors_, weights=self.weights, n_jobs=self.n_jobs
        ).fit(Z, y)

    def _summary_extra(self):
        return {} if self.model_ is None else {"n_neighbors_used": int(self.n_neighbors_)}
