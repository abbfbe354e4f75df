"""Epoch selection (contract 1.1 "Epochs"): no OOF row decides anything about its own fold's model.

On noise labels, fold 0's labels are replaced: fold 0's OOF and test logits must not move, with
the fixed schedule and with the inner slice alike; replacing the training folds' labels must move
them (so the check can see a change). Tiny timm ``test_resnet``, CPU, 3 epochs.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from imagedata import make_mask_data

import base_models.runner as runner
from base_models import train
from base_models.config import resolve_config
from base_models.shards import read_record, shard_files
from stackkit.contract.errors import StackkitError
from stackkit.contract.store import Store
from stackkit.data.layouts import folds_for_data

FAST = {"device": "cpu", "workers": 0, "threads": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_mask_data(tmp_path_factory.mktemp("img") / "data", n_people=12, n_test=6)


def _config(tmp_path, selection: str, fraction: float = 0.25):
    path = tmp_path / f"{selection}.yaml"
    path.write_text(f"epoch_selection: {selection}\ninner_fraction: {fraction}\n")
    return path


def _fold0(job) -> tuple[np.ndarray, np.ndarray, dict]:
    with runner._images(job) as images:
        runner._train_folds(job, images, [0], force=True)
    oof, test, _ = shard_files(job.run_dir, 0)
    cols = [c for c in pd.read_parquet(oof).columns if c.startswith("logit_")]
    return (
        pd.read_parquet(oof)[cols].to_numpy(),
        pd.read_parquet(test)[cols].to_numpy(),
        read_record(job.run_dir, 0),
    )


@pytest.mark.parametrize("selection", ["fixed", "inner"])
def test_fold_k_labels_never_reach_fold_k_model(tmp_path, data, selection):
    art = tmp_path / "art"
    folds_for_data(data, artifacts=art, n_folds=2, seed=0)
    _, job = runner.resolve_job(
        "test_resnet", data, art, epochs=3, config=_config(tmp_path, selection), **FAST
    )
    t, rng = job.table, np.random.default_rng(0)
    train_rows = np.arange(len(t.ids)) < t.n_train
    t.labels[train_rows] = rng.integers(0, 18, int(train_rows.sum()))  # noise labels
    oof, test, rec = _fold0(job)
    assert rec["epoch_selection"] == selection
    if selection == "fixed":
        assert rec["epoch"] == 2 and rec["n_inner"] == 0 and rec["inner_macro_f1"] is None
    else:
        assert rec["n_inner_groups"] == 2 and rec["n_inner"] == 14  # 2 persons x 7 images

    in0 = t.fold == 0
    t.labels[in0] = (t.labels[in0] + 1 + rng.integers(0, 17, int(in0.sum()))) % 18  # all new
    oof2, test2, rec2 = _fold0(job)
    np.testing.assert_array_equal(oof2, oof)  # bit-identical on the CPU
    np.testing.assert_array_equal(test2, test)
    assert rec2["epoch"] == rec["epoch"] and rec2["inner_macro_f1"] == rec["inner_macro_f1"]

    in1 = t.fold == 1  # the training folds' labels do reach the model: the check can see it
    t.labels[in1] = (t.labels[in1] + 1) % 18
    oof3, _, _ = _fold0(job)
    assert np.abs(oof3 - oof).max() > 1e-3


def test_inner_slice_is_whole_groups_of_the_training_folds(tmp_path, data):
    art = tmp_path / "art"
    folds_for_data(data, artifacts=art, n_folds=2, seed=0)
    result = train(
        "test_resnet", data, artifacts=art, epochs=2, config=_config(tmp_path, "inner", 0.2),
        **FAST,
    )  # fmt: skip
    frame = Store(art).read_folds().frame
    group_of = dict(zip(frame["sample_id"], frame["group"]))
    fold_of = dict(zip(frame["sample_id"], frame["fold"]))
    for k in (0, 1):
        rec = read_record(result.run_dir, k)
        inner = {group_of[s] for s in rec["selected_on"]}
        trained = {group_of[s] for s in rec["trained_on"]}
        assert len(inner) == 1 and not inner & trained  # round(0.2 x 6 persons): whole persons
        assert {fold_of[s] for s in rec["selected_on"]} == {1 - k}  # never fold k's own rows
        assert len(rec["selected_on"]) == 7 and rec["n_train"] == 35
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["epoch_selection"] == "inner"
    details = info["epoch_selection_details"]
    assert details["epochs"] == 2 and details["inner_fraction"] == 0.2
    assert [f["n_inner"] for f in details["per_fold"]] == [7, 7]
    assert all(0 <= f["epoch"] < 2 and 0 <= f["inner_macro_f1"] <= 1 for f in details["per_fold"])


def test_fixed_is_the_default_and_keeps_the_last_epoch(tmp_path, data):
    art = tmp_path / "art"
    folds_for_data(data, artifacts=art, n_folds=2, seed=0)
    result = train("test_resnet", data, artifacts=art, epochs=2, **FAST)
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["epoch_selection"] == "fixed"
    assert info["epoch_selection_details"]["inner_fraction"] is None
    assert [f["epoch"] for f in info["epoch_selection_details"]["per_fold"]] == [1, 1]
    assert [f["n_train"] for f in info["metrics"]["per_fold"]] == [42, 42]


@pytest.mark.parametrize(
    "layer, message",
    [
        ("epoch_selection: best\n", "epoch_selection must be one of fixed, inner"),
        ("inner_fraction: 1.5\n", "inner_fraction must be a number in (0, 1)"),
        ("inner_fraction: abc\n", "inner_fraction must be a number in (0, 1)"),
    ],
)
def test_bad_epoch_selection_values(tmp_path, layer, message):
    path = tmp_path / "bad.yaml"
    path.write_text(layer)
    with pytest.raises(StackkitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_config("test_resnet", {}, path)
