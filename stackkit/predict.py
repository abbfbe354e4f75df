"""Predict new data with a fitted ensemble: the saved meta learner over the runs' fold models.

``fit`` writes ``ensembles/<name>/model/`` (:func:`write_model`): ``model.json`` (the pick, the
runs in order with their hashes, the class count, the bias offsets) and, unless the pick is a
single run, the refitted meta learner in plain files (:mod:`stackkit.meta.persist`).
:func:`load_ensemble` reads it back; :meth:`Ensemble.predict_logits` applies it to the runs'
per-fold logits exactly as ``fit`` does (fold-average the softmax per run, log, features, meta
learner, offsets). Images become logits through each run's saved fold models, which only the
package that trained them can rebuild: it registers a *run predictor* under the entry-point group
``stackkit.predictors`` (``base_models`` registers ``timm``), so stackkit never imports it.

    >>> ens = load_ensemble("artifacts/ensembles/auto")
    >>> proba = ens.predict_proba(["a.jpg", "b.jpg"])       # (2, C), or a folder of images
    >>> ens.predict_logits(test_logits)                     # (R, K, m, C) -> (m, C)
    >>> predict_images(Store("artifacts"), "auto", "DATA/eval", out="submission.csv")
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pandas as pd

from stackkit import __version__, metrics
from stackkit.contract import schema
from stackkit.contract.errors import StackkitError
from stackkit.contract.store import RunSet, Store, atomic_path, read_json, write_json, write_parquet
from stackkit.data.layouts import IMAGE_EXTS

log = logging.getLogger(__name__)

MODEL_DIR = "model"  # ensembles/<name>/model/
MODEL_FILE = "model.json"
LEARNER_DIR = "learner"
FORMAT = "stackkit-ensemble-model/1"
RUN_PREFIX = "run:"
BLEND = "blend"
RUN_MODELS = "models"  # runs/<run>/models/: the fold models, written by the run's trainer
RUN_MODEL_FILE = "model.json"
PREDICTORS = "stackkit.predictors"  # entry-point group: framework name -> run predictor
DEFAULT_FRAMEWORK = "timm"


# --------------------------------------------------------------------------------------------
# what fit writes


def write_model(folder: Path, meta: str, learner, runset: RunSet, offsets) -> None:
    """Write the fitted pick to ``folder`` (inside fit's atomic ensemble folder)."""
    from stackkit.meta.persist import save_learner

    folder.mkdir(parents=True)
    if not meta.startswith(RUN_PREFIX):  # a single run needs only its name
        save_learner(learner, folder / LEARNER_DIR)
    doc = {
        "format": FORMAT,
        "stackkit": __version__,
        "meta": meta,
        "runs": list(runset.names),
        "run_hashes": {n: runset.hashes[n] for n in runset.names},
        "n_classes": int(runset.folds.n_classes),
        "classes": list(runset.folds.classes),
        "bias_offsets": None if offsets is None else [float(v) for v in offsets],
        "input": "per run, the log of the fold models' mean softmax probability (float32)",
    }
    write_json(doc, folder / MODEL_FILE)


# --------------------------------------------------------------------------------------------
# the meta half: logits in, probabilities out


def fold_mean_features(test: np.ndarray) -> np.ndarray:
    """(R, K, m, C) logits -> (m, R*C): per run, the log of the fold models' mean softmax
    probability, as float32, run-major (what ``stacking.test_features`` gives ``fit``)."""
    r, _, m, c = test.shape
    mean_p = metrics.softmax(test, axis=-1).mean(axis=1)
    logp = np.log(np.clip(mean_p, metrics.EPS, None)).astype(np.float32)
    return np.ascontiguousarray(logp.transpose(1, 0, 2).reshape(m, r * c))


@dataclass
class Ensemble:
    """A fitted ensemble read back from ``ensembles/<name>/model/``."""

    path: Path  # ensembles/<name>
    meta: str
    runs: list[str]
    run_hashes: dict[str, str]
    n_classes: int
    classes: list[str]
    learner: object | None  # None for a single-run pick
    offsets: np.ndarray | None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def store(self) -> Store:
        return Store(self.path.parent.parent)

    def predict_logits(self, test: np.ndarray) -> np.ndarray:
        """(R, K, m, C) logits of ``self.runs`` (in that order) -> (m, C) probabilities."""
        test = np.asarray(test)
        want = (len(self.runs), self.n_classes)
        if test.ndim != 4 or (test.shape[0], test.shape[3]) != want:
            raise StackkitError(
                f"ensemble {self.name!r}: logits of shape {test.shape}, expected "
                f"(runs={want[0]}, folds, samples, classes={want[1]})"
            )
        run_mean = {f"{RUN_PREFIX}{n}": metrics.softmax(test[i], axis=-1).mean(axis=0)
                    for i, n in enumerate(self.runs)}  # fmt: skip
        if self.meta.startswith(RUN_PREFIX):
            proba = run_mean[self.meta]
        else:
            X = fold_mean_features(test)
            if self.meta == BLEND:
                proba = self.learner.mix({m: run_mean[m] if m in run_mean
                                          else self.learner.learners[m].predict_proba(X)
                                          for m in self.learner.weights})  # fmt: skip
            else:
                proba = self.learner.predict_proba(X)
        if self.offsets is not None:
            proba = metrics.softmax(np.log(np.clip(proba, metrics.EPS, None)) + self.offsets)
        return proba

    def run_logits(self, paths: Sequence[str], skip_bad_images: bool = False, **options):
        """(R, K, m, C) logits of every run's fold models on ``paths``, and the positions of the
        images that could not be decoded (skipped; without ``skip_bad_images`` the first is an
        error). ``options`` (device, batch_size) go to the run predictors."""
        check_runs(self)
        store, out, bad = self.store, [], set()
        for run in self.runs:
            framework, predictor = run_predictor(store, run)
            logits, run_bad = predictor(store.run_dir(run) / RUN_MODELS, list(paths),
                                        skip_bad_images=skip_bad_images, **options)  # fmt: skip
            logits = np.asarray(logits)
            if logits.ndim != 3 or logits.shape[1] != len(paths):
                raise StackkitError(f"run {run!r}: its {framework} predictor returned logits of "
                                    f"shape {logits.shape} for {len(paths)} images")  # fmt: skip
            if logits.shape[2] != self.n_classes:
                raise StackkitError(
                    f"run {run!r}: its models predict {logits.shape[2]} classes, ensemble "
                    f"{self.name!r} was fitted on {self.n_classes}"
                )
            out.append(logits)
            bad.update(int(i) for i in run_bad)
        folds = {a.shape[0] for a in out}
        if len(folds) != 1:
            raise StackkitError(f"ensemble {self.name!r}: runs have different fold counts {folds}")
        return np.stack(out), np.array(sorted(bad), dtype=np.int64)

    def predict_proba(self, images, skip_bad_images: bool = False, **options) -> np.ndarray:
        """(m, C) probabilities for ``images`` (paths, or a folder: see :func:`list_images`);
        with ``skip_bad_images`` an undecodable image's row is NaN."""
        paths = _paths(images)
        logits, bad = self.run_logits(paths, skip_bad_images=skip_bad_images, **options)
        proba = self.predict_logits(logits)
        proba[bad] = np.nan
        return proba

    def predict(self, images, **options) -> np.ndarray:
        """Class index per image (the argmax of :meth:`predict_proba`)."""
        return self.predict_proba(images, **options).argmax(axis=1)


def _paths(images) -> list[str]:
    if isinstance(images, str | Path):
        return list(list_images(images).frame["path"])
    return [str(p) for p in images]


def load_ensemble(path: str | Path) -> Ensemble:
    """The ensemble at ``path`` (``<artifacts>/ensembles/<name>``) with its saved meta learner."""
    from stackkit.meta.persist import load_learner

    path = Path(path)
    folder = path / MODEL_DIR
    if not (folder / MODEL_FILE).is_file():
        raise StackkitError(
            f"{folder / MODEL_FILE}: not found (ensembles fitted before stackkit saved their meta "
            f"learner cannot predict: fit again)"
        )
    doc = read_json(folder / MODEL_FILE, str(folder / MODEL_FILE))
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StackkitError(f"{folder / MODEL_FILE}: not a stackkit ensemble model ({FORMAT})")
    meta = str(doc["meta"])
    learner = None if meta.startswith(RUN_PREFIX) else load_learner(folder / LEARNER_DIR)
    offsets = doc.get("bias_offsets")
    return Ensemble(
        path,
        meta,
        list(doc["runs"]),
        dict(doc["run_hashes"]),
        int(doc["n_classes"]),
        list(doc.get("classes") or []),
        learner,
        None if offsets is None else np.asarray(offsets, dtype=np.float64),
    )


# --------------------------------------------------------------------------------------------
# run predictors: a run's saved fold models -> logits, provided by the package that trained it


def run_predictor(store: Store, run: str):
    """(framework, callable) for ``run``'s saved models: the entry point named by the
    ``framework`` of ``runs/<run>/models/model.json`` (default ``timm``)."""
    info = read_json(store.run_dir(run) / RUN_MODELS / RUN_MODEL_FILE, f"run {run!r} models")
    framework = str(info.get("framework", DEFAULT_FRAMEWORK)) if isinstance(info, dict) else ""
    found = [e for e in entry_points(group=PREDICTORS) if e.name == framework]
    if not found:
        raise StackkitError(
            f"run {run!r}: no predictor for {framework!r} models is installed (entry-point group "
            f"{PREDICTORS!r}; base_models provides 'timm': pip install 'stackkit[train]')"
        )
    return framework, found[0].load()


def check_runs(ens: Ensemble) -> None:
    """Every run still there, unchanged since the fit, and with saved fold models."""
    store = ens.store
    gone = [r for r in ens.runs if not (store.run_dir(r) / schema.RUN_FILE).is_file()]
    if gone:
        raise StackkitError(f"ensemble {ens.name!r}: run(s) {', '.join(gone)} no longer exist")
    changed = [r for r in ens.runs if store.run_hash(r) != ens.run_hashes.get(r)]
    if changed:
        raise StackkitError(
            f"ensemble {ens.name!r}: run(s) {', '.join(changed)} changed since the fit; fit again"
        )
    bare = [r for r in ens.runs if not _has_models(store, r)]
    if bare:
        raise StackkitError(
            f"ensemble {ens.name!r}: run(s) {', '.join(bare)} have no saved models "
            f"(runs/<run>/{RUN_MODELS}/; imported, or trained with --no-save-models)"
        )


def _has_models(store: Store, run: str) -> bool:
    """models/model.json is there and run.json does not say a fold's model is missing (its
    ``models`` is null when any fold was trained with --no-save-models)."""
    info = read_json(store.run_dir(run) / schema.RUN_FILE, f"run {run!r}")
    if isinstance(info, dict) and "models" in info and info["models"] is None:
        return False
    return (store.run_dir(run) / RUN_MODELS / RUN_MODEL_FILE).is_file()


# --------------------------------------------------------------------------------------------
# which images: the mask layout's eval/, a manifest's test.csv, or a plain folder


@dataclass
class Images:
    kind: str  # "mask", "manifest" or "folder"
    frame: pd.DataFrame  # sample_id, path (absolute), in submission order


def list_images(data: str | Path) -> Images:
    """The images to predict under ``data`` (see the section header); ids as ``fit`` names them."""
    from stackkit.data.layouts import _check_paths, _read_csv, eval_image_paths

    root = Path(data).expanduser().resolve()
    if not root.is_dir():
        raise StackkitError(f"{root}: data folder not found")
    if (root / "eval" / "info.csv").is_file():
        root = root / "eval"
    if (root / "info.csv").is_file():
        info = root / "info.csv"
        ids = _read_csv(info, ["ImageID"])["ImageID"]
        paths = eval_image_paths(ids, root / "images", info)
        return Images("mask", _frame(ids.to_numpy(dtype=object), paths, info))
    if (root / "test.csv").is_file():
        csv = root / "test.csv"
        te = _read_csv(csv, ["path"])
        _check_paths(te["path"], root, csv)
        ids = te["sample_id"] if "sample_id" in te.columns else te["path"]
        return Images("manifest", _frame(ids.to_numpy(dtype=object),
                                         [str(root / p) for p in te["path"]], csv))  # fmt: skip
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))  # fmt: skip
    if not files:
        raise StackkitError(
            f"{root}: no images ({', '.join(IMAGE_EXTS)}), no info.csv, no test.csv"
        )
    ids = np.array([p.relative_to(root).as_posix() for p in files], dtype=object)
    return Images("folder", _frame(ids, [str(p) for p in files], root))


