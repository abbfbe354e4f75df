"""Where the images are and what their labels are: two folder layouts behind one interface.

Only listing and labels live here (no torch, no decoding); ``base_models`` decodes the images.

* ``mask``: the mask competition's folder: ``DATA/train/train.csv`` (``id,gender,race,age,path``),
  ``DATA/train/images/<path>/{mask1..mask5,incorrect_mask,normal}.<jpg|jpeg|png>``,
  ``DATA/eval/info.csv`` (``ImageID,ans``) and ``DATA/eval/images/<ImageID>``. Label =
  6*mask + 3*gender + age (mask 0 wear, 1 incorrect, 2 normal; gender 0 male, 1 female; age 0
  under 30, 1 from 30 to ``age_boundary``-1, 2 from ``age_boundary``). Group = the person's folder.
* ``manifest``: any labelled image set: ``DATA/train.csv`` (``path,label[,group]``) and
  ``DATA/test.csv`` (``path[,sample_id]``), paths relative to DATA. Labels are names or integers;
  classes are the sorted names (integers ``0..max`` when every label is an integer). Optional
  factor columns (``factors=["label_mask", "label_gender"]``, ``stackkit folds --factors``)
  declare each class a tuple of factor values (:mod:`stackkit.data.factors`), recorded in
  ``Dataset.info["factors"]`` and so in folds.parquet's ``data.factors``.

    >>> ds = load_dataset("data/mask", age_boundary=58, label_fix="fixes.csv")
    >>> ds.train.head()   # sample_id, group, label, path (absolute)
    >>> folds = folds_for_data("data/mask", artifacts="artifacts", n_folds=5)

A label-fix CSV has the columns ``target,field,value``: ``target`` a person's folder
(``000001_female_Asian_45``) or one image (``000001_female_Asian_45/mask1``), ``field`` one of
``gender`` (male/female), ``age`` (an integer) or ``mask`` (wear/incorrect/normal; images only).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from stackkit.contract import schema
from stackkit.contract.errors import StackkitError
from stackkit.data.factors import declare_factors, parse_columns
from stackkit.data.folds import make_folds

log = logging.getLogger(__name__)

MASK_CLASSES = [
    f"{m}_{g}_{a}"
    for m in ("wear", "incorrect", "none")
    for g in ("male", "female")
    for a in ("<30", "30-59", "60+")
]
AGE_BOUNDARY = 60  # the competition's own rule; top teams moved it to 58
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
MASK_STEMS = {f"mask{i}": 0 for i in range(1, 6)} | {"incorrect_mask": 1, "normal": 2}
MASK_NAMES = {"wear": 0, "incorrect": 1, "normal": 2}
GENDERS = {"male": 0, "female": 1}


@dataclass
class Dataset:
    """``train``: sample_id, group, label, path; ``test``: sample_id, path (absolute paths)."""

    layout: str
    root: Path
    classes: list[str]
    train: pd.DataFrame
    test: pd.DataFrame
    label_fix: dict | None = None
    info: dict = field(default_factory=dict)

    def meta(self) -> dict:
        """What folds.parquet and run.json record about the data."""
        return {"layout": self.layout, "root": str(self.root), **self.info}


def load_dataset(
    data: str | Path,
    age_boundary: int = AGE_BOUNDARY,
    label_fix: str | Path | None = None,
    factors: str | list[str] | None = None,
) -> Dataset:
    """Read DATA in whichever layout it has (``mask`` is recognised by ``train/train.csv``);
    ``factors``: a manifest's factor columns (``"label_mask,label_gender"`` or a list)."""
    root = Path(data).expanduser().resolve()
    if not root.is_dir():
        raise StackkitError(f"{root}: data folder not found")
    columns = parse_columns(factors)
    if (root / "train" / "train.csv").is_file():
        if columns is not None:
            raise StackkitError(
                "--factors applies to the manifest layout only (the mask layout's classes are "
                "mask x gender x age already)"
            )
        ds = _mask_dataset(root, age_boundary, label_fix)
    elif (root / "train.csv").is_file():
        if label_fix is not None:
            raise StackkitError(
                "--label-fix applies to the mask layout only (DATA/train/train.csv)"
            )
        ds = _manifest_dataset(root, columns)
    else:
        raise StackkitError(
            f"{root}: neither {root / 'train' / 'train.csv'} (mask layout) "
            f"nor {root / 'train.csv'} (manifest layout) exists"
        )
    _check_classes(ds)
    return ds


