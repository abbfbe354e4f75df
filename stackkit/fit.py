"""``stackkit fit``: cross-validate meta learners over stored runs, pick one, write an ensemble.

    >>> res = fit_ensemble(Store("artifacts"), meta="auto", tune_bias=True)
    >>> res.selected.meta, res.selected.scores["macro_f1"]

Steps: load and validate the runs; cross-validate every candidate over the stored folds (meta
predictions for fold k come from a learner fitted on the other folds; with ``auto`` each run is a
candidate too, ``run:<name>``); pick the best CV macro-F1 (ties to the simpler); optionally tune
per-class offsets inside the same CV; estimate the whole procedure honestly (each fold's choice,
blend weights and bias decision redone without it: ``stackkit.cv.estimate``; optionally also with
nested CV); refit the pick on all OOF rows; predict the test set from the runs' fold-averaged
test probabilities; write ``ensembles/<name>/`` whole or not at all.
"""

from __future__ import annotations

import functools
import inspect
import logging
import platform
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stackkit import __version__, metrics
from stackkit.contract import schema
from stackkit.contract.errors import StackkitError
from stackkit.contract.inventory import choose_runs
from stackkit.contract.names import check_name
from stackkit.contract.store import RunSet, Store, atomic_dir, write_json, write_parquet
from stackkit.cv import shared, stacking
from stackkit.cv.blend import BLEND, Blend, cross_val_blend, members
from stackkit.cv.cache import CVCache, entry_key, inputs_key
from stackkit.cv.engine import check_engine, warm_local_workers
from stackkit.cv.estimate import (
    CANDIDATES_FILE,
    ESTIMATE_FILE,
    Estimate,
    below_best_run,
    candidate_frame,
    estimate,
)
from stackkit.cv.runs import RUNS, is_run, run_candidates, run_learner, run_test_proba
from stackkit.tables import AsTable

if TYPE_CHECKING:  # pandas where a frame is made: a warm leaderboard imports this module
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class FitResult(AsTable):
    """What ``fit`` decided; ``to_frame()`` is its candidate table, shown as HTML in Jupyter."""

    name: str
    path: Path
    runset: RunSet
    candidates: list[stacking.CVResult]
    selected: stacking.CVResult
    oof_proba: np.ndarray  # what oof_proba.parquet holds (bias-shifted when tuned)
    test_proba: np.ndarray
    final_scores: dict  # scores of oof_proba (after bias tuning when tuned)
    nested_macro_f1: float | None
    nested_picks: list[str] | None
    bias_offsets: np.ndarray | None
    summary: dict
    bias_cv_macro_f1: float | None = None  # CV macro-F1 with in-CV offsets, applied or not
    estimate: Estimate | None = None  # the honest estimate of the whole procedure
    runs: list[stacking.CVResult] | None = None  # each run's own OOF scores, candidates or not
    fold_offsets: np.ndarray | None = None  # (K, C) bias offsets fitted without each fold
    learner: object | None = None  # the refitted pick, saved to model/ (stackkit.predict)
    written: bool = False  # ensembles/<name>/ holds this result (fit_ensemble(write=True))

    @property
    def note(self) -> str | None:
        """One sentence when the estimate is below the best single run's OOF macro-F1."""
        return below_best_run(self.estimate.macro_f1, self.runs or [])

    def to_frame(self) -> pd.DataFrame:
        """One row per candidate (leaderboard.json's entries) and ``picked``."""
        import pandas as pd

        rows = [dict(r.row(), picked=r is self.selected) for r in self.candidates]
        return pd.DataFrame(rows)

    def headline(self) -> str:
        where = f"wrote {self.path}" if self.written else "not written"
        return (
            f"{self.name}: picked {self.selected.meta}, CV macro-F1 "
            f"{self.selected.scores['macro_f1']:.4f}; honest estimate of the procedure "
            f"{self.estimate.macro_f1:.4f} ({where})" + (f". {self.note}" if self.note else "")
        )


