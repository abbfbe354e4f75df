"""Train one timm backbone on every fold of folds.parquet and write its run (CONTRACT.md).

    >>> from base_models import train
    >>> train("resnet18", "data/mask", artifacts="artifacts", epochs=5, img_size="512x384")

For each fold: a fresh model trained on the other folds (plus that fold's pseudo-labelled test
images if asked), its weights those of the last epoch (``epoch_selection: fixed``) or of the epoch
best on an inner slice of the training folds' groups (``inner``), never chosen on the fold's own
rows; then its own fold (the OOF rows) and the whole test set predicted with the same TTA. Each fold is written as a shard the moment it
is done; the same call again skips finished folds. The run (oof.parquet, test.parquet, run.json
last) is assembled only when every fold is there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import random
import shutil
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch

import stackkit
from base_models import shards
from base_models.config import (
    DEFAULT_SEED,
    config_hash,
    cpu_count,
    default_workers,
    head_weights_for,
    resolve_config,
)
from base_models.data import (
    CachedImages,
    Normalizer,
    data_config,
    eval_transform,
    make_loader,
    train_transform,
    use_channels_last,
)
from base_models.device_decode import (
    DeviceDecoder,
    EvalOnDevice,
    OnDevice,
    RawImages,
    TrainOnDevice,
    collate,
    scan,
)
from base_models.image_cache import ImageCache, build_cache, cache_root, fits, open_cache
from base_models.images import check_bad, scale_size
from base_models.loop import Scored, fit, predict
from base_models.model import MASK_FACTORS, build, create, load_pretrained
from base_models.predict import fold_config_hash, fold_file, save_fold_model
from base_models.splits import ImageTable, Split, build_splits, image_table, inner_slice
from stackkit import metrics
from stackkit.contract import schema
from stackkit.contract.errors import StackkitError
from stackkit.contract.locks import hold
from stackkit.contract.names import check_name
from stackkit.contract.store import Store, file_sha256
from stackkit.data.factors import factor_sizes
from stackkit.data.layouts import AGE_BOUNDARY, load_dataset

log = logging.getLogger(__name__)

EVAL_BATCH_FACTOR = 2  # prediction keeps no gradients, so twice the training batch fits
# runs/<run>/.lock: held while train or assemble works on the run, and while a run-fold job checks
# it; runs/<run>/.lock.fold_<k>: while fold k trains. Both are stackkit.contract.locks (flock; a
# second holder is refused in one line naming the first). The image cache has its own locks
# (base_models.image_cache): shared by every run of the same images and size.
RUN_LOCK = ".lock"
MODELS_DIR = "models"  # runs/<run>/models/: the fold models (base_models.predict)
WAIT_S = 5.0  # a run-fold job polls this often while another job holds the run lock


@dataclass
class RunResult:
    run_dir: Path
    complete: bool
    trained: list[int]  # folds trained by this call
    skipped: list[int]  # folds already finished with the same config


@dataclass
class FoldResult:
    run_dir: Path
    fold: int
    config_hash: str
    trained: bool  # False: a shard with this config hash was already committed


@dataclass
class Job:
    """Everything one call resolved before training starts."""

    model: str
    cfg: dict
    dcfg: dict
    device: torch.device
    workers: int
    seed: int
    folds: schema.Folds
    table: ImageTable
    pretrained: dict | None
    run_dir: Path
    hash: str
    run: str = ""
    resolved: dict | None = None  # what run.json records as "config"
    skip_bad: bool = False
    save_models: bool = True  # runs/<run>/models/ (base_models.predict); not in the config hash
    images: Path | None = None  # the image caches' folder: <artifacts>/cache/images


def train(
    model: str,
    data: str | Path,
    artifacts: str | Path | None = None,
    run: str | None = None,
    epochs: int | None = None,
    img_size: str | tuple[int, int] | None = None,
    batch: int | None = None,
    lr: float | None = None,
    pretrained: str | Path | None = None,
    pseudo: str | None = None,
    folds: str | list[int] | None = None,
    device: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    skip_bad_images: bool = False,
    label_fix: str | Path | None = None,
    age_boundary: int | None = None,
    seed: int | None = None,
    force: bool = False,
    config: str | Path | None = None,
    save_models: bool = True,
) -> RunResult:
    """Train ``model`` on the requested folds (all by default); write the run when all are done.
    Each fold's final model is kept in ``runs/<run>/models/`` unless ``save_models`` is off."""
    store, job = resolve_job(
        model, data, artifacts, run, epochs=epochs, img_size=img_size, batch=batch, lr=lr,
        pretrained=pretrained, pseudo=pseudo, device=device, workers=workers, threads=threads,
        skip_bad_images=skip_bad_images, label_fix=label_fix, age_boundary=age_boundary, seed=seed,
        config=config, save_models=save_models,
    )  # fmt: skip
    n_folds = job.folds.n_folds
    wanted = _parse_folds(folds, n_folds)
    with _session(job):
        if _already_complete(job, force):
            return RunResult(job.run_dir, True, [], list(range(n_folds)))
        if force or _done(job) != list(range(n_folds)):
            with _images(job) as source:  # held against `cache clean` while the folds train
                result = _train_folds(job, source, wanted, force)
        else:  # every fold is in (an interrupted assembly): no pixels needed
            result = RunResult(job.run_dir, False, [], wanted)
        if all(shards.finished(job.run_dir, k, job.hash) for k in range(n_folds)):
            _unreadable_from_shards(job)
            _write_run(store, job.run, job, job.resolved)
            result.complete = True
        else:
            log.info(
                "run %s: folds %s finished; the run is written once every fold is",
                job.run, _done(job),
            )  # fmt: skip
    return result


