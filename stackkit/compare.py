"""Is ensemble A really better than B, or only lucky on this OOF set? A paired group bootstrap.

Both predictions are scored on the same resampled people: each replicate draws the groups of
folds.parquet (people) with replacement, and macro-F1 of A and of B is recomputed on the whole
resampled vector. The interval is the 2.5 and 97.5 percentiles of the replicate differences.

An ensemble enters with the predictions behind its honest estimate
(``estimate_oof_proba.parquet``: each fold predicted by the choice made without it), never the
pick's own CV predictions: those won a selection on these very rows, and the bootstrap, which
assumes nothing was chosen, would call that luck significant (on pure-noise runs it did, in 2 of
9 fits). An ensemble written before the estimate existed falls back to ``oof_proba.parquet``, and
the sentence says so.

Resampling is vectorised: a replicate is a vector of group counts, and per-class true positives,
predicted and true totals are count-weighted sums of per-group tallies, so each replicate costs
one small matrix product instead of a Python loop over groups.

    >>> c = compare(Store("artifacts"), "lr", "run00")
    >>> c.diff, c.low, c.high, c.sentence
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stackkit import metrics
from stackkit.contract import schema
from stackkit.contract.errors import StackkitError
from stackkit.contract.names import check_name
from stackkit.contract.store import Store, read_parquet
from stackkit.cv.estimate import ESTIMATE_FILE

log = logging.getLogger(__name__)

N_BOOT = 2000  # enough for a stable 95% percentile interval (about +-0.002 on its ends)
CHUNK = 250  # replicates per matrix product: bounds memory at CHUNK x n_groups counts


@dataclass
class Comparison:
    a: str
    b: str
    a_score: float  # macro-F1 of A on the whole OOF vector
    b_score: float
    diff: float  # a_score - b_score
    low: float  # 95% paired-bootstrap interval of diff
    high: float
    p_value: float  # two-sided bootstrap p-value of "no difference"
    n_boot: int
    n_groups: int
    sentence: str
    notes: tuple[str, ...] = ()  # what each ensemble's predictions are (said after the sentence)


# --------------------------------------------------------------------------------------------
# what to compare: an ensemble's oof_proba.parquet or a run's OOF softmax


def oof_proba(store: Store, name: str, folds: schema.Folds) -> tuple[np.ndarray, str | None]:
    """OOF probabilities of ``name`` in folds.parquet row order, and for an ensemble a note
    saying which predictions they are (see module docstring).

    ``name`` is an ensemble in ensembles/ or a run in runs/; ``ensembles/NAME`` or ``runs/NAME``
    picks one where both exist.
    """
    kind, _, bare = name.rpartition("/")
    if kind not in ("", "ensembles", "runs"):
        raise StackkitError(f"--compare {name!r}: say NAME, ensembles/NAME or runs/NAME")
    check_name(bare, "ensemble or run")
    is_ens = (store.ensemble_dir(bare) / "oof_proba.parquet").is_file()
    is_run = bare in store.run_names()
    if kind == "ensembles" or (not kind and is_ens and not is_run):
        if (store.ensemble_dir(bare) / ESTIMATE_FILE).is_file():
            note = (f"{name} enters with the predictions behind its honest estimate "
                    f"({ESTIMATE_FILE}), not its pick's own CV predictions.")  # fmt: skip
            return ensemble_oof(store, bare, folds, ESTIMATE_FILE), note
        note = (f"{name} predates the honest estimate: its oof_proba.parquet won a selection on "
                "these rows, so it looks better than it is; refit it to compare honestly.")  # fmt: skip
        return ensemble_oof(store, bare, folds), note
    if kind == "runs" or (not kind and is_run and not is_ens):
        runset = store.load_runs([bare], folds)
        return metrics.softmax(runset.oof[0]), None
    if is_ens and is_run:
        raise StackkitError(
            f"{name!r} is both an ensemble and a run: say ensembles/{bare} or runs/{bare}"
        )
    raise StackkitError(
        f"{name!r} is neither an ensemble in {store.root / 'ensembles'} nor a run in "
        f"{store.root / 'runs'} (runs: {', '.join(store.run_names()) or 'none'})"
    )


def ensemble_oof(
    store: Store, name: str, folds: schema.Folds, file: str = "oof_proba.parquet"
) -> np.ndarray:
    path = store.ensemble_dir(name) / file
    where = f"ensemble {name!r}: {store.rel(path)}"
    df, _ = read_parquet(path, where)
    df = schema.validate_proba(df, folds.n_classes, where)
    pos = pd.Index(df["sample_id"].astype(object)).get_indexer(folds.index)
    if (pos < 0).any():
        missing = folds.frame["sample_id"].iloc[int(np.argmax(pos < 0))]
        raise StackkitError(f"{where}: lacks sample_id {missing!r} of folds.parquet")
    return df[schema.prob_columns(folds.n_classes)].to_numpy(dtype=np.float64)[pos]


# --------------------------------------------------------------------------------------------
# the bootstrap


def group_tallies(y: np.ndarray, pred: np.ndarray, groups: np.ndarray, n_classes: int):
    """Per-group (n_groups, C) counts of true positives, predictions and true labels."""
    size = (int(groups.max()) + 1) * n_classes

    def tally(keep, cls):
        return np.bincount(groups[keep] * n_classes + cls[keep], minlength=size).astype(float)

    every = np.ones(len(y), bool)
    tp = tally(y == pred, y).reshape(-1, n_classes)
    pc = tally(every, pred).reshape(-1, n_classes)
    tc = tally(every, y).reshape(-1, n_classes)
    return tp, pc, tc


def paired_bootstrap(
    y: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    groups: np.ndarray,
    n_classes: int,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> np.ndarray:
    """``n_boot`` replicate differences macro-F1(A) - macro-F1(B), groups drawn whole.

    ``groups``: one label per sample (any hashable); pass ``np.arange(n)`` to resample rows.
    """
    codes = pd.factorize(np.asarray(groups, dtype=object))[0]
    g, c = int(codes.max()) + 1, n_classes
    ta = group_tallies(y, pred_a, codes, c)
    tb = group_tallies(y, pred_b, codes, c)
    table = np.hstack([ta[0], ta[1], tb[0], tb[1], ta[2]])  # (G, 5C): one product per chunk
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for start in range(0, n_boot, CHUNK):
        m = min(CHUNK, n_boot - start)
        s = _draw_counts(rng, m, g) @ table  # (m, 5C) resampled tallies
        tc = s[:, 4 * c :]
        fa = metrics.macro_f1_from_counts(s[:, :c], s[:, c : 2 * c], tc)
        fb = metrics.macro_f1_from_counts(s[:, 2 * c : 3 * c], s[:, 3 * c : 4 * c], tc)
        out[start : start + m] = fa - fb
    return out


def _draw_counts(rng: np.random.Generator, m: int, g: int) -> np.ndarray:
    """``m`` bootstrap replicates of ``g`` groups as counts (one flat bincount, no Python loop)."""
    draws = rng.integers(0, g, size=(m, g), dtype=np.int32)
    draws += (np.arange(m, dtype=np.int32) * g)[:, None]  # replicate i counts into row i
    return np.bincount(draws.ravel(), minlength=m * g).reshape(m, g).astype(np.float64)


def compare_arrays(
    y: np.ndarray,
    proba_a: np.ndarray,
    proba_b: np.ndarray,
    groups: np.ndarray,
    a: str = "A",
    b: str = "B",
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Comparison:
    """The paired comparison of two probability (or score) arrays over the same samples."""
    c = proba_a.shape[1]
    pa, pb = proba_a.argmax(1), proba_b.argmax(1)
    sa, sb = metrics.macro_f1(y, pa, c), metrics.macro_f1(y, pb, c)
    reps = paired_bootstrap(y, pa, pb, groups, c, n_boot, seed)
    low, high = np.percentile(reps, [2.5, 97.5])
    p = min(1.0, 2.0 * min(np.mean(reps <= 0), np.mean(reps >= 0)))
    n_groups = len(pd.unique(np.asarray(groups, dtype=object)))
    res = Comparison(a, b, sa, sb, sa - sb, float(low), float(high), float(p), n_boot, n_groups, "")
    res.sentence = sentence(res)
    return res


def sentence(c: Comparison) -> str:
    head = (
        f"{c.a} - {c.b} = {c.diff:+.4f} macro-F1 ({c.a_score:.4f} vs {c.b_score:.4f}); "
        f"95% interval {c.low:+.4f} to {c.high:+.4f} from {c.n_boot} bootstrap resamples "
        f"of {c.n_groups} groups."
    )
    if c.low > 0 or c.high < 0:
        better = c.a if c.diff > 0 else c.b
        return f"{head} The interval excludes 0: {better} is better beyond resampling noise."
    return (
        f"{head} The interval includes 0: the difference is not distinguishable from noise "
        "on this OOF set."
    )


def compare(store: Store, a: str, b: str, n_boot: int = N_BOOT, seed: int = 0) -> Comparison:
    """Macro-F1 of ``a`` minus ``b`` with a paired group-bootstrap 95% interval."""
    if n_boot < 100:
        raise StackkitError(f"n_boot: at least 100 resamples are needed, got {n_boot}")
    folds = store.read_folds()
    (pa, na), (pb, nb) = oof_proba(store, a, folds), oof_proba(store, b, folds)
    groups = folds.frame["group"].to_numpy(dtype=object)
    res = compare_arrays(folds.labels, pa, pb, groups, a, b, n_boot, seed)
    res.notes = tuple(n for n in (na, nb) if n)
    res.sentence = " ".join([res.sentence, *res.notes])
    log.debug("%s", res.sentence)
    return res
