"""Meta learners: sklearn classifiers over the runs' out-of-fold logits, and their registry.

Every learner takes ``X`` of shape ``(n, R*C)`` (R runs' raw logits, run-major) and labels in
``[0, C)``; ``classes_`` is always ``np.arange(C)`` and ``predict_proba`` always returns C columns,
even when a class is missing from the training rows (it then gets probability 0). After ``fit``
each exposes ``run_weights_`` (R,) (non-negative, sums to 1) and ``summary_()`` (a JSON-ready dict).

    >>> est = make_learner("lr", n_classes=18, params={"C": 0.5})
    >>> est.fit(X, y).predict_proba(X_test)
    >>> parse_params(["rf.n_estimators=300", "lr.C=0.5"])
    {'rf': {'n_estimators': 300}, 'lr': {'C': 0.5}}

Learners (SIMPLICITY order, simplest first; ``caruana`` lives in :mod:`stackkit.selection`):
``vote`` mean of the runs' softmax; ``lr`` multinomial logistic regression; ``knn`` distance-
weighted neighbours; ``svm`` linear SVM (optionally plus an RBF part through a Nystroem map),
softmax of its margins with a fitted temperature; ``rf`` random forest; ``xgboost``
gradient-boosted trees. Defaults and the measurements behind them: the DEFAULTS block below.
Features for all but ``vote`` come from :class:`stackkit.features.RunFeatures`.

Order of runs: ``vote`` and ``knn``/``svm`` (Euclidean geometry over all columns) do not depend on
it; ``lr`` does not either (the same solution up to a column permutation, equal to solver
tolerance). ``rf`` and ``xgboost`` draw features at random or break split ties by column index, so
permuting runs can change them slightly; ``stackkit.store`` sorts runs by name, so a given set of
runs always meets them in one order.
"""

from __future__ import annotations

import logging

import numpy as np
from joblib import effective_n_jobs
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import threadpool_limits

from stackkit.errors import StackkitError
from stackkit.features import RunFeatures, fit_temperature, infer_n_classes, split_runs
from stackkit.metrics import log_softmax, softmax

log = logging.getLogger(__name__)

SIMPLICITY = ("vote", "caruana", "lr", "knn", "svm", "rf", "xgboost")

# --------------------------------------------------------------------------------------------
# DEFAULTS, all in one place. Sized for ~20k rows x up to 30 runs x 18 classes on 2 cores;
# the target is `stackkit fit --meta auto` (7 learners x 5 folds + refit) in about a minute.
# Measured with bench/learners.py on make_case(2700, 12600, 10): 5-fold macro-F1 on the whole
# OOF vector, against each learner's scikit-learn-defaults counterpart on the concatenated
# probabilities ("naive"). Seconds are fit + predict per fold on a shared 2-core machine that
# others were loading (load ~5): read them as ratios to the naive ones.
N_JOBS = 1  # the caller (stacking.run_tasks) parallelises over folds; don't oversubscribe
SEED = 0  # every random learner is reproducible
# Rough cost of one fit per training row, relative to lr, on the reference case: the shared pool
# (stacking.run_tasks) starts the costliest fits first. Only the order matters.
RELATIVE_COST = {"vote": 0.01, "caruana": 0.5, "lr": 1.0, "svm": 1.2, "knn": 1.5, "rf": 5.0,
                 "xgboost": 10.0}  # fmt: skip

# lr (0.867, 1.4 s; naive 0.860): log-probabilities beat probabilities (log loss 0.27 vs 0.35);
# standardised so lbfgs converges in ~30 iterations; C=0.1 beats 1.0 and 0.01; "balanced"
# weights cost 0.02 macro-F1 here; the per-class mean over runs loses 0.13. No temperature: the
# linear model learns each column's scale itself (with it: -0.002).
LR = dict(features="logprob", temperature=False, combine="concat", C=0.1, standardize=True,
          class_weight=None, max_iter=100, tol=1e-3)  # fmt: skip
# knn (0.820, 1.0 s; naive 0.803): all runs' columns (the per-class mean over runs loses 0.06:
# runs differ in quality); temperature-scaled probabilities (+0.03 over raw ones on the mean;
# log-probabilities lose 0.1); distance weights; k=25 and 50 within 0.002.
KNN = dict(features="proba", temperature=True, combine="concat", n_neighbors=25,
           weights="distance")  # fmt: skip
