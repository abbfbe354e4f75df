"""Built-in demo data in the mask competition's exact layout, drawn with Pillow.

No real face photo can ship, so ``make_demo_data`` draws cartoon faces whose three label parts
are learnable but not trivially so, with the real set's imbalance:

- mask (5 wear : 1 incorrect : 1 none per person, by construction): a mask polygon over nose and
  mouth (wear), pulled down under the nose or onto the chin (incorrect: sometimes only the nose tip
  shows), or absent; mask colours vary per image, a few are skin-like.
- gender (60% female): hair length, continuous and overlapping between genders (long-haired men,
  short-haired women), plus weak cues the mask hides (lipstick, stubble, brow weight).
- age (<30 47%, 30-59 45%, 60+ 8%; ages skewed young): wrinkle lines and grey hair whose strength
  grows continuously with the integer age plus per-person noise, so 29 vs 30 and 58 vs 60 are
  genuinely hard, as in the real set.

Every image gets its own pose (offset, rotation, scale), lighting (gain, colour cast, directional
light), background clutter, pixel noise and JPEG quality. Each person's attributes and each image
depend only on (seed, split, person, image), so the output is deterministic by seed.

Layout written (what the competition ships, plus ``eval/answers.csv`` for scoring the demo)::

    DIR/train/train.csv                 id,gender,race,age,path
    DIR/train/images/<path>/{mask1..mask5,incorrect_mask,normal}.jpg
    DIR/eval/info.csv                   ImageID,ans   (ans = 0 placeholders)
    DIR/eval/images/<ImageID>           a shuffled mix of the eval people's images
    DIR/eval/answers.csv                ImageID,ans   (the held-out truth)

    >>> make_demo_data("data/demo", people=200, eval_people=200)   # a few seconds
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from stackkit.contract.errors import StackkitError

log = logging.getLogger(__name__)

# Defaults, with why. 200 train people = 1,400 images. Measured on this project's 2 shared CPU
# cores, a 4-block CNN at 48x64 costs ~10 CPU-ms per image per epoch, so one 5-fold run of ~8
# epochs over 1,120 training images per fold is ~2 minutes: a demo with 3 runs plus stacking fits
# in 10 minutes. 400 people roughly doubles that for a better single model (see the report).
# 200 eval people (1,400 test images): scoring costs only inference, and fewer leave the rare
# classes (men 60+: ~3% of people) with one or two test images each, too noisy for macro-F1.
DEFAULT_PEOPLE = 200
DEFAULT_EVAL_PEOPLE = 200
DEFAULT_SIZE = (48, 64)  # width x height: the 3:4 portrait aspect of the real 384x512
SUPERSAMPLE = 3  # draw at 3x and downsample: anti-aliased edges, cheap enough

IMAGE_NAMES = ("mask1", "mask2", "mask3", "mask4", "mask5", "incorrect_mask", "normal")
IMAGE_MASK = (0, 0, 0, 0, 0, 1, 2)  # mask part of the label: 0 wear, 1 incorrect, 2 none
TRAIN_COLUMNS = ["id", "gender", "race", "age", "path"]
FEMALE_SHARE = 0.6  # real set: 1,658 of 2,700 people
AGE_GROUP_SHARE = (0.47, 0.45, 0.08)  # <30, 30-59, 60+ (real set: 47%, 45%, 7%)

_SPLIT_KEY = {"train": 1, "eval": 2}
_MASK_COLOURS = [
    (236, 236, 236),
    (168, 198, 228),
    (32, 32, 38),
    (125, 125, 130),
    (42, 52, 92),
    (228, 178, 190),
    (96, 140, 110),
    (205, 185, 160),
]  # fmt: skip  (white, light blue, black, grey, navy, pink, green, beige: skin-like, hard)


@dataclass(frozen=True)
class DemoData:
    """What :func:`make_demo_data` wrote."""

    root: Path
    n_train_people: int
    n_train_images: int
    n_eval_people: int
    n_eval_images: int
    size: tuple[int, int]
    seed: int


def label_of(mask: int, gender: int, age_group: int) -> int:
    """The competition's class index: 6*mask + 3*gender + age (gender 0 male, 1 female)."""
    return 6 * mask + 3 * gender + age_group