def resolve_job(
    model: str,
    data: str | Path,
    artifacts: str | Path | None = None,
    run: str | None = None,
    epochs: int | None = None,
    img_size: str | tuple[int, int] | None = None,
    batch: int | None = None,
    lr: float | None = None,
    pretrained: str | Path | None = None,
    pseudo: str | None = None,
    device: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    skip_bad_images: bool = False,
    label_fix: str | Path | None = None,
    age_boundary: int | None = None,
    seed: int | None = None,
    config: str | Path | None = None,
    save_models: bool = True,
) -> tuple[Store, Job]:
    """Everything a run (or one fold of it) is made from, and its config hash; trains nothing."""
    run = check_name(model.replace("/", "_") if run is None else run, "run")  # before any write
    if pseudo is not None:
        check_name(pseudo, "pseudo set")
    store = Store(artifacts)
    fold_set = store.read_folds()
    cfg = resolve_config(
        model, {"epochs": epochs, "img_size": img_size, "batch": batch, "lr": lr}, config
    )
    dev = _device(device, threads)
    probe = create(model, fold_set.n_classes)  # refuses unknown names before anything is written
    pre = _pretrained(probe, pretrained)
    dcfg = data_config(probe, cfg["img_size"], cfg["crop_pct"])
    ds = load_dataset(data, **_data_options(fold_set, age_boundary, label_fix))
    if cfg["head"] == "multitask":
        cfg["head_weights"] = _check_heads(model, data, fold_set, ds, cfg)
    pseudo_df, pseudo_info = _pseudo(store, pseudo, fold_set)
    table = image_table(ds, fold_set, pseudo_df)
    seed = DEFAULT_SEED if seed is None else int(seed)
    resolved = {
        "model": model, "train": cfg, "data_config": dcfg, "seed": seed, "pretrained": pre,
        "data": ds.meta(), "folds_hash": fold_set.hash, "pseudo": pseudo_info,
        "skip_bad_images": skip_bad_images,
    }  # fmt: skip
    h = config_hash(
        {k: v for k, v in resolved.items() if k not in ("data", "pseudo")}
        | {"labels": table.labels.tolist(), "pseudo_rows": (pseudo_info or {}).get("rows_sha256")}
    )  # the pseudo rows trained on count, not which file or ensemble they came from
    workers = default_workers(dev.type) if workers is None else int(workers)
    job = Job(
        model, cfg, dcfg, dev, workers, seed, fold_set, table, pre, store.run_dir(run), h,
        run=run, resolved=resolved, skip_bad=skip_bad_images, save_models=save_models,
        images=cache_root(store.root),
    )  # fmt: skip
    return store, job


