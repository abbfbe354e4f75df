"""Fold-k test predictions of a fitted procedure, made only by what never saw fold k's labels.

For pseudo labels that fold k's round-2 model may train on (contract 1.1), fold k's test
probabilities must come from the runs' fold-k test logits (fold models that never saw fold k)
combined by the meta-level CV's fold-k learner (fitted on the other folds' OOF rows only), never by
the refit on all rows. ``fold_test_proba`` redoes exactly that for an ensemble's selected
candidate:

- a meta learner: fitted on the rows outside fold k, applied to the fold-k test features;
- ``vote``: the mean of the runs' fold-k softmax probabilities (nothing is fitted);
- ``run:<name>``: that run's fold-k test probabilities;
- ``blend``: each component as above, mixed with the weights chosen on the other folds'
  meta-level predictions (as ``cross_val_blend`` does; those predictions come from learners that
  did train on fold k: the second-order dependence the README states);
- bias offsets, when the ensemble applied them: the fold-k offsets of ``cross_val_bias``, fitted on
  the other folds' rows.

    >>> P = fold_test_proba(runset, "lr", params={}, components=[])   # (K, n_test, C)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone

from stackkit import metrics
from stackkit.contract.errors import StackkitError
from stackkit.contract.store import RunSet
from stackkit.cv import stacking

log = logging.getLogger(__name__)

RUN_PREFIX = "run:"
BLEND = "blend"


def fold_test_features(runset: RunSet, k: int) -> np.ndarray:
    """The fold-k models' test logits as meta features: (n_test, R*C), run-major."""
    t = runset.test[:, k]  # (R, m, C)
    return np.ascontiguousarray(t.transpose(1, 0, 2).reshape(t.shape[1], -1))


def _fit_fold(est, X, y, train, held, X_test):
    est = clone(est).fit(X[train], y[train])
    return est.predict_proba(X[held]), est.predict_proba(X_test)


def _components(
    runset: RunSet, names: Sequence[str], params: dict, n_jobs: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per name: (meta-level CV OOF probabilities (n, C), fold-k test probabilities (K, m, C))."""
    from stackkit.meta.registry import make_learner

    y, f, c = runset.folds.labels, runset.folds.fold_ids, runset.folds.n_classes
    folds = np.unique(f)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    learners = []
    for name in names:
        if name.startswith(RUN_PREFIX):
            run = name[len(RUN_PREFIX) :]
            if run not in runset.names:
                raise StackkitError(f"candidate {name!r}: run {run!r} is not among the inputs")
            r = runset.names.index(run)
            out[name] = (
                metrics.softmax(runset.oof[r], axis=-1),
                metrics.softmax(runset.test[r], axis=-1),
            )
        else:
            learners.append(name)
    if not learners:
        return out
    X = stacking.features(runset)
    Xt = [fold_test_features(runset, int(k)) for k in folds]
    ests = {m: make_learner(m, n_classes=c, params=(params or {}).get(m)) for m in learners}
    tasks = [(m, i, np.flatnonzero(f != k), np.flatnonzero(f == k)) for m in learners
             for i, k in enumerate(folds)]  # fmt: skip
    parts = Parallel(n_jobs=n_jobs)(
        delayed(_fit_fold)(ests[m], X, y, train, held, Xt[i]) for m, i, train, held in tasks
    )
    for m in learners:
        oof = np.zeros((len(y), c))
        test = np.zeros((len(folds), Xt[0].shape[0], c))
        for (mm, i, _, held), (p_held, p_test) in zip(tasks, parts):
            if mm == m:
                oof[held], test[i] = p_held, p_test
        out[m] = (oof, test)
    return out


def fold_test_proba(
    runset: RunSet,
    meta: str,
    params: dict | None = None,
    components: Sequence[str] = (),
    bias: bool = False,
    n_jobs: int = 1,
    details: dict | None = None,
) -> np.ndarray:
    """(K, n_test, C) probabilities: row ``k`` from the procedure fitted without fold k's labels.

    ``meta`` is the ensemble's selected candidate; ``components`` the candidates a ``blend``
    mixes; ``bias``: whether the ensemble applied per-class offsets. ``details``, when given, is
    filled with what was decided without each fold (``blend_weights``, ``bias_offsets``), in the
    form ``ensemble.json``'s ``per_fold`` records them.
    """
    from stackkit.cv.blend import _stack
    from stackkit.meta.bias import cross_val_bias
    from stackkit.meta.caruana import CaruanaSelection

    y, f, c = runset.folds.labels, runset.folds.fold_ids, runset.folds.n_classes
    folds = np.unique(f)
    if meta == BLEND:
        names = [m for m in components if m != BLEND]
        if not names:
            raise StackkitError("blend: the ensemble records no components to mix")
        comp = _components(runset, names, params or {}, n_jobs)
        L = _stack([comp[m][0] for m in names])
        oof = np.zeros((len(y), c))
        test = np.zeros((len(folds), len(runset.test_ids), c))
        for i, k in enumerate(folds):
            held = f == k
            sel = CaruanaSelection(n_classes=c).fit(L[~held], y[~held])
            oof[held] = sel.predict_proba(L[held])
            if details is not None:
                weights = {m: float(w) for m, w in zip(names, sel.weights_) if w > 0}
                details.setdefault("blend_weights", []).append(weights)
            test[i] = sel.predict_proba(_stack([comp[m][1][i] for m in names]))
    else:
        oof, test = _components(runset, [meta], params or {}, n_jobs)[meta]
    if bias:
        lp = np.log(np.clip(oof, metrics.EPS, None))
        _, offsets = cross_val_bias(lp, y, f)
        if details is not None:
            details["bias_offsets"] = [[float(v) for v in row] for row in offsets]
        for i in range(len(folds)):
            test[i] = metrics.softmax(
                np.log(np.clip(test[i], metrics.EPS, None)) + offsets[i], axis=-1
            )
    log.debug("fold-wise test probabilities of %s over %d folds", meta, len(folds))
    return test