# svm (0.876, 1.3 s; naive SVC 0.842, 143 s): a linear SVM (squared hinge, one-vs-rest) on
# standardised, temperature-scaled log-probabilities, solved by L-BFGS (liblinear's LinearSVC:
# 0.860 in 7 s). C=0.01 beats 0.1 (0.874 on fold 0). An RBF part is optional (n_components > 0,
# Nystroem): it added nothing here (+0.0001) for +50% time, so it is off by default.
SVM = dict(features="logprob", temperature=True, combine="concat", C=0.01, gamma=None,
           n_components=0, class_weight=None, max_iter=200, tol=1e-4)  # fmt: skip
# rf (naive RandomForestClassifier() 0.820, 143 s): by default extremely randomized trees
# (Geurts et al. 2006: split thresholds drawn at random, every tree on all training rows), not
# Breiman's best-split trees on bootstraps: measured in one session, 5 folds in 2 processes,
# ExtraTrees 60 trees 0.829 in 13 s against RandomForest (60 trees on half-size bootstraps)
# 0.827 in 62 s; ExtraTrees on half-size bootstraps 0.824 in 6 s; 40 trees 0.822, 100 trees
# 0.832 (+70% time). `--param rf.splitter=best --param rf.max_samples=0.5` gives the classic
# forest. Trees split on thresholds, so temperatures do not matter for best splits, but random
# thresholds are drawn uniformly over a feature's range: probabilities beat log-probabilities
# (0.829 vs 0.797). The per-run columns matter (the pooled mean beside them: 0.811). Balanced
# class weights lift macro-F1 (0.818 -> 0.829); leaves of >= 2 rows lose 0.01.
RF = dict(features="proba", temperature=False, combine="concat", splitter="random",
          n_estimators=60, max_samples=None, min_samples_leaf=1, max_features="sqrt",
          class_weight="balanced_subsample")  # fmt: skip
# xgboost (0.863, ~8 s; naive 0.858, 178 s): hist trees, shallow, with shrinkage; no early
# stopping (no inner split). Cost is rounds x 18 trees. The temperature-scaled pooled mean next
# to the per-run columns helps (the mean alone loses 0.1). Measured (5-fold macro-F1): 100
# rounds x lr 0.15, half the columns per tree 0.859; 80 x 0.25 x 30% columns 0.858 (-10% time);
# 60 x 0.25 x 30% 0.856 (-40%); balanced sample weights lose 0.006. Histogram bins (5 folds in
# 2 processes, quiet machine): 64 bins 0.8591 in 51 s; 32 bins 0.8656 in 42 s (coarser splits
# regularise); 16 bins 0.8577 in 39 s. Rounds (same conditions, 5 folds): 100 x lr 0.15 x 50%
# columns 0.8656 in 42 s; 70 x 0.2 x 70% columns 0.8648 in 28 s; 60 x 0.2 x 70% 0.8631 (the
# default: auto's whole fit must stay near a minute, and xgboost is half of its work);
# 70 x 0.2 x 50% 0.8603; 60 x 0.25 x 70% 0.8615; 50 x 0.25 0.8585; 80 x 0.2 x 24 bins 0.852;
# depth 4 x 60 rounds 0.8571. The cost is histogram building, rows x all columns per tree (18
# trees a round): sampling columns or rows per tree saves nothing, and fewer columns lose
# (per-class mean/max/min/std over runs, 72 columns: 0.786; 64 SVD components + mean: 0.786).
XGB = dict(features="logprob", temperature=True, combine="both", n_estimators=60, max_depth=3,
           learning_rate=0.2, subsample=0.8, colsample_bytree=0.7, min_child_weight=2.0,
           reg_lambda=1.0, max_bin=32, class_weight=None)  # fmt: skip


# --------------------------------------------------------------------------------------------
# the common protocol


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


# --------------------------------------------------------------------------------------------
# vote


class VoteLearner(ClassifierMixin, BaseEstimator):
    """Mean of the runs' softmax probabilities: no parameters learned."""

    _name = "vote"

    def __init__(self, n_classes: int | None = None):
        self.n_classes = n_classes

    def fit(self, X, y):
        X, y = validate_data(self, X, y, dtype=np.float64)
        y, c = _check_y(y, self.n_classes)
        self.n_runs_ = split_runs(X, c).shape[1]
        self.n_classes_, self.classes_ = c, np.arange(c)
        self.run_weights_ = np.full(self.n_runs_, 1.0 / self.n_runs_)
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return softmax(split_runs(X, self.n_classes_), axis=2).mean(axis=1)

    def predict(self, X) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    def summary_(self) -> dict:
        check_is_fitted(self)
        return {"learner": "vote", "params": self.get_params(), "features": "softmax mean",
                "n_runs": int(self.n_runs_), "run_weights": _r(self.run_weights_)}  # fmt: skip