def age_group(age: int) -> int:
    return 0 if age < 30 else 1 if age < 60 else 2


def parse_size(text: str) -> tuple[int, int]:
    """``"64x48"`` (HEIGHTxWIDTH, as every size in stackkit and the runner's ``--img-size``) ->
    ``(48, 64)`` (width, height, as PIL takes it)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise StackkitError(
            f"--size must look like HEIGHTxWIDTH (e.g. 64x48), got {text!r}"
        ) from None
    if w < 16 or h < 16:
        raise StackkitError(f"--size {text!r} is too small: both sides must be at least 16 pixels")
    return w, h


# --------------------------------------------------------------------------------------------
# people


def _exact_shares(rng: np.random.Generator, n: int, shares) -> np.ndarray:
    """n category codes with exactly round(share * n) of each (largest remainder), shuffled."""
    raw = np.asarray(shares, float) * n
    counts = np.floor(raw).astype(int)
    counts[np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]] += 1
    codes = np.repeat(np.arange(len(shares)), counts)
    rng.shuffle(codes)
    return codes


def _age(rng: np.random.Generator, group: int) -> int:
    if group == 0:  # 18-29, skewed young as in the real set
        return int(18 + min(11, rng.geometric(0.17) - 1))
    if group == 1:  # 30-59, flat with a bump in the 50s (hard against 60)
        return int(rng.integers(50, 60) if rng.random() < 0.35 else rng.integers(30, 60))
    return int(60 if rng.random() < 0.6 else rng.integers(61, 76))


def _people(seed: int, split: str, n: int, first_id: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng([seed, _SPLIT_KEY[split], 0])
    gender = 1 - _exact_shares(rng, n, (FEMALE_SHARE, 1 - FEMALE_SHARE))  # 1 female, 0 male
    groups = _exact_shares(rng, n, AGE_GROUP_SHARE)
    ages = [_age(rng, int(g)) for g in groups]
    ids, next_id, paths = [], first_id, set()
    for i in range(n):
        gname = "female" if gender[i] else "male"
        pid = f"{next_id:06d}"
        if ids and rng.random() < 0.01:  # the real set reuses a few ids across folders
            pid = ids[int(rng.integers(len(ids)))]
        if f"{pid}_{gname}_Asian_{ages[i]}" in paths:
            pid = f"{next_id:06d}"
        next_id += int(rng.integers(1, 4))  # real ids have gaps
        ids.append(pid)
        paths.add(f"{pid}_{gname}_Asian_{ages[i]}")
    return pd.DataFrame(
        {
            "id": ids,
            "gender": ["female" if g else "male" for g in gender],
            "race": "Asian",
            "age": ages,
            "path": [
                f"{p}_{'female' if g else 'male'}_Asian_{a}" for p, g, a in zip(ids, gender, ages)
            ],
        }
    )


def _traits(rng: np.random.Generator, female: bool, age: int) -> dict:
    """Per-person appearance: fixed across that person's 7 images."""
    hair_len = float(np.clip(rng.normal(0.72, 0.22) if female else rng.normal(0.26, 0.18), 0, 1))
    wrinkle = float(np.clip((age - 24) / 40 + rng.normal(0, 0.1), 0, 1))
    grey = float(np.clip((age - 38) / 28 + rng.normal(0, 0.14), 0, 1))
    skin = np.array([rng.uniform(200, 245), rng.uniform(160, 205), rng.uniform(125, 170)])
    hair = np.array(
        [(22, 20, 20), (45, 32, 25), (80, 55, 35), (110, 80, 50)][
            rng.choice(4, p=[0.5, 0.3, 0.15, 0.05])
        ],
        float,
    )
    hair = hair * (1 - grey) + np.array([200, 200, 205]) * grey
    return {
        "female": female,
        "hair_len": hair_len,
        "fringe": float(rng.uniform(0.35, 0.7)),
        "wrinkle": wrinkle,
        "skin": skin,
        "hair": hair,
        "face_w": float(rng.uniform(0.9, 1.1) * (0.95 if female else 1.03)),
        "face_h": float(rng.uniform(0.92, 1.08)),
        "brow": float(rng.uniform(0.8, 1.3) * (0.85 if female else 1.15)),
        "lipstick": bool(female and rng.random() < 0.45),
        "stubble": bool(not female and rng.random() < 0.3),
        "glasses": bool(rng.random() < 0.15),
        "shirt": tuple(int(v) for v in rng.integers(20, 235, 3)),
    }


