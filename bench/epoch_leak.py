"""How much choosing the epoch on a fold's own OOF rows flatters OOF scores (issue 10 item 2).

On noise labels (no signal: an honest OOF macro-F1 sits near chance), each fold model is trained
with the runner's own loop and its weights kept two ways:

- ``own-fold``: the epoch with the best macro-F1 on fold k's rows, the rows that become fold k's
  OOF rows (what the runner did before ``epoch_selection``; emulated here),
- ``fixed``: the last epoch (today's default).

    .venv/bin/python bench/epoch_leak.py               # 6 seeds, 24 people, 3 folds, 8 epochs
    .venv/bin/python bench/epoch_leak.py --seeds 2 --epochs 4

Prints the OOF macro-F1 per seed and the mean of each. Tiny timm ``test_resnet``, CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from imagedata import make_mask_data

import base_models.runner as runner
from stackkit.data.layouts import folds_for_data
from stackkit.metrics import macro_f1

CHOSEN_BY = runner._fit_fold


def own_fold_fit(job, net, norm, loader, split):
    """The epoch chosen on fold k's own rows: the leak that epoch_selection removed."""
    from torch.utils.tensorboard import SummaryWriter

    t, c = job.table, job.folds.n_classes
    own = runner.Scored(loader(split.val, False), t.labels[split.val], c)
    train_dl = loader(split.train, True, split.train_labels)
    cfg = job.cfg | {"epoch_selection": "inner"}  # fit then takes `own` as its selection set
    with SummaryWriter(log_dir=str(job.run_dir / "tb_own_fold")) as writer:
        chosen = runner.fit(net, train_dl, norm, cfg, writer, split.fold, own, None, c)
    return chosen, split.train, np.zeros(0, dtype=np.int64)


def oof_macro_f1(job) -> float:
    t = job.table
    oof = pd.concat(
        pd.read_parquet(job.run_dir / "shards" / f"fold_{k}.oof.parquet")
        for k in range(job.folds.n_folds)
    )
    pos = pd.Index(t.ids).get_indexer(oof["sample_id"].to_numpy(dtype=object))
    pred = oof[[c for c in oof.columns if c.startswith("logit_")]].to_numpy().argmax(1)
    return macro_f1(t.labels[pos], pred, job.folds.n_classes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--people", type=int, default=24)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="epoch_leak_"))
    data = make_mask_data(tmp / "data", n_people=args.people, n_test=2)
    scores = {"own-fold": [], "fixed": []}
    for seed in range(args.seeds):
        for how, fit_fold in (("own-fold", own_fold_fit), ("fixed", CHOSEN_BY)):
            art = tmp / f"{how}_{seed}"
            folds_for_data(data, artifacts=art, n_folds=args.folds, seed=seed)
            runner._fit_fold = fit_fold
            _, job = runner.resolve_job(
                "test_resnet", data, art, epochs=args.epochs, device="cpu", workers=0,
                threads=1, seed=seed, save_models=False,
            )  # fmt: skip
            t, rng = job.table, np.random.default_rng(100 + seed)
            train_rows = np.arange(len(t.ids)) < t.n_train
            t.labels[train_rows] = rng.integers(0, job.folds.n_classes, int(train_rows.sum()))
            with runner._images(job) as images:
                runner._train_folds(job, images, list(range(args.folds)), force=True)
            scores[how].append(oof_macro_f1(job))
            print(f"seed {seed} {how:8s} OOF macro-F1 {scores[how][-1]:.4f}", flush=True)
    runner._fit_fold = CHOSEN_BY
    for how, v in scores.items():
        print(f"{how:8s} mean OOF macro-F1 on noise labels: {np.mean(v):.4f} ({len(v)} seeds)")
    print(
        f"lift from choosing on the OOF rows: {np.mean(scores['own-fold']) - np.mean(scores['fixed']):+.4f}"
    )


if __name__ == "__main__":
    main()
