"""Single runs as candidates of ``auto`` (contract 1.1): ``run:<name>`` competes with the stacks.

A run's "meta-level CV predictions" are its own OOF softmax probabilities (each row predicted by
a fold model that never saw it), so its ``cv_macro_f1`` is the run's own OOF macro-F1 and no
learner is fitted. When a run is the pick, the test probabilities are that run's fold-averaged
test probabilities; inside a ``blend`` it is one more component.

    >>> cands = run_candidates(runset)          # [CVResult("run:effnet", ...), ...]
    >>> RunColumns(index=0, n_classes=18).predict_proba(X)   # run 0's softmax, from the features
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from stackkit import metrics
from stackkit.contract.store import RunSet
from stackkit.cv.result import PREFIX, RUNS, CVResult, candidate_name, is_run

if TYPE_CHECKING:
    from stackkit.meta.run_columns import RunColumns

__all__ = ["PREFIX", "RUNS", "RunColumns", "candidate_name", "is_run", "run_candidates",
           "run_learner", "run_test_proba"]  # fmt: skip


def __getattr__(name: str):
    # RunColumns lives with the learners (it subclasses scikit-learn's BaseEstimator, and this
    # module is on the warm leaderboard's path, which must not import scikit-learn); ensembles
    # saved before name it stackkit.cv.runs.RunColumns, which still resolves here
    if name == "RunColumns":
        from stackkit.meta.run_columns import RunColumns

        return RunColumns
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_candidates(
    runset: RunSet, keep_proba: bool = True, names: Sequence[str] | None = None
) -> list[CVResult]:
    """One candidate per run: its OOF softmax probabilities and their scores (computed in
    float64; the probabilities kept as float32, as oof_proba.parquet would hold them: 50 runs
    of the reference case are then 68 MB, not 136). ``keep_proba=False``: the scores alone
    (``oof_proba`` None), for the runs that are not candidates. ``names``: only those runs
    (in the runset's order)."""
    y, f = runset.folds.labels, runset.folds.fold_ids
    out = []
    for i, name in enumerate(runset.names):
        if names is not None and name not in names:
            continue
        p = metrics.softmax(runset.oof[i])
        kept = p.astype(np.float32) if keep_proba else None
        out.append(CVResult(candidate_name(name), kept, metrics.scores(y, p, f), 0.0, {}))
    return out


def run_test_proba(runset: RunSet, meta: str) -> np.ndarray:
    """The fold-averaged test softmax probabilities of the run named by ``meta``."""
    i = runset.names.index(meta[len(PREFIX) :])
    return metrics.softmax(runset.test[i], axis=-1).mean(axis=0)


def run_learner(runset: RunSet, meta: str) -> RunColumns:
    from stackkit.meta.run_columns import RunColumns

    run = meta[len(PREFIX) :]
    return RunColumns(run, runset.names.index(run), runset.n_runs, runset.folds.n_classes).fit(None)
