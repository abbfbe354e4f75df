"""The runner's fold models (contract 1.1 "Models for new data"): written with the run's config
hash, each fold's model giving its own test.parquet logits again from the image files, stale or
planted files refused, none written with --no-save-models (CPU, test_resnet)."""

from __future__ import annotations

import json
import re
import shutil
import struct

import numpy as np
import pandas as pd
import pytest
import torch
from imagedata import make_mask_data
from safetensors.torch import load_file, save_file

from base_models import train
from base_models.predict import MODEL_FILE, fold_file, load_fold_model, predict_run, read_model_info
from stackkit.contract import schema
from stackkit.contract.errors import StackkitError
from stackkit.data.layouts import folds_for_data, load_dataset

FAST = {"model": "test_resnet", "device": "cpu", "workers": 0, "threads": 1, "epochs": 1}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    data = make_mask_data(tmp / "data", n_people=6, n_test=5)
    folds_for_data(data, artifacts=tmp / "art", n_folds=2, seed=0)
    result = train(data=data, artifacts=tmp / "art", **FAST)
    return data, result.run_dir


def _test_logits(run_dir, fold: int, ids) -> np.ndarray:
    test = pd.read_parquet(run_dir / "test.parquet")
    test = test[test["fold"] == fold].set_index("sample_id").loc[list(ids)]
    return test[schema.logit_columns(18)].to_numpy()


def test_each_fold_model_gives_its_test_logits_again(run):
    data, run_dir = run
    test = load_dataset(data).test
    logits, bad = predict_run(run_dir / "models", list(test["path"]), device="cpu", batch_size=2)
    assert logits.shape == (2, 5, 18) and len(bad) == 0
    for k in (0, 1):
        want = _test_logits(run_dir, k, test["sample_id"])
        np.testing.assert_allclose(logits[k], want, rtol=0, atol=1e-4)
    assert np.abs(logits[0] - logits[1]).max() > 1e-3  # two different models, each matched


def test_the_files_carry_the_runs_config_hash(run):
    _, run_dir = run
    info = json.loads((run_dir / "run.json").read_text())
    doc = read_model_info(run_dir / "models")
    assert info["models"] == "models" and doc["config_hash"] == info["config_hash"]
    for k in (0, 1):
        raw = (run_dir / "models" / fold_file(k)).read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])  # safetensors: a JSON header, then raw tensor bytes
        meta = json.loads(raw[8 : 8 + n])["__metadata__"]
        assert meta["config_hash"] == info["config_hash"] and meta["fold"] == str(k)


@pytest.mark.parametrize("case", ["other_config", "pickle"])
def test_a_stale_or_planted_fold_file_is_refused_in_one_line(run, tmp_path, case):
    run_dir = shutil.copytree(run[1], tmp_path / "r")
    folder = run_dir / "models"
    path = folder / fold_file(0)
    state = {k: v.clone() for k, v in load_file(path).items()}  # not a view of the file
    if case == "other_config":  # fold 0 retrained with another config, its model not saved
        save_file(state, path, metadata={"config_hash": "0" * 16})
        message = "fold_0.safetensors: made with config 0000000000000000, model.json describes"
    else:
        torch.save(state, path)  # a pickle is never unpickled
        message = "fold_0.safetensors: not a safetensors file"
    with pytest.raises(StackkitError, match=re.escape(message)) as err:
        load_fold_model(folder, 0, read_model_info(folder))
    assert "\n" not in str(err.value)


def test_no_save_models_writes_none_and_removes_a_stale_one(tmp_path):
    data = make_mask_data(tmp_path / "data", n_people=6, n_test=2)
    art = tmp_path / "art"
    folds_for_data(data, artifacts=art, n_folds=2, seed=0)
    train(data=data, artifacts=art, folds="0", **FAST)  # fold 0 saved with 1 epoch
    models = art / "runs" / "test_resnet" / "models"
    assert (models / fold_file(0)).is_file() and (models / MODEL_FILE).is_file()
    result = train(data=data, artifacts=art, save_models=False, **(FAST | {"epochs": 2}))
    assert not (models / fold_file(0)).exists() and not (models / fold_file(1)).exists()
    assert json.loads((result.run_dir / "run.json").read_text())["models"] is None
