"""base_models: the runner end to end on a tiny generated dataset (CPU, no downloads).

One 2-fold, 1-epoch run of timm's ``test_resnet`` at 32x24 is made once per module and reused.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from imagedata import make_manifest_data, make_mask_data
from typer.testing import CliRunner

import base_models.runner as runner
from base_models import train
from base_models.cli import app
from base_models.config import resolve_config
from base_models.shards import read_record
from base_models.splits import build_splits, image_table
from stackkit.contract import schema
from stackkit.contract.errors import StackkitError
from stackkit.contract.store import Store, write_parquet
from stackkit.data.layouts import folds_for_data, load_dataset

FAST = {"model": "test_resnet", "device": "cpu", "workers": 0, "threads": 1, "epochs": 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_mask_data(tmp_path_factory.mktemp("img") / "data", n_people=12, n_test=10)


def _artifacts(tmp_path, data, name="art"):
    art = tmp_path / name
    folds_for_data(data, artifacts=art, n_folds=2, seed=0)
    return art


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data):
    art = _artifacts(tmp_path_factory.mktemp("full"), data)
    result = train(data=data, artifacts=art, **FAST)
    return art, result


def _logits(art, run="test_resnet"):
    d = Store(art).run_dir(run)
    return pd.read_parquet(d / "oof.parquet"), pd.read_parquet(d / "test.parquet")


def test_run_meets_the_contract(full_run):
    art, result = full_run
    store = Store(art)
    folds = store.read_folds()
    runs = store.load_runs(["test_resnet"], folds)  # validates oof, test and run.json
    assert result.complete and result.trained == [0, 1]
    assert runs.oof.shape == (1, 84, 18) and runs.test.shape == (1, 2, 10, 18)
    info = runs.infos["test_resnet"]
    assert set(schema.RUN_INFO_REQUIRED) <= set(info)
    assert info["tta"] == ["identity", "hflip"] and info["init"] == "scratch"
    assert set(info["versions"]) == {"python", "torch", "timm", "stackkit"}
    assert info["config"]["data_config"]["input_size"] == [3, 32, 24]
    assert len(info["metrics"]["per_fold"]) == 2 and 0 <= info["metrics"]["oof_macro_f1"] <= 1
    assert len(list((result.run_dir / "tb" / "fold_1").glob("events.out.tfevents.*"))) == 1
    assert not (result.run_dir / "cache").exists()  # pixels: in <artifacts>/cache/images, shared
    assert info["decode"]["mode"] == "cache" and (art / "cache" / "images").is_dir()


def test_every_oof_row_comes_from_a_model_that_never_saw_that_person(full_run):
    art, result = full_run
    frame = Store(art).read_folds().frame
    group_of = dict(zip(frame["sample_id"], frame["group"]))
    oof, _ = _logits(art)
    for k in (0, 1):
        trained_on = read_record(result.run_dir, k)["trained_on"]
        seen = {group_of[s] for s in trained_on}
        predicted = {group_of[s] for s in oof.loc[oof["fold"] == k, "sample_id"]}
        assert trained_on and not seen & predicted


def test_resume_after_an_interrupted_fold_gives_the_same_run(tmp_path, data, full_run, monkeypatch):
    art = _artifacts(tmp_path, data)
    real = runner._run_fold

    def dies_on_fold_1(job, split, cache):
        if split.fold == 1:
            raise KeyboardInterrupt  # the machine went away mid-run
        real(job, split, cache)

    monkeypatch.setattr(runner, "_run_fold", dies_on_fold_1)
    with pytest.raises(KeyboardInterrupt):
        train(data=data, artifacts=art, **FAST)
    run_dir = Store(art).run_dir("test_resnet")
    assert not (run_dir / "run.json").exists() and read_record(run_dir, 0) is not None
    monkeypatch.setattr(runner, "_run_fold", real)
    result = train(data=data, artifacts=art, **FAST)
    assert result.skipped == [0] and result.trained == [1] and result.complete
    for got, want in zip(_logits(art), _logits(full_run[0])):
        pd.testing.assert_frame_equal(got, want)  # bit-identical on the CPU


def test_same_command_twice_gives_the_same_logits_on_cpu(tmp_path, data):
    art = _artifacts(tmp_path, data)
    first = train(data=data, artifacts=art, folds="0", **FAST)
    a = pd.read_parquet(first.run_dir / "shards" / "fold_0.test.parquet")
    again = train(data=data, artifacts=art, folds="0", force=True, **FAST)
    assert again.trained == [0] and not again.complete  # fold 1 never ran: no run written
    b = pd.read_parquet(again.run_dir / "shards" / "fold_0.test.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert not (again.run_dir / "run.json").exists()


def test_manifest_layout_run(tmp_path):
    root = make_manifest_data(tmp_path / "m", n_train=24, n_test=4)
    art = tmp_path / "art"
    folds = folds_for_data(root, artifacts=art, n_folds=2)
    assert folds.meta["data"]["layout"] == "manifest"
    result = train(data=root, artifacts=art, img_size="24x24", run="m", **FAST)
    runs = Store(art).load_runs(["m"], Store(art).read_folds())
    assert result.complete and runs.infos["m"]["classes"] == ["cat", "dog", "fox"]
    assert sorted(runs.test_ids) == [f"test{j}" for j in range(4)]


def _write_pseudo(store: Store, folds, df: pd.DataFrame, name: str = "p1") -> None:
    """A pseudo set as written by contract 1.1 (with ``fold`` when ``df`` has it), bypassing
    stackkit's own writer so the runner's reading is tested on the file alone."""
    meta = {
        "version": schema.CONTRACT_VERSION, "ensemble": "ens", "ensemble_hash": "abc",
        "folds_hash": folds.hash, "rule": {}, "per_class": {},
    }  # fmt: skip
    dtypes = {"sample_id": "string", "fold": "int8", "label": "int16", "confidence": "float32"}
    write_parquet(
        df.astype({k: v for k, v in dtypes.items() if k in df}), _pseudo_path(store, name), meta
    )


def _pseudo_path(store: Store, name: str):
    return store.pseudo_dir(name) / schema.PSEUDO_FILE


def _pseudo_set(store: Store, folds, ds, n: int, fold=0, with_fold=True) -> pd.DataFrame:
    """``n`` test images pseudo-labelled for fold ``fold`` only."""
    df = pd.DataFrame(
        {"sample_id": ds.test["sample_id"][:n], "fold": np.full(n, fold), "label": np.arange(n),
         "confidence": np.full(n, 0.9)}
    )  # fmt: skip
    _write_pseudo(store, folds, df if with_fold else df.drop(columns="fold"))
    return df


def test_pseudo_rows_of_fold_0_train_fold_0_only_and_validate_none(tmp_path, data):
    art = _artifacts(tmp_path, data)
    store = Store(art)
    folds = store.read_folds()
    ds = load_dataset(data)
    _pseudo_set(store, folds, ds, n=6, fold=0)
    pseudo, _ = runner._pseudo(store, "p1", folds)
    table = image_table(ds, folds, pseudo)
    pseudo_pos = set(np.flatnonzero(np.isin(table.ids, pseudo["sample_id"])))
    split0, split1 = build_splits(table, folds.n_folds)
    assert pseudo_pos <= set(split0.train) and not pseudo_pos & set(split1.train)
    in0 = np.isin(split0.train, list(pseudo_pos))
    assert split0.train_labels[in0].tolist() == list(range(6))  # the set's labels, in its order
    for split in (split0, split1):
        assert not pseudo_pos & set(split.val) and (split.val < table.n_train).all()
        assert (table.fold[split.val] == split.fold).all()
        own = split.train[split.train < table.n_train]
        assert (table.fold[own] != split.fold).all()
        assert (split.train_labels[: len(own)] == table.labels[own]).all()


def test_one_test_image_with_another_label_in_each_fold(tmp_path, data):
    art = _artifacts(tmp_path, data)
    store = Store(art)
    folds = store.read_folds()
    ds = load_dataset(data)
    sid = ds.test["sample_id"][0]
    rows = pd.DataFrame(
        {"sample_id": [sid, sid], "fold": [0, 1], "label": [5, 11], "confidence": [0.9, 0.8]}
    )
    _write_pseudo(store, folds, rows)
    pseudo, info = runner._pseudo(store, "p1", folds)
    assert info["n_rows_per_fold"] == [1, 1]
    table = image_table(ds, folds, pseudo)
    [pos] = np.flatnonzero(table.ids == sid)
    for split, label in zip(build_splits(table, folds.n_folds), (5, 11)):
        assert split.train_labels[split.train == pos].tolist() == [label]


def test_pseudo_and_pretrained_are_recorded(tmp_path, data):
    art = _artifacts(tmp_path, data)
    store = Store(art)
    folds = store.read_folds()
    rows = _pseudo_set(store, folds, load_dataset(data), n=6, fold=1)
    weights = tmp_path / "w.pth"
    torch.save(timm.create_model("test_resnet", num_classes=1000).state_dict(), weights)
    result = train(data=data, artifacts=art, pseudo="p1", pretrained=weights, **FAST)
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["pseudo"]["name"] == "p1" and info["pseudo"]["n_rows"] == 6
    assert info["pseudo"]["ensemble"] == "ens" and info["pseudo"]["ensemble_hash"] == "abc"
    assert info["pseudo"]["n_rows_per_fold"] == [0, 6]
    assert info["init"] == "pretrained" and info["config"]["pretrained"]["sha256"]
    assert [f["n_pseudo"] for f in info["metrics"]["per_fold"]] == [0, 6]
    assert set(rows["sample_id"]) <= set(read_record(result.run_dir, 1)["trained_on"])
    assert not set(rows["sample_id"]) & set(read_record(result.run_dir, 0)["trained_on"])
    assert len(pd.read_parquet(result.run_dir / "oof.parquet")) == 84  # OOF: train samples only


def test_the_same_pseudo_rows_rewritten_give_the_same_config(tmp_path, data):
    art = _artifacts(tmp_path, data)
    store = Store(art)
    folds = store.read_folds()
    rows = _pseudo_set(store, folds, load_dataset(data), n=4)
    _, job = runner.resolve_job("test_resnet", data, art, pseudo="p1")
    _write_pseudo(store, folds, rows.iloc[::-1].assign(confidence=0.8))  # other order, provenance
    assert runner.resolve_job("test_resnet", data, art, pseudo="p1")[1].hash == job.hash
    _write_pseudo(store, folds, rows.assign(label=rows["label"] + 1))  # other labels
    assert runner.resolve_job("test_resnet", data, art, pseudo="p1")[1].hash != job.hash


def test_skip_bad_images_counts_them(tmp_path, data):
    root = shutil.copytree(data, tmp_path / "data")
    bad = root / "train/images/000001_male_Asian_22/mask2.jpg"
    bad.write_bytes(b"not a jpeg")
    art = _artifacts(tmp_path, root)
    result = train(data=root, artifacts=art, skip_bad_images=True, **FAST)
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["bad_images"] == {"count": 1, "ids": ["000001_male_Asian_22/mask2"]}
    oof = pd.read_parquet(result.run_dir / "oof.parquet").set_index("sample_id")
    assert (oof.loc["000001_male_Asian_22/mask2", schema.logit_columns(18)] == 0).all()


# --------------------------------------------------------------------------------------------
# bad input: one StackkitError line each, and no run folder left behind


def _break(case, tmp_path, data):
    """Return (data, artifacts, extra train kwargs) for one bad-input case."""
    root = shutil.copytree(data, tmp_path / "data")
    art = _artifacts(tmp_path, root)
    if case == "no_data":
        shutil.rmtree(root)
    elif case == "no_csv":
        (root / "train/train.csv").unlink()
    elif case == "bad_image":
        (
            root
            / "eval/images"
            / next(iter(sorted(p.name for p in (root / "eval/images").iterdir())))
        ).write_bytes(b"x")
    elif case == "empty_class":
        df = pd.read_csv(root / "train/train.csv")
        df[df["age"] != 61].to_csv(root / "train/train.csv", index=False)
    elif case == "other_folds":
        shutil.rmtree(root / "train/images/000012_female_Asian_61")
        df = pd.read_csv(root / "train/train.csv")
        df[df["path"] != "000012_female_Asian_61"].to_csv(root / "train/train.csv", index=False)
    elif case == "misfit_weights":
        torch.save(timm.create_model("test_efficientnet").state_dict(), tmp_path / "w.pth")
        return root, art, {"pretrained": tmp_path / "w.pth"}
    elif case == "no_weights":
        return root, art, {"pretrained": tmp_path / "nope.pth"}
    elif case == "unknown_model":
        return root, art, {"model": "test_resnt"}
    elif case == "bad_size":
        return root, art, {"img_size": "32by24"}
    elif case == "bad_fold":
        return root, art, {"folds": "0,7"}
    elif case in ("pseudo_without_fold", "pseudo_bad_fold"):
        store = Store(art)
        ds = load_dataset(root)
        _pseudo_set(store, store.read_folds(), ds, 3, fold=2, with_fold=case == "pseudo_bad_fold")
        return root, art, {"pseudo": "p1"}
    elif case in ("no_pseudo", "other_pseudo"):
        store = Store(art)
        folds = store.read_folds()
        if case == "other_pseudo":
            pseudo = pd.DataFrame({"sample_id": ["x.jpg"], "label": [1], "confidence": [0.9]})
            meta = {
                "ensemble": "e",
                "ensemble_hash": "h",
                "folds_hash": "0" * 64,
                "rule": {},
                "per_class": {},
            }
            store.write_pseudo("p1", pseudo, meta, folds.n_classes)
        return root, art, {"pseudo": "p1"}
    return root, art, {}


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_data", "data folder not found"),
        ("no_csv", "neither"),
        ("bad_image", "cannot be decoded as an image (1 unreadable"),
        ("empty_class", "have no samples"),
        ("other_folds", "folds.parquet does not match"),
        ("misfit_weights", "does not fit this model: keys"),
        ("no_weights", "--pretrained"),
        ("unknown_model", "did you mean test_resnet"),
        ("bad_size", "--img-size must be HxW"),
        ("bad_fold", "--folds '0,7'"),
        ("no_pseudo", "pseudo set 'p1': pseudo/p1/pseudo.parquet: file not found"),
        ("other_pseudo", "made on another fold assignment"),
        (
            "pseudo_without_fold",
            "pseudo set 'p1': pseudo/p1/pseudo.parquet: has no 'fold' column (made before "
            "contract 1.1, its labels come from models that saw every fold); remake it with "
            "`stackkit pseudo-label --ensemble ens --name p1 --force`",
        ),
        ("pseudo_bad_fold", "pseudo.parquet: row 0 (sample_id"),
    ],
)
def test_bad_input(tmp_path, data, case, message):
    root, art, extra = _break(case, tmp_path, data)
    with pytest.raises(StackkitError, match=re.escape(message)) as err:
        train(data=root, artifacts=art, **(FAST | extra))
    assert "\n" not in str(err.value)
    assert Store(art).run_names(include_incomplete=True) == []  # nothing half-written


def test_config_files_refuse_unknown_keys(monkeypatch, tmp_path):
    (tmp_path / "default.yaml").write_text("epochs: 1\nbatch: 2\n")
    (tmp_path / "mymodel.yaml").write_text("epochz: 3\n")
    monkeypatch.setattr("base_models.config.CONFIG_DIR", tmp_path)
    with pytest.raises(StackkitError, match=r"mymodel\.yaml: unknown key"):
        resolve_config("mymodel", {})


def test_command_line_overrides_model_config():
    cfg = resolve_config("resnet18", {"epochs": 3, "img_size": "64x48", "lr": None})
    assert (
        cfg["epochs"] == 3
        and cfg["img_size"] == [64, 48]
        and cfg["lr"] == 1e-3
        and cfg["batch"] == 64
    )


def test_config_file_sits_between_model_config_and_command_line(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("lr: 0.01\nscale: [0.9, 1.0]\nepochs: 5\n")
    cfg = resolve_config("resnet18", {"epochs": 2}, f)
    assert cfg["lr"] == 0.01 and cfg["scale"] == [0.9, 1.0] and cfg["epochs"] == 2
    assert cfg["batch"] == 64  # from configs/resnet18.yaml, untouched by the file
    f.write_text("lrr: 0.01\n")
    with pytest.raises(StackkitError, match=r"exp\.yaml: unknown key\(s\) lrr"):
        resolve_config("resnet18", {}, f)
    with pytest.raises(StackkitError, match="config file not found"):
        resolve_config("resnet18", {}, tmp_path / "missing.yaml")


def test_entry_point_prints_one_error_line(tmp_path, data):
    art = _artifacts(tmp_path, data)
    res = CliRunner().invoke(
        app, ["--model", "resnet_18x", "--data", str(data), "--artifacts", str(art)]
    )
    assert res.exit_code == 1 and res.output.startswith("error: --model 'resnet_18x'")
    assert "Traceback" not in res.output


@pytest.mark.slow
@pytest.mark.parametrize("model", ["test_efficientnet", "test_convnext", "test_nfnet"])
def test_other_backbones_and_their_configs(tmp_path, data, model):
    art = _artifacts(tmp_path, data)
    result = train(
        data=data, artifacts=art, **(FAST | {"model": model, "epochs": 2}), img_size="40x32"
    )
    info = json.loads((result.run_dir / "run.json").read_text())
    assert result.complete and info["config"]["data_config"]["input_size"] == [3, 40, 32]
    assert [f["epoch"] for f in info["metrics"]["per_fold"]] == [1, 1]  # fixed: the last
    assert info["config"]["train"]["optimizer"] == ("sgd" if model == "test_nfnet" else "adamw")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run_bf16_channels_last_workers(tmp_path, data):
    art = _artifacts(tmp_path, data)
    result = train(data=data, artifacts=art, **(FAST | {"device": "cuda", "workers": 2}))
    store = Store(art)
    runs = store.load_runs(["test_resnet"], store.read_folds())
    assert result.complete and runs.infos["test_resnet"]["device"].startswith("cuda")


def test_label_fix_and_age_boundary_default_to_those_of_the_folds(tmp_path, data, caplog):
    fix = tmp_path / "fix.csv"
    fix.write_text("target,field,value\n000001_male_Asian_22,age,59\n")
    art = tmp_path / "art"
    folds = folds_for_data(data, artifacts=art, n_folds=2, age_boundary=58, label_fix=fix)
    assert folds.meta["data"]["label_fix"]["changed"] == 7
    assert runner._data_options(folds, None, None) == {"age_boundary": 58, "label_fix": str(fix)}
    with caplog.at_level("WARNING"):
        train(data=data, artifacts=art, folds="0", **FAST)
    assert "differ from folds.parquet" not in caplog.text  # trained on the folds' own labels
    with caplog.at_level("WARNING"):
        train(data=data, artifacts=art, folds="0", age_boundary=60, **FAST)
    assert "7 train label(s) differ from folds.parquet" in caplog.text
