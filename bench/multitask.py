"""One backbone with an 18-way head against the same backbone with multi-task heads (issue 15
item 4): OOF and held-out test macro-F1 and the per-class F1 of the six 60+ classes, from two
finished runs on the demo data (same folds, same epochs, same config but ``head``).

    python bench/multitask.py --artifacts ART --data DEMO_DATA --runs convnext_linear,convnext_multitask

The runs are trained with ``python -m base_models`` (see docs/BENCHMARKS.md for the commands).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from stackkit import metrics
from stackkit.contract.store import Store
from stackkit.data.layouts import MASK_CLASSES


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--artifacts", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--runs", required=True)
    args = ap.parse_args(argv)
    store = Store(args.artifacts)
    folds = store.read_folds()
    names = args.runs.split(",")
    y = folds.labels
    rs = store.load_runs(names, folds)
    answers = pd.read_csv(args.data / "eval" / "answers.csv", dtype={"ImageID": str})
    answers = answers.set_index("ImageID")["ans"].loc[list(rs.test_ids)].to_numpy()
    old = [i for i, c in enumerate(MASK_CLASSES) if c.endswith("60+")]
    labels = np.arange(len(MASK_CLASSES))
    print("| run | OOF macro-F1 | test macro-F1 | OOF F1 of the 60+ classes (" +
          ", ".join(MASK_CLASSES[i] for i in old) + ") | mean |")  # fmt: skip
    print("|---|---|---|---|---|")
    for i, name in enumerate(rs.names):
        oof_pred = rs.oof[i].argmax(1)
        oof_f1 = metrics.macro_f1(y, oof_pred, len(labels))
        test_pred = metrics.softmax(rs.test[i], axis=-1).mean(axis=0).argmax(1)
        test_f1 = f1_score(answers, test_pred, labels=labels, average="macro", zero_division=0)
        per = f1_score(y, oof_pred, labels=labels, average=None, zero_division=0)[old]
        print(f"| {name} | {oof_f1:.4f} | {test_f1:.4f} | "
              f"{', '.join(f'{v:.3f}' for v in per)} | {per.mean():.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
