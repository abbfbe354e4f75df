"""Tiny generated image folders for tests: the mask layout and the manifest layout.

Images are 24x32 (w x h) noise with a class-dependent tint, so a model can learn something in
one epoch. File extensions vary (jpg, jpeg, png) and each person folder carries the junk a real
download has (``._mask1.jpg``, ``.DS_Store``).

    >>> root = make_mask_data(tmp_path / "data", n_people=12, n_test=10)
    >>> root = make_manifest_data(tmp_path / "m", n_train=30, n_test=6)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

SIZE = (24, 32)  # (w, h): portrait like the real 384x512, small enough for CPU tests
STEMS = [f"mask{i}" for i in range(1, 6)] + ["incorrect_mask", "normal"]
EXTS = {"mask1": ".jpg", "incorrect_mask": ".jpeg", "normal": ".png"}
AGES = (22, 45, 61)  # one per age class at the default boundary of 60


def _image(rng: np.random.Generator, tint: int, size=SIZE) -> Image.Image:
    x = rng.integers(0, 96, size=(size[1], size[0], 3))
    x[..., tint % 3] += 40 + 20 * (tint // 3 % 5)
    return Image.fromarray(x.clip(0, 255).astype(np.uint8))


def make_mask_data(
    root: Path, n_people: int = 12, n_test: int = 10, seed: int = 0, size=SIZE
) -> Path:
    """``n_people`` (a multiple of 6 covers every gender x age class) and ``n_test`` eval images."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    rows = []
    for i in range(n_people):
        gender = ("male", "female")[i % 2]
        age = AGES[(i // 2) % 3]
        folder = f"{i + 1:06d}_{gender}_Asian_{age}"
        rows.append(
            {"id": f"{i + 1:06d}", "gender": gender, "race": "Asian", "age": age, "path": folder}
        )
        d = root / "train" / "images" / folder
        d.mkdir(parents=True)
        for m, stem in enumerate(STEMS):
            mask = 0 if m < 5 else m - 4
            tint = 6 * mask + 3 * (i % 2) + (i // 2) % 3
            _image(rng, tint, size).save(d / f"{stem}{EXTS.get(stem, '.jpg')}")
        (d / "._mask1.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
        (d / ".DS_Store").write_bytes(b"junk")
    pd.DataFrame(rows).to_csv(root / "train" / "train.csv", index=False)
    ev = root / "eval" / "images"
    ev.mkdir(parents=True)
    ids = []
    for j in range(n_test):
        name = f"{j:040x}.jpg"
        _image(rng, j, size).save(ev / name)
        ids.append(name)
    pd.DataFrame({"ImageID": ids, "ans": 0}).to_csv(root / "eval" / "info.csv", index=False)
    return root


def make_manifest_data(
    root: Path,
    n_train: int = 30,
    n_test: int = 6,
    classes=("cat", "dog", "fox"),
    seed: int = 0,
    factors: dict[str, dict[str, str]] | None = None,
) -> Path:
    """``DATA/train.csv`` (path,label,group) and ``DATA/test.csv`` (path,sample_id).
    ``factors``: extra train.csv columns, ``{column: {class: value}}``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(n_train):
        c = i % len(classes)
        _image(rng, c).save(root / "img" / f"tr{i:03d}.png")
        rows.append({"path": f"img/tr{i:03d}.png", "label": classes[c], "group": f"g{i // 2}"})
        rows[-1].update({col: by_class[classes[c]] for col, by_class in (factors or {}).items()})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    test = []
    for j in range(n_test):
        _image(rng, j).save(root / "img" / f"te{j:03d}.jpg")
        test.append({"path": f"img/te{j:03d}.jpg", "sample_id": f"test{j}"})
    pd.DataFrame(test).to_csv(root / "test.csv", index=False)
    return root
