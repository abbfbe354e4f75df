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
from threadpoolctl import threadpool_limits

from stackkit import metrics
from stackkit.contract import schema
from stackkit.contract.errors import StackkitError
from stackkit.contract.names import check_name
from stackkit.contract.store import Store, read_json, read_parquet
from stackkit.cv.estimate import CANDIDATES_FILE, ESTIMATE_FILE
from stackkit.tables import AsTable

log = logging.getLogger(__name__)

N_BOOT = 2000  # enough for a stable 95% percentile interval (about +-0.002 on its ends)
CHUNK = 250  # replicates per matrix product: bounds memory at CHUNK x n_groups counts


@dataclass
class Comparison(AsTable):
    """A minus B in macro-F1 with its interval; ``to_frame()`` is one row, ``sentence`` says it."""

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

    def to_frame(self) -> pd.DataFrame:
        keys = ["a", "b", "a_score", "b_score", "diff", "low", "high", "p_value", "n_boot",
                "n_groups"]  # fmt: skip
        return pd.DataFrame([{k: getattr(self, k) for k in keys}])

    def headline(self) -> str:
        return self.sentence


# --------------------------------------------------------------------------------------------
# what to compare: an ensemble's oof_proba.parquet or a run's OOF softmax


@dataclass
class Side:
    """One side of a comparison: OOF probabilities in folds.parquet order, for an ensemble a
    note saying which predictions they are, and what its estimate chose from (or None)."""

    proba: np.ndarray
    note: str | None = None
    reselect: Reselect | None = None