def resolve_metas(meta: str | list[str]) -> list[str]:
    """``"auto"`` -> all seven learners in simplicity order, every run as a candidate (``runs``),
    then ``blend`` (the level-2 mix of them all, stackkit.cv.blend); ``blend`` alone -> the same;
    else the listed names, each checked (``blend`` beside others mixes those; ``runs`` adds the
    runs; a ``run:<name>`` stands for ``runs``)."""
    from stackkit.meta.defaults import SIMPLICITY

    names = [m.strip() for m in (meta.split(",") if isinstance(meta, str) else meta) if m.strip()]
    if not names:
        raise StackkitError("--meta: no meta learner named")
    if names in (["auto"], [BLEND]):
        return [*SIMPLICITY, RUNS, BLEND]
    names = [RUNS if is_run(m) else m for m in names]
    unknown = [m for m in names if m not in (*schema.META_NAMES, RUNS)]
    if unknown:
        raise StackkitError(
            f"--meta: unknown meta learner {unknown[0]!r} "
            f"(known: auto, {', '.join(schema.META_NAMES)}, runs)"
        )
    return list(dict.fromkeys(names))


def is_auto(meta: str | list[str]) -> bool:
    names = [m.strip() for m in (meta.split(",") if isinstance(meta, str) else meta) if m.strip()]
    return names in (["auto"], [BLEND])


def auto_size_rule(metas: list[str], n_rows: int) -> list[str]:
    """``auto``'s candidates on ``n_rows`` training rows: without the learners that grow faster
    than linearly past their size (``meta.defaults.AUTO_MAX_ROWS``), each one left out logged."""
    from stackkit.meta.defaults import AUTO_MAX_ROWS

    out = []
    for m in metas:
        limit = AUTO_MAX_ROWS.get(m)
        if limit is not None and n_rows > limit:
            log.info("auto leaves %s out: %d training rows > %d (its cost grows with rows "
                     "squared; name it in --meta to fit it anyway)", m, n_rows, limit)  # fmt: skip
        else:
            out.append(m)
    return out


def default_name(meta: str | list[str]) -> str:
    """The ensemble's name when ``--name`` is not given: the ``--meta`` value, ``lr-rf`` for a list."""
    names = meta.split(",") if isinstance(meta, str) else meta
    return "-".join(m.strip() for m in names if m.strip())


def smallest_training_split(folds) -> int:
    """Rows of the smallest meta-level training split: all rows but the largest fold's."""
    return folds.n_samples - int(np.bincount(folds.fold_ids).max())


# Folds fitted in parallel processes pay off once a fit takes seconds: from about 2M feature
# cells (the reference case, 18,900 rows x 180 columns, is 3.4M) on; below, process start-up
# costs more than it saves.
PARALLEL_FROM_CELLS = 2_000_000


def resolve_n_jobs(n_jobs: int | None, X: np.ndarray | int) -> int:
    """``None``: every core for large inputs, one process for small ones (``X``: the feature
    matrix or its number of cells)."""
    if n_jobs is not None:
        return n_jobs
    cells = X if isinstance(X, int) else X.size
    return -1 if cells >= PARALLEL_FROM_CELLS else 1


