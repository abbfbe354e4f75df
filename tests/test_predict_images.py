"""`stackkit predict` end to end on the mask layout (CPU): two tiny timm runs keep their fold
models, `fit --meta auto` keeps its learner, and predicting the eval images from the saved models
gives the ensemble's own test probabilities again; bad input is one line, nothing written."""

from __future__ import annotations

import json
import pickle
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from imagedata import make_mask_data
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from base_models import train
from base_models.predict import MODEL_FILE, fold_file
from stackkit.cli import app
from stackkit.contract.store import Store
from stackkit.data.layouts import folds_for_data
from stackkit.fit import fit_ensemble
from stackkit.predict import load_ensemble

FAST = {"device": "cpu", "workers": 0, "threads": 1, "epochs": 1}
MODELS = ("test_resnet", "test_efficientnet")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("pred")
    data = make_mask_data(root / "data", n_people=12, n_test=10)
    art = root / "art"
    folds_for_data(data, artifacts=art, n_folds=2, seed=0)
    for m in MODELS:
        train(model=m, data=data, artifacts=art, **FAST)
    mp = pytest.MonkeyPatch()
    mp.setenv("STACKKIT_CACHE", str(root / "cache"))
    res = fit_ensemble(Store(art), meta="auto", name="auto", n_jobs=1)
    mp.undo()
    return data, art, res


@pytest.fixture
def copy(tmp_path, fitted):
    data, art, _ = fitted
    shutil.copytree(art, tmp_path / "art")
    return data, tmp_path / "art"


def _proba(path, ids):
    return pd.read_parquet(path).set_index("sample_id").loc[list(ids)].to_numpy(np.float64)


def _predict(art, data, out, *extra):
    args = ["predict", "--artifacts", str(art), "--ensemble", "auto", "--data", str(data)]
    return CliRunner().invoke(app, [*args, "--out", str(out), *extra])


def test_predict_gives_the_ensembles_test_proba_again(tmp_path, fitted):
    data, art, res = fitted
    out = tmp_path / "sub.csv"
    r = _predict(art, data / "eval", out)
    assert r.exit_code == 0, r.output
    ids = res.runset.test_ids
    expected = _proba(res.path / "test_proba.parquet", ids)
    got = _proba(out.with_suffix(".parquet"), ids)
    assert np.abs(got - expected).max() < 1e-4
    sub = pd.read_csv(out)
    info = pd.read_csv(data / "eval" / "info.csv")
    assert list(sub.columns) == ["ImageID", "ans"] and list(sub["ImageID"]) == list(info["ImageID"])
    assert sub.equals(pd.read_csv(res.path / "submission.csv"))
    # the same from Python, from the data folder's eval/ or a list of paths
    ens = load_ensemble(res.path)
    order = [str(p) for p in info["ImageID"]]
    p = ens.predict_proba(data, device="cpu")
    assert np.abs(p - _proba(res.path / "test_proba.parquet", order)).max() < 1e-4
    paths = [str(data / "eval" / "images" / i) for i in order]
    np.testing.assert_array_equal(ens.predict(paths, device="cpu"), p.argmax(1))


def test_what_the_runs_and_the_fit_write_holds_no_pickle(fitted):
    _, art, _ = fitted
    for m in MODELS:
        d = art / "runs" / m / "models"
        info = json.loads((d / MODEL_FILE).read_text())
        assert (
            info["model"] == m
            and info["num_classes"] == 18
            and info["tta"] == ["identity", "hflip"]
        )
        assert sorted(p.name for p in d.iterdir()) == sorted(
            [MODEL_FILE, fold_file(0), fold_file(1)]
        )
    # every file is one of the plain formats, each checked by its own signature
    for f in [p for p in art.rglob("*") if p.is_file()]:
        data = f.read_bytes()
        if f.suffix == ".safetensors":  # 8-byte header length, then the JSON header
            n = int.from_bytes(data[:8], "little")
            assert json.loads(data[8 : 8 + n])["__metadata__"]["format"] == "pt", f
        elif f.suffix == ".npz":
            assert data.startswith(b"PK"), f  # a zip of .npy files (read with allow_pickle=False)
        elif f.suffix == ".parquet":
            assert data[:4] == data[-4:] == b"PAR1", f
        elif f.suffix in (".json", ".csv"):
            (json.loads if f.suffix == ".json" else str)(data.decode("utf-8"))
        elif f.suffix == ".npy":  # the shared image cache: uint8 pixels, no pickled objects
            assert np.load(f, mmap_mode="r", allow_pickle=False).dtype == np.uint8, f
        elif f.name == "readers.lock":  # the image cache's readers' lock: an empty file
            assert data == b"", f
        elif ".tfevents." in f.name:  # TensorBoard's curves: protobuf records
            assert b"pickle" not in data, f
        else:
            raise AssertionError(f"unexpected file {f}")


def _drop_models(art, data):
    shutil.rmtree(art / "runs" / MODELS[0] / "models")


def _no_save_models(art, data):
    f = art / "runs" / MODELS[0] / "run.json"
    f.write_text(json.dumps({**json.loads(f.read_text()), "models": None}))


def _drop_fold(art, data):
    (art / "runs" / MODELS[1] / "models" / fold_file(1)).unlink()


def _other_model(art, data):
    f = art / "runs" / MODELS[0] / "models" / MODEL_FILE
    f.write_text(f.read_text().replace('"model": "test_resnet"', '"model": "test_byobnet"'))


def _wrong_shape(art, data):
    f = art / "runs" / MODELS[0] / "models" / fold_file(0)
    state = load_file(f)
    state["fc.weight"] = state["fc.weight"][:5]
    save_file(state, f)


