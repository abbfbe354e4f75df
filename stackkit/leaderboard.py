"""``stackkit leaderboard``: every run and every meta candidate over the chosen runs, in one table.

Runs are scored on their own OOF logits; meta candidates (with ``auto``, the runs themselves
among them, ``run:<name>``) by cross-validated OOF macro-F1 over the stored folds; the best of
them is optimistic by selection, so the honest estimate of picking among them
(``stackkit.cv.estimate``) comes with it. The leave-one-run-out column says how much the best
single learner (never a blend, whose column would redo every candidate's CV per run, nor a run)
loses when each run is dropped (positive: the run helps). CV results come from the on-disk cache
when the inputs and parameters are unchanged, so asking twice costs only reading the runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stackkit.contract.errors import StackkitError
from stackkit.contract.inventory import choose_runs
from stackkit.contract.store import RunSet, Store
from stackkit.cv.blend import BLEND
from stackkit.cv.cache import CVCache, entry_key, inputs_key
from stackkit.cv.estimate import Estimate, estimate
from stackkit.cv.result import CVResult
from stackkit.cv.runs import candidate_name, is_run, run_candidates
from stackkit.cv.stacking import choose
from stackkit.fit import (
    auto_size_rule,
    cross_validate,
    is_auto,
    resolve_metas,
    smallest_training_split,
)
from stackkit.tables import AsTable

if TYPE_CHECKING:  # pandas only for to_frame: the command line's tables need none
    import pandas as pd

log = logging.getLogger(__name__)


# The columns of the leaderboard's two tables, as (key, header, format): one definition for the
# CLI's text tables and the report's HTML ones.
RUN_COLUMNS = [
    ("run", "run", ""),
    ("model", "model", ""),
    ("oof_macro_f1", "macro-F1", ".4f"),
    ("macro_f1_std", "± folds", ".4f"),
    ("oof_accuracy", "accuracy", ".4f"),
    ("oof_log_loss", "log loss", ".4f"),
]
CANDIDATE_COLUMNS = [
    ("meta", "meta learner", ""),
    ("cv_macro_f1", "CV macro-F1", ".4f"),
    ("cv_macro_f1_std", "± folds", ".4f"),
    ("cv_accuracy", "accuracy", ".4f"),
    ("cv_log_loss", "log loss", ".4f"),
    ("seconds", "fit seconds (all folds)", ".1f"),
]


SCORE_KEYS = {"macro_f1", "macro_f1_std", "accuracy", "log_loss"}  # a run row's scores


def run_columns(loro_meta: str | None) -> list[tuple[str, str, str]]:
    """The run table; the leave-one-run-out column only when it was computed (by ``loro_meta``)."""
    loro = [("loro_delta", f"macro-F1 lost without it ({loro_meta})", "+.4f")] if loro_meta else []
    return [*RUN_COLUMNS, *loro]


def candidate_columns(pick_key: str) -> list[tuple[str, str, str]]:
    """The candidate table, with a last unnamed column ``pick_key`` marking the pick."""
    return [*CANDIDATE_COLUMNS, (pick_key, "", "")]


@dataclass
class Leaderboard(AsTable):
    """Every run and every meta candidate: ``to_frame()`` ranks the candidates,
    ``to_frame("runs")`` lists the runs with their leave-one-run-out column."""

    runset: RunSet
    runs: list[dict]  # run, oof_macro_f1, oof_accuracy, oof_log_loss, macro_f1_std, loro_delta
    candidates: list[CVResult]
    best: CVResult
    loro_meta: str | None
    estimate: Estimate | None = None  # of choosing among the candidates (as fit does)

    def to_frame(self, which: str = "candidates") -> pd.DataFrame:
        """``"candidates"``: one row per candidate (CV scores), best first, ``best`` marked;
        ``"runs"``: one row per run (own OOF scores, ``loro_delta`` when computed)."""
        import pandas as pd

        if which == "runs":
            return pd.DataFrame(self.runs)
        if which != "candidates":
            raise StackkitError(f"to_frame: which is 'candidates' or 'runs', got {which!r}")
        rows = [dict(r.row(), best=r is self.best) for r in self.candidates]
        frame = pd.DataFrame(rows).sort_values("cv_macro_f1", ascending=False, kind="stable")
        return frame.reset_index(drop=True)

    def headline(self) -> str:
        line = f"best {self.best.meta}: CV macro-F1 {self.best.scores['macro_f1']:.4f}"
        if self.estimate is not None and len(self.candidates) > 1:
            line += f" (optimistic by selection; honest estimate {self.estimate.macro_f1:.4f})"
        return line

    def _repr_html_(self) -> str:
        runs = self.to_frame("runs").to_html(index=False, float_format="{:.4f}".format, na_rep="-")
        return f"{super()._repr_html_()}\n<p>runs (own OOF predictions)</p>\n{runs}"


def run_scores(runset: RunSet, use_cache: bool = False, candidates=()) -> list[dict]:
    """Each run's own OOF scores (``stackkit.cv.runs.run_candidates``): taken from
    ``candidates`` where the runs are among them (``auto``), else with ``use_cache`` read from
    (and written to) the cache by the run's content and the folds' rows, so a warm leaderboard
    does not redo 50 softmaxes."""
    given = {r.meta: r.scores for r in candidates if is_run(r.meta)}
    cache = CVCache(use_cache)
    inputs = {k: v for k, v in inputs_key(runset).items() if k != "runs"}
    keys = {name: entry_key(inputs, candidate_name(name), {"run": runset.hashes.get(name)})
            for name in runset.names}  # fmt: skip
    scores = {}
    for name in runset.names:
        s = given.get(candidate_name(name))
        if s is None and runset.hashes.get(name):  # a run without a hash is never cached
            s = cache.get_value(keys[name])
        if isinstance(s, dict) and s.keys() >= SCORE_KEYS:
            scores[name] = s
    missing = [n for n in runset.names if n not in scores]
    if missing:
        for name, r in zip(missing, run_candidates(runset, keep_proba=False, names=missing)):
            scores[name] = r.scores
            if runset.hashes.get(name):
                cache.put_value(keys[name], r.scores)
    rows = []
    for name in runset.names:
        s = scores[name]
        rows.append(
            {
                "run": name,
                "model": runset.infos[name].get("model"),
                "oof_macro_f1": s["macro_f1"],
                "macro_f1_std": s["macro_f1_std"],
                "oof_accuracy": s["accuracy"],
                "oof_log_loss": s["log_loss"],
            }
        )
    return rows


def leaderboard(
    store: Store,
    runs: list[str] | None = None,
    meta: str | list[str] = "auto",
    params: dict | None = None,
    loro: bool = True,
    n_jobs: int | None = None,
    use_cache: bool = True,
    exclude: list[str] | None = None,
) -> Leaderboard:
    from stackkit.meta.registry import check_params, resolve_factors

    metas = resolve_metas(meta)
    folds = store.read_folds()
    if is_auto(meta):
        metas = auto_size_rule(metas, folds.n_samples)
    check_params(params, metas, smallest_training_split(folds))  # before any work
    params = resolve_factors(params, metas, folds.meta.get("data"))
    runset = store.load_runs(choose_runs(store, folds, runs, exclude), folds)
    candidates = cross_validate(runset, metas, params, n_jobs, use_cache)
    rows = run_scores(runset, use_cache, candidates)
    best = choose(candidates)
    y, f, c = runset.folds.labels, runset.folds.fold_ids, runset.folds.n_classes
    honest = estimate(candidates, y, f, c)
    loro_meta = None
    singles = [c for c in candidates if c.meta != BLEND and not is_run(c.meta)]
    if loro and runset.n_runs > 1 and singles:
        # the best single learner: a blend's column would redo every candidate's CV per run
        # (on the reference case, ten times auto's work)
        ref = choose(singles)
        loro_meta, full = ref.meta, ref.scores["macro_f1"]
        for row in rows:
            rest = [n for n in runset.names if n != row["run"]]
            (res,) = cross_validate(runset.subset(rest), [loro_meta], params, n_jobs, use_cache)
            row["loro_delta"] = full - res.scores["macro_f1"]
    return Leaderboard(runset, rows, candidates, best, loro_meta, honest)
