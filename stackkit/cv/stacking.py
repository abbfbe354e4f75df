"""Meta-level cross-validation on the stored folds, and choosing among meta learners.

The meta predictions for fold k always come from a learner fitted on the other folds' OOF rows
(``PredefinedSplit`` over the fold column of folds.parquet), so every score here is computed on
predictions the scoring rows never trained. Scores are computed once on the whole OOF vector.

    >>> X, y, folds = features(runset), runset.folds.labels, runset.folds.fold_ids
    >>> res = cross_val_meta("lr", X, y, folds, n_classes=18)
    >>> res.scores["macro_f1"]
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stackkit import metrics
from stackkit.contract.store import RunSet
from stackkit.cv import shared
from stackkit.cv.engine import parallel_backend
from stackkit.cv.result import CVResult

log = logging.getLogger(__name__)


def features(runset: RunSet, folder: Path | None = None) -> np.ndarray:
    """OOF logits as the meta learners' input: (n_train, R*C) float32, run-major. With
    ``folder``, written there and returned as a read-only memmap (:mod:`stackkit.cv.shared`)."""
    r, n, c = runset.oof.shape
    out = shared.allocate((n, r * c), folder, "X")
    for i in range(r):
        out[:, i * c : (i + 1) * c] = runset.oof[i]
    return shared.finish(out)


def test_features(runset: RunSet, folder: Path | None = None) -> np.ndarray:
    """Test input: per run, the log of the fold models' mean softmax probability, (n_test, R*C)
    float32, run-major; computed a run at a time (float64 temporaries of one run's test logits).
    ``folder``: as for :func:`features`."""
    r, _, m, c = runset.test.shape
    out = shared.allocate((m, r * c), folder, "X_test")
    for i in range(r):
        mean_p = metrics.softmax(runset.test[i], axis=-1).mean(axis=0)  # (m, C)
        out[:, i * c : (i + 1) * c] = np.log(np.clip(mean_p, metrics.EPS, None))
    return shared.finish(out)


def splits(fold_ids: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) per fold, folds in sorted order: scikit-learn's
    ``PredefinedSplit(fold_ids).split()`` (a fold id of -1 is never a test fold), without
    importing scikit-learn on the paths that only read cached results."""
    fold_ids = np.asarray(fold_ids)
    return [(np.flatnonzero(fold_ids != k), np.flatnonzero(fold_ids == k))
            for k in np.unique(fold_ids) if k != -1]  # fmt: skip


def _fit_predict(est, X, y, train, test, tag=None, X_test=None):
    """Fit on rows ``train``; predict rows ``test`` of X, or (``test`` None) all of ``X_test``
    and hand the fitted estimator back too. Warnings raised by the fit (scikit-learn's
    ConvergenceWarning, say) come back as their first lines instead of printing from a worker;
    :func:`run_tasks` logs each once."""
    from sklearn.base import clone

    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = clone(est)
        if getattr(est, "_fits_rows", False):  # reads the rows from X itself: no copy first
            est.fit(X, y, rows=train)
        else:
            est.fit(_rows(X, train), y[train])
        proba = est.predict_proba(X[test] if test is not None else X_test)
    said = sorted({_first_line(w) for w in caught if not _for_developers(w.category)})
    seconds = time.perf_counter() - t0
    return tag, test, proba, seconds, (est if test is None else None), said


def _rows(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``X[rows]``; X itself when ``rows`` is every row in order (a refit: no copy of X)."""
    if len(rows) == len(X) and np.array_equal(rows, np.arange(len(X))):
        return X
    return X[rows]


def _first_line(w: warnings.WarningMessage) -> str:
    return str(w.message).strip().splitlines()[0].rstrip(":") if str(w.message).strip() else ""


def _for_developers(category: type[Warning]) -> bool:
    """Deprecations are for whoever maintains this code, not for the person running a fit."""
    return issubclass(category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning))


def cross_val_proba(
    estimator,
    X: np.ndarray,
    y: np.ndarray,
    fold_ids: np.ndarray,
    n_classes: int,
    n_jobs: int = 1,
    engine: str = "local",
) -> np.ndarray:
    """OOF probabilities: rows of fold k predicted by ``estimator`` fitted on the other folds.

    ``engine="ray"`` fits the folds on a Ray cluster (joblib's Ray backend, every fold at once
    unless ``n_jobs`` > 1 says otherwise); the result is the same as with ``"local"``.
    """
    tasks = [Task((k,), "estimator", tr, te)
             for k, (tr, te) in enumerate(splits(fold_ids))]  # fmt: skip
    out = np.zeros((len(y), n_classes), dtype=np.float64)
    for test, proba, _, _ in run_tasks(
        tasks, {"estimator": estimator}, X, y, n_jobs, engine
    ).values():
        out[test] = proba
    return out


@dataclass(frozen=True)
class Task:
    """One fit: learner ``meta`` fitted on rows ``train``, predicting rows ``test`` (None: the
    test set, keeping the fitted learner); ``tag`` tells the caller which result is which."""

    tag: tuple
    meta: str
    train: np.ndarray
    test: np.ndarray | None


def run_tasks(
    tasks: Sequence[Task],
    estimators: dict,
    X: np.ndarray,
    y: np.ndarray,
    n_jobs: int = 1,
    engine: str = "local",
    progress=None,
    X_test: np.ndarray | None = None,
) -> dict:
    """Every fit of every learner in one pool:
    ``{tag: (test rows, probabilities, seconds, fitted learner or None)}``.

    One pool for all learners' folds rather than one per learner: the costliest fits start first
    (``meta.RELATIVE_COST``), so the cheap ones fill the gaps and no core waits for a learner's
    last fold (with 5 folds on 2 cores a per-learner pool leaves one core idle a sixth of the
    time). Results do not depend on the order or the number of processes. ``progress(tag)`` is
    called as each fit finishes.

    Local worker processes get ``X`` and ``X_test`` memory-mapped (:mod:`stackkit.cv.shared`:
    written to a file once here unless they are already a file's memmap), never a copy per
    worker or per fold: each fit indexes its rows in the shared pages.
    """
    from joblib import Parallel, delayed, effective_n_jobs

    from stackkit.meta.defaults import RELATIVE_COST

    order = sorted(tasks, key=lambda t: -RELATIVE_COST.get(t.meta, 1.0) * len(t.train))
    metas = {t.tag: t.meta for t in tasks}
    if engine != "local" and n_jobs == 1:
        n_jobs = -1
    out, said = {}, Counter()
    with parallel_backend(engine), contextlib.ExitStack() as stack:
        if engine == "local" and effective_n_jobs(n_jobs) > 1 and len(tasks) > 1:
            folder = stack.enter_context(shared.scratch())
            X, X_test = shared.share(X, folder, "X"), shared.share(X_test, folder, "X_test")
        # Ray's joblib backend returns only whole lists (progress then comes at the end)
        ret = "generator_unordered" if engine == "local" else "list"
        parts = Parallel(n_jobs=n_jobs, return_as=ret)(
            delayed(_fit_predict)(estimators[t.meta], X, y, t.train, t.test, t.tag, X_test)
            for t in order
        )
        for tag, test, proba, seconds, est, lines in parts:
            out[tag] = (test, proba, seconds, est)
            said.update((metas[tag], line) for line in lines)
            if progress is not None:
                progress(tag)
    fits = Counter(t.meta for t in tasks)
    for (meta, line), n in sorted(said.items()):
        log.warning("%s: %d of %d fits warned: %s", meta, n, fits[meta], line)
    return out


def cross_val_many(
    metas: Sequence[str],
    X: np.ndarray,
    y: np.ndarray,
    fold_ids: np.ndarray,
    n_classes: int,
    params: dict | None = None,
    n_jobs: int = 1,
    engine: str = "local",
    progress=None,
    X_test: np.ndarray | None = None,
) -> list[CVResult]:
    """Cross-validate several named meta learners over the stored folds, all folds of all
    learners in one pool (:func:`run_tasks`). ``CVResult.seconds`` is the sum of the learner's
    fold fits (fit + predict), not wall time: in a shared pool the learners overlap.

    With ``X_test``, each learner is also refitted on every row in the same pool, and
    ``CVResult.refit`` holds (fitted learner, its ``X_test`` probabilities): the refits then fill
    the pool's idle cores instead of running after it."""
    from stackkit.meta.registry import make_learner

    params = params or {}
    ests = {m: make_learner(m, n_classes=n_classes, params=params.get(m)) for m in metas}
    tasks = [Task((m, k), m, tr, te) for m in metas
             for k, (tr, te) in enumerate(splits(fold_ids))]  # fmt: skip
    refits = (
        [] if X_test is None else [Task((m, "refit"), m, np.arange(len(y)), None) for m in metas]
    )
    done = run_tasks(tasks + refits, ests, X, y, n_jobs, engine, progress, X_test)
    results = []
    for m in metas:
        proba = np.zeros((len(y), n_classes), dtype=np.float64)
        seconds = 0.0
        for t in tasks:
            if t.meta == m:
                test, p, s, _ = done[t.tag]
                proba[test] = p
                seconds += s
        scores = metrics.scores(y, proba, fold_ids)
        log.debug("%-8s CV macro-F1 %.4f (± %.4f over folds), fits %.1fs",
                  m, scores["macro_f1"], scores["macro_f1_std"], seconds)  # fmt: skip
        refit = None
        if X_test is not None:
            _, test_proba, _, fitted = done[(m, "refit")]
            refit = (fitted, test_proba)
        results.append(CVResult(m, proba, scores, seconds, dict(params.get(m) or {}), refit))
    return results


def cross_val_meta(
    meta: str,
    X: np.ndarray,
    y: np.ndarray,
    fold_ids: np.ndarray,
    n_classes: int,
    params: dict | None = None,
    n_jobs: int = 1,
    engine: str = "local",
) -> CVResult:
    """Cross-validate one named meta learner over the stored folds."""
    (res,) = cross_val_many([meta], X, y, fold_ids, n_classes, params, n_jobs, engine)
    return res


def choose(results: Sequence[CVResult]) -> CVResult:
    """The best CV macro-F1; a tie goes to the simpler: a single run (``run:<name>``), then the
    learners in meta.SIMPLICITY order, then ``blend``, which mixes the others."""
    best = max(r.scores["macro_f1"] for r in results)
    tied = [r for r in results if r.scores["macro_f1"] >= best - 1e-12]
    return min(tied, key=lambda r: simplicity(r.meta))


def simplicity(meta: str) -> int:
    """The tie-break rank of ``choose``: runs, then meta.SIMPLICITY order, then the rest."""
    from stackkit.cv.runs import is_run
    from stackkit.meta.defaults import SIMPLICITY

    return -1 if is_run(meta) else (SIMPLICITY.index(meta) if meta in SIMPLICITY else 99)


def nested_cv(
    metas: Sequence[str],
    X: np.ndarray,
    y: np.ndarray,
    fold_ids: np.ndarray,
    n_classes: int,
    params: dict | None = None,
    tune_bias: bool = False,
    n_jobs: int = 1,
    progress=None,
    engine: str = "local",
    run_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """An honest estimate of the whole procedure: for each outer fold, the selection (and the
    bias-tuning decision, if asked) is redone on the other folds alone, then the pick, refitted
    on them, predicts the outer fold. With ``run_names`` (the runs of ``X``, in order), each run
    is a candidate too (``run:<name>``: its own OOF softmax, nothing to fit).

    All inner fits (outer folds x learners x inner folds) share one pool (:func:`run_tasks`),
    then the refits of the picks (of every weighted candidate, for a ``blend``) another. Returns the nested OOF probabilities and the meta
    learner picked in each outer fold.
    """
    from stackkit.cv.blend import BLEND, Blend, cross_val_blend, members
    from stackkit.cv.runs import RUNS, candidate_name, is_run
    from stackkit.meta.bias import decide_bias
    from stackkit.meta.registry import make_learner

    params = params or {}
    learners = [m for m in metas if m not in (BLEND, RUNS)]
    runs = {candidate_name(n): i for i, n in enumerate(run_names or [])}

    def run_proba(m, rows):
        i = runs[m]
        return metrics.softmax(X[rows, i * n_classes : (i + 1) * n_classes])

    ests = {m: make_learner(m, n_classes=n_classes, params=params.get(m)) for m in learners}
    outer = np.unique(fold_ids)

    def rows(mask):
        return np.flatnonzero(mask)

    inner_tasks = [Task((k, m, j), m, rows((fold_ids != k) & (fold_ids != j)), rows(fold_ids == j))
                   for k in outer for j in outer if j != k for m in learners]  # fmt: skip
    done = run_tasks(inner_tasks, ests, X, y, n_jobs, engine, progress)
    picks, blends, final = {}, {}, []
    for k in outer:
        inner = fold_ids != k
        yi, fi = y[inner], fold_ids[inner]
        results = []
        for m in learners:
            proba = np.zeros((len(y), n_classes))
            for j in outer[outer != k]:
                test, p, _, _ = done[(k, m, j)]
                proba[test] = p
            proba = proba[inner]
            results.append(CVResult(m, proba, metrics.scores(yi, proba, fi), 0.0))
        for m in runs:
            proba = run_proba(m, inner)
            results.append(CVResult(m, proba, metrics.scores(yi, proba, fi), 0.0))
        if BLEND in metas:
            results.append(cross_val_blend(members(results), yi, fi, n_classes))
        picks[k] = choose(results)
        if picks[k].meta == BLEND:
            blends[k] = Blend.fit_from(members(results), yi, n_classes)
            needed = list(blends[k].weights)
        else:
            needed = [picks[k].meta]
        final += [Task((k, m), m, rows(inner), rows(~inner)) for m in needed if not is_run(m)]
        log.debug("nested: outer fold %d picked %s", k, picks[k].meta)
    refits = run_tasks(final, ests, X, y, n_jobs, engine, progress)
    for k in outer:  # a run predicts the outer fold with its own OOF rows
        refits.update({(k, m): (None, run_proba(m, fold_ids == k)) for m in runs})
    out = np.zeros((len(y), n_classes))
    for k in outer:
        test = rows(fold_ids == k)
        if k in blends:
            proba = blends[k].mix({m: refits[(k, m)][1] for m in blends[k].weights})
        else:
            proba = refits[(k, picks[k].meta)][1]
        if tune_bias:
            inner = fold_ids != k
            offsets = decide_bias(picks[k].oof_proba, y[inner], fold_ids[inner]).offsets
            if offsets is not None:
                proba = metrics.softmax(_log(proba) + offsets)
        out[test] = proba
    return out, [picks[k].meta for k in outer]


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(p, metrics.EPS, None))