def run_fold(
    model: str,
    data: str | Path,
    fold: int,
    artifacts: str | Path | None = None,
    run: str | None = None,
    force: bool = False,
    expect_hash: str | None = None,
    **options,
) -> FoldResult:
    """One fold job: train fold ``fold`` of ``model`` and commit its shard; nothing else.

    Pure and idempotent: the same inputs give the same shard, and a shard already committed with
    the same config hash is skipped. ``options`` are :func:`train`'s (epochs, img_size, batch, lr,
    pretrained, pseudo, device, workers, threads, skip_bad_images, label_fix, age_boundary, seed).
    ``expect_hash`` (from the planner) refuses to train if this machine resolves another config.
    The run itself is written by :func:`assemble` once every fold is committed.
    """
    _, job = resolve_job(model, data, artifacts, run, **options)
    if expect_hash is not None and job.hash != expect_hash:
        raise StackkitError(
            f"run {job.run} fold {fold}: this worker resolves config hash {job.hash}, the plan "
            f"has {expect_hash}: its stackkit, config files or data differ from the driver's"
        )
    [k] = _parse_folds([fold], job.folds.n_folds)
    if not force and shards.finished(job.run_dir, k, job.hash):
        log.info("run %s fold %d: already committed with this config, skipped", job.run, k)
        return FoldResult(job.run_dir, k, job.hash, False)
    # other fold jobs share this run folder: wait while one of them holds it
    with _session(job, wait=True, cleanup=False):
        if _already_complete(job, force):  # a finished run made with another config is refused
            return FoldResult(job.run_dir, k, job.hash, False)
    with _images(job) as source:  # a job building the same cache: waited for, then shared
        result = _train_folds(job, source, [k], force)
    return FoldResult(job.run_dir, k, job.hash, bool(result.trained))


def prepare(model: str, data: str | Path, artifacts=None, run=None, **options) -> str:
    """Decode the image cache every fold job of the run reads, once before they start (else
    the first job decodes it while the others wait); return the run's config hash. ``options``
    as for :func:`run_fold`. Nothing to do for ``decode: device``."""
    return prepare_job(resolve_job(model, data, artifacts, run, **options)[1])


def prepare_job(job: Job) -> str:
    setting, (paths, size, interp) = job.cfg["decode"], _cache_args(job)
    if setting == "device":
        log.info("run %s: decode: device needs no image cache", job.run)
    elif setting == "auto" and not fits(paths, job.images, size, interp):
        log.info("run %s: the image cache does not fit on the disk; fold jobs on CUDA will "
                 "decode on the device (decode: auto), on the CPU they will refuse", job.run)  # fmt: skip
    else:
        build_cache(paths, job.images, size, interp, threads=cpu_count())
    return job.hash


def assemble(
    model: str, data: str | Path, artifacts=None, run=None, force: bool = False, **options
) -> RunResult:
    """Write the run from its committed shards (validated against the contract by the store).
    ``options`` as for :func:`run_fold`; ``force`` replaces a complete run."""
    store, job = resolve_job(model, data, artifacts, run, **options)
    n_folds = job.folds.n_folds
    with _session(job, cleanup=False):
        if _already_complete(job, force):
            return RunResult(job.run_dir, True, [], list(range(n_folds)))
        missing = [k for k in range(n_folds) if not shards.finished(job.run_dir, k, job.hash)]
        if missing:
            raise StackkitError(
                f"run {job.run}: fold(s) {', '.join(map(str, missing))} have no shard committed "
                f"with config {job.hash} yet (run-fold them first)"
            )
        _unreadable_from_shards(job)
        _write_run(store, job.run, job, job.resolved)
    return RunResult(job.run_dir, True, [], list(range(n_folds)))


