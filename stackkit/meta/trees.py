"""Tree ensembles over the runs' columns: extremely randomized trees (rf) and xgboost."""

from __future__ import annotations

import functools
import logging
import os
import sys
from numbers import Integral, Real
from pathlib import Path
from typing import ClassVar

import numpy as np
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.utils._param_validation import Interval, StrOptions

from stackkit.meta.base import _balanced, _MetaLearner, _r
from stackkit.meta.defaults import N_JOBS, RF, SEED, XGB
from stackkit.meta.features import FEATURE_CONSTRAINTS, N_JOBS_CONSTRAINT, by_rows
from stackkit.metrics import EPS

FORESTS = {"random": ExtraTreesClassifier, "best": RandomForestClassifier}

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
BASES = ("lr", "none")  # what xgboost boosts from: a logistic regression's log-probabilities, or 0


@functools.cache
def cuda_available() -> bool:
    """Whether xgboost can train on a GPU here: an xgboost built with CUDA, and a visible NVIDIA
    device (torch.cuda's answer when torch is already imported; else the driver's device files,
    so that a worker does not import torch only to ask)."""
    import xgboost

    if not xgboost.build_info().get("USE_CUDA"):
        return False
    torch = sys.modules.get("torch")
    if torch is not None:
        return bool(torch.cuda.is_available())
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))


def resolve_device(device: str) -> str:
    """``auto``: ``cuda`` when :func:`cuda_available`, else ``cpu``."""
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    return device


