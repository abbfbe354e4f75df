"""Benchmark of the meta stage: `stackkit fit --meta auto` against the naive scikit-learn loop.

Reference case (stackkit.data.synthetic.make_case): 10 runs x 18,900 train rows (2,700 people x 7)
x 18 classes, 12,600 test rows; runs of varied quality with correlated errors and rare classes.

    python bench/meta.py                      # auto, every candidate, the naive loop
    python bench/meta.py --nested             # also time --nested
    python bench/meta.py --naive lr,knn,xgboost   # only some naive counterparts (SVC takes >8 min)

Targets on the 2-core machine: auto (all seven, honest estimate included) at most 5x one naive
cross_val_predict(LogisticRegression()) timed in the same run (`--naive lr` suffices; the ratio is
printed with the load average), every candidate's CV macro-F1 within 0.002 of its value before the
speed work (printed as the quality check), --nested < 5 min, and no candidate's macro-F1 below its
naive counterpart's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from stackkit import metrics
from stackkit.contract.store import Store
from stackkit.data.synthetic import make_case
from stackkit.fit import fit_ensemble
from stackkit.tables import format_table

NAIVE = ("lr", "svm", "knn", "rf", "xgboost")

# Issue 14's bound: auto, cold, at most this many times one naive cross_val_predict(
# LogisticRegression()) over the same columns and folds, timed in the same process minutes apart
RATIO_BOUND = 5.0
# Each candidate's CV macro-F1 on the reference case (seed 0) before the speed work (commit
# ed850df); a speed change may cost at most QUALITY_SLACK of any of them
# (blend is left out: since 2cf8199 it mixes the learners only, a change of what it is, not speed)
BEFORE = {"vote": 0.6632, "caruana": 0.7771, "lr": 0.8672, "knn": 0.8201, "svm": 0.8762,
          "rf": 0.8286, "xgboost": 0.8631}  # fmt: skip
QUALITY_SLACK = 0.002


def naive_estimator(name: str):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    if name == "xgboost":
        from xgboost import XGBClassifier

        return XGBClassifier()
    return {
        "lr": LogisticRegression,
        "svm": lambda: SVC(probability=True),  # what users write (deprecated in sklearn 1.9)
        "knn": KNeighborsClassifier,
        "rf": RandomForestClassifier,
    }[name]()


def run_naive(name: str, runset) -> dict:
    """What a user writes by hand: cross_val_predict on the concatenated probabilities."""
    from sklearn.model_selection import PredefinedSplit, cross_val_predict

    r, n, c = runset.oof.shape
    X = metrics.softmax(runset.oof, axis=-1).transpose(1, 0, 2).reshape(n, r * c)
    y, f = runset.folds.labels, runset.folds.fold_ids
    t0 = time.perf_counter()
    proba = cross_val_predict(
        naive_estimator(name), X, y, cv=PredefinedSplit(f), method="predict_proba"
    )
    return {
        "seconds": time.perf_counter() - t0,
        "macro_f1": metrics.macro_f1(y, proba.argmax(1), c),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--groups", type=int, default=2700)
    ap.add_argument("--test", type=int, default=12600)
    ap.add_argument("--nested", action="store_true")
    ap.add_argument(
        "--naive", default=",".join(NAIVE), help="naive counterparts to time, or 'none'"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    os.environ.setdefault("STACKKIT_CACHE", tempfile.mkdtemp(prefix="stackkit-bench-cache-"))
    t0 = time.perf_counter()
    case = make_case(n_groups=args.groups, n_test=args.test, n_runs=args.runs, seed=args.seed)
    root = Path(tempfile.mkdtemp(prefix="stackkit-bench-"))
    store = Store(root)
    case.write(store)
    print(
        f"reference case: {args.runs} runs x {len(case.folds.frame)} rows x 18 classes, "
        f"{args.test} test rows ({time.perf_counter() - t0:.1f}s to build) in {root}"
    )

    t0 = time.perf_counter()
    res = fit_ensemble(store, meta="auto", use_cache=False)
    auto_s = time.perf_counter() - t0
    y = case.folds.labels
    best_run = max(
        metrics.macro_f1(y, res.runset.oof[i].argmax(1), 18) for i in range(res.runset.n_runs)
    )
    print(
        f"\nstackkit fit --meta auto: {auto_s:.1f}s wall (target < 60 s); picked "
        f"{res.selected.meta} (CV {res.selected.scores['macro_f1']:.4f}); honest estimate "
        f"{res.estimate.macro_f1:.4f}; best single run OOF macro-F1 {best_run:.4f}"
    )
    truth = case.test_labels.loc[res.runset.test_ids].to_numpy()
    print(
        f"held-out test macro-F1 of the pick: {metrics.macro_f1(truth, res.test_proba.argmax(1), 18):.4f}"
    )

    naive_names = [] if args.naive == "none" else [n for n in args.naive.split(",") if n]
    naive = {}
    for name in naive_names:
        naive[name] = run_naive(name, res.runset)
        print(
            f"  naive {name}: {naive[name]['macro_f1']:.4f} in {naive[name]['seconds']:.1f}s",
            flush=True,
        )
    rows = []
    for cand in res.candidates:
        nv = naive.get(cand.meta, {})
        rows.append(
            {
                "meta": cand.meta,
                "f1": cand.scores["macro_f1"],
                "std": cand.scores["macro_f1_std"],
                "s": cand.seconds,
                "naive_f1": nv.get("macro_f1"),
                "naive_s": nv.get("seconds"),
                "speedup": nv["seconds"] / cand.seconds if nv else None,
            }
        )
    print()
    print(
        format_table(
            rows,
            [
                ("meta", "meta", ""),
                ("f1", "CV macro-F1", ".4f"),
                ("std", "± folds", ".4f"),
                ("s", "fit seconds (sum of 5)", ".1f"),
                ("naive_f1", "naive macro-F1", ".4f"),
                ("naive_s", "naive seconds", ".1f"),
                ("speedup", "speed-up", ".1f"),
            ],
        )
    )
    if naive:
        tot_naive = sum(v["seconds"] for v in naive.values())
        tot_ours = sum(c.seconds for c in res.candidates if c.meta in naive)
        print(
            f"\nnaive loop total {tot_naive:.1f}s (one process) vs stackkit's same candidates' "
            f"fits {tot_ours:.1f}s ({tot_naive / tot_ours:.1f}x); the naive loop against the whole "
            f"auto fit (all seven, 2 processes, refit, writing): {tot_naive / auto_s:.1f}x"
        )

    if "lr" in naive:
        ratio = auto_s / naive["lr"]["seconds"]
        print(
            f"\nratio: auto {auto_s:.1f}s / naive lr {naive['lr']['seconds']:.1f}s = {ratio:.2f} "
            f"(bound {RATIO_BOUND}: {'within' if ratio <= RATIO_BOUND else 'OVER'}); "
            f"load average {os.getloadavg()[0]:.1f}"
        )
    if args.seed == 0 and (args.runs, args.groups, args.test) == (10, 2700, 12600):
        worst = []
        for cand in res.candidates:
            if cand.meta in BEFORE:
                d = cand.scores["macro_f1"] - BEFORE[cand.meta]
                worst.append(d)
                print(f"  quality {cand.meta:<10} CV macro-F1 {cand.scores['macro_f1']:.4f} "
                      f"before {BEFORE[cand.meta]:.4f} ({d:+.4f})")  # fmt: skip
        if worst:
            ok = min(worst) >= -QUALITY_SLACK
            print(f"quality check: worst change {min(worst):+.4f} "
                  f"(bound -{QUALITY_SLACK}: {'within' if ok else 'OVER'})")  # fmt: skip

    if args.nested:
        t0 = time.perf_counter()
        nres = fit_ensemble(store, meta="auto", nested=True, use_cache=False, name="nested")
        print(
            f"\nstackkit fit --meta auto --nested: {time.perf_counter() - t0:.1f}s wall "
            f"(target < 300 s); nested macro-F1 {nres.nested_macro_f1:.4f} beside the pick's "
            f"CV {nres.selected.scores['macro_f1']:.4f}; picks {nres.nested_picks}"
        )


if __name__ == "__main__":
    import warnings

    np.seterr(all="ignore")
    warnings.filterwarnings("ignore", category=FutureWarning)  # SVC(probability=True)
    main()
