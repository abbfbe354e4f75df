"""AutoGluon-Tabular as an offline baseline meta-learner over out-of-fold probabilities.

This script does not import stackkit and is not run with the project's environment: it needs
AutoGluon, which lives in its own virtual environment (/work/agvenv), and the bench scripts
call it as a subprocess:

    /work/agvenv/bin/python bench/autogluon_baseline.py IN.npz OUT.npy \
        [--time-limit SECONDS] [--presets medium_quality] [--n-classes C] [--verbosity 0]

IN.npz holds
    X        (n, d) float   training features (base models' out-of-fold class probabilities)
    y        (n,)   int     labels in [0, C)
    groups   (n,)   int     group ids (e.g. people); optional
    X_test   (m, d) float   features to predict
    n_classes ()    int     optional; overrides C = max(y) + 1 (see --n-classes)

OUT.npy receives a float64 (m, C) array whose column j is the probability of class j. A class
that AutoGluon never saw in training (absent from y, or dropped by AutoGluon as too rare) gets
a column of zeros.

The fit is a multiclass TabularPredictor scored by macro-F1, limited to 2 CPUs, in a temporary
directory that is removed afterwards. Groups are declared through AutoGluon's
`validation_structure={"group_on": ...}`, so that no group is split between a model's training
rows and its validation rows: the holdout used without bagging (e.g. medium_quality) is
group-disjoint, and so are the bagging folds with the stacking presets (good/high/best_quality).
The group column is only used for splitting; it is not a feature. (The older `groups=`
argument of TabularPredictor is not used: it applies only when bagging and then makes one
leave-one-group-out fold per group, i.e. one model per person and model type.)

OpenMP's idle threads are told to sleep rather than spin (OMP_WAIT_POLICY=PASSIVE unless the
environment sets it), which keeps the 2-thread fits fast on a machine shared with other work.

Without torch in the environment the neural-net models are left out, so the models tried are
AutoGluon's gradient-boosted trees (LightGBM, CatBoost, XGBoost), random forests, extra trees
and their weighted ensemble.

The last line printed on stdout is a summary: models trained, the best model, fit seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning. When the machine is shared (e.g. with other
# benchmarks), spinning threads of LightGBM/XGBoost made a 2-thread fit up to ~15x slower than
# a 1-thread one, which under a time limit means far fewer models. Set before any OpenMP
# runtime is loaded; an explicit setting in the caller's environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd

LABEL = "__label__"
GROUP = "__group__"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", type=Path, help="IN.npz with X, y, X_test and optionally groups")
    parser.add_argument("output", type=Path, help="OUT.npy: float64 (m, C) class probabilities")
    parser.add_argument(
        "--time-limit", type=float, default=300.0, help="fit budget in seconds (default 300)"
    )
    parser.add_argument(
        "--presets", default="medium_quality", help="AutoGluon presets (default medium_quality)"
    )
    parser.add_argument(
        "--n-classes", type=int, default=None, help="number of classes C (default max(y) + 1)"
    )
    parser.add_argument(
        "--num-cpus", type=int, default=2, help="CPU cores AutoGluon may use (default 2)"
    )
    parser.add_argument(
        "--verbosity", type=int, default=0, help="AutoGluon log level 0-4 (default 0)"
    )
    return parser.parse_args(argv)


def load_inputs(path: Path, n_classes: int | None):
    """Read IN.npz; return (X, y, groups or None, X_test, n_classes)."""
    with np.load(path) as data:
        X = np.asarray(data["X"], dtype=np.float32)
        y = np.asarray(data["y"], dtype=np.int64)
        X_test = np.asarray(data["X_test"], dtype=np.float32)
        groups = np.asarray(data["groups"], dtype=np.int64) if "groups" in data else None
        if n_classes is None and "n_classes" in data:
            n_classes = int(data["n_classes"])
    if X.ndim != 2 or X_test.ndim != 2 or X.shape[1] != X_test.shape[1]:
        raise ValueError(f"X {X.shape} and X_test {X_test.shape} must be 2-D with the same width")
    if y.shape != (len(X),) or (groups is not None and groups.shape != (len(X),)):
        raise ValueError("y and groups must be 1-D with one entry per row of X")
    if len(y) == 0 or y.min() < 0:
        raise ValueError("y must be non-empty with labels in [0, C)")
    if n_classes is None:
        n_classes = int(y.max()) + 1
    if y.max() >= n_classes:
        raise ValueError(f"label {int(y.max())} out of range for {n_classes} classes")
    return X, y, groups, X_test, n_classes


def to_frame(X: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])])


def skip_torch_models() -> list[str]:
    """Model types to exclude: the neural nets when torch is not installed (the usual setup).

    Without torch AutoGluon would try them anyway, fail on import and skip them, and log an
    error-level "Failed to import torch" line for every model it checks GPUs for; drop both.
    """
    if importlib.util.find_spec("torch") is not None:
        return []

    logging.getLogger("autogluon.common.utils.resource_utils").addFilter(
        lambda record: "Failed to import torch" not in record.getMessage()
    )
    return ["NN_TORCH", "FASTAI"]


def fit_and_predict(X, y, groups, X_test, n_classes, args):
    """Fit a TabularPredictor and return ((m, C) probabilities, summary dict)."""
    from autogluon.tabular import TabularPredictor

    present = np.unique(y)
    if len(present) == 1:  # nothing to learn; AutoGluon refuses a single-class label
        proba = np.zeros((len(X_test), n_classes))
        proba[:, present[0]] = 1.0
        return proba, {"models": 0, "best": "constant", "fit_s": 0.0}

    train = to_frame(X)
    train[LABEL] = y
    predictor_kwargs = {}
    fit_kwargs = {}
    if groups is not None and len(np.unique(groups)) >= 2:
        train[GROUP] = groups
        predictor_kwargs["learner_kwargs"] = {"ignored_columns": [GROUP]}
        fit_kwargs["validation_structure"] = {"group_on": GROUP}

    with tempfile.TemporaryDirectory(prefix="autogluon_baseline_") as workdir:
        predictor = TabularPredictor(
            label=LABEL,
            problem_type="multiclass" if len(present) > 2 else "binary",
            eval_metric="f1_macro",
            path=str(Path(workdir) / "predictor"),
            verbosity=args.verbosity,
            log_to_file=False,
            **predictor_kwargs,
        )
        start = time.perf_counter()
        predictor.fit(
            train,
            time_limit=args.time_limit,
            presets=args.presets,
            num_cpus=args.num_cpus,
            num_gpus=0,
            excluded_model_types=skip_torch_models(),
            **fit_kwargs,
        )
        fit_s = time.perf_counter() - start
        proba_df = predictor.predict_proba(to_frame(X_test), as_multiclass=True)
        summary = {
            "models": len(predictor.model_names()),
            "best": predictor.model_best,
            "fit_s": fit_s,
        }

    proba = np.zeros((len(X_test), n_classes))
    for label in proba_df.columns:  # the classes AutoGluon kept, in its own order
        proba[:, int(label)] = proba_df[label].to_numpy(dtype=np.float64)
    return proba, summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    X, y, groups, X_test, n_classes = load_inputs(args.inputs, args.n_classes)
    proba, summary = fit_and_predict(X, y, groups, X_test, n_classes, args)
    np.save(args.output, proba)
    print(
        f"autogluon: models={summary['models']} best={summary['best']} fit_s={summary['fit_s']:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