# --------------------------------------------------------------------------------------------
# drawing


def _col(c, shift: float = 0.0) -> tuple[int, int, int]:
    return tuple(min(255, max(0, int(v + shift))) for v in c)


def _background(rng: np.random.Generator, cw: int, ch: int):
    from PIL import Image, ImageDraw

    base = rng.integers(60, 230, 3)
    img = Image.new("RGB", (cw, ch), _col(base))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
        c = _col(base + rng.normal(0, 45, 3))
        x0, y0 = rng.uniform(-0.2, 1.0) * cw, rng.uniform(-0.2, 1.0) * ch
        x1, y1 = x0 + rng.uniform(0.1, 0.7) * cw, y0 + rng.uniform(0.1, 0.7) * ch
        kind = rng.integers(3)
        if kind == 0:
            d.rectangle((x0, y0, x1, y1), fill=c)
        elif kind == 1:
            d.ellipse((x0, y0, x1, y1), fill=c)
        else:
            d.line((x0, y0, x1, y1), fill=c, width=int(rng.integers(2, 3 * SUPERSAMPLE + 2)))
    return img


def _face_layer(rng: np.random.Generator, t: dict, mask: int, cw: int, ch: int):
    """The person on a transparent layer; returns (layer, face centre)."""
    from PIL import Image, ImageDraw

    layer = Image.new("RGBA", (cw, ch), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    s = float(rng.uniform(0.85, 1.12))
    cx = cw * 0.5 + rng.normal(0, 0.05) * cw
    cy = ch * 0.44 + rng.normal(0, 0.04) * ch
    rx, ry = 0.27 * cw * s * t["face_w"], 0.35 * cw * s * t["face_h"]

    def P(fx, fy):  # face-local coordinates: the face ellipse spans [-1, 1] x [-1, 1]
        return (cx + fx * rx, cy + fy * ry)

    def box(fx0, fy0, fx1, fy1):
        (x0, y0), (x1, y1) = P(fx0, fy0), P(fx1, fy1)
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    skin, hair, lw = _col(t["skin"]), _col(t["hair"]), max(1, SUPERSAMPLE)
    # long hair behind the head: length is the (overlapping) gender cue
    if t["hair_len"] > 0.35:
        bottom = 0.4 + 1.6 * (t["hair_len"] - 0.35)
        d.rounded_rectangle(box(-1.22, -1.1, 1.22, bottom), radius=int(0.6 * rx), fill=hair)
    # shoulders, neck, ears, face
    d.rounded_rectangle(box(-2.2, 1.35, 2.2, 4.0), radius=int(0.8 * rx), fill=t["shirt"])
    d.rectangle(box(-0.38, 0.6, 0.38, 1.5), fill=_col(t["skin"], -18))
    d.ellipse(box(-1.12, -0.22, -0.86, 0.22), fill=_col(t["skin"], -10))
    d.ellipse(box(0.86, -0.22, 1.12, 0.22), fill=_col(t["skin"], -10))
    d.ellipse(box(-1, -1, 1, 1), fill=skin)
    # hair on top; short hair hugs the skull, longer hair comes down the sides
    d.chord(box(-1.08, -1.15, 1.08, 0.2 + t["hair_len"] * 0.6), 180, 360, fill=hair)
    d.rectangle(box(-1.0, -0.62, 1.0, -t["fringe"]), fill=hair)
    if t["hair_len"] > 0.55:
        d.rectangle(box(-1.15, -0.5, -0.85, 0.2 + t["hair_len"]), fill=hair)
        d.rectangle(box(0.85, -0.5, 1.15, 0.2 + t["hair_len"]), fill=hair)
    # age: wrinkles whose number and contrast grow continuously with age
    w = t["wrinkle"]
    if w > 0.05:
        wc = _col(t["skin"], -25 - 70 * w)
        n_lines = 1 + int(w * 3.5)
        top = -t["fringe"] + 0.06
        for k in range(n_lines):
            y = top + k * 0.07
            if y < -0.22:
                d.arc(box(-0.5, y, 0.5, y + 0.18), 200, 340, fill=wc, width=lw)
        if w > 0.3:  # crow's feet and nasolabial folds
            for sx in (-1, 1):
                d.line((P(sx * 0.62, -0.12), P(sx * 0.78, -0.2)), fill=wc, width=lw)
                d.line((P(sx * 0.62, -0.06), P(sx * 0.78, -0.02)), fill=wc, width=lw)
                d.line((P(sx * 0.22, 0.25), P(sx * 0.36, 0.55)), fill=wc, width=lw)
        if w > 0.55:  # under-eye bags
            for sx in (-1, 1):
                d.arc(box(sx * 0.4 - 0.2, -0.12, sx * 0.4 + 0.2, 0.06), 20, 160, fill=wc, width=lw)
    # eyes and brows (brow weight: a weak gender cue)
    gx, gy = rng.normal(0, 0.03, 2)
    for sx in (-1, 1):
        d.ellipse(box(sx * 0.4 - 0.16, -0.19, sx * 0.4 + 0.16, -0.05), fill=(245, 245, 245))
        d.ellipse(
            box(sx * 0.4 - 0.07 + gx, -0.17 + gy, sx * 0.4 + 0.07 + gx, -0.07 + gy),
            fill=(35, 25, 20),
        )
        d.line(
            (P(sx * 0.22, -0.3), P(sx * 0.58, -0.33)),
            fill=_col(t["hair"], -20),
            width=int(lw * t["brow"] * 1.6),
        )
    if t["glasses"]:
        for sx in (-1, 1):
            d.ellipse(
                box(sx * 0.4 - 0.24, -0.28, sx * 0.4 + 0.24, 0.02), outline=(30, 30, 30), width=lw
            )
    # nose, mouth, stubble
    d.line((P(0, -0.08), P(0.06, 0.26), P(-0.05, 0.28)), fill=_col(t["skin"], -45), width=lw)
    if t["stubble"]:
        d.chord(box(-0.8, -0.1, 0.8, 1.0), 20, 160, fill=_col(t["skin"], -40))
    lip = (185, 45, 60) if t["lipstick"] else _col(t["skin"], -60)
    smile = rng.uniform(0, 0.12)
    d.arc(box(-0.32, 0.36 - smile, 0.32, 0.56 + smile), 15, 165, fill=lip, width=int(lw * 1.5))
    if mask < 2:
        _draw_mask(rng, d, P, mask, lw)
    return layer, (cx, cy)


def _draw_mask(rng, d, P, mask: int, lw: int) -> None:
    colour = np.array(_MASK_COLOURS[int(rng.integers(len(_MASK_COLOURS)))], float)
    colour = _col(colour + rng.normal(0, 12, 3))
    if mask == 0:  # worn: top edge on the nose bridge, small jitter
        off = rng.uniform(-0.04, 0.1)
    elif rng.random() < 0.6:  # incorrect, under the nose: sometimes only the nose tip shows
        off = rng.uniform(0.22, 0.42)
    else:  # incorrect, on the chin: mouth visible
        off = rng.uniform(0.5, 0.72)
    top = -0.06 + off
    pts = [(-0.97, top + 0.1), (-0.35, top - 0.04), (0, top - 0.07), (0.35, top - 0.04),
           (0.97, top + 0.1), (0.88, 0.75 + off * 0.5), (0.35, 1.06 + off * 0.4),
           (-0.35, 1.06 + off * 0.4), (-0.88, 0.75 + off * 0.5)]  # fmt: skip
    d.polygon([P(*p) for p in pts], fill=colour)
    pleat = _col(colour, -30 if sum(colour) > 200 else 30)
    for k in range(int(rng.integers(0, 4))):
        y = top + 0.18 + k * 0.18
        d.line((P(-0.8, y), P(0.8, y)), fill=pleat, width=lw)
    for sx in (-1, 1):  # ear loops
        d.line((P(sx * 0.97, top + 0.1), P(sx * 1.05, -0.05)), fill=pleat, width=lw)


@functools.lru_cache(maxsize=4)
def _grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates scaled to [-0.5, 0.5), for the directional light."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return xx / w - 0.5, yy / h - 0.5


def _render(seed: int, split: str, person: int, image: int, t: dict, mask: int, size):
    from PIL import Image, ImageFilter

    rng = np.random.default_rng([seed, _SPLIT_KEY[split], 1 + person, image])
    w, h = size
    cw, ch = w * SUPERSAMPLE, h * SUPERSAMPLE
    img = _background(rng, cw, ch)
    layer, centre = _face_layer(rng, t, mask, cw, ch)
    layer = layer.rotate(float(rng.normal(0, 7)), resample=Image.NEAREST, center=centre)
    img.paste(layer, (0, 0), layer)
    img = img.resize((w, h), Image.BILINEAR, reducing_gap=2.0)
    if rng.random() < 0.2:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    # lighting: gain, colour cast, a directional gradient; then sensor noise
    x = np.asarray(img, dtype=np.float32)
    ang = rng.uniform(0, 2 * math.pi)
    xx, yy = _grid(w, h)
    grad = (np.cos(ang) * xx + np.sin(ang) * yy) * rng.uniform(0, 0.7)
    gain = rng.uniform(0.65, 1.25) * rng.uniform(0.9, 1.1, 3)
    x = x * gain[None, None, :] * (1 + grad)[:, :, None]
    x += rng.normal(0, rng.uniform(2, 10), x.shape)
    img = Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))
    return img, int(rng.integers(70, 96))  # with its JPEG quality