def oof_proba(store: Store, name: str, folds: schema.Folds) -> Side:
    """What ``name`` enters a comparison with (see module docstring).

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
        return ensemble_side(store, name, bare, folds)
    if kind == "runs" or (not kind and is_run and not is_ens):
        runset = store.load_runs([bare], folds)
        return Side(metrics.softmax(runset.oof[0]))
    if is_ens and is_run:
        raise StackkitError(
            f"{name!r} is both an ensemble and a run: say ensembles/{bare} or runs/{bare}"
        )
    raise StackkitError(
        f"{name!r} is neither an ensemble in {store.root / 'ensembles'} nor a run in "
        f"{store.root / 'runs'} (runs: {', '.join(store.run_names()) or 'none'})"
    )


def ensemble_side(store: Store, name: str, bare: str, folds: schema.Folds) -> Side:
    d = store.ensemble_dir(bare)
    if not (d / ESTIMATE_FILE).is_file():
        note = (f"{name} predates the honest estimate: its oof_proba.parquet won a selection on "
                "these rows, so it looks better than it is; refit it to compare honestly.")  # fmt: skip
        return Side(ensemble_oof(store, bare, folds), note)
    proba = ensemble_oof(store, bare, folds, ESTIMATE_FILE)
    note = (f"{name} enters with the predictions behind its honest estimate ({ESTIMATE_FILE}), "
            "its choice among candidates redone in every resample.")  # fmt: skip
    return Side(proba, note, _reselect(store, bare, folds, proba))


def _reselect(store: Store, name: str, folds: schema.Folds, proba: np.ndarray) -> Reselect:
    d = store.ensemble_dir(name)
    where = f"ensemble {name!r}: {CANDIDATES_FILE}"
    df, _ = read_parquet(d / CANDIDATES_FILE, where)
    ens = read_json(d / "ensemble.json", f"ensemble {name!r}: ensemble.json")
    picks = ((ens.get("scores") if isinstance(ens, dict) else None) or {}).get("estimate_picks")
    picks = picks if isinstance(picks, list) else []
    names = [c for c in df.columns if c != "sample_id"]
    pos = pd.Index(df["sample_id"].astype(object)).get_indexer(folds.index)
    preds = df[names].to_numpy()
    c = folds.n_classes
    bad = (
        (pos < 0).any()
        or len(picks) != folds.n_folds
        or not set(picks) <= set(names)
        or not np.issubdtype(preds.dtype, np.integer)
        or preds.min(initial=0) < 0
        or preds.max(initial=0) >= c
    )
    if bad:
        raise StackkitError(f"{where}: does not match folds.parquet or ensemble.json; refit it")
    idx = np.array([names.index(p) for p in picks])
    return Reselect(preds[pos].T.astype(np.int64), proba.argmax(1), idx, folds.fold_ids)


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


@dataclass
class Reselect:
    """What an ensemble's estimate chose from, so that a resample can choose again: every
    candidate's CV predictions (M, n) in the fit's tie order (simplest first), the estimate's own
    predictions (n,) and, per fold in sorted order, the index of the candidate it picked."""

    preds: np.ndarray
    estimate: np.ndarray
    picks: np.ndarray
    fold_ids: np.ndarray


def _plain_side(y, pred, codes, c):
    tp, pc, _ = group_tallies(y, pred, codes, c)
    table = np.hstack([tp, pc])  # (G, 2C)
    return lambda w: w @ table


def _reselect_side(y, r: Reselect, codes, g, c):
    """Resampled (tp, pc) tallies of an estimate whose choice is redone in each resample: per
    fold k, the candidate with the best resampled macro-F1 on the other folds (first in tie
    order), its fold-k rows counted (the estimate's own rows where it picks as the fit did, so
    that bias offsets stay applied there)."""
    preds = np.vstack([r.preds, r.estimate[None]])  # (M + 1, n): the estimate last
    m1 = len(preds)
    parts = []
    for k in np.unique(r.fold_ids):
        rows = r.fold_ids == k
        gk, local = np.unique(codes[rows], return_inverse=True)
        tabs = [np.hstack(group_tallies(y[rows], p[rows], local, c)[:2]) for p in preds]
        tc = group_tallies(y[rows], y[rows], local, c)[2]
        parts.append((gk, np.hstack(tabs), tc))  # (G_k, (M+1)*2C), (G_k, C)

    def tallies(w):
        s = [(w[:, gk] @ t).reshape(len(w), m1, 2 * c) for gk, t, _ in parts]
        tcs = [w[:, gk] @ tc for gk, _, tc in parts]
        tot, tc_tot = sum(s), sum(tcs)
        out = np.zeros((len(w), 2 * c))
        rep = np.arange(len(w))
        for i, (sk, tck) in enumerate(zip(s, tcs)):
            inner = (tot - sk)[:, :-1]  # candidates only
            f1 = metrics.macro_f1_from_counts(
                inner[..., :c], inner[..., c:], (tc_tot - tck)[:, None]
            )
            pick = f1.argmax(axis=1)
            piece = sk[rep, pick]
            same = pick == r.picks[i]
            piece[same] = sk[same, -1]
            out += piece
        return out

    return tallies


def paired_bootstrap(
    y: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    groups: np.ndarray,
    n_classes: int,
    n_boot: int = N_BOOT,
    seed: int = 0,
    reselect_a: Reselect | None = None,
    reselect_b: Reselect | None = None,
) -> np.ndarray:
    """``n_boot`` replicate differences macro-F1(A) - macro-F1(B), groups drawn whole.

    ``groups``: one label per sample (any hashable); pass ``np.arange(n)`` to resample rows.
    With ``reselect_a`` (``_b``), A's predictions are an honest estimate whose choice among
    candidates is redone in every resample (the choice depends on the labels of the other
    folds; a resample that keeps it fixed understates how much the estimate varies).
    """
    codes = pd.factorize(np.asarray(groups, dtype=object))[0]
    g, c = int(codes.max()) + 1, n_classes
    sides = [
        _plain_side(y, pred, codes, c) if r is None else _reselect_side(y, r, codes, g, c)
        for pred, r in ((pred_a, reselect_a), (pred_b, reselect_b))
    ]
    tc_table = group_tallies(y, y, codes, c)[2]
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    # the products are small: BLAS threads cost more than they save (200x on a busy machine)
    with threadpool_limits(1):
        for start in range(0, n_boot, CHUNK):
            m = min(CHUNK, n_boot - start)
            w = _draw_counts(rng, m, g)
            tc = w @ tc_table
            (sa, sb) = (side(w) for side in sides)
            fa = metrics.macro_f1_from_counts(sa[:, :c], sa[:, c:], tc)
            fb = metrics.macro_f1_from_counts(sb[:, :c], sb[:, c:], tc)
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
    reselect_a: Reselect | None = None,
    reselect_b: Reselect | None = None,
) -> Comparison:
    """The paired comparison of two probability (or score) arrays over the same samples."""
    c = proba_a.shape[1]
    pa, pb = proba_a.argmax(1), proba_b.argmax(1)
    sa, sb = metrics.macro_f1(y, pa, c), metrics.macro_f1(y, pb, c)
    reps = paired_bootstrap(y, pa, pb, groups, c, n_boot, seed, reselect_a, reselect_b)
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
    sa, sb = oof_proba(store, a, folds), oof_proba(store, b, folds)
    groups = folds.frame["group"].to_numpy(dtype=object)
    res = compare_arrays(folds.labels, sa.proba, sb.proba, groups, a, b, n_boot, seed,
                         sa.reselect, sb.reselect)  # fmt: skip
    res.notes = tuple(n for n in (sa.note, sb.note) if n)
    res.sentence = " ".join([res.sentence, *res.notes])
    log.debug("%s", res.sentence)
    return res
