"""The protocol every learner shares: scikit-learn's input checks and labels (``fit_input``),
and for all but vote and caruana: build run features, fit on the classes present, predict all C
columns, expose ``run_weights_`` and ``summary_()``."""

from __future__ import annotations

import logging

import numpy as np
from joblib import effective_n_jobs
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from stackkit.meta.defaults import N_JOBS, SEED  # noqa: F401  (re-exported for the learners)
from stackkit.meta.features import RunFeatures

log = logging.getLogger(__name__)

# what the learners take as X without a copy: the stored logits are float32 (scikit-learn casts
# anything else to the first, float64)
INPUT_DTYPES = (np.float64, np.float32)


def fit_input(est, X, y, rows=None) -> tuple[np.ndarray, np.ndarray, int]:
    """Check ``X`` and ``y`` the scikit-learn way and set ``n_features_in_``, ``classes_``,
    ``n_classes_`` and ``n_runs_`` on ``est``; return X (float32 logits stay float32, as
    stored: the features are computed in float64 from them, a chunk of rows at a time; anything
    else becomes float64), y as class indices, C.

    ``n_classes=None``: any labels, ``classes_`` the sorted distinct ones (as LabelEncoder).
    ``n_classes=C`` (what the meta-level CV passes, so that a fold lacking a class still yields C
    columns): labels are the class indices 0..C-1 and ``classes_`` is ``arange(C)``.

    ``rows``: the learner is fitted on those rows of X and y alone (X is returned whole, to be
    read in place; y those rows' labels)."""
    X, y = validate_data(est, X, y, dtype=INPUT_DTYPES)
    if rows is not None:
        y = y[rows]
    check_classification_targets(y)
    if est.n_classes is None:
        classes, y = np.unique(y, return_inverse=True)
        c = len(classes)
    else:
        c, classes = int(est.n_classes), np.arange(int(est.n_classes))
        if y.dtype.kind not in "iuf" or (y != np.round(y)).any() or y.min() < 0 or y.max() >= c:
            raise ValueError(
                f"with n_classes={c}, y must hold the class indices 0..{c - 1}; "
                f"got {np.unique(y)[:5].tolist()}… (or leave n_classes=None for any labels)"
            )
        y = y.astype(np.int64)
    check_runs(X, c)
    est.classes_, est.n_classes_, est.n_runs_ = classes, c, X.shape[1] // c
    return X, y, c


def check_runs(X: np.ndarray, c: int) -> None:
    """X must be whole runs of C logits; on a binary task, refuse what scikit-learn's
    StackingClassifier passes with ``stack_method="predict_proba"`` (or "auto"): one
    probability per model (it drops the first column), which read as logit pairs would score
    garbage. (Its one decision value per model cannot be told from logits: not refused.)"""
    hint = (
        "; on a binary task scikit-learn's StackingClassifier keeps one column per model: give "
        "these learners each model's 2 logits or log-probabilities instead"
    )
    if X.shape[1] == 0 or X.shape[1] % c:
        raise ValueError(
            f"X has n_features={X.shape[1]}, not a whole number of runs of n_classes={c} "
            f"logits each{hint if c == 2 else ''}"
        )
    if c == 2 and ((X >= 0) & (X <= 1)).all() and ((X > 0) & (X < 1)).any():
        pairs = X.reshape(len(X), -1, 2).sum(axis=2)
        if not np.allclose(pairs, 1.0, atol=1e-6):  # probabilities of one class, not logits
            raise ValueError(f"X holds values in [0, 1] that are not logit pairs{hint}")


class _MetaLearner(ClassifierMixin, BaseEstimator):
    """Shared fit/predict: validate, build features, fit the model on the classes present.

    ``_feature_dtype``: the dtype the features are handed to the model in; float64 unless the
    model casts them to float32 itself (then the same numbers in half the memory)."""

    _feature_dtype = np.float64
    _fits_rows = True  # fit(X, y, rows=...): stacking.run_tasks passes a fold's rows

    def _fit_model(self, Z: np.ndarray, y: np.ndarray, n_present: int):
        raise NotImplementedError

    def _threads(self):
        # BLAS threads follow n_jobs: with the folds fitted in parallel, OpenBLAS's own threads
        # oversubscribe the cores (measured: one lr fit 3.5 s on 1 thread, 31 s on 2 busy cores)
        return threadpool_limits(limits=effective_n_jobs(self.n_jobs), user_api="blas")

    def _model_proba(self, Z: np.ndarray, X: np.ndarray) -> np.ndarray:
        """The model's probabilities over the classes present, from the features ``Z`` of the
        input ``X`` (X for a learner that needs more than its features: xgboost's base)."""
        return self.model_.predict_proba(Z)

    def _column_importance(self) -> np.ndarray | None:
        """Non-negative importance per feature column, or None for uniform run weights."""
        return None

    def fit(self, X, y, rows=None):
        """Fit on X and y, or with ``rows`` on those rows of them, read from X a chunk at a time
        (the meta-level CV passes the shared X and a fold's rows: no copy of them first)."""
        self._validate_params()
        X, y, c = fit_input(self, X, y, rows)
        self.present_ = np.unique(y)  # classes seen in training; the others get probability 0
        self.features_ = RunFeatures(
            c, self.features, self.temperature, self.combine, self.factors
        ).fit(X, y, rows)
        Z = self.features_.transform(X, dtype=self._feature_dtype, rows=rows)
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
        X = validate_data(self, X, dtype=INPUT_DTYPES, reset=False)
        out = np.zeros((len(X), self.n_classes_))
        if self.model_ is None:
            out[:, self.present_] = 1.0
            return out
        with self._threads():
            Z = self.features_.transform(X, dtype=self._feature_dtype)
            p = np.clip(self._model_proba(Z, X), 0.0, None)
        out[:, self.present_] = p
        return out / out.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # checks it is fitted first
        return self.classes_[proba.argmax(axis=1)]

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
