"""Honest numbers on pure noise: `fit --meta auto` on runs whose logits know nothing of the labels.

For each draw (6 runs x 450 people x 7 images, 18 classes, logits pure noise), fit ``auto`` and
report how far above chance the pick's own CV score, and the honest estimate, sit (chance: the
mean macro-F1 of the same predictions against permuted labels), and whether `leaderboard
--compare` calls the ensemble better or worse than run00 beyond resampling noise: with the pick's
own CV predictions (what it did before) and as it does now (the estimate's predictions, the
choice redone in every resample).

    python bench/honest.py              # 9 draws
    python bench/honest.py --seeds 20
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from stackkit import compare as cmp
from stackkit.contract.store import Store
from stackkit.data.synthetic import make_case
from stackkit.fit import fit_ensemble
from stackkit.meta.bias import score_labels


def noise_case(seed: int, n_groups: int, n_runs: int):
    case = make_case(n_groups=n_groups, n_test=70, n_runs=n_runs, seed=seed)
    rng = np.random.default_rng(1000 + seed)

    def scramble(df):
        df = df.copy()
        cols = [c for c in df.columns if c.startswith("logit_")]
        df[cols] = rng.normal(0, 1.0, (len(df), len(cols))).astype(np.float32)
        return df

    return dataclasses.replace(case, oof={k: scramble(v) for k, v in case.oof.items()},
                               test={k: scramble(v) for k, v in case.test.items()})  # fmt: skip


def chance(y, pred, c, rng, n_perm=50) -> float:
    return float(np.mean([score_labels(rng.permutation(y), pred, c) for _ in range(n_perm)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=9)
    ap.add_argument("--groups", type=int, default=450)
    ap.add_argument("--runs", type=int, default=6)
    args = ap.parse_args()
    os.environ.setdefault("STACKKIT_CACHE", tempfile.mkdtemp(prefix="stackkit-honest-cache-"))
    pick_gap, est_gap, called_before, called_now = [], [], 0, 0
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        store = Store(Path(tempfile.mkdtemp(prefix=f"stackkit-honest-{seed}-")))
        noise_case(seed, args.groups, args.runs).write(store)
        res = fit_ensemble(store, meta="auto", name="auto")
        y, c, rng = res.runset.folds.labels, 18, np.random.default_rng(seed)
        pg = res.selected.scores["macro_f1"] - chance(y, res.selected.oof_proba.argmax(1), c, rng)
        eg = res.estimate.macro_f1 - chance(y, res.estimate.proba.argmax(1), c, rng)
        groups = store.read_folds().frame["group"].to_numpy(dtype=object)
        run00 = cmp.oof_proba(store, "run00", store.read_folds()).proba
        before = cmp.compare_arrays(y, res.selected.oof_proba, run00, groups)
        now = cmp.compare(store, "auto", "run00")
        called_before += before.low > 0 or before.high < 0
        called_now += now.low > 0 or now.high < 0
        pick_gap.append(pg)
        est_gap.append(eg)
        print(f"seed {seed}: picked {res.selected.meta}, pick's CV - chance {pg:+.4f}, estimate - "
              f"chance {eg:+.4f}; vs run00 before {before.low:+.4f}..{before.high:+.4f}, now "
              f"{now.low:+.4f}..{now.high:+.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)  # fmt: skip
    n = args.seeds
    print(f"\n{n} pure-noise draws: pick's own CV score {np.mean(pick_gap):+.4f} above chance "
          f"(max {np.max(pick_gap):+.4f}); honest estimate {np.mean(est_gap):+.4f} "
          f"(± {np.std(est_gap) / np.sqrt(n):.4f} s.e.)")  # fmt: skip
    print(
        f"--compare called the ensemble different from run00: before {called_before}/{n}, "
        f"now {called_now}/{n}"
    )


if __name__ == "__main__":
    main()
