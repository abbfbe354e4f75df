"""One candidate's cross-validated meta-level predictions and their scores."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# candidate names: a learner ("lr"), a blend, or a single run ("run:<name>", contract 1.1)
RUNS = "runs"  # in a --meta list: every run is a candidate (``auto`` holds it)
PREFIX = "run:"


def is_run(meta: str) -> bool:
    """Is candidate ``meta`` a single run (``run:<name>``)?"""
    return meta.startswith(PREFIX)


def candidate_name(run: str) -> str:
    return f"{PREFIX}{run}"


@dataclass
class CVResult:
    """One meta learner's cross-validated OOF probabilities and their scores."""

    meta: str
    oof_proba: np.ndarray
    scores: dict
    seconds: float
    params: dict = field(default_factory=dict)
    # the learner refitted on every OOF row, when asked for in the same pool: (estimator, test
    # probabilities); never cached, never written
    refit: tuple | None = field(default=None, repr=False, compare=False)
    # per-fold detail worth keeping (blend: the weights chosen for each fold), JSON-able
    extra: dict = field(default_factory=dict, repr=False, compare=False)

    def row(self) -> dict:
        """The leaderboard.json candidate entry (CONTRACT.md)."""
        return {
            "meta": self.meta,
            "cv_macro_f1": self.scores["macro_f1"],
            "cv_macro_f1_std": self.scores["macro_f1_std"],
            "cv_accuracy": self.scores["accuracy"],
            "cv_log_loss": self.scores["log_loss"],
            "seconds": round(self.seconds, 3),
        }
