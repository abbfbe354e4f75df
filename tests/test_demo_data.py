"""stackkit.data.demo and `stackkit demo-data`: exact layout, balance, determinism, learnability."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from stackkit.cli import app
from stackkit.contract.errors import StackkitError
from stackkit.data.demo import IMAGE_NAMES, make_demo_data, parse_size

PEOPLE, EVAL_PEOPLE = 50, 10


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "data"
    make_demo_data(root, people=PEOPLE, eval_people=EVAL_PEOPLE, seed=3)
    return root


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_train_layout_is_exact(demo):
    assert sorted(p.name for p in demo.iterdir()) == ["eval", "train"]
    assert sorted(p.name for p in (demo / "train").iterdir()) == ["images", "train.csv"]
    train = pd.read_csv(demo / "train" / "train.csv", dtype={"id": str})
    assert train.columns.tolist() == ["id", "gender", "race", "age", "path"]
    assert len(train) == PEOPLE and train["path"].is_unique
    assert set(train["gender"]) == {"male", "female"} and set(train["race"]) == {"Asian"}
    assert pd.api.types.is_integer_dtype(train["age"])
    assert train["id"].str.fullmatch(r"\d{6}").all()
    expected = train["id"] + "_" + train["gender"] + "_Asian_" + train["age"].astype(str)
    assert (train["path"] == expected).all()
    folders = sorted(p.name for p in (demo / "train" / "images").iterdir())
    assert folders == sorted(train["path"])
    for folder in folders:
        files = sorted(p.name for p in (demo / "train" / "images" / folder).iterdir())
        assert files == sorted(f"{n}.jpg" for n in IMAGE_NAMES)
    with Image.open(demo / "train" / "images" / folders[0] / "mask1.jpg") as im:
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (48, 64))


def test_eval_layout_and_answers(demo):
    assert sorted(p.name for p in (demo / "eval").iterdir()) == [
        "answers.csv",
        "images",
        "info.csv",
    ]
    info = pd.read_csv(demo / "eval" / "info.csv")
    answers = pd.read_csv(demo / "eval" / "answers.csv")
    assert info.columns.tolist() == answers.columns.tolist() == ["ImageID", "ans"]
    assert len(info) == 7 * EVAL_PEOPLE and (info["ans"] == 0).all()
    assert info["ImageID"].tolist() == answers["ImageID"].tolist()  # same order
    assert info["ImageID"].str.fullmatch(r"[0-9a-f]{40}\.jpg").all() and info["ImageID"].is_unique
    assert sorted(p.name for p in (demo / "eval" / "images").iterdir()) == sorted(info["ImageID"])
    ans = answers["ans"].to_numpy()
    assert ((ans >= 0) & (ans < 18)).all()
    mask = np.bincount(ans // 6, minlength=3)
    assert mask.tolist() == [5 * EVAL_PEOPLE, EVAL_PEOPLE, EVAL_PEOPLE]
    # shuffled: not grouped by person
    assert (np.diff(ans // 6) != 0).sum() > EVAL_PEOPLE


def test_class_balance(tmp_path):
    from stackkit.data.demo import _people, age_group

    people = _people(0, "train", 400)
    groups = np.array([age_group(a) for a in people["age"]])
    assert np.bincount(groups).tolist() == [188, 180, 32]  # 47% / 45% / 8%, exactly
    assert (people["gender"] == "female").sum() == 240  # 60%
    assert people["age"].between(18, 75).all()
    assert people.loc[groups == 0, "age"].median() <= 22  # skewed young
    # 5 wear : 1 incorrect : 1 none per person holds by construction (IMAGE_NAMES)
    assert [n.startswith("mask") for n in IMAGE_NAMES].count(True) == 5


def test_deterministic_by_seed(tmp_path, demo):
    make_demo_data(tmp_path / "a", people=PEOPLE, eval_people=EVAL_PEOPLE, seed=3)
    assert digest(tmp_path / "a") == digest(demo)
    make_demo_data(tmp_path / "b", people=PEOPLE, eval_people=EVAL_PEOPLE, seed=4)
    other = digest(tmp_path / "b")
    assert other != digest(demo)


def test_a_person_does_not_depend_on_the_number_of_people(tmp_path, demo):
    make_demo_data(tmp_path / "a", people=PEOPLE, eval_people=3, seed=3)
    a = digest(tmp_path / "a" / "train")
    assert a == digest(demo / "train")


def test_real_layout_reader_parses_the_demo_unchanged(demo):
    datasets = pytest.importorskip("stackkit.data.layouts")
    ds = datasets.load_dataset(demo)
    assert ds.layout == "mask"
    assert len(ds.train) == 7 * PEOPLE and len(ds.test) == 7 * EVAL_PEOPLE
    train = pd.read_csv(demo / "train" / "train.csv", dtype={"id": str}).set_index("path")
    first = ds.train.iloc[0]
    person = train.loc[first["group"]]
    age = 0 if person["age"] < 30 else 1 if person["age"] < 60 else 2
    assert first["label"] == 3 * (person["gender"] == "female") + age  # mask1: worn
    assert (
        ds.test["sample_id"].tolist() == pd.read_csv(demo / "eval" / "info.csv")["ImageID"].tolist()
    )


def test_refuses_a_non_empty_folder(demo):
    with pytest.raises(StackkitError, match="already exists and is not empty"):
        make_demo_data(demo, people=1, eval_people=1)


@pytest.mark.parametrize(("text", "size"), [("64x48", (48, 64)), ("128X96", (96, 128))])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["48", "axb", "8x8", "64x48x3"])
def test_parse_size_rejects(text):
    with pytest.raises(StackkitError, match="--size"):
        parse_size(text)


def test_cli(tmp_path):
    out = tmp_path / "d"
    args = ["demo-data", "--out", str(out), "--people", "3", "--eval-people", "2"]
    res = CliRunner().invoke(app, [*args, "--size", "32x24", "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert (
        "wrote 21 train images (3 people) and 14 eval images (2 people) at 32x24 (HxW)"
        in res.stdout
    )
    with Image.open(next((out / "eval" / "images").iterdir())) as im:
        assert im.size == (24, 32)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1 and res.stderr.startswith("error: ") and "not empty" in res.stderr


def test_mask_state_is_learnable_from_pixels(demo):
    """A linear model on 12x16 pixels tells masks apart well above chance (not a full check:
    the measured CNN and logistic-regression numbers are in the module's design notes)."""
    from sklearn.linear_model import LogisticRegression

    def load(paths):
        return np.stack(
            [np.asarray(Image.open(p).convert("L").resize((12, 16))).ravel() / 255 for p in paths]
        )

    train = pd.read_csv(demo / "train" / "train.csv")
    paths, y = [], []
    for folder in train["path"]:
        for n in IMAGE_NAMES:
            paths.append(demo / "train" / "images" / folder / f"{n}.jpg")
            y.append(n != "normal")  # masked (worn or not) vs none
    answers = pd.read_csv(demo / "eval" / "answers.csv")
    x_test = load(demo / "eval" / "images" / i for i in answers["ImageID"])
    y_test = answers["ans"].to_numpy() // 6 != 2
    clf = LogisticRegression(C=0.1, max_iter=500, class_weight="balanced").fit(load(paths), y)
    pred = clf.predict(x_test)
    recall = [np.mean(pred[y_test == v] == v) for v in (True, False)]
    assert np.mean(recall) > 0.6  # chance: 0.5