# --------------------------------------------------------------------------------------------
# the dataset


def make_demo_data(
    out: str | os.PathLike,
    people: int = DEFAULT_PEOPLE,
    eval_people: int = DEFAULT_EVAL_PEOPLE,
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
) -> DemoData:
    """Write a small mask-layout dataset under ``out`` (see the module docstring)."""
    if people < 1 or eval_people < 1:
        raise StackkitError(
            f"--people and --eval-people must be at least 1, got {people}, {eval_people}"
        )
    root = Path(out)
    for sub in ("train", "eval"):
        if (root / sub).exists() and any((root / sub).iterdir()):
            raise StackkitError(
                f"{root / sub}: already exists and is not empty; choose another --out"
            )
    size = (int(size[0]), int(size[1]))

    train = _people(seed, "train", people)
    img_dir = root / "train" / "images"
    bar = tqdm(total=people + eval_people, desc="demo people", unit="person", disable=None)
    for i, row in enumerate(train.itertuples()):
        t = _traits(
            np.random.default_rng([seed, _SPLIT_KEY["train"], 1 + i, 99]),
            row.gender == "female",
            row.age,
        )
        folder = img_dir / row.path
        folder.mkdir(parents=True, exist_ok=True)
        for j, (stem, mask) in enumerate(zip(IMAGE_NAMES, IMAGE_MASK)):
            img, quality = _render(seed, "train", i, j, t, mask, size)
            img.save(folder / f"{stem}.jpg", format="JPEG", quality=quality)
        bar.update()
    train.to_csv(root / "train" / "train.csv", index=False)

    ev = _people(seed, "eval", eval_people, first_id=900001)
    eval_dir = root / "eval" / "images"
    eval_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, row in enumerate(ev.itertuples()):
        female = row.gender == "female"
        t = _traits(np.random.default_rng([seed, _SPLIT_KEY["eval"], 1 + i, 99]), female, row.age)
        for j, mask in enumerate(IMAGE_MASK):
            image_id = hashlib.sha1(f"stackkit-demo/{seed}/{i}/{j}".encode()).hexdigest() + ".jpg"
            img, quality = _render(seed, "eval", i, j, t, mask, size)
            img.save(eval_dir / image_id, format="JPEG", quality=quality)
            rows.append((image_id, label_of(mask, int(female), age_group(row.age))))
        bar.update()
    bar.close()
    answers = pd.DataFrame(rows, columns=["ImageID", "ans"])
    answers = answers.iloc[np.random.default_rng([seed, 2, 0, 1]).permutation(len(answers))]
    answers.to_csv(root / "eval" / "answers.csv", index=False)
    answers.assign(ans=0).to_csv(root / "eval" / "info.csv", index=False)

    log.info(
        "wrote %d train people (%d images) and %d eval images at %dx%d (HxW) under %s",
        people, 7 * people, len(answers), size[1], size[0], root,
    )  # fmt: skip
    return DemoData(root, people, 7 * people, eval_people, len(answers), size, seed)
