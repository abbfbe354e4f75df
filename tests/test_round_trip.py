"""The pseudo-label round trip end to end on tiny images: folds -> two runs -> fit ->
pseudo-label -> a round-2 run trained with the pseudo labels -> fit over both rounds."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from imagedata import make_mask_data
from typer.testing import CliRunner

import base_models.runner as runner
from base_models import train
from base_models.shards import read_record
from stackkit.cli import app
from stackkit.contract.errors import StackkitError
from stackkit.contract.store import Store

FAST = {"device": "cpu", "workers": 0, "threads": 1, "epochs": 1}


def _cli(*args):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("round_trip")
    data = make_mask_data(tmp / "data", n_people=12, n_test=10)
    art = str(tmp / "art")
    _cli("folds", "--data", str(data), "--artifacts", art, "--n-folds", "2", "--seed", "0")
    for model in ("test_resnet", "test_efficientnet"):
        train(model=model, data=data, artifacts=art, **FAST)
    _cli("fit", "--meta", "vote,lr", "--name", "r1", "--artifacts", art)
    out = _cli("pseudo-label", "--ensemble", "r1", "--threshold", "0.05", "--name", "p1",
               "--artifacts", art)  # fmt: skip
    r2 = train(model="test_resnet", run="test_resnet_r2", data=data, artifacts=art, pseudo="p1",
               **FAST)  # fmt: skip
    _cli("fit", "--meta", "vote,lr", "--name", "r2", "--artifacts", art)
    return data, Store(art), r2, out


def test_pseudo_rows_train_their_own_fold_only_and_validate_none(round_trip):
    _, store, r2, _ = round_trip
    pseudo, meta = runner._pseudo(store, "p1", store.read_folds())  # with its fold column
    assert meta["ensemble"] == "r1" and len(pseudo) > 0
    oof = pd.read_parquet(r2.run_dir / "oof.parquet")
    for k in (0, 1):
        trained_on = set(read_record(r2.run_dir, k)["trained_on"])
        mine = set(pseudo.loc[pseudo["fold"] == k, "sample_id"])
        assert mine <= trained_on  # in fold k's training split
        assert not (set(pseudo["sample_id"]) - mine) & trained_on  # the other folds' are not
        assert not set(pseudo["sample_id"]) & set(oof.loc[oof["fold"] == k, "sample_id"])


def test_round_two_oof_is_the_original_train_set(round_trip):
    _, store, r2, _ = round_trip
    folds = store.read_folds()
    oof = pd.read_parquet(r2.run_dir / "oof.parquet")
    assert sorted(oof["sample_id"]) == sorted(folds.frame["sample_id"])
    info = json.loads((r2.run_dir / "run.json").read_text())
    assert info["pseudo"]["name"] == "p1" and info["pseudo"]["ensemble"] == "r1"


def test_both_rounds_stack_together(round_trip):
    _, store, _, printed = round_trip
    assert "chosen" in printed  # the pseudo-label table
    ens = json.loads((store.ensemble_dir("r2") / "ensemble.json").read_text())
    assert [r["run"] for r in ens["inputs"]["runs"]] == [
        "test_efficientnet", "test_resnet", "test_resnet_r2",
    ]  # fmt: skip


def test_a_pseudo_set_from_other_folds_is_refused(round_trip, tmp_path):
    data, store, _, _ = round_trip
    art = tmp_path / "other"
    (art / "pseudo").mkdir(parents=True)
    import shutil

    shutil.copytree(store.pseudo_dir("p1"), art / "pseudo" / "p1")
    _cli("folds", "--data", str(data), "--artifacts", str(art), "--n-folds", "2", "--seed", "7")
    with pytest.raises(StackkitError, match="made on another fold assignment"):
        train(model="test_resnet", data=data, artifacts=art, pseudo="p1", **FAST)
    assert not (art / "runs" / "test_resnet" / "run.json").exists()
