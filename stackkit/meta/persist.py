"""A fitted meta learner as plain files, never a pickle: ``learner.json``, ``arrays.npz``, and
xgboost's own JSON.

    >>> save_learner(est, folder)          # folder/learner.json + folder/arrays.npz (+ xgboost_0.json)
    >>> est = load_learner(folder)         # the same predictions, to the last bit

The state is walked generically, so a learner that gains a fitted attribute needs no change here:
an object of a trusted class (``TRUSTED``) is written as its public class name and its
``__dict__`` (parameters and fitted attributes alike); numpy arrays go to ``arrays.npz`` (written
and read with ``allow_pickle=False``: an object array cannot be written, a planted pickle is
refused); numpy scalars, tuples and dicts with non-string keys are tagged so they come back with
their own type. Three kinds of state are not plain attributes:

- scikit-learn's ``Tree`` (the nodes of each tree of ``rf``): its own reduce, the constructor's
  arguments and the node arrays (a structured array of plain numbers, then the leaf values);
- ``KNeighborsClassifier``: its parameters and training matrix, fitted again on load (the search
  tree is rebuilt the same way from the same rows; nothing else is learned);
- ``XGBClassifier``: ``save_model`` / ``load_model`` in xgboost's JSON format.

Only classes listed in ``TRUSTED`` are ever created on load, by ``cls.__new__`` and setting their
attributes (no constructor or reduce of the file's choosing runs).
"""

from __future__ import annotations

import importlib
import io
import logging
import sys
import zipfile
from pathlib import Path

import numpy as np

from stackkit.contract.errors import StackkitError
from stackkit.contract.store import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

LEARNER_FILE = "learner.json"
ARRAYS_FILE = "arrays.npz"
FORMAT = "stackkit-learner/1"

# public name -> how the object is stored: "dict" (its attributes), "reduce" (scikit-learn's
# Cython Tree), "knn" (parameters and training rows), "xgboost" (its own JSON)
TRUSTED = {
    "stackkit.meta.vote.VoteLearner": "dict",
    "stackkit.meta.caruana.CaruanaSelection": "dict",
    "stackkit.meta.linear.LRLearner": "dict",
    "stackkit.meta.linear.SVMLearner": "dict",
    "stackkit.meta.knn.KNNLearner": "dict",
    "stackkit.meta.trees.RFLearner": "dict",
    "stackkit.meta.trees.XGBLearner": "dict",
    "stackkit.meta.features.RunFeatures": "dict",
    "stackkit.cv.blend.Blend": "dict",
    "stackkit.cv.runs.RunColumns": "dict",
    "sklearn.preprocessing.StandardScaler": "dict",
    "sklearn.linear_model.LogisticRegression": "dict",
    "sklearn.kernel_approximation.Nystroem": "dict",
    "sklearn.ensemble.ExtraTreesClassifier": "dict",
    "sklearn.ensemble.RandomForestClassifier": "dict",
    "sklearn.tree.ExtraTreeClassifier": "dict",
    "sklearn.tree.DecisionTreeClassifier": "dict",
    "sklearn.tree._tree.Tree": "reduce",
    "sklearn.neighbors.KNeighborsClassifier": "knn",
    "xgboost.XGBClassifier": "xgboost",
}
JSON_SCALARS = (str, int, float, bool, type(None))


def _resolve(name: str, where: str) -> type:
    """The class behind a trusted public name (imported only when asked for)."""
    if name not in TRUSTED:
        raise StackkitError(f"{where}: class {name!r} is not one stackkit loads")
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise StackkitError(f"{where}: class {name!r} is not available here ({exc})") from None


def _public_name(obj, where: str) -> str:
    """The trusted public name of ``obj``'s class (only packages already imported are looked at:
    an object cannot be of a class whose package was never imported)."""
    for name in TRUSTED:
        module = name.rpartition(".")[0]
        if module.split(".")[0] not in sys.modules:
            continue
        try:
            if type(obj) is _resolve(name, where):
                return name
        except StackkitError:  # a trusted class this version does not have
            continue
    raise StackkitError(f"{where}: cannot save an object of type {type(obj).__qualname__}")


class _Writer:
    def __init__(self, folder: Path):
        self.folder = folder
        self.arrays: dict[str, np.ndarray] = {}
        self.n_xgb = 0

    def array(self, a: np.ndarray, where: str) -> dict:
        if a.dtype.hasobject:  # e.g. string class labels: plain JSON values, never pickled
            flat = a.ravel().tolist()
            if not all(isinstance(v, JSON_SCALARS) for v in flat):
                raise StackkitError(f"{where}: cannot save an object array holding other values")
            return {"$objects": flat, "shape": list(a.shape)}
        key = f"a{len(self.arrays)}"
        self.arrays[key] = a
        return {"$array": key}

    def value(self, v, where: str):
        if isinstance(v, bool | str | type(None)) or type(v) in (int, float):
            return v
        if isinstance(v, np.ndarray):
            return self.array(v, where)
        if isinstance(v, np.generic):
            return {"$scalar": v.dtype.str, "value": v.item()}
        if isinstance(v, list):
            return [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, tuple):
            return {"$tuple": [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]}
        if isinstance(v, dict):
            if all(type(k) is str and not k.startswith("$") for k in v):
                return {k: self.value(x, f"{where}.{k}") for k, x in v.items()}
            return {"$items": [[self.value(k, where), self.value(x, f"{where}[{k!r}]")]
                               for k, x in v.items()]}  # fmt: skip
        return self.obj(v, where)

    def obj(self, o, where: str) -> dict:
        name = _public_name(o, where)
        how = TRUSTED[name]
        if how == "dict":
            return {"$obj": name, "state": self.value(dict(vars(o)), where)}
        if how == "reduce":
            _, args, state = o.__reduce__()
            return {"$obj": name, "args": self.value(tuple(args), where),
                    "state": self.value(state, where)}  # fmt: skip
        if how == "knn":
            rows = o.classes_[o._y]  # the training labels as given to fit
            return {"$obj": name, "params": self.value(o.get_params(), where),
                    "X": self.array(o._fit_X, where), "y": self.array(rows, where)}  # fmt: skip
        file = f"xgboost_{self.n_xgb}.json"
        self.n_xgb += 1
        o.save_model(self.folder / file)
        return {"$obj": name, "file": file, "n_jobs": o.n_jobs}