def _frame(ids: np.ndarray, paths: list[str], where) -> pd.DataFrame:
    df = pd.DataFrame({"sample_id": ids, "path": paths})
    dup = df["sample_id"].duplicated()
    if dup.any():
        raise StackkitError(f"{where}: sample {df['sample_id'][dup].iloc[0]!r} is listed twice")
    return df


# --------------------------------------------------------------------------------------------
# the command


@dataclass
class PredictResult:
    proba_path: Path
    submission_path: Path
    n_images: int
    skipped: list[str]


def predict_images(
    store: Store,
    ensemble: str,
    data: str | Path,
    out: str | Path | None = None,
    skip_bad_images: bool = False,
    device: str | None = None,
    batch_size: int | None = None,
) -> PredictResult:
    """Predict every image under ``data`` with ``ensemble``; write the submission CSV (``out``,
    default ``<artifacts>/predictions/<ensemble>/submission.csv``) and the per-class
    probabilities beside it (same name, ``.parquet``), both or neither."""
    ens = load_ensemble(store.ensemble_dir(ensemble))
    images = list_images(data)
    out = Path(out) if out is not None else store.root / "predictions" / ens.name / "submission.csv"
    proba_path = out.with_suffix(".parquet")
    if out.suffix.lower() != ".csv":
        raise StackkitError(f"--out {out}: the submission file must end in .csv")
    frame = images.frame
    logits, bad = ens.run_logits(list(frame["path"]), skip_bad_images=skip_bad_images,
                                 device=device, batch_size=batch_size)  # fmt: skip
    proba = ens.predict_logits(logits)
    keep = np.ones(len(frame), dtype=bool)
    keep[bad] = False
    skipped = [str(s) for s in frame["sample_id"][~keep]]
    if skipped:
        log.warning("skipped %d undecodable image(s): %s", len(skipped), ", ".join(skipped[:5]))
    ids, proba = frame["sample_id"].to_numpy(dtype=object)[keep], proba[keep]
    pred = proba.argmax(axis=1)
    sub = (pd.DataFrame({"ImageID": ids, "ans": pred}) if images.kind == "mask"
           else pd.DataFrame({"sample_id": ids, "label": pred}))  # fmt: skip
    with atomic_path(proba_path) as tmp_parquet, atomic_path(out) as tmp_csv:
        write_parquet(schema.proba_frame(ids, proba), tmp_parquet)
        sub.to_csv(tmp_csv, index=False)
    log.info("wrote %s and %s (%d images)", proba_path, out, len(ids))
    return PredictResult(proba_path, out, len(ids), skipped)
