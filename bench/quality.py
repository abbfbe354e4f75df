"""Quality on held-out labels: `fit --meta auto --tune-bias` against what a user would do instead.

Each case trains several base models per fold on a labelled image set that ships inside a
package (scikit-learn's 8x8 digits) or on the synthetic reference case, keeps a test split's
labels aside, and scores on that test split:

- best single run (chosen by OOF macro-F1), soft vote of all runs, scikit-learn LR stacking
  (LogisticRegression on the concatenated OOF probabilities), greedy ensemble selection, and
  stackkit's `auto --tune-bias`.

    python bench/quality.py            # every case
    python bench/quality.py digits     # one case

Target: auto at least the best of the alternatives on every case, never below the best single run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from stackkit import metrics, schema
from stackkit.fit import fit_ensemble
from stackkit.folds import make_folds
from stackkit.store import Store
from stackkit.synthetic import Case, make_case
from stackkit.tables import format_table


def _logit_frames(ids, fold_of, test_ids, oof_p, test_p):
    c = oof_p.shape[1]
    lo = np.log(np.clip(oof_p, 1e-7, None)).astype(np.float32)
    oof = pd.concat([pd.DataFrame({"sample_id": ids, "fold": fold_of.astype("int8")}),
                     pd.DataFrame(lo, columns=schema.logit_columns(c))], axis=1)  # fmt: skip
    parts = []
    for k, p in enumerate(test_p):
        lt = np.log(np.clip(p, 1e-7, None)).astype(np.float32)
        parts.append(pd.concat([pd.DataFrame({"sample_id": test_ids, "fold": np.int8(k)}),
                                pd.DataFrame(lt, columns=schema.logit_columns(c))], axis=1))  # fmt: skip
    return oof, pd.concat(parts, ignore_index=True)


def case_from_models(X, y, X_test, y_test, models: dict, n_folds=5, seed=0, groups=None) -> Case:
    """Train every model once per fold: OOF predictions on its fold, test predictions per fold."""
    from sklearn.base import clone

    c = int(y.max()) + 1
    ids = np.array([f"s{i:05d}" for i in range(len(y))], dtype=object)
    test_ids = np.array([f"t{i:05d}" for i in range(len(y_test))], dtype=object)
    folds = make_folds(ids, groups, y, [str(i) for i in range(c)], n_folds=n_folds, seed=seed)
    f = folds.fold_ids
    oofs, tests = {}, {}
    for name, model in models.items():
        oof_p = np.zeros((len(y), c))
        test_p = []
        for k in range(n_folds):
            m = clone(model).fit(X[f != k], y[f != k])
            oof_p[f == k] = m.predict_proba(X[f == k])
            test_p.append(m.predict_proba(X_test))
        oofs[name], tests[name] = _logit_frames(ids, f, test_ids, oof_p, test_p)
    return Case(folds, oofs, tests, pd.Series(y_test, index=test_ids, name="label"))


def digits_case(dominant: bool = False, seed: int = 0) -> Case:
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    # noisy pixels make every model err, so there is something to ensemble
    X = X + rng.normal(0, 4.0, X.shape)
    perm = rng.permutation(len(y))
    X, y = X[perm], y[perm]
    cut = int(0.6 * len(y))
    models = {
        "nb": GaussianNB(),
        "knn": KNeighborsClassifier(15),
        "rf": RandomForestClassifier(100, max_depth=8, random_state=0, n_jobs=2),
        "lr": make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=500)),
    }
    if dominant:
        models["svc"] = make_pipeline(StandardScaler(), SVC(C=10, probability=True, random_state=0))
    return case_from_models(X[:cut], y[:cut], X[cut:], y[cut:], models, seed=seed)


CASES = {
    "digits": lambda: digits_case(False),
    "digits-dominant": lambda: digits_case(True),
    "synthetic": lambda: make_case(n_groups=800, n_test=4000, n_runs=6, seed=3),
}


def alternatives(store: Store, case: Case) -> dict:
    """Test macro-F1 of what a user would do instead, on the same runs."""
    from sklearn.linear_model import LogisticRegression

    folds = store.read_folds()
    rs = store.load_runs(None, folds)
    c = folds.n_classes
    truth = case.test_labels.loc[rs.test_ids].to_numpy()
    test_p = metrics.softmax(rs.test, axis=-1).mean(axis=1)  # (R, m, C)
    oof_p = metrics.softmax(rs.oof, axis=-1)
    y = folds.labels
    oof_f1 = [metrics.macro_f1(y, oof_p[i].argmax(1), c) for i in range(rs.n_runs)]
    best = int(np.argmax(oof_f1))
    out = {
        f"best single run ({rs.names[best]})": metrics.macro_f1(truth, test_p[best].argmax(1), c),
        "soft vote": metrics.macro_f1(truth, test_p.mean(0).argmax(1), c),
    }
    flat = oof_p.transpose(1, 0, 2).reshape(len(y), -1)
    lr = LogisticRegression(max_iter=1000).fit(flat, y)
    out["sklearn LR stacking"] = metrics.macro_f1(
        truth, lr.predict(test_p.transpose(1, 0, 2).reshape(len(truth), -1)), c
    )
    for name, meta in (("greedy selection", "caruana"),):
        res = fit_ensemble(store, meta=meta, name=meta)
        out[name] = metrics.macro_f1(truth, res.test_proba.argmax(1), c)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", default=list(CASES))
    args = ap.parse_args()
    os.environ.setdefault("STACKKIT_CACHE", tempfile.mkdtemp(prefix="stackkit-quality-cache-"))
    rows = []
    for name in args.cases:
        t0 = time.perf_counter()
        case = CASES[name]()
        store = Store(Path(tempfile.mkdtemp(prefix=f"stackkit-quality-{name}-")))
        case.write(store)
        alt = alternatives(store, case)
        res = fit_ensemble(store, meta="auto", tune_bias=True, name="auto")
        truth = case.test_labels.loc[res.runset.test_ids].to_numpy()
        auto = metrics.macro_f1(truth, res.test_proba.argmax(1), store.read_folds().n_classes)
        best_alt = max(alt.values())
        best_single = next(v for k, v in alt.items() if k.startswith("best single"))
        for k, v in alt.items():
            rows.append({"case": name, "method": k, "test_f1": v})
        rows.append({"case": name, "method": f"stackkit auto --tune-bias ({res.selected.meta})",
                     "test_f1": auto,
                     "verdict": "ok" if auto >= best_alt - 1e-9 else
                     ("below best alternative" if auto >= best_single else "BELOW BEST SINGLE RUN")})  # fmt: skip
        print(f"{name}: done in {time.perf_counter() - t0:.1f}s", flush=True)
    print()
    print(format_table(rows, [("case", "case", ""), ("method", "method", ""),
                              ("test_f1", "held-out macro-F1", ".4f"), ("verdict", "", "")]))  # fmt: skip


if __name__ == "__main__":
    main()