def cross_validate(
    runset: RunSet,
    metas: list[str],
    params: dict | None,
    n_jobs: int | None = None,
    use_cache: bool = True,
    engine: str = "local",
    X_test: np.ndarray | None = None,
    X: np.ndarray | None = None,
) -> list[stacking.CVResult]:
    """CV results for each named learner: from the on-disk cache when the inputs match, the rest
    computed together in one pool of fold fits (``stacking.cross_val_many``) and then cached.
    ``blend`` comes last, from the others' results (cached too). With ``X_test``, the
    learners computed here are refitted on all rows in the same pool (``CVResult.refit``).
    ``X``: the runset's features when already built (``stacking.features``)."""
    blend, with_runs = BLEND in metas, RUNS in metas
    metas = [m for m in metas if m not in (BLEND, RUNS)]

    y, f, c = runset.folds.labels, runset.folds.fold_ids, runset.folds.n_classes
    cache = CVCache(use_cache)
    inputs = inputs_key(runset)
    keys = {m: entry_key(inputs, m, {m: (params or {}).get(m) or {}}) for m in metas}
    found = {m: cache.get(keys[m], len(y), c) for m in metas}
    todo = [m for m in metas if found[m] is None]
    if todo:
        from tqdm.auto import tqdm

        X = stacking.features(runset) if X is None else X  # built only when some is not cached
        n_jobs = resolve_n_jobs(n_jobs, X)
        n_fits = len(todo) * (len(np.unique(f)) + (X_test is not None))
        with tqdm(total=n_fits, desc="meta CV", unit="fit", disable=None, leave=False) as bar:
            res = stacking.cross_val_many(todo, X, y, f, c, params, n_jobs, engine,
                                          progress=lambda _tag: bar.update(), X_test=X_test)  # fmt: skip
        for m, r in zip(todo, res):
            cache.put(keys[m], replace(r, refit=None))  # the refitted learners stay out
            found[m] = r
    out = [found[m] for m in metas] + (run_candidates(runset) if with_runs else [])
    if blend:  # keyed by the candidates it mixes and their parameters
        mix = members(out)
        bkey = entry_key(inputs, BLEND, {BLEND: {r.meta: r.params for r in mix}})
        out.append(cache.get_or_compute(bkey, len(y), c, lambda: cross_val_blend(mix, y, f, c)))
    return out


def one_writer(fit):
    """Check ``fit``'s ensemble name (``--name``, or the default from ``--meta``) and be its
    only writer for the whole call (``Store.writing``: a lock, and ``force`` to replace); a fit
    that will not write (``write=False``) takes no lock and replaces nothing."""
    sig = inspect.signature(fit)

    @functools.wraps(fit)
    def wrapper(*args, **kwargs):
        call = sig.bind(*args, **kwargs)
        call.apply_defaults()
        a = call.arguments
        resolve_metas(a["meta"])  # a bad --meta is the first thing said
        name = check_name(default_name(a["meta"]) if a["name"] is None else a["name"], "ensemble")
        a["name"] = name
        store = a["store"]  # the runs chosen (and those left out said) before the lock is taken
        a["runs"] = choose_runs(store, store.read_folds(), a["runs"], a["exclude"])
        a["exclude"] = None
        if not a["write"]:
            return fit(*call.args, **call.kwargs)
        with store.writing(store.ensemble_dir(name), f"ensemble {name!r}", a["force"]):
            return fit(*call.args, **call.kwargs)

    return wrapper


