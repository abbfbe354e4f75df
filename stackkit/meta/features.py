"""Meta-level features built from the runs' out-of-fold logits.

The meta learners see ``X`` of shape ``(n_samples, R * C)``: the R runs' raw logits laid out
run-major (run ``r``'s C class logits at columns ``r*C:(r+1)*C``). Raw logits carry an arbitrary
per-row shift (CONTRACT.md), so every representation here starts from the per-run softmax:

- ``kind="proba"``: per-run probabilities; ``kind="logprob"``: per-run log-probabilities,
  clipped at ``LOGPROB_FLOOR`` so one over-confident run cannot dominate a linear model.
- ``temperature=True``: each run's logits are divided by a temperature fitted on the training rows
  only (minimising that run's log loss), so over- and under-confident runs speak on one scale.
- ``combine="concat"``: one block of C features per run (R*C); ``"mean"``: the per-class mean over
  runs (C; the order of the runs cannot matter); ``"both"``: the R blocks and the mean (R*C + C).
- ``factors="mask"``: where the classes are a product of factors (the mask layout: 18 classes =
  mask 3 x gender 2 x age 3, label = 6*mask + 3*gender + age), each block of C class features
  gains the per-factor marginals of the same probabilities (summed per mask, gender and age
  value: 3 + 2 + 3 = 8 columns; their logs, clipped alike, for ``kind="logprob"``), so the
  columns are the R blocks of C, then their R blocks of K marginals, then (``mean``/``both``)
  the pooled C and the pooled K. ``"none"``: no marginals. ``"auto"``: the learners' default;
  ``fit`` and ``leaderboard`` resolve it from folds.parquet's ``data`` (``mask`` on the mask
  layout, a manifest's declared factors as their class codes, else ``none``,
  :func:`stackkit.meta.registry.resolve_factors`); unresolved it means ``none``.
- ``factors=[[0, 1], [2, 0], ...]``: class codes, a ``(C, F)`` list giving each class's value
  index in each of F factors (a manifest's declaration, :func:`stackkit.data.factors.class_codes`;
  the classes need not be the whole product). Factor i's value v gets the summed probability of
  the classes whose code i is v: K = sum over factors of (largest code + 1) columns.

    >>> feats = RunFeatures(n_classes=18, kind="logprob", temperature=True).fit(X_train, y_train)
    >>> Z = feats.transform(X_test)
"""

from __future__ import annotations

import logging
from numbers import Integral
from typing import ClassVar

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions

from stackkit.metrics import log_softmax

log = logging.getLogger(__name__)

KINDS = ("proba", "logprob")
COMBINES = ("concat", "mean", "both")
# class = row-major index over the factors' values: the mask layout's 6*mask + 3*gender + age
# (stackkit.data.layouts.MASK_CLASSES; tests/test_factors.py pins the two together)
FACTORS = {"mask": (3, 2, 3)}
FACTOR_OPTIONS = ("none", "auto", *FACTORS)
LOGPROB_FLOOR = np.log(1e-6)  # a run's "impossible" is as informative as "one in a million"
LOG_T_BOUNDS = (-4.0, 4.0)  # temperatures in [e^-4, e^4]: far wider than any real run needs
# Features are computed this many rows at a time (float64 temporaries of a few MB: on 50 runs of
# 18 classes a chunk is 4096 x 900 numbers) and written into one array of the learner's dtype.
CHUNK_ROWS = 4096

# scikit-learn parameter constraints shared by every learner that builds run features
N_CLASSES_CONSTRAINT = [Interval(Integral, 1, None, closed="left"), None]
N_JOBS_CONSTRAINT = [
    None,
    Interval(Integral, None, -1, closed="right"),
    Interval(Integral, 1, None, closed="left"),
]
FEATURE_CONSTRAINTS = {
    "n_classes": N_CLASSES_CONSTRAINT,
    "features": [StrOptions(set(KINDS))],
    "temperature": ["boolean"],
    "combine": [StrOptions(set(COMBINES))],
    "factors": [StrOptions(set(FACTOR_OPTIONS)), list, tuple],  # a name, or class codes
}


def infer_n_classes(y: np.ndarray, n_classes: int | None) -> int:
    """``n_classes``, or the number of distinct labels when it is None."""
    return len(np.unique(y)) if n_classes is None else int(n_classes)


