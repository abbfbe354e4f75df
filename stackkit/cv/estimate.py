"""The honest estimate (contract 1.1): what the whole fit procedure should score on new samples.

``auto`` reports the pick's CV macro-F1, the best of many candidates scored on the same rows, so
that number is optimistic by selection. The estimate redoes, for each outer fold k, every
decision the fit makes, on the other folds' rows only, and scores the result on fold k:

1. the choice among the candidates (``stacking.choose``, the fit's own rule, ties included), by
   macro-F1 of their meta-level CV predictions restricted to the rows outside fold k;
2. the blend's weights: the blend's CV prediction for fold k already uses weights chosen
   without fold k (``stackkit.cv.blend``);
3. with ``--tune-bias``, whether to apply offsets and the offsets themselves
   (``decide_bias`` on the chosen candidate's rows outside fold k).

Fold k's predictions are then the chosen candidate's meta-level CV predictions for fold k (made
by a learner fitted without fold k), shifted by those offsets. Macro-F1 is computed once, on the
whole vector of these predictions. No learner is fitted: everything reuses the CV predictions,
so the estimate costs a few macro-F1 evaluations (and, with bias tuning, K x K small tuner fits).

What it does not cover (second order, stated in the README): the candidates' predictions on the
other folds that the choice for fold k compares come from learners (and blend weights) fitted
with fold k among their training rows. Fold k's labels never decide anything about fold k's own
prediction directly, but they shaped the predictions that the decisions compared. On pure noise
this adds nothing measurable (tests/test_estimate.py); ``--nested`` refits everything per outer
fold and has no such dependence, at about four times the cost.

    >>> est = estimate(candidates, y, fold_ids, n_classes, tune_bias=True)
    >>> est.macro_f1, est.picks, est.proba       # est.proba: estimate_oof_proba.parquet
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from stackkit import metrics
from stackkit.cv.result import CVResult

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

ESTIMATE_FILE = "estimate_oof_proba.parquet"  # in ensembles/<name>/: the rows behind the estimate
CANDIDATES_FILE = "estimate_candidates.parquet"  # and what it chose from (for compare)
METHOD = (
    "outer-fold reselection: for each fold, the choice among the candidates, the blend weights "
    "and the bias-tuning decision redone on the other folds' meta-level CV predictions, scored "
    "on that fold; macro-F1 on the whole vector"
)


@dataclass
class Estimate:
    macro_f1: float
    proba: np.ndarray  # (n, C): each row from the decisions made without its fold
    picks: list[str]  # the candidate chosen for each fold, in sorted fold order
    bias_applied: list[bool] | None  # per fold, with --tune-bias
    method: str = METHOD


def estimate(
    candidates: Sequence[CVResult],
    y: np.ndarray,
    fold_ids: np.ndarray,
    n_classes: int,
    tune_bias: bool = False,
) -> Estimate:
    """The honest estimate of choosing among ``candidates`` (see module docstring)."""
    from stackkit.cv.stacking import _log, choose

    if tune_bias:  # scikit-learn comes with the tuner: only when asked for
        from stackkit.meta.bias import decide_bias

    preds = [r.oof_proba.argmax(axis=1) for r in candidates]
    out = np.zeros((len(y), n_classes))
    picks, applied = [], []
    for k in np.unique(fold_ids):
        held = fold_ids == k
        inner = ~held
        yi = y[inner]
        scored = [
            replace(r, scores={"macro_f1": metrics.macro_f1(yi, p[inner], n_classes)})
            for r, p in zip(candidates, preds)
        ]
        chosen = choose(scored)
        pick = candidates[next(i for i, s in enumerate(scored) if s is chosen)]
        proba = pick.oof_proba[held]
        if tune_bias:
            decision = decide_bias(pick.oof_proba[inner], yi, fold_ids[inner])
            applied.append(decision.offsets is not None)
            if decision.offsets is not None:
                proba = metrics.softmax(_log(proba) + decision.offsets)
        out[held] = proba
        picks.append(pick.meta)
    f1 = metrics.macro_f1(y, out.argmax(axis=1), n_classes)
    log.debug("honest estimate %.4f (per-fold picks: %s)", f1, ", ".join(picks))
    return Estimate(f1, out, picks, applied if tune_bias else None)


def candidate_frame(ids, candidates: Sequence[CVResult]) -> pd.DataFrame:
    """``sample_id`` and one int16 column per candidate (named for it) holding the class its CV
    predictions give each row, in ``choose``'s tie order (simplest first): enough for
    ``stackkit.compare`` to redo the choice in every bootstrap resample."""
    import pandas as pd

    from stackkit.cv.stacking import simplicity

    order = sorted(candidates, key=lambda r: simplicity(r.meta))
    cols = {r.meta: r.oof_proba.argmax(axis=1).astype(np.int16) for r in order}
    return pd.DataFrame({"sample_id": pd.array(list(ids), dtype="string"), **cols})


def below_best_run(estimate_f1: float, runs: Sequence[CVResult]) -> str | None:
    """One plain sentence when the estimate is below the best run's own OOF macro-F1."""
    if not runs:
        return None
    best = max(runs, key=lambda r: r.scores["macro_f1"])
    score = best.scores["macro_f1"]
    if estimate_f1 >= score:
        return None
    name = best.meta.removeprefix("run:")
    return (
        f"The honest estimate ({estimate_f1:.4f}) is below the best single run's own OOF "
        f"macro-F1 ({name}, {score:.4f}): on new data this ensemble may do no better than "
        f"{name} alone."
    )