def _device(name: str | None, threads: int | None) -> torch.device:
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise StackkitError(f"--device {name!r}: not a device (cpu, cuda, cuda:1, …)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise StackkitError(f"--device {name}: CUDA is not available on this machine")
    if dev.type == "cpu":
        torch.set_num_threads(threads or cpu_count())
    else:
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its kernels
    return dev


def _pretrained(probe: torch.nn.Module, path) -> dict | None:
    if path is None:
        return None
    load_pretrained(probe, path)  # checks the fit now: a bad file fails before any training
    return {"path": str(Path(path).expanduser().resolve()), "sha256": file_sha256(path)}


def _data_options(folds: schema.Folds, age_boundary, label_fix) -> dict:
    """The ones given, else those folds.parquet was made with, else the competition's rule; a
    manifest's factor columns always those folds.parquet declares."""
    made_with = folds.meta.get("data") or {}
    if age_boundary is None:
        age_boundary = made_with.get("age_boundary") or AGE_BOUNDARY
    if label_fix is None and made_with.get("label_fix"):
        label_fix = made_with["label_fix"]["path"]
    out = {"age_boundary": int(age_boundary), "label_fix": label_fix}
    if _declared(folds):
        out["factors"] = _declared(folds)["columns"]
    return out


def _declared(folds: schema.Folds) -> dict | None:
    """A manifest's factor declaration in folds.parquet's ``data.factors`` (None: none)."""
    return (folds.meta.get("data") or {}).get("factors")


def _check_heads(model: str, data, folds: schema.Folds, ds, cfg: dict) -> list[float]:
    """``head: multitask``'s factors are the mask layout's or those folds.parquet declares (the
    data's own must still be the same); returns the loss weights, one per factor."""
    declared = _declared(folds)
    if declared is None and ds.layout != "mask":
        raise StackkitError(
            f"head: multitask: {data} is a {ds.layout} layout without factor columns in "
            "folds.parquet: declare them with `stackkit folds --factors COL,COL,...`"
        )
    if declared is not None and ds.info.get("factors") != declared:
        raise StackkitError(
            f"head: multitask: {data}/train.csv's factor columns {', '.join(declared['columns'])} "
            "no longer give the classes folds.parquet declares: re-run `stackkit folds --factors`"
        )
    build(model, folds.n_classes, "multitask", declared)  # refuses a class count of other factors
    return head_weights_for(cfg, list(MASK_FACTORS) if declared is None else declared["columns"])


def _pseudo(store: Store, name: str | None, folds: schema.Folds):
    """The pseudo set's rows (sample_id, fold, label) and what run.json records of it.

    Contract 1.1: a row's label may train fold ``fold``'s model and no other. A set without the
    ``fold`` column (made before 1.1, from models that saw every fold) is refused.
    """
    if name is None:
        return None, None
    df, meta = store.read_pseudo(name, folds)  # the fold column checked there, when present
    path = store.pseudo_dir(name) / schema.PSEUDO_FILE
    if "fold" not in df.columns:
        raise StackkitError(
            f"pseudo set {name!r}: {store.rel(path)}: has no 'fold' column (made before contract "
            "1.1, its labels come from models that saw every fold); remake it with `stackkit "
            f"pseudo-label --ensemble {meta['ensemble']} --name {name} --force`"
        )
    df = df[["sample_id", "fold", "label"]]
    rows = df.sort_values(["fold", "sample_id"]).to_csv(index=False).encode("utf-8")
    info = {
        "name": name, "ensemble": meta["ensemble"], "ensemble_hash": meta["ensemble_hash"],
        "n_rows": len(df), "n_rows_per_fold": np.bincount(df["fold"], minlength=folds.n_folds).tolist(),
        "rows_sha256": hashlib.sha256(rows).hexdigest(), "sha256": file_sha256(path),
    }  # fmt: skip
    return df, info


def _parse_folds(value, n_folds: int) -> list[int]:
    if value is None:
        return list(range(n_folds))
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        out = sorted({int(str(v).strip()) for v in items if str(v).strip()})
    except ValueError:
        raise StackkitError(f"--folds must be fold numbers like 0,1, got {value!r}") from None
    bad = [k for k in out if not 0 <= k < n_folds]
    if bad or not out:
        raise StackkitError(f"--folds {value!r}: folds are 0 … {n_folds - 1} in folds.parquet")
    return out


def _done(job: Job) -> list[int]:
    return [k for k in range(job.folds.n_folds) if shards.finished(job.run_dir, k, job.hash)]


def _already_complete(job: Job, force: bool) -> bool:
    """A complete run with this config: nothing to do. With another config: refuse (unless
    forced) rather than overwrite a finished run by accident."""
    path = job.run_dir / schema.RUN_FILE
    if force or not path.is_file():
        return False
    old = json.loads(path.read_text()).get("config_hash")
    if old == job.hash:
        log.info(
            "run %s is complete with this config; nothing to do (--force redoes it)",
            job.run_dir.name,
        )
        return True
    raise StackkitError(
        f"{path}: a complete run made with another config ({old}) is there; "
        "choose another --run or pass --force to replace it"
    )


def fold_lock(fold: int) -> str:
    return f".lock.fold_{fold}"


@contextmanager
def _session(job: Job, wait: bool = False, cleanup: bool = True):
    """Hold the run's lock for the block (``wait``: until it is free, else fail at once naming
    its holder), after removing the per-run image cache an older stackkit left; if the block
    fails in a run folder it created and no fold was committed, remove the folder (``cleanup``)."""
    created = cleanup and not job.run_dir.exists()
    try:
        with ExitStack() as stack:
            while True:
                try:
                    stack.enter_context(hold(job.run_dir / RUN_LOCK, f"run {job.run}"))
                    break
                except StackkitError as exc:  # held by another command
                    if not wait:
                        raise
                    log.info("%s; waiting", exc)
                    time.sleep(WAIT_S)
            legacy = job.run_dir / "cache"  # before image caches were shared (cache/images/)
            if legacy.is_dir():
                log.info("removing %s: image caches are shared now, in %s", legacy, job.images)
                shutil.rmtree(legacy, ignore_errors=True)
            yield
    except BaseException:
        if created and not shards.any_shard(job.run_dir):
            shutil.rmtree(job.run_dir, ignore_errors=True)
        raise


def _cache_args(job: Job) -> tuple[list[str], tuple[int, int], str]:
    size = scale_size(job.dcfg["input_size"][1:], job.dcfg["crop_pct"])
    return job.table.paths, size, job.dcfg["interpolation"]


def decode_mode(job: Job) -> str:
    """``decode`` resolved: cache or device. ``auto`` is the cache on the CPU; on CUDA the cache
    too when it is there or fits on the disk (the tested path, with timm's own PIL transforms),
    else decoding on the device."""
    setting = job.cfg["decode"]
    if setting != "auto":
        return setting
    paths, size, interp = _cache_args(job)
    if job.device.type != "cuda" or fits(paths, job.images, size, interp):
        return "cache"
    return "device"


@dataclass
class OnDeviceSource:
    """``decode: device``: the files themselves, decoded batch by batch on the device."""

    size: tuple[int, int]
    key: None = None


@contextmanager
def _images(job: Job):
    """What the folds read, for the block: the shared image cache (built now unless it is
    there; held so that ``cache clean`` leaves it alone), or for ``decode: device`` the files
    (their headers read now). Marks the unreadable images unusable."""
    paths, size, interp = _cache_args(job)
    if decode_mode(job) == "device":
        log.info(
            "run %s: images decoded on %s batch by batch, no cache (decode: %s)",
            job.run, job.device, job.cfg["decode"],
        )  # fmt: skip
        bad = scan(paths, cpu_count())
        check_bad(bad, paths, job.skip_bad)
        job.table.usable[bad] = False
        yield OnDeviceSource(size)
        return
    with open_cache(paths, job.images, size, interp, job.skip_bad, cpu_count()) as cache:
        job.table.usable[cache.bad] = False
        yield cache


def _unreadable_from_shards(job: Job) -> None:
    """Mark unusable the images the fold jobs found unreadable (their shards say which; shards
    written before they did: the image cache says, built again if it was removed)."""
    records = [shards.read_record(job.run_dir, k) for k in range(job.folds.n_folds)]
    if all("unreadable" in r for r in records):
        for r in records:  # table positions: the same table for the same config hash
            job.table.usable[np.asarray(r["unreadable"], dtype=np.int64)] = False
    else:
        with _images(job):
            pass


def _train_folds(job: Job, source, wanted: list[int], force: bool) -> RunResult:
    """Train the ``wanted`` folds not yet committed with this config, each under its fold lock."""
    result = RunResult(job.run_dir, False, [], [])
    splits = build_splits(job.table, job.folds.n_folds)
    for k in wanted:
        with hold(job.run_dir / fold_lock(k), f"run {job.run} fold {k}"):
            if not force and shards.finished(job.run_dir, k, job.hash):
                log.info("fold %d: already finished with this config, skipped", k)
                result.skipped.append(k)
                continue
            _run_fold(job, splits[k], source)
        result.trained.append(k)
    return result


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _run_fold(job: Job, split: Split, source) -> None:
    t0, k, t = time.time(), split.fold, job.table
    seed_everything(job.seed + k)  # each fold on its own seed: resuming changes nothing
    net, norm = _fresh_model(job)
    loader = _loaders(job, source, k)
    chosen, train_pos, inner = _fit_fold(job, net, norm, loader, split)
    oof_pos = np.flatnonzero(t.fold == k)
    views = tuple(job.cfg["tta"])  # the same views for OOF and test rows (the contract)
    oof = _predict(net, loader(oof_pos, False), norm, t, oof_pos, views, f"fold {k} OOF")
    test = _predict(
        net, loader(t.test_positions, False), norm, t, t.test_positions, views, f"fold {k} test"
    )
    f1 = metrics.macro_f1(t.labels[oof_pos], oof.argmax(1), job.folds.n_classes)
    record = {
        "fold": k, "config_hash": job.hash, "epoch": chosen.epoch,
        "epoch_selection": chosen.selection, "inner_macro_f1": chosen.inner_f1,
        "n_inner": len(inner), "n_inner_groups": len(set(t.group[inner])),
        "oof_macro_f1": f1, "history": chosen.history, "n_train": len(train_pos),
        "n_pseudo": int((train_pos >= t.n_train).sum()), "n_val": len(oof_pos),
        "seconds": round(time.time() - t0, 1), "trained_on": sorted(t.ids[train_pos].tolist()),
        "selected_on": sorted(t.ids[inner].tolist()),
        "decode": "cache" if isinstance(source, ImageCache) else "device",
        "image_cache": source.key, "unreadable": np.flatnonzero(~t.usable).tolist(),
    }  # fmt: skip
    oof_df, test_df = _frame(t.ids[oof_pos], k, oof), _frame(t.ids[t.test_positions], k, test)
    models = job.run_dir / MODELS_DIR
    if job.save_models:
        save_fold_model(models, k, net, model=job.model, dcfg=job.dcfg, classes=job.folds.classes,
                        n_folds=job.folds.n_folds, config_hash=job.hash, tta=views,
                        factors=_declared(job.folds))  # fmt: skip
    else:  # never leave another config's weights where this fold's would be
        (models / fold_file(k)).unlink(missing_ok=True)
    shards.write_shard(job.run_dir, k, oof_df, test_df, record)  # the commit, after the model
    how = (
        "the last (fixed schedule)"
        if chosen.selection == "fixed"
        else f"chosen on an inner slice of {len(inner)} images (macro-F1 {chosen.inner_f1:.4f})"
    )
    log.info(
        "fold %d: epoch %d/%d kept, %s; OOF macro-F1 (TTA) %.4f, %d train / %d val images, %.0f s",
        k, chosen.epoch + 1, job.cfg["epochs"], how, f1, len(train_pos), len(oof_pos),
        record["seconds"],
    )  # fmt: skip


def _fresh_model(job: Job):
    net = build(job.model, job.folds.n_classes, job.cfg["head"], _declared(job.folds))
    if job.pretrained:
        load_pretrained(net, job.pretrained["path"])
    norm = Normalizer(job.dcfg, job.device, _channels_last(job))
    return net.to(job.device, memory_format=norm.memory_format), norm


def _channels_last(job: Job) -> bool:
    return use_channels_last(job.model, job.device, job.cfg["channels_last"])


def _fit_fold(job: Job, net, norm, loader, split: Split):
    """Train on ``split.train`` (less the inner slice, if any); return (what ``fit`` chose, the
    positions trained on, the inner slice's positions). Fold k's own rows (``split.val``) are
    only a TensorBoard curve: nothing about this model is decided on them."""
    from torch.utils.tensorboard import SummaryWriter

    t, c = job.table, job.folds.n_classes
    held = np.zeros(len(split.train), dtype=bool)
    if job.cfg["epoch_selection"] == "inner":
        held = inner_slice(t, split, job.cfg["inner_fraction"], job.seed + split.fold)
    train_pos, inner = split.train[~held], split.train[held]
    train_dl = loader(train_pos, True, split.train_labels[~held])
    select = Scored(loader(inner, False), t.labels[inner], c) if len(inner) else None
    monitor = Scored(loader(split.val, False), t.labels[split.val], c)
    tb = job.run_dir / "tb" / f"fold_{split.fold}"
    shutil.rmtree(tb, ignore_errors=True)  # a retrained fold replaces its curves
    with SummaryWriter(log_dir=str(tb)) as writer:
        chosen = fit(net, train_dl, norm, job.cfg, writer, split.fold, select, monitor, c)
    return chosen, train_pos, inner


def _loaders(job: Job, source, fold: int):
    """``make(positions, is_train, labels=None)``: training (augmented, shuffled) or prediction
    batches; ``labels`` default to the table's (0 on unlabelled test rows, which only predict).
    From the image cache, timm's PIL transforms run in the loader workers; with ``decode:
    device`` the workers read the files' bytes and the device decodes and transforms them."""
    if isinstance(source, ImageCache):
        transforms = {True: train_transform(job.dcfg, job.cfg), False: eval_transform(job.dcfg)}
    else:
        transforms = {True: TrainOnDevice(job.dcfg, job.cfg), False: EvalOnDevice(job.dcfg)}
        decoder = DeviceDecoder(job.table.paths, source.size, job.dcfg["interpolation"], job.device)

    def make(positions: np.ndarray, is_train: bool, labels: np.ndarray | None = None):
        if labels is None:
            labels = np.maximum(job.table.labels[positions], 0)
        batch = job.cfg["batch"] * (1 if is_train else EVAL_BATCH_FACTOR)
        opts = dict(train=is_train, workers=job.workers, device=job.device, seed=job.seed + fold)
        if isinstance(source, ImageCache):
            ds = CachedImages(source.path, positions, labels, transforms[is_train])
            return make_loader(ds, batch, **opts)
        ds = RawImages(job.table.paths, positions, labels, job.table.usable, source.size,
                       job.dcfg["interpolation"])  # fmt: skip
        return OnDevice(make_loader(ds, batch, collate=collate, **opts), decoder,
                        transforms[is_train])  # fmt: skip

    return make


def _predict(net, dl, norm, table: ImageTable, positions: np.ndarray, views, desc: str):
    z = predict(net, dl, norm, views, desc=desc)
    z[~table.usable[positions]] = 0.0  # unreadable image: a uniform distribution, not a guess
    return z


def _frame(ids, fold: int, logits: np.ndarray) -> pd.DataFrame:
    head = pd.DataFrame(
        {"sample_id": pd.array(ids, dtype="string"), "fold": np.full(len(ids), fold, "int8")}
    )
    return pd.concat(
        [head, pd.DataFrame(logits, columns=schema.logit_columns(logits.shape[1]))], axis=1
    )


PER_FOLD_KEYS = (
    "fold",
    "epoch",
    "inner_macro_f1",
    "n_inner",
    "n_inner_groups",
    "oof_macro_f1",
    "n_train",
    "n_pseudo",
    "n_val",
    "seconds",
)


def _write_run(store: Store, run: str, job: Job, resolved: dict) -> None:
    oof, test, records = shards.assemble(job.run_dir, job.folds.n_folds)
    t = job.table
    bad = np.flatnonzero(~t.usable)
    info = {
        "run": run, "model": job.model, "classes": list(job.folds.classes), "n_folds": job.folds.n_folds,
        "folds_hash": job.folds.hash, "seed": job.seed, "tta": list(job.cfg["tta"]),
        "recipe": _recipe(job.cfg, _declared(job.folds)) | {"channels_last": _channels_last(job)},
        "metrics": _run_metrics(job, oof, records), "created": pd.Timestamp.now(tz="UTC").isoformat(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "timm": timm.__version__, "stackkit": stackkit.__version__},
        "config": resolved, "config_hash": job.hash, "pseudo": resolved["pseudo"],
        "init": "pretrained" if job.pretrained else "scratch",
        "epoch_selection": job.cfg["epoch_selection"],
        "epoch_selection_details": _epoch_details(job.cfg, records),
        "labels_differ_from_folds": int((t.labels[: t.n_train] != job.folds.labels).sum()),
        "bad_images": {"count": len(bad), "ids": t.ids[bad].tolist()},
        "device": str(job.device), "command": sys.argv, "models": _saved_models(job),
        "decode": _decode_record(job, records),
    }  # fmt: skip
    store.write_run(run, oof, test, info, job.folds)
    m = info["metrics"]
    log.info("run %s: OOF macro-F1 %.4f, accuracy %.4f, log loss %.4f", run,
             m["oof_macro_f1"], m["oof_accuracy"], m["oof_log_loss"])  # fmt: skip


def _decode_record(job: Job, records: list[dict]) -> dict:
    """How the folds' images were decoded (``decode`` of the config resolved per fold job), and
    the image cache they read (its key names ``<artifacts>/cache/images/<key>/``)."""
    modes = sorted({r.get("decode", "cache") for r in records})
    keys = sorted({r["image_cache"] for r in records if r.get("image_cache")})
    return {
        "setting": job.cfg["decode"], "mode": modes[0] if len(modes) == 1 else modes,
        "image_cache": keys[0] if len(keys) == 1 else (keys or None),
        "scale_size": list(_cache_args(job)[1]),
    }  # fmt: skip


def _recipe(cfg: dict, declared: dict | None = None) -> dict:
    """The training recipes of issue 15 as run.json records them (null: off); ``declared``: a
    manifest's factor declaration (the heads are then its factors')."""
    mix = cfg["mixup_alpha"] > 0 or cfg["cutmix_alpha"] > 0
    return {
        "mix": {k: cfg[k] for k in ("mixup_alpha", "cutmix_alpha", "mix_prob", "mix_off_epoch")}
        if mix else None,
        "ema": {"decay": cfg["ema_decay"], "predictions_from": "ema weights"}
        if cfg["ema_decay"] > 0 else None,
        "tta": list(cfg["tta"]),
        "head": _head_record(cfg, declared) if cfg["head"] == "multitask" else None,
    }  # fmt: skip


def _head_record(cfg: dict, declared: dict | None) -> dict:
    if declared is None:
        return {"kind": "multitask", "factors": dict(MASK_FACTORS),
                "weights": list(cfg["head_weights"]), "class_factors": None,
                "logits": "log p(mask) + log p(gender) + log p(age), label = 6*mask + 3*gender + age"}  # fmt: skip
    return {"kind": "multitask", "factors": factor_sizes(declared),
            "weights": list(cfg["head_weights"]), "class_factors": declared,
            "logits": "class c: sum over factors i of log p_i(class_factors.classes[c][i])"}  # fmt: skip


def _saved_models(job: Job) -> str | None:
    """run.json's ``models``: the folder of the fold models if every fold's is there, made with
    this config (else None, with a warning naming the folds that lack one)."""
    models = job.run_dir / MODELS_DIR
    have = [
        k for k in range(job.folds.n_folds) if fold_config_hash(models / fold_file(k)) == job.hash
    ]
    if len(have) == job.folds.n_folds:
        return MODELS_DIR
    if job.save_models or have:
        lacking = sorted(set(range(job.folds.n_folds)) - set(have))
        log.warning(
            "run %s: fold(s) %s have no saved model of this config (trained with "
            "--no-save-models?); retrain them with --force to predict new images",
            job.run, ", ".join(map(str, lacking)),
        )  # fmt: skip
    return None


def _epoch_details(cfg: dict, records: list[dict]) -> dict:
    """How each fold's weights were chosen (contract 1.1 "Epochs"): never on its own OOF rows."""
    inner = cfg["epoch_selection"] == "inner"
    return {
        "epochs": cfg["epochs"],
        "inner_fraction": cfg["inner_fraction"] if inner else None,
        "per_fold": [
            {"fold": r["fold"], "epoch": r["epoch"], "n_inner": r["n_inner"],
             "n_inner_groups": r["n_inner_groups"], "inner_macro_f1": r["inner_macro_f1"]}
            for r in records
        ],
    }  # fmt: skip


def _run_metrics(job: Job, oof: pd.DataFrame, records: list[dict]) -> dict:
    """Scores of the whole OOF vector against the labels the run was trained on."""
    t = job.table
    pos = pd.Index(t.ids[: t.n_train]).get_indexer(oof["sample_id"].to_numpy(dtype=object))
    logits = oof[schema.logit_columns(job.folds.n_classes)].to_numpy()
    s = metrics.scores(t.labels[pos], metrics.softmax(logits), oof["fold"].to_numpy())
    return {
        "oof_macro_f1": s["macro_f1"], "oof_accuracy": s["accuracy"], "oof_log_loss": s["log_loss"],
        "per_fold": [{k: r[k] for k in PER_FOLD_KEYS} for r in records],
    }  # fmt: skip