def split_runs(X: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n, R*C)`` -> ``(n, R, C)``, a view (float32 stays float32: the stored logits' dtype;
    anything else becomes float64); a width that is not a multiple of C is a ValueError."""
    X = np.asarray(X)
    if X.dtype != np.float32:
        X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_runs * n_classes), got shape {X.shape}")
    if n_classes < 1 or X.shape[1] == 0 or X.shape[1] % n_classes:
        raise ValueError(
            f"X has shape {X.shape}: its {X.shape[1]} columns are not a whole number of runs "
            f"of n_classes={n_classes} logits each"
        )
    return X.reshape(len(X), X.shape[1] // n_classes, n_classes)


def by_rows(fn, X: np.ndarray, width: int, dtype=np.float64, chunk=None, index=None):
    """``fn`` applied to ``chunk`` rows of ``X`` at a time (of ``X[index]``, gathered a chunk at
    a time, when ``index`` is given), into one ``(rows, width)`` array of ``dtype``: for
    row-wise computations, the float64 temporaries and the gathered rows stay the size of a
    chunk (the same numbers as ``fn(X[index])``: each row is computed alone either way)."""
    n = len(X) if index is None else len(index)
    out = np.empty((n, width), dtype=dtype)
    step = chunk or CHUNK_ROWS
    for i in range(0, n, step):
        out[i : i + step] = fn(X[i : i + step] if index is None else X[index[i : i + step]])
    return out


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature T minimising the log loss of ``softmax(logits / T)`` on labels ``y``.

    ``logits`` is ``(n, C)`` for one run. A 1-D bounded search over log T: the loss is smooth and
    unimodal in practice, and this is cheap (a few dozen passes over n*C numbers).
    """
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(z))
    y = np.asarray(y, dtype=np.int64)

    def nll(log_t: float) -> float:
        return float(-log_softmax(z * np.exp(-log_t), axis=1)[rows, y].mean())

    res = minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def factor_marginals(proba: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
    """``(..., C)`` probabilities -> ``(..., sum(sizes))``: for each factor in turn, the summed
    probability of each of its values (C = prod(sizes), classes row-major over the factors)."""
    p = np.asarray(proba, dtype=np.float64)
    cube = p.reshape(*p.shape[:-1], *sizes)
    lead, k = p.ndim - 1, len(sizes)
    parts = [cube.sum(axis=tuple(lead + j for j in range(k) if j != i)) for i in range(k)]
    return np.concatenate(parts, axis=-1)


def check_codes(codes, n_classes: int) -> np.ndarray:
    """``factors`` given as class codes -> a ``(C, F)`` int array, or a ValueError saying why not."""
    try:
        a = np.asarray(codes)
    except ValueError:  # ragged rows
        a = np.zeros((0, 0))
    if a.ndim != 2 or a.shape[1] < 1 or a.dtype.kind not in "iu" or (a < 0).any():
        raise ValueError(
            "factors must be none, auto, mask, or class codes: one list of F >= 1 integers >= 0 "
            f"per class (each class's value index in each factor), got {codes!r:.80}"
        )
    if len(a) != n_classes:
        raise ValueError(f"factors has codes for {len(a)} classes, not n_classes={n_classes}")
    return a.astype(np.int64)


def code_marginals(proba: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``(..., C)`` probabilities -> ``(..., K)``: for each factor in turn, the summed probability
    of the classes having each of its values (``codes`` (C, F), values 0..max of each column)."""
    onehot = [np.eye(col.max() + 1)[col] for col in codes.T]  # (C, size) per factor
    return np.asarray(proba, dtype=np.float64) @ np.hstack(onehot)


def run_features(logits: np.ndarray, kind: str, temperatures: np.ndarray | None) -> np.ndarray:
    """``(n, R, C)`` logits -> ``(n, R, C)`` per-run probabilities or log-probabilities."""
    z = logits if temperatures is None else logits / temperatures[None, :, None]
    lp = log_softmax(z, axis=2)
    return np.exp(lp) if kind == "proba" else np.maximum(lp, LOGPROB_FLOOR)


def marginal_features(f: np.ndarray, kind: str, factors) -> np.ndarray:
    """Per-run features ``(n, R, C)`` from :func:`run_features` -> ``(n, R, K)`` marginals on
    the same scale; ``factors``: the sizes of a full product (K = sum(sizes)) or class codes."""
    marginals = code_marginals if isinstance(factors, np.ndarray) else factor_marginals
    if kind == "proba":
        return marginals(f, factors)
    m = marginals(np.exp(f), factors)  # back to probabilities (floored ones add ~1e-6)
    return np.maximum(np.log(np.maximum(m, 1e-300)), LOGPROB_FLOOR)


class RunFeatures(TransformerMixin, BaseEstimator):
    """Turn run-major logits into meta features (see the module docstring).

    Fitted: ``temperatures_`` (R,) (ones without ``temperature``), ``n_runs_``, ``n_classes_``,
    ``factors_`` (``"auto"`` resolved: ``"none"``; class codes: ``"codes"``), ``codes_`` (the
    ``(C, F)`` codes, or None) and ``n_marginals_`` (K, 0 without factors).
    """

    _parameter_constraints: ClassVar[dict] = {
        "n_classes": N_CLASSES_CONSTRAINT,
        "kind": FEATURE_CONSTRAINTS["features"],
        "temperature": ["boolean"],
        "combine": FEATURE_CONSTRAINTS["combine"],
        "factors": FEATURE_CONSTRAINTS["factors"],
    }

    def __init__(
        self,
        n_classes: int | None = None,
        kind: str = "proba",
        temperature: bool = False,
        combine: str = "concat",
        factors: str = "none",
    ):
        self.n_classes = n_classes
        self.kind = kind
        self.temperature = temperature
        self.combine = combine
        self.factors = factors

    def fit(self, X, y, rows=None):
        """Fit on ``X`` or, with ``rows``, on ``X[rows]`` read in place (``y``: their labels)."""
        self._validate_params()
        y = np.asarray(y)
        self.n_classes_ = infer_n_classes(y, self.n_classes)
        z = split_runs(X, self.n_classes_)
        self.n_runs_ = z.shape[1]
        self.codes_ = None
        if isinstance(self.factors, list | tuple):
            self.codes_ = check_codes(self.factors, self.n_classes_)
            self.factors_ = "codes"
        else:
            self.factors_ = "none" if self.factors == "auto" else self.factors
        sizes = FACTORS.get(self.factors_, ())
        if sizes and int(np.prod(sizes)) != self.n_classes_:
            raise ValueError(
                f"factors={self.factors_!r} is a product of {len(sizes)} factors "
                f"{'x'.join(map(str, sizes))} = {int(np.prod(sizes))} classes, "
                f"not n_classes={self.n_classes_}"
            )
        self.n_marginals_ = int(sum(sizes))
        if self.codes_ is not None:
            self.n_marginals_ = int((self.codes_.max(axis=0) + 1).sum())
        if self.temperature:
            self.temperatures_ = np.array(
                [
                    fit_temperature(z[:, r] if rows is None else z[rows, r], y)
                    for r in range(self.n_runs_)
                ]
            )
            log.debug("run temperatures: %s", np.round(self.temperatures_, 3).tolist())
        else:
            self.temperatures_ = np.ones(self.n_runs_)
        return self

    def transform(self, X, dtype=np.float64, rows=None) -> np.ndarray:
        """The features of ``X`` (of ``X[rows]``, read in place), as ``dtype``: computed in
        float64 a chunk of rows at a time (:func:`by_rows`); float32 for learners that cast to
        it anyway (the trees)."""
        z = split_runs(X, self.n_classes_)
        if z.shape[1] != self.n_runs_:
            raise ValueError(
                f"X has shape {np.shape(X)}: {z.shape[1]} runs, but the features were fitted "
                f"on {self.n_runs_} runs of {self.n_classes_} classes"
            )
        r, c, k = self.n_runs_, self.n_classes_, self.n_marginals_
        width = {"concat": r * (c + k), "mean": c + k, "both": r * (c + k) + c + k}[self.combine]
        return by_rows(self._transform, z, width, dtype, index=rows)

    def _transform(self, z: np.ndarray) -> np.ndarray:
        f = run_features(z, self.kind, self.temperatures_ if self.temperature else None)
        blocks = [f]
        if self.n_marginals_:
            how = self.codes_ if self.codes_ is not None else FACTORS[self.factors_]
            blocks.append(marginal_features(f, self.kind, how))
        per_run = [b.reshape(len(b), -1) for b in blocks]
        pooled = [b.mean(axis=1) for b in blocks]
        parts = {"concat": per_run, "mean": pooled, "both": per_run + pooled}[self.combine]
        return parts[0] if len(parts) == 1 else np.hstack(parts)

    def per_run(self, column_importance: np.ndarray) -> np.ndarray:
        """Sum non-negative per-column importances into per-run weights (normalised to sum 1);
        pooled (mean) columns are split equally among the runs."""
        imp = np.abs(np.asarray(column_importance, dtype=np.float64))
        r, c, k = self.n_runs_, self.n_classes_, self.n_marginals_
        w = np.zeros(r)
        if self.combine in ("concat", "both"):
            w += imp[: r * c].reshape(r, c).sum(axis=1)
            w += imp[r * c : r * (c + k)].reshape(r, k).sum(axis=1)
        if self.combine in ("mean", "both"):
            w += imp[-(c + k) :].sum() / r
        total = w.sum()
        return w / total if total > 0 else np.full(r, 1.0 / r)

    def summary(self) -> dict:
        return {
            "kind": self.kind,
            "temperature": bool(self.temperature),
            "combine": self.combine,
            "factors": self.factors_,
            "factor_sizes": None if self.codes_ is None else (self.codes_.max(0) + 1).tolist(),
            "temperatures": [round(float(t), 6) for t in self.temperatures_],
        }