@one_writer
def fit_ensemble(
    store: Store,
    meta: str | list[str] = "auto",
    runs: list[str] | None = None,
    name: str | None = None,
    params: dict | None = None,
    tune_bias: bool = False,
    nested: bool = False,
    n_jobs: int | None = None,
    use_cache: bool = True,
    command: list[str] | None = None,
    engine: str = "local",
    force: bool = False,
    exclude: list[str] | None = None,
    write: bool = True,
) -> FitResult:
    """Fit the ensemble and write ``ensembles/<name>/`` (see module docstring), holding the
    ensemble's lock throughout (``one_writer``); ``force`` replaces an existing one.
    ``write=False`` computes the same result and writes nothing (a notebook trying options)."""
    from stackkit.meta.bias import decide_bias
    from stackkit.meta.registry import check_params, resolve_factors

    metas = resolve_metas(meta)
    check_engine(engine)
    folds = store.read_folds()
    runs = choose_runs(store, folds, runs, exclude)
    if is_auto(meta):
        metas = auto_size_rule(metas, len(folds.frame))
    check_params(params, metas, smallest_training_split(folds))  # before any work
    cli_params = params
    params = resolve_factors(params, metas, folds.meta.get("data"))
    warm = None
    if engine == "local":  # start the worker processes while the runs are read and checked
        cells = len(folds.frame) * len(runs) * folds.n_classes
        warm = warm_local_workers(resolve_n_jobs(n_jobs, cells))
    try:
        runset = store.load_runs(runs, folds)
    finally:  # also on bad input: never leave the warm-up running behind an error
        if warm is not None:
            warm.join()
    y, f, c = folds.labels, folds.fold_ids, folds.n_classes

    # the refits on all rows join the CV pool when they will be needed whatever the pick: one
    # learner, or a blend (which mixes most of them); else the pick alone is refitted afterwards
    learners = [m for m in metas if m not in (BLEND, RUNS)]
    prefit = len(learners) == 1 or (BLEND in metas and len(learners) > 0)
    # the features built once, in files that the worker processes map (stackkit.cv.shared)
    with shared.scratch() as folder:
        here = folder if engine == "local" else None  # a Ray cluster's nodes get the arrays
        X = stacking.features(runset, here)
        X_test = stacking.test_features(runset, here)
        # the test logits (78% of the logits on the reference case) are read again only for a
        # run picked as the ensemble: out to a file until then
        runset = replace(runset, test=shared.spill(runset.test, folder, "test_logits"))
        candidates = cross_validate(runset, metas, params, n_jobs, use_cache, engine,
                                    X_test if prefit else None, X)  # fmt: skip
        selected = stacking.choose(candidates)
        log.debug("selected %s (CV macro-F1 %.4f)", selected.meta, selected.scores["macro_f1"])
        honest = estimate(candidates, y, f, c, tune_bias)
        written = as_written(honest.proba)  # scored as estimate_oof_proba.parquet holds it
        honest = replace(honest, proba=written, macro_f1=metrics.macro_f1(y, written.argmax(1), c))
        run_rows = [r for r in candidates if is_run(r.meta)] or run_candidates(runset, False)

        oof_proba, offsets = selected.oof_proba, None
        bias_cv_macro_f1 = fold_offsets = None
        if tune_bias:
            decision = decide_bias(selected.oof_proba, y, f)
            oof_proba, offsets, bias_cv_macro_f1 = (
                decision.proba,
                decision.offsets,
                decision.cv_macro_f1,
            )
            fold_offsets = decision.fold_offsets if offsets is not None else None
            if offsets is None:  # offsets fitted on other folds did not carry over
                # FitResult carries it (bias_cv_macro_f1) and the CLI's summary says it once
                log.debug("bias tuning lowered the CV macro-F1 (%.4f -> %.4f): not applied",
                          selected.scores["macro_f1"], bias_cv_macro_f1)  # fmt: skip
        oof_proba = as_written(oof_proba)  # scored as oof_proba.parquet holds it (float32)
        final_scores = metrics.scores(y, oof_proba, f)

        nested_f1 = picks = None
        if nested:
            run_names = runset.names if RUNS in metas else None
            nested_proba, picks = stacking.nested_cv(metas, X, y, f, c, params, tune_bias,
                                                     resolve_n_jobs(n_jobs, X), engine=engine,
                                                     run_names=run_names)  # fmt: skip
            nested_f1 = metrics.macro_f1(y, nested_proba.argmax(1), c)

        est, test_proba = refit(selected.meta, candidates, runset, params, n_jobs, X_test, X)
    if offsets is not None:
        test_proba = metrics.softmax(stacking._log(test_proba) + offsets)

    summary = _summary(est, runset)
    res = FitResult(
        name,
        store.ensemble_dir(name),
        runset,
        candidates,
        selected,
        oof_proba,
        test_proba,
        final_scores,
        nested_f1,
        picks,
        offsets,
        summary,
        bias_cv_macro_f1,
        honest,
        run_rows,
        fold_offsets,
    )
    res.learner = est
    if res.note:  # FitResult.note; the CLI's summary prints it once (a warning too said it twice)
        log.debug("%s", res.note)
    if write:
        write_ensemble(store, res, cli_params, command)
        res.written = True
    return res