def save_learner(est, folder: str | Path) -> Path:
    """Write the fitted ``est`` to ``folder`` (created; the caller makes the folder atomic)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    w = _Writer(folder)
    tree = w.value(est, "learner")
    with atomic_path(folder / ARRAYS_FILE) as tmp:
        _savez(tmp, w.arrays)
    write_json({"format": FORMAT, "versions": _versions(), "learner": tree}, folder / LEARNER_FILE)
    return folder


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` at zlib level 1 instead of 6: the forest's 124 MB of node arrays
    take 22 MB in 1.3 s instead of 20 MB in 2.8 s (numpy has no level option); ``np.load`` reads
    it the same (a zip of ``.npy`` files)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for key, a in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=False)


class _Reader:
    def __init__(self, folder: Path, arrays):
        self.folder = folder
        self.arrays = arrays

    def array(self, key: str, where: str) -> np.ndarray:
        name = self.folder / ARRAYS_FILE
        if not isinstance(key, str) or key not in self.arrays.files:
            raise StackkitError(f"{name}: no array {key!r} (asked for by {where})")
        try:
            return self.arrays[key]
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise StackkitError(f"{name}: array {key!r} unreadable ({exc})") from None

    def value(self, v, where: str):
        if isinstance(v, list):
            return [self.value(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if not isinstance(v, dict):
            return v
        if "$array" in v:
            return self.array(v["$array"], where)
        if "$objects" in v:
            return np.array(v["$objects"], dtype=object).reshape(v["shape"])
        if "$scalar" in v:
            return np.dtype(v["$scalar"]).type(v["value"])
        if "$tuple" in v:
            return tuple(self.value(x, where) for x in v["$tuple"])
        if "$items" in v:
            return {_hashable(self.value(k, where)): self.value(x, where) for k, x in v["$items"]}
        if "$obj" in v:
            return self.obj(v, where)
        return {k: self.value(x, f"{where}.{k}") for k, x in v.items()}

    def obj(self, v: dict, where: str):
        name = v["$obj"]
        cls = _resolve(name, f"{self.folder / LEARNER_FILE} ({where})")
        how = TRUSTED[name]
        if how == "dict":
            o = cls.__new__(cls)
            o.__dict__.update(self.value(v["state"], where))
            return o
        if how == "reduce":
            o = cls(*self.value(v["args"], where))
            o.__setstate__(self.value(v["state"], where))
            return o
        if how == "knn":
            params = self.value(v["params"], where)
            return cls(**params).fit(self.array(v["X"]["$array"], where),
                                     self.value(v["y"], where))  # fmt: skip
        o = cls(n_jobs=v.get("n_jobs"))
        file = self.folder / str(v["file"])
        if not file.is_file() or file.parent != self.folder:
            raise StackkitError(f"{file}: xgboost model file not found")
        try:
            o.load_model(file)
        except Exception as exc:  # xgboost raises its own XGBoostError for any bad file
            raise StackkitError(
                f"{file}: not an xgboost model ({str(exc).splitlines()[0]})"
            ) from None
        return o


def _hashable(k):
    return tuple(k) if isinstance(k, list) else k


def load_learner(folder: str | Path):
    """The learner ``save_learner`` wrote to ``folder``; anything else is one StackkitError line."""
    folder = Path(folder)
    doc = read_json(folder / LEARNER_FILE, str(folder / LEARNER_FILE))
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StackkitError(f"{folder / LEARNER_FILE}: not a stackkit learner (format {FORMAT})")
    _warn_versions(doc.get("versions") or {}, folder)
    path = folder / ARRAYS_FILE
    if not path.is_file():
        raise StackkitError(f"{path}: file not found")
    try:
        raw = io.BytesIO(path.read_bytes())
        arrays = np.load(raw, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise StackkitError(f"{path}: not a numpy archive without pickles ({exc})") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise StackkitError(f"{path}: not a numpy archive (.npz)")
    with arrays:
        try:
            return _Reader(folder, arrays).value(doc["learner"], "learner")
        except StackkitError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StackkitError(
                f"{folder / LEARNER_FILE}: malformed learner state ({exc})"
            ) from None


def _versions() -> dict:
    import sklearn

    out = {"numpy": np.__version__, "scikit-learn": sklearn.__version__}
    if "xgboost" in sys.modules:
        out["xgboost"] = sys.modules["xgboost"].__version__
    return out


def _warn_versions(saved: dict, folder: Path) -> None:
    now = _versions()
    for lib in ("scikit-learn", "numpy"):
        if saved.get(lib) and saved[lib] != now.get(lib):
            log.warning("%s: saved with %s %s, loading with %s", folder, lib, saved[lib], now[lib])