class RFLearner(_MetaLearner):
    """A forest of randomized trees: extremely randomized trees (``splitter="random"``, the
    default) or Breiman's random forest (``"best"``); ``max_samples`` (a fraction) grows each tree
    on a bootstrap of that size, ``None`` on all rows for extra trees and a full-size bootstrap
    for best splits. Run weights are impurity importances summed per run."""

    _name = "rf"
    _parameter_constraints: ClassVar[dict] = {
        **FEATURE_CONSTRAINTS,
        "splitter": [StrOptions(set(FORESTS))],
        **{k: ExtraTreesClassifier._parameter_constraints[k]
           for k in ("n_estimators", "max_samples", "min_samples_leaf", "max_features",
                     "class_weight", "random_state")},
        "n_jobs": N_JOBS_CONSTRAINT,
    }  # fmt: skip
    # scikit-learn's trees split float32 values: the same forest from float32 features
    _feature_dtype = np.float32

    def __init__(
        self,
        n_classes: int | None = None,
        features: str = RF["features"],
        temperature: bool = RF["temperature"],
        combine: str = RF["combine"],
        factors: str = RF["factors"],
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
        self.factors = factors
        self.splitter = splitter
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.class_weight = class_weight
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _fit_model(self, Z, y, n_present):
        bootstrap = self.splitter == "best" or self.max_samples is not None
        self.model_ = FORESTS[self.splitter](
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


class XGBLearner(_MetaLearner):
    """Gradient-boosted trees (xgboost ``hist``).

    ``base="lr"`` (the default): the trees boost from a logistic regression's log-probabilities
    instead of from zero. The regression (``lr`` with its defaults, :class:`LRLearner`) is fitted
    first on the same rows; its log-probabilities of each row, times ``base_scale``, are
    xgboost's ``base_margin``, in fitting and in predicting, so the trees learn what the linear
    model misses instead of relearning the linear part round by round: 10 rounds then do as well
    as 60 from zero or better, in a third of the time (defaults.py has the measurements). The
    scale (default 0.5) damps the base: on the rows it was fitted on, the regression is more
    confident than on new ones, and at full scale the trees learn too little (worse on small
    cases). ``base="none"`` (or None): plain
    boosting.

    Run weights are the mean of the base's (coefficient norms per run) and the trees' (gain
    importances per run); with ``base="none"``, the trees' alone. ``device="auto"`` trains on
    CUDA when a GPU is present (:func:`cuda_available`), else on the CPU; the fitted model
    predicts on the CPU either way (the same trees, a portable file)."""

    _name = "xgboost"
    # xgboost has no scikit-learn constraints of its own: these are its parameter ranges (its
    # C++ checks, pinned by tests/test_meta.py against xgboost itself), in scikit-learn's terms
    _parameter_constraints: ClassVar[dict] = {
        **FEATURE_CONSTRAINTS,
        "n_estimators": [Interval(Integral, 1, None, closed="left")],  # 0 rounds learn nothing
        "max_depth": [Interval(Integral, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="left")],
        "subsample": [Interval(Real, 0, 1, closed="right")],
        "colsample_bytree": [Interval(Real, 0, 1, closed="right")],
        "min_child_weight": [Interval(Real, 0, None, closed="left")],
        "reg_lambda": [Interval(Real, 0, None, closed="left")],
        "max_bin": [Interval(Integral, 2, None, closed="left")],
        "device": [StrOptions(set(DEVICES))],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "base": [StrOptions(set(BASES)), None],  # None (--param xgboost.base=none): "none"
        "base_scale": [Interval(Real, 0, None, closed="left")],
        "n_jobs": N_JOBS_CONSTRAINT,
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
    }
    # xgboost bins float32 values: the same trees from float32 features, in half the memory
    _feature_dtype = np.float32

    def __init__(
        self,
        n_classes: int | None = None,
        features: str = XGB["features"],
        temperature: bool = XGB["temperature"],
        combine: str = XGB["combine"],
        factors: str = XGB["factors"],
        n_estimators: int = XGB["n_estimators"],
        max_depth: int = XGB["max_depth"],
        learning_rate: float = XGB["learning_rate"],
        subsample: float = XGB["subsample"],
        colsample_bytree: float = XGB["colsample_bytree"],
        min_child_weight: float = XGB["min_child_weight"],
        reg_lambda: float = XGB["reg_lambda"],
        max_bin: int = XGB["max_bin"],
        device: str = XGB["device"],
        class_weight: str | None = XGB["class_weight"],
        base: str = XGB["base"],
        base_scale: float = XGB["base_scale"],
        n_jobs: int | None = N_JOBS,
        random_state: int | None = SEED,
    ):
        self.n_classes = n_classes
        self.features = features
        self.temperature = temperature
        self.combine = combine
        self.factors = factors
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.max_bin = max_bin
        self.device = device
        self.class_weight = class_weight
        self.base = base
        self.base_scale = base_scale
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X, y, rows=None):
        """The base (with ``base="lr"``) on the same rows first, then the trees from its
        log-probabilities (``rows``: as :meth:`_MetaLearner.fit`)."""
        self._validate_params()
        self.base_ = None
        if self.base == "lr":
            from stackkit.meta.linear import LRLearner

            self.base_ = LRLearner(n_classes=self.n_classes, n_jobs=self.n_jobs).fit(X, y, rows)
        self._fit_rows = (X, rows)  # read by _fit_model alone, then dropped
        try:
            super().fit(X, y, rows)
        finally:
            del self._fit_rows
        if self.base_ is not None and self.model_ is not None:
            self.run_weights_ = (self.run_weights_ + self.base_.run_weights_) / 2
        return self

    def _margin(self, X, rows=None) -> np.ndarray | None:
        """The base's log-probabilities of the classes present (of two classes, their log-odds)
        times ``base_scale``: xgboost's ``base_margin`` for the rows ``rows`` of X (all of X
        without rows); None without a base."""
        if self.base_ is None:
            return None
        # a chunk of rows at a time (by_rows): no copy of a fold's rows of the shared X, and the
        # base's float64 features stay the size of a chunk
        proba = by_rows(self.base_.predict_proba, X, self.n_classes_, index=rows)
        proba = proba[:, self.present_]
        logp = np.log(np.clip(proba, EPS, None))
        # two classes: xgboost's binary objective has one margin, the log-odds of the second
        margin = logp[:, 1] - logp[:, 0] if len(self.present_) == 2 else logp
        return self.base_scale * margin

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
            device=resolve_device(self.device),
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        ).fit(Z, y, sample_weight=_balanced(y, self.class_weight),
              base_margin=self._margin(*self._fit_rows))  # fmt: skip
        self.model_.set_params(device="cpu")  # predict from host arrays without a device copy

    def _model_proba(self, Z, X):
        return self.model_.predict_proba(Z, base_margin=self._margin(X))

    def _column_importance(self):
        return np.nan_to_num(self.model_.feature_importances_)

    def _summary_extra(self):
        if self.model_ is None:
            return {}
        out = {"importances": _r(self._column_importance())}
        if self.base_ is not None:
            out["base"] = self.base_.summary_()
        return out