def as_written(proba: np.ndarray) -> np.ndarray:
    """``proba`` as a probability parquet stores it: rows renormalised, float32 (scores of the
    written file and of this array are then the same, ties included)."""
    p = np.asarray(proba, dtype=np.float64)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def refit(meta: str, candidates, runset: RunSet, params=None, n_jobs=None, X_test=None, X=None):
    """The pick refitted on every OOF row and its test probabilities; for ``blend``, its weights
    chosen on every row and each weighted candidate refitted. Refits already made in the CV pool
    (``CVResult.refit``) are reused; the rest run in parallel, the costliest first. A run
    (``run:<name>``) needs no fit: its test probabilities are its fold-averaged ones."""
    from stackkit.meta.defaults import RELATIVE_COST
    from stackkit.meta.registry import make_learner

    X = stacking.features(runset) if X is None else X
    y = runset.folds.labels
    Xt = stacking.test_features(runset) if X_test is None else X_test
    c = runset.folds.n_classes
    by_name = {r.meta: r for r in candidates}
    blend = None
    if meta == BLEND:
        blend = Blend.fit_from(members(candidates), y, c)
        needed = list(blend.weights)
    else:
        needed = [meta]
    have = {m: by_name[m].refit for m in needed if m in by_name and by_name[m].refit is not None}
    have.update({m: (run_learner(runset, m), run_test_proba(runset, m)) for m in needed
                 if is_run(m)})  # fmt: skip
    todo = sorted((m for m in needed if m not in have), key=lambda m: -RELATIVE_COST.get(m, 1.0))
    if todo:
        jobs = min(len(todo), effective_jobs(resolve_n_jobs(n_jobs, X)))
        ests = {m: make_learner(m, n_classes=c, params=(params or {}).get(m)) for m in todo}
        tasks = [stacking.Task((m, "refit"), m, np.arange(len(y)), None) for m in todo]
        done = stacking.run_tasks(tasks, ests, X, y, jobs, "local", X_test=Xt)
        have.update({m: (done[(m, "refit")][3], done[(m, "refit")][1]) for m in todo})
    if blend is None:
        return have[meta]
    blend.learners = {m: have[m][0] for m in needed}
    log.info("blend weights: %s", ", ".join(f"{m} {w:.2f}" for m, w in blend.weights.items()))
    return blend, blend.mix({m: have[m][1] for m in needed})


def effective_jobs(n_jobs: int) -> int:
    from joblib import effective_n_jobs

    return max(1, effective_n_jobs(n_jobs))


def _summary(est, runset: RunSet) -> dict:
    out = {"params": _jsonable(est.get_params())}
    if hasattr(est, "summary_"):
        out["summary"] = _jsonable(est.summary_())
    w = getattr(est, "run_weights_", None)
    if w is not None:
        out["run_weights"] = {n: float(v) for n, v in zip(runset.names, np.asarray(w))}
    return out


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, (np.integer, np.floating, np.bool_)):
        return o.item()
    if o is None or isinstance(o, (str, int, float, bool)):
        return o
    return repr(o)


def submission_frame(runset: RunSet, test_proba: np.ndarray) -> pd.DataFrame:
    """``ImageID,ans`` in eval/info.csv order for the mask layout, else ``sample_id,label``."""
    import pandas as pd

    pred = test_proba.argmax(axis=1)
    data = runset.folds.meta.get("data") or {}
    if data.get("layout") == "mask":
        info = Path(data.get("root", "")) / "eval" / "info.csv"
        if info.is_file():
            order = pd.read_csv(info, dtype={"ImageID": str})["ImageID"].to_numpy(dtype=object)
            pos = pd.Index(runset.test_ids).get_indexer(order)
            if (pos < 0).any():
                bad = order[int(np.argmax(pos < 0))]
                raise StackkitError(f"{info}: ImageID {bad!r} has no test prediction in the runs")
            return pd.DataFrame({"ImageID": order, "ans": pred[pos]})
        log.warning("%s not found: submission.csv in sorted ImageID order", info)
        return pd.DataFrame({"ImageID": runset.test_ids, "ans": pred})
    return pd.DataFrame({"sample_id": runset.test_ids, "label": pred})


