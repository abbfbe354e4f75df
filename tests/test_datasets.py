"""stackkit.data.layouts: the mask and manifest layouts, label fixes, and their errors."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from imagedata import make_manifest_data, make_mask_data

from stackkit.contract.errors import StackkitError
from stackkit.data.layouts import MASK_CLASSES, _age_class, load_dataset


@pytest.fixture(scope="module")
def mask_root(tmp_path_factory):
    return make_mask_data(tmp_path_factory.mktemp("mask") / "data", n_people=12, n_test=5)


def test_mask_layout_labels_groups_and_ids(mask_root):
    ds = load_dataset(mask_root)
    assert ds.layout == "mask" and ds.classes == MASK_CLASSES
    assert len(ds.train) == 12 * 7 and ds.train["group"].nunique() == 12
    row = ds.train.set_index("sample_id").loc["000002_female_Asian_22/incorrect_mask"]
    assert row["label"] == 6 * 1 + 3 * 1 + 0 and row["path"].endswith("incorrect_mask.jpeg")
    assert ds.train["label"].nunique() == 18  # junk files (._mask1.jpg, .DS_Store) ignored
    assert list(ds.test["sample_id"]) == list(pd.read_csv(mask_root / "eval/info.csv")["ImageID"])


def test_age_boundary_moves_the_oldest_class(mask_root):
    ages = np.array([18, 29, 30, 57, 58, 59, 60, 61])
    assert _age_class(ages, 60).tolist() == [0, 0, 1, 1, 1, 1, 2, 2]
    assert _age_class(ages, 58).tolist() == [0, 0, 1, 1, 2, 2, 2, 2]
    assert load_dataset(mask_root, age_boundary=58).info["age_boundary"] == 58


def test_label_fix_is_applied_and_recorded(mask_root, tmp_path):
    fix = tmp_path / "fix.csv"
    fix.write_text(
        "target,field,value\n000001_male_Asian_22,gender,female\n"
        "000003_male_Asian_45/normal,mask,incorrect\n"
    )
    ds = load_dataset(mask_root, label_fix=fix)
    tr = ds.train.set_index("sample_id")["label"]
    assert tr["000001_male_Asian_22/mask1"] == 3  # wear, female, <30
    assert tr["000003_male_Asian_45/normal"] == 6 + 1  # incorrect, male, 30-59
    assert ds.label_fix["changed"] == 8 and ds.meta()["label_fix"]["sha256"]


def test_manifest_layout(tmp_path):
    root = make_manifest_data(tmp_path / "m", n_train=9, n_test=4)
    ds = load_dataset(root)
    assert ds.layout == "manifest" and ds.classes == ["cat", "dog", "fox"]
    assert ds.train["group"].nunique() == 5 and list(ds.test["sample_id"]) == [
        f"test{j}" for j in range(4)
    ]


def _drop_class(root):
    df = pd.read_csv(root / "train.csv")
    df[df["label"] != "dog"].to_csv(root / "train.csv", index=False)
    df.assign(label=df["label"].map({"cat": 0, "dog": 2, "fox": 2})).to_csv(
        root / "train.csv", index=False
    )


def _bad_mask(case, root):
    if case == "no_folder":
        shutil.rmtree(root)
    elif case == "no_info":
        (root / "eval/info.csv").unlink()
    elif case == "no_person":
        shutil.rmtree(root / "train/images/000004_female_Asian_45")
    elif case == "no_normal":
        (root / "train/images/000004_female_Asian_45/normal.png").unlink()
    elif case == "no_test_image":
        next((root / "eval/images").iterdir()).unlink()
    elif case == "empty_class":
        df = pd.read_csv(root / "train/train.csv")
        df[df["age"] != 61].to_csv(root / "train/train.csv", index=False)


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_folder", "data folder not found"),
        ("no_info", "info.csv: not found"),
        ("no_person", "image folder"),
        ("no_normal", "no image for normal"),
        ("no_test_image", "not found in"),
        ("empty_class", "have no samples"),
    ],
)
def test_mask_errors(tmp_path, case, message):
    root = make_mask_data(tmp_path / "d", n_people=6, n_test=2)
    _bad_mask(case, root)
    with pytest.raises(StackkitError, match=message):
        load_dataset(root)


def test_manifest_int_labels_with_a_missing_class(tmp_path):
    root = make_manifest_data(tmp_path / "m", n_train=6, n_test=2)
    _drop_class(root)
    with pytest.raises(StackkitError, match=r"train.csv: class\(es\) '1' have no samples"):
        load_dataset(root)


def test_no_layout(tmp_path):
    with pytest.raises(StackkitError, match=r"neither .* nor"):
        load_dataset(tmp_path)
