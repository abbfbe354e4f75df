"""Quality on held-out labels: `fit --meta auto --tune-bias` against what a user would do instead.

Each case trains several base models per fold on a labelled image set that ships inside a
package (scikit-learn's 8x8 digits) or on the synthetic reference case, keeps a test split's
labels aside, and scores on that test split:

- best single run (chosen by OOF macro-F1), soft vote of all runs, scikit-learn LR stacking
  (LogisticRegression on the concatenated OOF probabilities), greedy ensemble selection,
  AutoGluon-Tabular on the same OOF probabilities (with ``--autogluon PYTHON``: it needs its own
  environment, see bench/autogluon_baseline.py), and stackkit's `auto --tune-bias`.

Each case is drawn ``--seeds`` times (another train/test split and noise for digits, another
draw for synthetic): one test split of a few hundred images moves macro-F1 by a few thousandths
per image, so methods are compared on the mean over draws, with how often auto is at least each.

    python bench/quality.py                          # every case, 5 draws each
    python bench/quality.py digits --seeds 3         # one case
    python bench/quality.py --autogluon /work/agvenv/bin/python --ag-time 60

Target: auto at least the best of the alternatives on every case, never below the best single run.
Beside auto's held-out score each case shows its honest estimate (``scores.estimate_macro_f1``,
made from the training folds alone) and its pick's own CV score: how far each promise is from
what happens on the held-out split.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from stackkit import metrics
from stackkit.contract import schema
from stackkit.contract.store import Store
from stackkit.data.folds import make_folds
from stackkit.data.synthetic import Case, make_case
from stackkit.fit import fit_ensemble
from stackkit.meta.registry import parse_params
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
    "digits": lambda seed: digits_case(False, seed),
    "digits-dominant": lambda seed: digits_case(True, seed),
    "synthetic": lambda seed: make_case(n_groups=800, n_test=4000, n_runs=6, seed=3 + seed),
}


def autogluon_proba(python: str, X, y, groups, X_test, time_limit: int) -> np.ndarray:
    """AutoGluon-Tabular on the same features, in its own environment (bench/autogluon_baseline.py
    run by ``python``: AutoGluon pins versions that stackkit's environment does not share)."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="stackkit-ag-") as tmp:
        inp, out = Path(tmp) / "in.npz", Path(tmp) / "out.npy"
        np.savez(inp, X=X.astype(np.float32), y=y.astype(np.int64),
                 groups=groups.astype(np.int64), X_test=X_test.astype(np.float32))  # fmt: skip
        script = Path(__file__).with_name("autogluon_baseline.py")
        cmd = [python, str(script), str(inp), str(out), "--time-limit", str(time_limit)]
        subprocess.run(cmd, check=True)
        return np.load(out)


def alternatives(store: Store, case: Case, autogluon: str | None, ag_time: int) -> dict:
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
        "best single run": metrics.macro_f1(truth, test_p[best].argmax(1), c),
        "soft vote": metrics.macro_f1(truth, test_p.mean(0).argmax(1), c),
    }
    flat = oof_p.transpose(1, 0, 2).reshape(len(y), -1)
    flat_test = test_p.transpose(1, 0, 2).reshape(len(truth), -1)
    lr = LogisticRegression(max_iter=1000).fit(flat, y)
    out["sklearn LR stacking"] = metrics.macro_f1(truth, lr.predict(flat_test), c)
    res = fit_ensemble(store, meta="caruana", name="caruana")
    out["greedy selection"] = metrics.macro_f1(truth, res.test_proba.argmax(1), c)
    if autogluon:
        groups = pd.factorize(folds.frame["group"])[0]
        proba = autogluon_proba(autogluon, flat, y, groups, flat_test, ag_time)
        out["AutoGluon-Tabular"] = metrics.macro_f1(truth, proba.argmax(1), c)
    return out


