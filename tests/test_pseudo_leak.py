"""Pseudo labels must not carry fold k's labels into fold k's round-2 model (contract 1.1).

The runs here memorise people: a 1-nearest-neighbour "backbone" over image embeddings, where every
person has one random label, so nothing generalises and the honest OOF macro-F1 is at chance. Test
images are of new people who resemble training people. If fold k's pseudo labels came from models
that trained on fold k (the ensemble's fold-averaged test probabilities, as before 1.1), a test
image that looks like a fold-k person carries that person's label into fold k's round-2 training
split, and fold k's OOF rows find it: round 2 "gains". Per-fold pseudo labels must leave round 2 at
chance. The pooled variant is scored too, so the test shows that it would catch the leak.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stackkit.contract import schema
from stackkit.contract.store import Store
from stackkit.data.folds import make_folds
from stackkit.data.synthetic import run_info
from stackkit.fit import fit_ensemble
from stackkit.metrics import macro_f1
from stackkit.pseudo import pseudo_label

C, K, DIM = 6, 5, 8
PEOPLE, IMAGES, TEST_PEOPLE = 150, 4, 100


def _world(seed: int):
    rng = np.random.default_rng(seed)
    person = rng.normal(size=(PEOPLE, DIM))
    label_of = rng.integers(0, C, PEOPLE)
    groups = np.repeat(np.arange(PEOPLE), IMAGES)
    X = person[groups] + 0.05 * rng.normal(size=(len(groups), DIM))
    # new people, each resembling one training person (closer to them than to anyone else)
    twin = rng.integers(0, PEOPLE, TEST_PEOPLE)
    test_person = person[twin] + 0.3 * rng.normal(size=(TEST_PEOPLE, DIM))
    Xt = np.repeat(test_person, IMAGES, axis=0) + 0.05 * rng.normal(
        size=(TEST_PEOPLE * IMAGES, DIM)
    )
    ids = np.array([f"p{g:03d}_{i}" for g in range(PEOPLE) for i in range(IMAGES)], dtype=object)
    test_ids = np.array([f"t{i:04d}" for i in range(len(Xt))], dtype=object)
    classes = [f"c{c}" for c in range(C)]
    folds = make_folds(ids, [f"p{g:03d}" for g in groups], label_of[groups], classes, K, seed)
    return folds, X, Xt, test_ids


def _nn_logits(X_train, y_train, X_query) -> np.ndarray:
    """The memorising backbone: the label of the nearest training image, as a confident logit."""
    d = ((X_query[:, None, :] - X_train[None, :, :]) ** 2).sum(-1)
    out = np.zeros((len(X_query), C), np.float32)
    out[np.arange(len(X_query)), y_train[d.argmin(1)]] = 5.0
    return out


def _train_run(store, folds, X, Xt, test_ids, name, pseudo=None):
    """One run of the memorising backbone; ``pseudo``: (fold, test row, label) rows, each added to
    its own fold's training split only (the runner's rule)."""
    f, y = folds.fold_ids, folds.labels
    oof = np.zeros((len(y), C), np.float32)
    tests = []
    for k in range(K):
        train = f != k
        Xk, yk = X[train], y[train]
        if pseudo is not None:
            mine = pseudo[pseudo["fold"] == k]
            Xk = np.vstack([Xk, Xt[mine["row"].to_numpy()]])
            yk = np.concatenate([yk, mine["label"].to_numpy()])
        oof[~train] = _nn_logits(Xk, yk, X[~train])
        t = pd.DataFrame({"sample_id": test_ids, "fold": np.full(len(test_ids), k, np.int8)})
        tests.append(
            pd.concat(
                [t, pd.DataFrame(_nn_logits(Xk, yk, Xt), columns=schema.logit_columns(C))], axis=1
            )
        )
    o = pd.DataFrame({"sample_id": folds.frame["sample_id"], "fold": folds.frame["fold"]})
    o = pd.concat([o, pd.DataFrame(oof, columns=schema.logit_columns(C))], axis=1)
    store.write_run(name, o, pd.concat(tests, ignore_index=True), run_info(name, folds), folds)
    return macro_f1(y, oof.argmax(1), C)


@pytest.mark.parametrize("seed", [0, 1])
def test_round_two_of_memorising_runs_stays_at_chance(tmp_path, seed):
    folds, X, Xt, test_ids = _world(seed)
    store = Store(tmp_path / "artifacts")
    store.write_folds(folds)
    round1 = _train_run(store, folds, X, Xt, test_ids, "nn")
    fit_ensemble(store, meta="vote", name="r1", n_jobs=1, use_cache=False)
    ps = pseudo_label(store, "r1", threshold=0.5)
    rows = pd.Index(test_ids).get_indexer(ps.frame["sample_id"].to_numpy(dtype=object))
    pseudo = pd.DataFrame({"fold": ps.frame["fold"].to_numpy(), "row": rows,
                           "label": ps.frame["label"].to_numpy()})  # fmt: skip
    assert sorted(set(pseudo["fold"])) == list(range(K))
    round2 = _train_run(store, folds, X, Xt, test_ids, "nn_r2", pseudo)

    # the leak the per-fold rule closes: every fold trained on labels from all fold models
    ens = pd.read_parquet(store.ensemble_dir("r1") / "test_proba.parquet")
    p = ens[schema.prob_columns(C)].to_numpy()
    pooled = pd.concat(
        [
            pd.DataFrame({"fold": k, "row": np.arange(len(p)), "label": p.argmax(1)})
            for k in range(K)
        ]
    )
    leaky = _train_run(store, folds, X, Xt, test_ids, "nn_leaky", pooled)

    chance = 1.0 / C
    assert abs(round1 - chance) < 0.08, round1
    assert leaky > round1 + 0.15, (round1, leaky)  # the test can see a leak
    assert round2 < round1 + 0.05, (round1, round2)  # and per-fold labels show none
