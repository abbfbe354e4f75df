"""The protocol every learner but vote shares: validate, build run features, fit on the
classes present, predict all C columns, expose ``run_weights_`` and ``summary_()``."""

from __future__ import annotations

import logging

import numpy as np
from joblib import effective_n_jobs
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from stackkit.meta.defaults import N_JOBS, SEED  # noqa: F401  (re-exported for the learners)
from stackkit.meta.features import RunFeatures, infer_n_classes, split_runs

log = logging.getLogger(__name__)


def _check_y(y: np.ndarray, n_classes: int | None) -> tuple[np.ndarray, int]:
    y = np.asarray(y)
    if y.dtype.kind not in "iub" and not (
        y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y))
    ):
        raise ValueError(f"y must hold integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    c = infer_n_classes(y, n_classes)
    if len(y) and (y.min() < 0 or y.max() >= c):
        raise ValueError(f"labels must lie in [0, {c}) (n_classes={c}), got [{y.min()}, {y.max()}]")
    return y, c


class _MetaLearner(ClassifierMixin, BaseEstimator):
    """Shared fit/predict: validate, build features, fit the model on the classes present."""

    def _fit_model(self, Z: np.ndarray, y: np.ndarray, n_present: int):
        raise NotImplementedError

    def _threads(self):
        # BLAS threads follow n_jobs: with the folds fitted in parallel, OpenBLAS's own threads
        # oversubscribe the cores (measured: one lr fit 3.5 s on 1 thread, 31 s on 2 busy cores)
        return threadpool_limits(limits=effective_n_jobs(self.n_jobs), user_api="blas")

    def _model_proba(self, Z: np.ndarray) -> np.ndarray:
        return self.model_.predict_proba(Z)

    def _column_importance(self) -> np.ndarray | None:
        """Non-negative importance per feature column, or None for uniform run weights."""
        return None

    def fit(self, X, y):
        self._validate_params()
        X, y = validate_data(self, X, y, dtype=np.float64)
        y, c = _check_y(y, self.n_classes)
        self.n_runs_ = split_runs(X, c).shape[1]
        self.n_classes_, self.classes_ = c, np.arange(c)
        self.present_ = np.unique(y)  # classes seen in training; the others get probability 0
        self.features_ = RunFeatures(c, self.features, self.temperature, self.combine).fit(X, y)
        Z = self.features_.transform(X)
        if len(self.present_) > 1:
            with self._threads():
                self._fit_model(Z, np.searchsorted(self.present_, y), len(self.present_))
        else:
            self.model_ = None
        imp = self._column_importance() if self.model_ is not None else None
        r = self.n_runs_
        self.run_weights_ = np.full(r, 1.0 / r) if imp is None else self.features_.per_run(imp)
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        out = np.zeros((len(X), self.n_classes_))
        if self.model_ is None:
            out[:, self.present_] = 1.0
            return out
        with self._threads():
            p = np.clip(self._model_proba(self.features_.transform(X)), 0.0, None)
        out[:, self.present_] = p
        return out / out.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    def _summary_extra(self) -> dict:
        return {}

    def summary_(self) -> dict:
        check_is_fitted(self)
        return {
            "learner": self._name,
            "params": {k: v for k, v in self.get_params().items()},
            "features": self.features_.summary(),
            "n_runs": int(self.n_runs_),
            "classes_present": self.present_.tolist(),
            "run_weights": [round(float(w), 6) for w in self.run_weights_],
            **self._summary_extra(),
        }


def _balanced(y: np.ndarray, class_weight) -> np.ndarray | None:
    return None if class_weight is None else compute_sample_weight(class_weight, y)


def _r(a) -> list:
    return np.round(np.asarray(a, dtype=np.float64), 6).tolist()