# --------------------------------------------------------------------------------------------
# lr


class LRLearner(_MetaLearner):
    """Multinomial logistic regression (lbfgs) on per-run (log-)probabilities."""

    _name = "lr"

    def __init__(
        self,
        n_classes: int | None = None,
        features: str = LR["features"],
        temperature: bool = LR["temperature"],
        combine: str = LR["combine"],
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
        self.C = C
        self.standardize = standardize
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.n_jobs = n_jobs

    def _fit_model(self, Z, y, n_present):
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        self.scaler_ = StandardScaler().fit(Z) if self.standardize else None
        lr = LogisticRegression(
            C=self.C, class_weight=self.class_weight, max_iter=self.max_iter, tol=self.tol
        )
        self.model_ = lr.fit(self._scale(Z), y)

    def _scale(self, Z):
        return Z if self.scaler_ is None else self.scaler_.transform(Z)

    def _model_proba(self, Z):
        return self.model_.predict_proba(self._scale(Z))

    def _column_importance(self):
        return np.sqrt((self.model_.coef_**2).sum(axis=0))

    def _summary_extra(self):
        return (
            {"coef": _r(self.model_.coef_), "intercept": _r(self.model_.intercept_)}
            if (self.model_ is not None)
            else {}
        )


# --------------------------------------------------------------------------------------------
# knn


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


# --------------------------------------------------------------------------------------------
# svm


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

    def __init__(
        self,
        n_classes: int | None = None,
        features: str = SVM["features"],
        temperature: bool = SVM["temperature"],
        combine: str = SVM["combine"],
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
        from sklearn.preprocessing import StandardScaler

        self.scaler_ = StandardScaler().fit(Z)
        Zs = self.scaler_.transform(Z)
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
        self.margin_temperature_ = fit_temperature(self._margins(Z), y)

    def _kernel_features(self, Zs):
        """Linear plus (approximate) RBF kernel: the standardised features and their Nystroem
        map side by side."""
        return Zs if self.map_ is None else np.hstack([Zs, self.map_.transform(Zs)])

    def _margins(self, Z):
        return self._kernel_features(self.scaler_.transform(Z)) @ self.coef_ + self.intercept_

    def _model_proba(self, Z):
        return np.exp(log_softmax(self._margins(Z) / self.margin_temperature_, axis=1))

    def _column_importance(self):
        # coefficient norms per column; with an RBF part the runs are merged: uniform weights
        return np.sqrt((self.coef_**2).sum(axis=1)) if self.map_ is None else None

    def _summary_extra(self):
        if self.model_ is None:
            return {}
        return {"margin_temperature": round(float(self.margin_temperature_), 6),
                "n_components": 0 if self.map_ is None else int(self.map_.n_components)}  # fmt: skip


# --------------------------------------------------------------------------------------------
# rf


class RFLearner(_MetaLearner):
    """A forest of randomized trees: extremely randomized trees (``splitter="random"``, the
    default) or Breiman's random forest (``"best"``); ``max_samples`` (a fraction) grows each tree
    on a bootstrap of that size, ``None`` on all rows for extra trees and a full-size bootstrap
    for best splits. Run weights are impurity importances summed per run."""

    _name = "rf"

    def __init__(
        self,
        n_classes: int | None = None,
        features: str = RF["features"],
        temperature: bool = RF["temperature"],
        combine: str = RF["combine"],
        splitter: str = RF["splitter"],
        n_estimators: int = RF["n_estimators"],
        max_samples: float | None = RF["max_samples"],
        min_samples_leaf: int = RF["min_samples_leaf"],
        max_features: str | float | None = RF["max_features"],
        class_weight: str | None = RF["class_weight"],
        n_jobs: int | None = N_JOBS,
        random_state: int | None = SEED,
    ):
        self.n_classes = n_classes
        self.features = features
        self.temperature = temperature
        self.combine = combine
        self.splitter = splitter
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.class_weight = class_weight
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _fit_model(self, Z, y, n_present):
        from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

        forests = {"random": ExtraTreesClassifier, "best": RandomForestClassifier}
        if self.splitter not in forests:
            raise ValueError(f"splitter must be 'random' or 'best', got {self.splitter!r}")
        bootstrap = self.splitter == "best" or self.max_samples is not None
        self.model_ = forests[self.splitter](
            n_estimators=self.n_estimators,
            bootstrap=bootstrap,
            max_samples=self.max_samples if bootstrap else None,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            class_weight=self.class_weight,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        ).fit(Z, y)

    def _column_importance(self):
        return self.model_.feature_importances_

    def _summary_extra(self):
        return {} if self.model_ is None else {"importances": _r(self.model_.feature_importances_)}


# --------------------------------------------------------------------------------------------
# xgboost


class XGBLearner(_MetaLearner):
    """Gradient-boosted trees (xgboost ``hist``); run weights are gain importances per run."""

    _name = "xgboost"

    def __init__(
        self,
        n_classes: int | None = None,
        features: str = XGB["features"],
        temperature: bool = XGB["temperature"],
        combine: str = XGB["combine"],
        n_estimators: int = XGB["n_estimators"],
        max_depth: int = XGB["max_depth"],
        learning_rate: float = XGB["learning_rate"],
        subsample: float = XGB["subsample"],
        colsample_bytree: float = XGB["colsample_bytree"],
        min_child_weight: float = XGB["min_child_weight"],
        reg_lambda: float = XGB["reg_lambda"],
        max_bin: int = XGB["max_bin"],
        class_weight: str | None = XGB["class_weight"],
        n_jobs: int | None = N_JOBS,
        random_state: int | None = SEED,
    ):
        self.n_classes = n_classes
        self.features = features
        self.temperature = temperature
        self.combine = combine
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.max_bin = max_bin
        self.class_weight = class_weight
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _fit_model(self, Z, y, n_present):
        from xgboost import XGBClassifier

        self.model_ = XGBClassifier(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            subsample=self.subsample,
            colsample_bytree=self.colsample_bytree,
            min_child_weight=self.min_child_weight,
            reg_lambda=self.reg_lambda,
            max_bin=self.max_bin,
            tree_method="hist",
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        ).fit(Z, y, sample_weight=_balanced(y, self.class_weight))

    def _column_importance(self):
        return np.nan_to_num(self.model_.feature_importances_)

    def _summary_extra(self):
        return {} if self.model_ is None else {"importances": _r(self._column_importance())}


# --------------------------------------------------------------------------------------------
# registry


def _classes() -> dict[str, type]:
    reg = {"vote": VoteLearner, "lr": LRLearner, "knn": KNNLearner, "svm": SVMLearner,
           "rf": RFLearner, "xgboost": XGBLearner}  # fmt: skip
    try:  # written alongside this module; imported late so meta works without it
        from stackkit.selection import CaruanaSelection
    except ImportError:
        log.debug("stackkit.selection is not available: no caruana learner")
    else:
        reg["caruana"] = CaruanaSelection
    return reg


def make_learner(
    name: str, n_classes: int, params: dict | None = None, n_jobs: int | None = None
) -> BaseEstimator:
    """An unfitted meta learner ``name`` for ``n_classes`` classes, defaults overridden by
    ``params``; ``n_jobs`` (when given) goes to the learners that take it."""
    classes = _classes()
    if name not in classes:
        known = [n for n in SIMPLICITY if n in classes]
        why = " (stackkit.selection is not importable)" if name in SIMPLICITY else ""
        raise StackkitError(f"unknown meta learner {name!r}{why} (known: {', '.join(known)})")
    est = classes[name](n_classes=n_classes)
    valid = est.get_params(deep=False)
    params = dict(params or {})
    for key in params:
        if key not in valid or key == "n_classes":
            known = ", ".join(k for k in valid if k != "n_classes")
            raise StackkitError(
                f"--param {name}.{key}: {name} has no parameter {key!r} (known: {known})"
            )
    if n_jobs is not None and "n_jobs" in valid and "n_jobs" not in params:
        params["n_jobs"] = n_jobs
    return est.set_params(**params)


def _value(text: str):
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_params(items: list[str]) -> dict[str, dict]:
    """``["rf.n_estimators=300", "lr.C=0.5"]`` -> ``{"rf": {"n_estimators": 300}, "lr": {"C": 0.5}}``.

    Values become int, float, bool (true/false), None (none), else str. Parameter names are
    checked by :func:`make_learner`; here only the form and the learner name.
    """
    out: dict[str, dict] = {}
    for item in items:
        head, eq, value = item.partition("=")
        learner, dot, key = head.strip().partition(".")
        if not eq or not dot or not learner or not key.strip() or not value.strip():
            raise StackkitError(
                f"--param {item!r}: expected LEARNER.NAME=VALUE, e.g. rf.n_estimators=300"
            )
        if learner not in SIMPLICITY:
            raise StackkitError(
                f"--param {item!r}: unknown meta learner {learner!r} (known: {', '.join(SIMPLICITY)})"
            )
        out.setdefault(learner, {})[key.strip()] = _value(value)
    return out