def evaluate(
    name: str, seed: int, autogluon: str | None, ag_time: int, params: dict | None = None
) -> dict:
    """Held-out macro-F1 of every method on one draw of one case (``params``: auto's
    ``--param`` values, to compare a learner's settings on held-out labels)."""
    case = CASES[name](seed)
    store = Store(Path(tempfile.mkdtemp(prefix=f"stackkit-quality-{name}-{seed}-")))
    case.write(store)
    out = alternatives(store, case, autogluon, ag_time)
    res = fit_ensemble(store, meta="auto", tune_bias=True, name="auto", params=params)
    truth = case.test_labels.loc[res.runset.test_ids].to_numpy()
    out[AUTO] = metrics.macro_f1(truth, res.test_proba.argmax(1), store.read_folds().n_classes)
    out["_pick"] = res.selected.meta + ("+bias" if res.bias_offsets is not None else "")
    out["_estimate"] = res.estimate.macro_f1
    out["_pick_cv"] = res.final_scores["macro_f1"]
    for cand in res.candidates:  # each learner's own CV score, to compare settings by
        out[f"_cv:{cand.meta}"] = cand.scores["macro_f1"]
    return out


AUTO = "stackkit auto --tune-bias"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", default=list(CASES))
    ap.add_argument("--seeds", type=int, default=5, help="draws per case (data split, noise)")
    ap.add_argument("--autogluon", metavar="PYTHON", default=os.environ.get("AUTOGLUON_PYTHON"),
                    help="a Python with autogluon.tabular installed (env AUTOGLUON_PYTHON)")  # fmt: skip
    ap.add_argument("--ag-time", type=int, default=120, help="AutoGluon time limit per fit, s")
    ap.add_argument("--param", action="append", default=[], metavar="LEARNER.KEY=VALUE",
                    help="a meta learner setting for auto's fit, as `stackkit fit --param`")  # fmt: skip
    args = ap.parse_args()
    params = parse_params(args.param)
    os.environ.setdefault("STACKKIT_CACHE", tempfile.mkdtemp(prefix="stackkit-quality-cache-"))
    rows, picks, promises, cvs = [], {}, [], {}
    for name in args.cases:
        draws = []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            draws.append(evaluate(name, seed, args.autogluon, args.ag_time, params))
            print(
                f"{name} seed {seed}: {time.perf_counter() - t0:.1f}s, "
                + ", ".join(f"{k} {v:.4f}" for k, v in draws[-1].items() if not k.startswith("_")),
                flush=True,
            )
        picks[name] = [d["_pick"] for d in draws]
        learners = [k for k in draws[0] if k.startswith("_cv:") and not k.startswith("_cv:run:")]
        cvs[name] = {k[4:]: float(np.mean([d[k] for d in draws])) for k in learners}
        promises.append({"case": name, "held": float(np.mean([d[AUTO] for d in draws])),
                         "estimate": float(np.mean([d["_estimate"] for d in draws])),
                         "pick_cv": float(np.mean([d["_pick_cv"] for d in draws]))})  # fmt: skip
        methods = [k for k in draws[0] if not k.startswith("_")]
        mean = {m: float(np.mean([d[m] for d in draws])) for m in methods}
        best_alt = max(v for m, v in mean.items() if m != AUTO)
        for m in methods:
            auto_wins = sum(d[AUTO] >= d[m] - 1e-12 for d in draws)
            verdict = ""
            if m == AUTO:
                verdict = "ok: at least every alternative" if mean[m] >= best_alt - 1e-12 else (
                    "below best alternative" if mean[m] >= mean["best single run"]
                    else "BELOW BEST SINGLE RUN")  # fmt: skip
            rows.append({"case": name, "method": m, "mean": mean[m],
                         "std": float(np.std([d[m] for d in draws])),
                         "wins": "" if m == AUTO else f"{auto_wins}/{len(draws)}",
                         "verdict": verdict})  # fmt: skip
    print()
    print(format_table(rows, [("case", "case", ""), ("method", "method", ""),
                              ("mean", f"held-out macro-F1, mean of {args.seeds}", ".4f"),
                              ("std", "± draws", ".4f"), ("wins", "auto >= it", ""),
                              ("verdict", "", "")]))  # fmt: skip
    for name, p in picks.items():
        print(f"auto's picks on {name}: {', '.join(p)}")
        print("  candidates' CV macro-F1, mean of the draws: "
              + ", ".join(f"{m} {v:.4f}" for m, v in cvs[name].items()))  # fmt: skip
    print()
    for r in promises:
        r["gap"] = r["estimate"] - r["held"]
    print(format_table(promises, [("case", "case", ""),
                                  ("held", "auto held-out macro-F1", ".4f"),
                                  ("estimate", "honest estimate", ".4f"),
                                  ("gap", "estimate - held-out", "+.4f"),
                                  ("pick_cv", "pick's own CV", ".4f")]))  # fmt: skip


if __name__ == "__main__":
    main()
