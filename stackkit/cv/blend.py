"""``blend``: greedy ensemble selection over the other meta candidates (a level-2 ensemble).

Every meta candidate leaves cross-validated probabilities behind; ``blend`` runs Caruana's
selection (:class:`stackkit.meta.caruana.CaruanaSelection`, macro-F1, with replacement) over those,
treating each candidate as a "run". Its own score is cross-validated over the same folds: the
weights for fold k are chosen on the other folds' meta-level OOF rows, then applied to fold k. So
``blend`` competes with the single candidates on equal terms, and ``auto`` picks it only when
mixing them measurably pays. For the test set each candidate with a non-zero weight is refitted
on all OOF rows (as a single pick is) and their probabilities are mixed with the weights chosen
on all rows.

Measured (bench/quality.py's synthetic case, 5 draws): the single pick's held-out macro-F1
0.8104 on average, the blend's 0.8222 (higher on every draw, and higher in CV, so auto picks it);
on digits the blend's CV score was below the best single candidate's on every draw, so auto kept
the single one there.

    >>> res = cross_val_blend(candidates, y, fold_ids, n_classes)   # a CVResult named "blend"
    >>> model = Blend.fit_from(candidates, y, n_classes)           # weights on all rows
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from stackkit import metrics
from stackkit.cv.result import CVResult, is_run

if TYPE_CHECKING:  # imported where used: this module is on the warm leaderboard's path
    from stackkit.meta.caruana import CaruanaSelection

log = logging.getLogger(__name__)

BLEND = "blend"


def _stack(probas: Sequence[np.ndarray]) -> np.ndarray:
    """Candidates' probabilities as CaruanaSelection's input: (n, K*C) log-probabilities."""
    return np.hstack(
        [np.log(np.clip(np.asarray(p, np.float64), metrics.EPS, None)) for p in probas]
    )


def members(candidates: Sequence) -> list:
    """What a blend mixes: the meta learners' candidates, not the single runs (the learners
    already read every run; mixing the runs in too lowered blend's CV macro-F1 on bench/meta.py's
    reference case, 0.8790 -> 0.8769). Runs only when no learner is a candidate."""
    others = [r for r in candidates if r.meta != BLEND]
    return [r for r in others if not is_run(r.meta)] or others


def cross_val_blend(candidates: Sequence, y: np.ndarray, fold_ids: np.ndarray, n_classes: int):
    """The blend's meta-level OOF probabilities and scores (a ``stacking.CVResult``)."""
    from stackkit.meta.caruana import CaruanaSelection

    t0 = time.perf_counter()
    L = _stack([r.oof_proba for r in candidates])
    out = np.zeros((len(y), n_classes))
    fold_weights = []  # per fold (sorted fold order): candidate -> weight, chosen without it
    for k in np.unique(fold_ids):
        held = fold_ids == k
        sel = CaruanaSelection(n_classes=n_classes).fit(L[~held], y[~held])
        out[held] = sel.predict_proba(L[held])
        fold_weights.append({r.meta: float(w) for r, w in zip(candidates, sel.weights_) if w > 0})
    scores = metrics.scores(y, out, fold_ids)
    seconds = time.perf_counter() - t0
    log.debug("%-8s CV macro-F1 %.4f (± %.4f over folds) over %d candidates",
              BLEND, scores["macro_f1"], scores["macro_f1_std"], len(candidates))  # fmt: skip
    return CVResult(BLEND, out, scores, seconds, extra={"fold_weights": fold_weights})


class Blend:
    """A fitted blend: the candidates' learners (refitted on all rows) and their weights.

    ``weights`` maps candidate name to weight (summing to 1, zero weights left out);
    ``selection`` is the CaruanaSelection fitted on all candidates' OOF probabilities, in
    ``names`` order.
    """

    def __init__(self, names: list[str], selection: CaruanaSelection):
        self.names = list(names)
        self.selection = selection
        self.weights = {n: float(w) for n, w in zip(names, selection.weights_) if w > 0}
        self.learners: dict = {}

    @classmethod
    def fit_from(cls, candidates: Sequence, y: np.ndarray, n_classes: int) -> Blend:
        """Choose the weights on every OOF row; the learners are set by the caller
        (``stackkit.fit.refit``), only for the candidates that got weight."""
        from stackkit.meta.caruana import CaruanaSelection

        sel = CaruanaSelection(n_classes=n_classes).fit(
            _stack([r.oof_proba for r in candidates]), y
        )
        return cls([r.meta for r in candidates], sel)

    def mix(self, probas: dict[str, np.ndarray]) -> np.ndarray:
        """Mix the candidates' probabilities (only the weighted ones are needed)."""
        n, c = len(next(iter(probas.values()))), len(self.selection.classes_)
        # a candidate without weight is never read (CaruanaSelection uses the weighted runs only)
        full = [probas.get(m, np.full((n, c), 1.0 / c)) for m in self.names]
        return self.selection.predict_proba(_stack(full))

    def predict_proba(self, X) -> np.ndarray:
        return self.mix({m: self.learners[m].predict_proba(X) for m in self.weights})

    @property
    def run_weights_(self) -> np.ndarray:
        """Each run's weight: the candidates' run weights, mixed by the blend's weights."""
        return sum(w * np.asarray(self.learners[m].run_weights_) for m, w in self.weights.items())

    def get_params(self) -> dict:
        return {"candidates": self.names, "weights": self.weights}

    def summary_(self) -> dict:
        return {
            "learner": BLEND,
            "weights": self.weights,
            "selection": self.selection.summary_(),
            "components": {m: self.learners[m].summary_() for m in self.weights},
        }