def _five_classes(art, data):
    d = art / "runs" / MODELS[0] / "models"
    info = json.loads((d / MODEL_FILE).read_text())
    info["num_classes"] = 5
    (d / MODEL_FILE).write_text(json.dumps(info))
    for k in (0, 1):
        state = load_file(d / fold_file(k))
        state["fc.weight"], state["fc.bias"] = state["fc.weight"][:5], state["fc.bias"][:5]
        save_file(state, d / fold_file(k))


def _changed_run(art, data):
    f = art / "runs" / MODELS[1] / "test.parquet"
    pd.read_parquet(f).to_parquet(f, compression="gzip")  # same rows, other bytes: another hash


def _bad_image(art, data):
    (data / "eval" / "images" / sorted((data / "eval" / "images").iterdir())[3].name).write_bytes(
        b"not an image"
    )


def _pickle(art, data):
    f = art / "ensembles" / "auto" / "model" / "learner" / "arrays.npz"
    if f.is_file():
        f.write_bytes(pickle.dumps({"a0": 1}))
    else:  # a single-run pick keeps no learner: plant one in its model.json's place
        (art / "ensembles" / "auto" / "model" / "model.json").write_bytes(pickle.dumps({}))


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_drop_models, r"run\(s\) test_resnet have no saved models"),
        (_no_save_models, r"run\(s\) test_resnet have no saved models"),
        (_drop_fold, r"fold_1\.safetensors: fold model not found"),
        (_other_model, r"fold_0\.safetensors: (lacks|has unknown) tensor"),
        (_wrong_shape, r"tensor 'fc\.weight' has shape \(5, \d+\)"),
        (_five_classes, r"run 'test_resnet': its models predict 5 classes, ensemble 'auto' was"),
        (_changed_run, r"run\(s\) test_efficientnet changed since the fit; fit again"),
        (_bad_image, r"\.jpg: cannot be decoded as an image"),
        (_pickle, r"(not a numpy archive without pickles|not valid JSON)"),
    ],
    ids=lambda v: getattr(v, "__name__", "")[:20],
)
def test_bad_input_is_one_line_and_nothing_is_written(tmp_path, copy, spoil, message):
    data, art = copy
    if spoil is _bad_image:
        data = tmp_path / "data"
        shutil.copytree(copy[0], data)
    spoil(art, data)
    out = tmp_path / "out" / "sub.csv"
    r = _predict(art, data / "eval", out)
    assert r.exit_code == 1
    line = r.output.strip()
    assert "\n" not in line and line.startswith("error: "), r.output
    assert re.search(message, line), line
    assert not out.exists() and not out.with_suffix(".parquet").exists()


def test_skip_bad_images_leaves_them_out(tmp_path, copy):
    data, art = copy
    data2 = tmp_path / "data"
    shutil.copytree(data, data2)
    _bad_image(art, data2)
    out = tmp_path / "sub.csv"
    r = _predict(art, data2 / "eval", out, "--skip-bad-images")
    assert r.exit_code == 0, r.output
    sub = pd.read_csv(out)
    info = pd.read_csv(data2 / "eval" / "info.csv")
    assert len(sub) == len(info) - 1 and info["ImageID"][3] not in set(sub["ImageID"])
    assert "skipped 1" in r.output


def test_from_python_a_run_without_models_is_refused_by_name(copy):
    from stackkit.contract.errors import StackkitError

    data, art = copy
    _drop_models(art, data)
    ens = load_ensemble(art / "ensembles" / "auto")
    with pytest.raises(StackkitError, match=r"run\(s\) test_resnet have no saved models"):
        ens.predict_proba(data / "eval")


def test_a_plain_folder_and_a_manifest_predict_the_same(tmp_path, fitted):
    data, art, res = fitted
    plain = tmp_path / "plain"
    shutil.copytree(data / "eval" / "images", plain)
    (plain / ".hidden.jpg").write_bytes(b"junk")  # hidden files are not images to predict
    out = tmp_path / "p" / "sub.csv"
    r = _predict(art, plain, out)
    assert r.exit_code == 0, r.output
    ids = res.runset.test_ids  # the eval ImageIDs are the file names
    assert np.abs(_proba(out.with_suffix(".parquet"), ids) - _proba(
        res.path / "test_proba.parquet", ids)).max() < 1e-4  # fmt: skip
    assert list(pd.read_csv(out).columns) == ["sample_id", "label"]
    man = tmp_path / "man"
    shutil.copytree(plain, man / "img")
    pd.DataFrame({"path": [f"img/{i}" for i in ids], "sample_id": [f"s{j}" for j in range(len(ids))]}
                 ).to_csv(man / "test.csv", index=False)  # fmt: skip
    out2 = tmp_path / "m" / "sub.csv"
    assert _predict(art, man, out2).exit_code == 0
    got = pd.read_parquet(out2.with_suffix(".parquet"))
    assert list(got["sample_id"]) == [f"s{j}" for j in range(len(ids))]
    np.testing.assert_allclose(got.filter(like="prob_").to_numpy(np.float64),
                               _proba(out.with_suffix(".parquet"), ids), atol=1e-6)  # fmt: skip


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d.mkdir(), r"no images \(\.jpg, \.jpeg, \.png\), no info\.csv, no test\.csv"),
        (lambda d: None, r"data folder not found"),
    ],
)
def test_a_folder_without_images_is_one_line(tmp_path, fitted, make, message):
    _, art, _ = fitted
    make(tmp_path / "empty")
    r = _predict(art, tmp_path / "empty", tmp_path / "sub.csv")
    assert r.exit_code == 1 and re.search(message, r.output) and "\n" not in r.output.strip()
