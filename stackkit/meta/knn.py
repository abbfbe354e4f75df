"""knn: distance-weighted nearest neighbours over temperature-scaled run probabilities."""

from __future__ import annotations

import logging

from stackkit.meta.base import _MetaLearner
from stackkit.meta.defaults import KNN, N_JOBS

log = logging.getLogger(__name__)


class KNNLearner(_MetaLearner):
    """Distance-weighted k nearest neighbours on per-run probabilities."""

    _name = "knn"

    def __init__(
        self,
        n_classes: int | None = None,
        features: str = KNN["features"],
        temperature: bool = KNN["temperature"],
        combine: str = KNN["combine"],
        n_neighbors: int = KNN["n_neighbors"],
        weights: str = KNN["weights"],
        n_jobs: int | None = N_JOBS,
    ):
        self.n_classes = n_classes
        self.features = features
        self.temperature = temperature
        self.combine = combine
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.n_jobs = n_jobs

    def _fit_model(self, Z, y, n_present):
        from sklearn.neighbors import KNeighborsClassifier

        k = max(1, min(self.n_neighbors, len(Z)))
        self.model_ = KNeighborsClassifier(k, weights=self.weights, n_jobs=self.n_jobs).fit(Z, y)