def write_ensemble(store: Store, res: FitResult, params: dict | None, command) -> Path:
    import pandas as pd
    import sklearn

    rs = res.runset
    leaderboard = {
        "selected": res.selected.meta,
        "candidates": [r.row() for r in res.candidates],
        "nested_macro_f1": res.nested_macro_f1,
        "bias_tuned": res.bias_offsets is not None,
        # the selected entry's cv_macro_f1 is before bias offsets; oof_proba.parquet after them
        "oof_proba_macro_f1": res.final_scores["macro_f1"],
        "estimate_macro_f1": res.estimate.macro_f1,
    }
    best = max(res.runs, key=lambda r: r.scores["macro_f1"])
    ensemble = {
        "name": res.name,
        "created": pd.Timestamp.now(tz="UTC").isoformat(),
        "command": command,
        "inputs": {
            "runs": [
                {"run": n, "hash": rs.hashes[n], "model": rs.infos[n].get("model")}
                for n in rs.names
            ],
            "folds_hash": rs.folds.hash,
        },
        "meta": res.selected.meta,
        "params": res.summary.get("params"),
        "learner": res.summary.get("summary"),
        "run_weights": res.summary.get("run_weights"),
        "bias_offsets": None if res.bias_offsets is None else [float(v) for v in res.bias_offsets],
        "scores": {
            "cv_macro_f1": res.selected.scores["macro_f1"],
            "cv_macro_f1_std": res.selected.scores["macro_f1_std"],
            "final_oof_macro_f1": res.final_scores["macro_f1"],
            "final_oof_accuracy": res.final_scores["accuracy"],
            "final_oof_log_loss": res.final_scores["log_loss"],
            "nested_macro_f1": res.nested_macro_f1,
            "nested_picks": res.nested_picks,
            "bias_cv_macro_f1": res.bias_cv_macro_f1,
            "estimate_macro_f1": res.estimate.macro_f1,
            "estimate_method": res.estimate.method,
            "estimate_picks": res.estimate.picks,
            "estimate_bias_applied": res.estimate.bias_applied,
            "best_run": best.meta.removeprefix("run:"),
            "best_run_oof_macro_f1": best.scores["macro_f1"],
        },
        "per_fold": _per_fold(res),
        "cli_params": params or {},
        "versions": {
            "python": platform.python_version(),
            "stackkit": __version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "scikit-learn": sklearn.__version__,
            "xgboost": _xgb_version(),
        },
    }
    ids = rs.folds.frame["sample_id"].to_numpy(dtype=object)
    with atomic_dir(res.path) as tmp:
        write_parquet(schema.proba_frame(ids, res.oof_proba), tmp / "oof_proba.parquet")
        write_parquet(schema.proba_frame(ids, res.estimate.proba), tmp / ESTIMATE_FILE)
        write_parquet(candidate_frame(ids, res.candidates), tmp / CANDIDATES_FILE)
        write_parquet(schema.proba_frame(rs.test_ids, res.test_proba), tmp / "test_proba.parquet")
        submission_frame(rs, res.test_proba).to_csv(tmp / "submission.csv", index=False)
        write_json(leaderboard, tmp / "leaderboard.json")
        write_json(ensemble, tmp / "ensemble.json")
        if res.learner is not None:  # what `stackkit predict` needs to score new images
            from stackkit.predict import write_model

            write_model(tmp / "model", res.selected.meta, res.learner, rs, res.bias_offsets)
    log.debug("wrote %s", res.path)
    return res.path


def _per_fold(res: FitResult) -> dict:
    """What was decided without each fold k (sorted fold order), for whoever redoes the pick
    per fold: the blend's weights (its fold-k learners are the CV's fold-k learners) and, when
    bias offsets are applied, the offsets fitted without fold k."""
    out = {}
    if "fold_weights" in res.selected.extra:
        out["blend_weights"] = res.selected.extra["fold_weights"]
    if res.fold_offsets is not None:
        out["bias_offsets"] = [[float(v) for v in row] for row in res.fold_offsets]
    return out


def _xgb_version() -> str | None:
    mod = sys.modules.get("xgboost")
    return getattr(mod, "__version__", None)
