"""Linear meta learners: multinomial logistic regression (lr) and a linear SVM (svm)."""

from __future__ import annotations

import logging
from numbers import Integral, Real
from typing import ClassVar

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC
from sklearn.utils._param_validation import Interval

from stackkit.meta.base import _balanced, _MetaLearner, _r
from stackkit.meta.defaults import LR, N_JOBS, SEED, SVM
from stackkit.meta.features import (
    CHUNK_ROWS,
    FEATURE_CONSTRAINTS,
    N_JOBS_CONSTRAINT,
    fit_temperature,
)
from stackkit.metrics import log_softmax

log = logging.getLogger(__name__)


def fit_scaler(Z: np.ndarray):
    """A StandardScaler fitted a chunk of rows at a time (``partial_fit``): its temporaries stay
    the size of a chunk, not of ``Z`` (the same means and variances, up to rounding)."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    for i in range(0, len(Z), CHUNK_ROWS):
        scaler.partial_fit(Z[i : i + CHUNK_ROWS])
    return scaler


class LRLearner(_MetaLearner):
    """Multinomial logistic regression (lbfgs) on per-run (log-)probabilities."""

    _name = "lr"
    _parameter_constraints: ClassVar[dict] = {
        **FEATURE_CONSTRAINTS,
        **{k: LogisticRegression._parameter_constraints[k]
           for k in ("C", "class_weight", "max_iter", "tol")},
        "standardize": ["boolean"],
        "n_jobs": N_JOBS_CONSTRAINT,
    }  # fmt: skip

    def __init__(
        self,
        n_classes: int | None = None,
        features: str = LR["features"],
        temperature: bool = LR["temperature"],
        combine: str = LR["combine"],
        factors: str = LR["factors"],
        C: float = LR["C"],
        standardize: bool = LR["standardize"],
        class_weight: str | None = LR["class_weight"],
        max_iter: int = LR["max_iter"],
        tol: float = LR["tol"],
        n_jobs: int | None = N_JOBS,
    ):
        self.n_classes = n_classes
        self.features = features
        self.temperature = temperature
        self.combine = combine
        self.factors = factors
        self.C = C
        self.standardize = standardize
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.n_jobs = n_jobs

    def _fit_model(self, Z, y, n_present):
        self.scaler_ = fit_scaler(Z) if self.standardize else None
        lr = LogisticRegression(
            C=self.C, class_weight=self.class_weight, max_iter=self.max_iter, tol=self.tol
        )
        self.model_ = lr.fit(self._scale(Z), y)

    def _scale(self, Z):
        """Standardised in place: ``Z`` is always the features just built for this call."""
        return Z if self.scaler_ is None else self.scaler_.transform(Z, copy=False)

    def _model_proba(self, Z, X=None):
        return self.model_.predict_proba(self._scale(Z))

    def _column_importance(self):
        return np.sqrt((self.model_.coef_**2).sum(axis=0))

    def _summary_extra(self):
        return (
            {"coef": _r(self.model_.coef_), "intercept": _r(self.model_.intercept_)}
            if (self.model_ is not None)
            else {}
        )


def _squared_hinge_ovr(F, y, k, C, sample_weight=None, max_iter=200, tol=1e-4):
    """One-vs-rest linear SVM, L2-regularised squared hinge (liblinear's L2-loss SVC objective,
    intercept unpenalised), all k classes in one L-BFGS problem: two matrix products per step,
    like the logistic regression, where liblinear's 18 separate solves took 10x longer."""
    from scipy.optimize import minimize

    n, f = F.shape
    Y = np.where(np.arange(k)[None, :] == y[:, None], 1.0, -1.0)
    s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)

    def loss_grad(w):
        W, b = w[: f * k].reshape(f, k), w[f * k :]
        h = np.maximum(0.0, 1.0 - Y * (F @ W + b))
        sh = s[:, None] * h
        loss = (0.5 * (W * W).sum() + C * (sh * h).sum()) / n
        d = -2.0 * C * Y * sh / n
        return loss, np.concatenate([(F.T @ d + W / n).ravel(), d.sum(axis=0)])

    res = minimize(loss_grad, np.zeros((f + 1) * k), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": tol})  # fmt: skip
    return res.x[: f * k].reshape(f, k), res.x[f * k :]


class SVMLearner(_MetaLearner):
    """Linear SVM (one-vs-rest squared hinge, see ``_squared_hinge_ovr``) on standardised features, plus an approximate RBF
    kernel when ``n_components > 0`` (a Nystroem map beside the linear features: the sum of a
    linear and an RBF kernel). Probabilities: softmax of the margins divided by a temperature
    fitted on the training rows (by log loss); it keeps the argmax and makes the scores a
    distribution, though fitted in-sample it is somewhat over-confident."""

    _name = "svm"
    _parameter_constraints: ClassVar[dict] = {
        **FEATURE_CONSTRAINTS,
        # the objective is LinearSVC's (squared hinge), solved here by L-BFGS
        **{k: LinearSVC._parameter_constraints[k]
           for k in ("C", "class_weight", "max_iter", "tol", "random_state")},
        "gamma": [Interval(Real, 0, None, closed="neither"), None],  # the RBF part's; None: 1/F
        "n_components": [Interval(Integral, 0, None, closed="left")],  # 0: no RBF part
        "n_jobs": N_JOBS_CONSTRAINT,
    }  # fmt: skip

    def __init__(
        self,
        n_classes: int | None = None,
        features: str = SVM["features"],
        temperature: bool = SVM["temperature"],
        combine: str = SVM["combine"],
        factors: str = SVM["factors"],
        C: float = SVM["C"],
        gamma: float | None = SVM["gamma"],
        n_components: int = SVM["n_components"],
        class_weight: str | None = SVM["class_weight"],
        max_iter: int = SVM["max_iter"],
        tol: float = SVM["tol"],
        n_jobs: int | None = N_JOBS,
        random_state: int | None = SEED,
    ):
        self.n_classes = n_classes
        self.features = features
        self.temperature = temperature
        self.combine = combine
        self.factors = factors
        self.C = C
        self.gamma = gamma
        self.n_components = n_components
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _fit_model(self, Z, y, n_present):
        from sklearn.kernel_approximation import Nystroem

        self.scaler_ = fit_scaler(Z)
        Zs = self.scaler_.transform(Z, copy=False)  # Z: the features just built for this fit
        gamma = 1.0 / Zs.shape[1] if self.gamma is None else self.gamma  # SVC's "scale"
        k = min(self.n_components, len(Z))
        self.map_ = (
            Nystroem(gamma=gamma, n_components=k, random_state=self.random_state).fit(Zs)
            if k > 0
            else None
        )
        F = self._kernel_features(Zs)
        self.coef_, self.intercept_ = _squared_hinge_ovr(
            F, y, n_present, self.C, _balanced(y, self.class_weight), self.max_iter, self.tol
        )
        self.model_ = True  # fitted: coef_ and intercept_
        self.margin_temperature_ = fit_temperature(F @ self.coef_ + self.intercept_, y)

    def _kernel_features(self, Zs):
        """Linear plus (approximate) RBF kernel: the standardised features and their Nystroem
        map side by side."""
        return Zs if self.map_ is None else np.hstack([Zs, self.map_.transform(Zs)])

    def _margins(self, Z):
        Zs = self.scaler_.transform(Z, copy=False)  # Z: the features just built for this call
        return self._kernel_features(Zs) @ self.coef_ + self.intercept_

    def _model_proba(self, Z, X=None):
        return np.exp(log_softmax(self._margins(Z) / self.margin_temperature_, axis=1))

    def _column_importance(self):
        # coefficient norms per column; with an RBF part the runs are merged: uniform weights
        return np.sqrt((self.coef_**2).sum(axis=1)) if self.map_ is None else None

    def _summary_extra(self):
        if self.model_ is None:
            return {}
        return {"margin_temperature": round(float(self.margin_temperature_), 6),
                "n_components": 0 if self.map_ is None else int(self.map_.n_components)}  # fmt: skip
