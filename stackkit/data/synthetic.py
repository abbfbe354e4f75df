"""Synthetic runs for tests and benchmarks: the shape of the mask task without images.

``make_case`` draws people with 7 images each, 18-way labels with the real set's imbalance, and
R "runs" whose logits are noisy views of the truth: varied quality, errors correlated between
runs (a shared per-sample difficulty), and confusions concentrated between neighbouring ages and
between wearing a mask and wearing it incorrectly, as in the real task.

    >>> case = make_case(n_groups=300, n_runs=4, seed=0)
    >>> case.write(Store(tmp_path))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from stackkit.contract import schema
from stackkit.data.folds import make_folds
from stackkit.data.layouts import MASK_CLASSES


@dataclass
class Case:
    folds: schema.Folds
    oof: dict[str, pd.DataFrame]
    test: dict[str, pd.DataFrame]
    test_labels: pd.Series  # held-out truth of the test samples, for quality benchmarks

    def write(self, store, infos: dict | None = None) -> None:
        store.write_folds(self.folds, force=True)
        for name in self.oof:
            info = run_info(name, self.folds, **((infos or {}).get(name, {})))
            store.write_run(name, self.oof[name], self.test[name], info, self.folds)


def run_info(name: str, folds: schema.Folds, **extra) -> dict:
    import platform

    from stackkit import __version__

    info = {
        "run": name,
        "model": "external",
        "classes": list(folds.classes),
        "n_folds": folds.n_folds,
        "folds_hash": folds.hash,
        "seed": folds.seed,
        "tta": [],
        "metrics": {},
        "created": pd.Timestamp.now(tz="UTC").isoformat(),
        "versions": {"python": platform.python_version(), "stackkit": __version__},
        "config": {},
        "pseudo": None,
    }
    info.update(extra)
    return info


def _people(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    gender = (rng.random(n) < 0.6).astype(int)  # more women than men, as in the real set
    age = rng.choice(3, size=n, p=[0.47, 0.45, 0.08])  # 60+ rare
    return gender, age


def _samples(rng, n_groups: int, per_group: int, prefix: str):
    gender, age = _people(rng, n_groups)
    mask = np.tile(np.r_[np.zeros(max(per_group - 2, 1), int), 1, 2][:per_group], n_groups)
    g = np.repeat(np.arange(n_groups), per_group)
    y = 6 * mask + 3 * gender[g] + age[g]
    ids = [f"{prefix}{gi:05d}/img{j}" for gi in range(n_groups) for j in range(per_group)]
    groups = [f"{prefix}{gi:05d}" for gi in g]
    return np.array(ids, dtype=object), np.array(groups, dtype=object), y


def _logits(rng, y, difficulty, quality, n_classes, n_runs_shared):
    n = len(y)
    # confusions between neighbours: age +-1 and mask wear<->incorrect
    target = np.zeros((n, n_classes))
    target[np.arange(n), y] = 1.0
    age = y % 3
    nb = np.where(age == 0, y + 1, y - 1)
    target[np.arange(n), nb] += 0.35
    x = quality * 6.0 * target
    x += difficulty * 1.6  # shared between runs: correlated errors
    x += rng.normal(0.0, 1.4, size=(n, n_classes))
    return x.astype(np.float32)


def make_case(
    n_groups: int = 2700,
    per_group: int = 7,
    n_test: int = 12600,
    n_runs: int = 10,
    n_folds: int = 5,
    seed: int = 0,
) -> Case:
    """A reference problem: ``n_runs`` runs of varied quality over ``n_groups`` people."""
    rng = np.random.default_rng(seed)
    c = len(MASK_CLASSES)
    ids, groups, y = _samples(rng, n_groups, per_group, "p")
    folds = make_folds(ids, groups, y, MASK_CLASSES, n_folds=n_folds, seed=seed)
    t_groups = -(-n_test // per_group)
    t_ids, _, t_y = _samples(rng, t_groups, per_group, "t")
    t_ids, t_y = (
        np.array([f"{s.replace('/', '_')}.jpg" for s in t_ids[:n_test]], object),
        t_y[:n_test],
    )
    diff_tr = rng.normal(0.0, 1.0, size=(len(y), c))
    diff_te = rng.normal(0.0, 1.0, size=(len(t_y), c))
    qualities = np.linspace(1.0, 0.45, n_runs)
    oof, test = {}, {}
    fold_of = folds.fold_ids
    for r, q in enumerate(qualities):
        name = f"run{r:02d}"
        o = _logits(rng, y, diff_tr, q, c, n_runs)
        oof[name] = pd.concat(
            [
                pd.DataFrame({"sample_id": ids, "fold": fold_of.astype("int8")}),
                pd.DataFrame(o, columns=schema.logit_columns(c)),
            ],
            axis=1,
        )
        base = _logits(rng, t_y, diff_te, q, c, n_runs)
        parts = []
        for k in range(n_folds):
            tk = base + rng.normal(0.0, 0.4, size=base.shape).astype(np.float32)
            parts.append(
                pd.concat(
                    [
                        pd.DataFrame({"sample_id": t_ids, "fold": np.full(len(t_ids), k, "int8")}),
                        pd.DataFrame(tk, columns=schema.logit_columns(c)),
                    ],
                    axis=1,
                )
            )
        test[name] = pd.concat(parts, ignore_index=True)
    return Case(folds, oof, test, pd.Series(t_y, index=t_ids, name="label"))
