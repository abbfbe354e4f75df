"""Per-factor marginals as meta features (``factors``): each learner's 5-fold meta-level CV
macro-F1 with them off and on, on the reference case or on stored runs (a mask-layout
artifacts directory, e.g. the demo's).

Also says how the runs' errors fall over the factors (mask, gender, age): the share of wrong
predictions that are wrong in one factor only, and which factor, against the share a uniformly
wrong prediction would have (mask 2/17, gender 1/17, age 2/17).

    .venv/bin/python bench/factors.py                          # reference case, 10 runs
    .venv/bin/python bench/factors.py --artifacts artifacts    # stored runs (mask layout)
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learners import cross_validate, reference

from stackkit.meta.registry import make_learner
from stackkit.metrics import macro_f1

LEARNERS = ("lr", "knn", "svm", "rf", "xgboost")


def stored(path: str):
    from stackkit.contract.store import Store
    from stackkit.cv import stacking

    store = Store(path)
    folds = store.read_folds()
    runset = store.load_runs(None, folds)
    return stacking.features(runset), folds.labels, folds.fold_ids, folds.n_classes


def error_structure(X, y, c) -> str:
    """Wrong predictions of every run, by which factors they get wrong."""
    pred = X.reshape(len(X), -1, c).argmax(axis=2)
    t = np.broadcast_to(y[:, None], pred.shape)
    wrong = pred != t
    m, g, a = (pred // 6 != t // 6), ((pred // 3) % 2 != (t // 3) % 2), (pred % 3 != t % 3)
    n = wrong.sum()
    one = {"mask": (m & ~g & ~a).sum() / n, "gender": (g & ~m & ~a).sum() / n,
           "age": (a & ~m & ~g).sum() / n}  # fmt: skip
    return (f"{n} wrong run predictions ({n / pred.size:.1%}); wrong in one factor only: "
            + ", ".join(f"{k} {v:.1%}" for k, v in one.items())
            + " (uniform errors: mask 11.8%, gender 5.9%, age 11.8%)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", help="stored runs instead of the reference case")
    ap.add_argument("--groups", type=int, default=2700)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--only", default=",".join(LEARNERS))
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.artifacts:
        X, y, folds, c = stored(args.artifacts)
    else:
        X, y, folds, c = reference(args.groups, 12600, args.runs, 0)
    print(f"{len(X)} rows x {X.shape[1] // c} runs x {c} classes, {len(np.unique(folds))} folds")
    print(error_structure(X, y, c))
    print(f"{'learner':9s} {'none':>8s} {'mask':>8s} {'delta':>8s}")
    for name in args.only.split(","):
        scores = []
        for factors in ("none", "mask"):
            make = lambda f=factors, n=name: make_learner(n, c, {"factors": f})  # noqa: E731
            oof, _ = cross_validate(make, X, y, folds, c)
            scores.append(macro_f1(y, oof.argmax(1), c))
        print(f"{name:9s} {scores[0]:8.4f} {scores[1]:8.4f} {scores[1] - scores[0]:+8.4f}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