def _read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise StackkitError(f"{path}: not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise StackkitError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise StackkitError(f"{path}: missing column(s) {', '.join(missing)}")
    if len(df) == 0:
        raise StackkitError(f"{path}: has no rows")
    return df


def _check_classes(ds: Dataset) -> None:
    counts = np.bincount(ds.train["label"].to_numpy(), minlength=len(ds.classes))
    empty = [ds.classes[c] for c in np.flatnonzero(counts == 0)]
    if empty:
        where = ds.root / ("train/train.csv" if ds.layout == "mask" else "train.csv")
        raise StackkitError(
            f"{where}: class(es) {', '.join(map(repr, empty))} have no samples "
            f"({len(empty)} of {len(ds.classes)} classes empty)"
        )


# --------------------------------------------------------------------------------------------
# the mask layout


def _images_by_stem(folder: Path) -> dict[str, Path]:
    """Image files of a folder by stem, whatever the extension; ``._*`` and hidden files skipped."""
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file() or p.suffix.lower() not in IMAGE_EXTS:
            continue
        out.setdefault(p.stem, p)
    return out


def _age_class(age: np.ndarray, boundary: int) -> np.ndarray:
    return np.where(age < 30, 0, np.where(age < boundary, 1, 2))


def _mask_dataset(root: Path, age_boundary: int, label_fix: str | Path | None) -> Dataset:
    if not 30 < age_boundary <= 100:
        raise StackkitError(f"--age-boundary must be in (30, 100], got {age_boundary}")
    csv = root / "train" / "train.csv"
    people = _read_csv(csv, ["id", "gender", "age", "path"])
    rows = []
    for r, person in enumerate(people.itertuples(index=False)):
        folder = root / "train" / "images" / person.path
        if not folder.is_dir():
            raise StackkitError(f"{csv}: row {r}: image folder {folder} not found")
        files = _images_by_stem(folder)
        lacking = [s for s in MASK_STEMS if s not in files]
        if lacking:
            raise StackkitError(f"{folder}: no image for {', '.join(lacking)} (.jpg/.jpeg/.png)")
        gender = GENDERS.get(person.gender.strip().lower())
        if gender is None or not person.age.strip().isdigit():
            raise StackkitError(
                f"{csv}: row {r} ({person.path}): gender {person.gender!r} / age {person.age!r} "
                "must be male|female / an integer"
            )
        for stem, mask in MASK_STEMS.items():
            rows.append(
                (
                    f"{person.path}/{stem}",
                    person.path,
                    mask,
                    gender,
                    int(person.age),
                    str(files[stem]),
                )
            )
    train = pd.DataFrame(rows, columns=["sample_id", "group", "mask", "gender", "age", "path"])
    if train["sample_id"].duplicated().any():
        dup = train.loc[train["sample_id"].duplicated(), "sample_id"].iloc[0]
        raise StackkitError(f"{csv}: folder {dup.split('/')[0]!r} is listed twice")
    fix = None
    if label_fix is not None:
        train, fix = apply_label_fix(train, Path(label_fix))
    age = _age_class(train["age"].to_numpy(), age_boundary)
    label = 6 * train["mask"].to_numpy() + 3 * train["gender"].to_numpy() + age
    train = train.assign(label=label.astype(np.int64))[["sample_id", "group", "label", "path"]]
    test = _mask_test(root)
    info = {"age_boundary": age_boundary, "label_fix": fix}
    return Dataset("mask", root, list(MASK_CLASSES), train, test, fix, info)


def eval_image_paths(ids, folder: Path, info_csv: Path) -> list[str]:
    """The file of each ImageID of eval/info.csv: the exact name, else the same stem with any
    image extension (the mask layout's rule); one line naming the first one missing."""
    by_stem = _images_by_stem(folder) if folder.is_dir() else {}
    paths = []
    for r, image_id in enumerate(ids):
        exact = folder / image_id
        path = exact if exact.is_file() else by_stem.get(Path(image_id).stem)
        if path is None:
            raise StackkitError(f"{info_csv}: row {r}: image {image_id!r} not found in {folder}")
        paths.append(str(path))
    return paths


def _mask_test(root: Path) -> pd.DataFrame:
    info_csv = root / "eval" / "info.csv"
    ids = _read_csv(info_csv, ["ImageID"])["ImageID"]
    folder = root / "eval" / "images"
    if not folder.is_dir():
        raise StackkitError(f"{folder}: test image folder not found")
    paths = eval_image_paths(ids, folder, info_csv)
    if ids.duplicated().any():
        raise StackkitError(
            f"{info_csv}: ImageID {ids[ids.duplicated()].iloc[0]!r} is listed twice"
        )
    return pd.DataFrame({"sample_id": ids.to_numpy(dtype=object), "path": paths})


def apply_label_fix(train: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, dict]:
    """Apply ``target,field,value`` rows to the mask/gender/age columns; return what changed."""
    fixes = _read_csv(path, ["target", "field", "value"])
    train = train.copy()
    by_id = pd.Index(train["sample_id"])
    changed = 0
    for r, (target, fld, value) in enumerate(
        fixes[["target", "field", "value"]].itertuples(index=False)
    ):
        where = f"{path}: row {r} ({target},{fld},{value})"
        rows = (
            train.index[train["group"] == target]
            if "/" not in target
            else by_id.get_indexer([target])
        )
        if len(rows) == 0 or (len(rows) == 1 and rows[0] < 0):
            raise StackkitError(f"{where}: no such folder or image")
        new = _fix_value(fld.strip().lower(), value.strip().lower(), "/" in target, where)
        col = fld.strip().lower()
        changed += int((train.loc[rows, col] != new).sum())
        train.loc[rows, col] = new
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    log.info("label fix %s: %d rows, %d values changed", path, len(fixes), changed)
    return train, {
        "path": str(path.resolve()),
        "sha256": digest,
        "rows": len(fixes),
        "changed": changed,
    }


def _fix_value(fld: str, value: str, is_image: bool, where: str) -> int:
    if fld == "gender" and value in GENDERS:
        return GENDERS[value]
    if fld == "age" and value.isdigit():
        return int(value)
    if fld == "mask" and value in MASK_NAMES and is_image:
        return MASK_NAMES[value]
    raise StackkitError(
        f"{where}: expected gender male|female, age an integer, or mask wear|incorrect|normal "
        "(mask on an image target only)"
    )


# --------------------------------------------------------------------------------------------
# the manifest layout


def _manifest_dataset(root: Path, factors: list[str] | None = None) -> Dataset:
    train_csv, test_csv = root / "train.csv", root / "test.csv"
    tr = _read_csv(train_csv, ["path", "label"])
    te = _read_csv(test_csv, ["path"])
    for df, csv in ((tr, train_csv), (te, test_csv)):
        _check_paths(df["path"], root, csv)
    names = tr["label"].str.strip()
    if names.str.fullmatch(r"\d+").all():
        ints = names.astype(int).to_numpy()
        classes = [str(c) for c in range(ints.max() + 1)]
        label = ints
    else:
        classes = sorted(names.unique())
        label = pd.Index(classes).get_indexer(names)
    sample_id = tr["path"].to_numpy(dtype=object)
    if tr["path"].duplicated().any():
        raise StackkitError(
            f"{train_csv}: path {tr['path'][tr['path'].duplicated()].iloc[0]!r} is listed twice"
        )
    group = tr["group"].to_numpy(dtype=object) if "group" in tr.columns else sample_id
    train = pd.DataFrame(
        {"sample_id": sample_id, "group": group, "label": label.astype(np.int64),
         "path": [str(root / p) for p in tr["path"]]}
    )  # fmt: skip
    test_ids = te["sample_id"] if "sample_id" in te.columns else te["path"]
    if test_ids.duplicated().any():
        raise StackkitError(
            f"{test_csv}: sample_id {test_ids[test_ids.duplicated()].iloc[0]!r} is listed twice"
        )
    test = pd.DataFrame(
        {"sample_id": test_ids.to_numpy(dtype=object), "path": [str(root / p) for p in te["path"]]}
    )
    info = {}
    if factors is not None:
        info["factors"] = declare_factors(train_csv, tr, factors, classes, label)
    return Dataset("manifest", root, classes, train, test, info=info)


def _check_paths(paths: pd.Series, root: Path, csv: Path) -> None:
    for r, p in enumerate(paths):
        if not p or not (root / p).is_file():
            raise StackkitError(f"{csv}: row {r}: image {p!r} not found under {root}")


# --------------------------------------------------------------------------------------------
# folds from a data folder (what `stackkit folds` calls)


def folds_for_data(
    data: str | Path,
    artifacts: str | Path | None = None,
    n_folds: int = 5,
    seed: int = 42,
    force: bool = False,
    age_boundary: int = AGE_BOUNDARY,
    label_fix: str | Path | None = None,
    factors: str | list[str] | None = None,
) -> schema.Folds:
    """Stratified group K-fold over DATA's train samples, written to ``artifacts/folds.parquet``
    (with a manifest's factor declaration in its ``data`` metadata when ``factors`` names them)."""
    from stackkit.contract.store import Store

    ds = load_dataset(data, age_boundary=age_boundary, label_fix=label_fix, factors=factors)
    tr = ds.train
    folds = make_folds(
        tr["sample_id"], tr["group"], tr["label"], ds.classes, n_folds=n_folds, seed=seed,
        extra_meta={"data": ds.meta()},
    )  # fmt: skip
    Store(artifacts).write_folds(folds, force=force)
    return folds
