"""Benchmark the meta learners: CV macro-F1 and seconds per fit on the reference case.

For each learner: 5-fold CV over the stored folds of ``make_case`` (macro-F1 on the whole OOF
vector, ``stackkit.metrics.macro_f1``), seconds per fit, next to its naive scikit-learn-defaults
counterpart on the concatenated per-run probabilities (``--naive``; slow: RandomForest and
XGBoost defaults take minutes per fit, exact SVC longer, so SVC runs on ``--svc-rows`` rows).

    .venv/bin/python bench/learners.py                       # the seven learners
    .venv/bin/python bench/learners.py --naive               # and the naive counterparts
    .venv/bin/python bench/learners.py --only lr,knn --param lr.C=0.3
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from stackkit.contract import schema
from stackkit.data.synthetic import make_case
from stackkit.meta.defaults import SIMPLICITY
from stackkit.meta.registry import make_learner, parse_params
from stackkit.metrics import log_loss, macro_f1, softmax


def reference(n_groups: int, n_test: int, n_runs: int, seed: int):
    """X (n, R*C) run-major logits in folds order, labels, fold ids, C."""
    case = make_case(n_groups=n_groups, n_test=n_test, n_runs=n_runs, seed=seed)
    folds, c = case.folds, case.folds.n_classes
    blocks = []
    for name in sorted(case.oof):
        o = case.oof[name]
        x = np.empty((len(folds.frame), c))
        x[folds.index.get_indexer(o["sample_id"].to_numpy(dtype=object))] = o[
            schema.logit_columns(c)
        ].to_numpy()
        blocks.append(x)
    return np.hstack(blocks), folds.labels, folds.fold_ids, c


def naive(name: str):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC
    from xgboost import XGBClassifier

    return {
        "lr": LogisticRegression,
        "knn": KNeighborsClassifier,
        "svm": lambda: SVC(probability=True),
        "rf": RandomForestClassifier,
        "xgboost": lambda: XGBClassifier(n_jobs=1),
    }[name]()


def cross_validate(make, X, y, folds, c, rows=None):
    """OOF probabilities over the folds, and seconds per fit (fit and predict the held-out fold,
    as cross-validation does); ``rows`` subsamples the training rows."""
    oof, secs = np.zeros((len(X), c)), []
    rng = np.random.default_rng(0)
    for k in np.unique(folds):
        tr, te = np.flatnonzero(folds != k), folds == k
        if rows is not None and rows < len(tr):
            tr = np.sort(rng.choice(tr, rows, replace=False))
        est = make()
        t0 = time.perf_counter()
        est.fit(X[tr], y[tr])
        p = est.predict_proba(X[te])
        secs.append(time.perf_counter() - t0)
        oof[np.ix_(te, est.classes_)] = p  # naive models may lack a class
    return oof, float(np.mean(secs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=2700)
    ap.add_argument("--test", type=int, default=12600)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=",".join(SIMPLICITY))
    ap.add_argument("--param", action="append", default=[], help="LEARNER.NAME=VALUE")
    ap.add_argument("--naive", action="store_true", help="also the sklearn-defaults counterparts")
    ap.add_argument("--svc-rows", type=int, default=4000, help="training rows for naive SVC")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)

    X, y, folds, c = reference(args.groups, args.test, args.runs, args.seed)
    n, r = len(X), X.shape[1] // c
    P = softmax(X.reshape(n, r, c), axis=2).reshape(n, r * c)  # naive input: concatenated probs
    params = parse_params(args.param)
    print(f"reference case: {n} rows x {r} runs x {c} classes, {len(np.unique(folds))} folds")
    print(f"{'learner':9s} {'macro-F1':>9s} {'log loss':>9s} {'s/fit':>7s}   naive: "
          f"{'macro-F1':>9s} {'s/fit':>7s}")  # fmt: skip
    total = 0.0
    for name in args.only.split(","):
        try:
            make = lambda name=name: make_learner(name, c, params.get(name))  # noqa: E731
            make()
        except Exception as e:  # caruana before selection.py exists
            print(f"{name:9s} skipped: {e}")
            continue
        oof, sec = cross_validate(make, X, y, folds, c)
        total += 6 * sec
        line = f"{name:9s} {macro_f1(y, oof.argmax(1), c):9.4f} {log_loss(y, oof):9.4f} {sec:7.2f}"
        if args.naive and name not in ("vote", "caruana"):
            rows = args.svc_rows if name == "svm" else None
            noof, nsec = cross_validate(lambda name=name: naive(name), P, y, folds, c, rows)
            note = f" (trained on {rows} rows)" if rows else ""
            line += f"   naive: {macro_f1(y, noof.argmax(1), c):9.4f} {nsec:7.2f}{note}"
        print(line, flush=True)
    print(f"estimated `fit --meta auto` learner time (5 folds + refit, serial): {total:.1f} s")


if __name__ == "__main__":
    main()
