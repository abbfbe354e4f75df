"""A run's fold models, kept for new images: saved as safetensors beside the run, rebuilt with
timm, and run with the run's own preprocessing and TTA.

    runs/<run>/models/fold_<k>.safetensors   fold k's final weights (tensors only, no pickle)
    runs/<run>/models/model.json             what rebuilds model and preprocessing (MODEL_FILE)

The runner calls :func:`save_fold_model` after each fold. :func:`predict_run` is what
``stackkit predict`` calls for every ``timm`` run (registered under the entry-point group
``stackkit.predictors`` in pyproject.toml; stackkit never imports this package): it decodes the
images once, exactly as the runner's image cache does (cover-resize to the evaluation scale size,
centre crop), then feeds them through each fold model with timm's evaluation transform and the
runner's TTA (``loop.predict``). A fold trained with ``decode: device`` (run.json's
``decode.mode``) has its images decoded as that run's loaders did, by
:func:`base_models.device_decode.decode_files` on the predicting device (``decode_jpeg``, torch's
resize, timm's evaluation crop on tensors); runs from before run.json recorded ``decode``: the cache.

    >>> logits, bad = predict_run(Path("artifacts/runs/effnet/models"), ["a.jpg", "b.jpg"])
    >>> logits.shape   # (K folds, 2 images, C classes)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

import stackkit
from base_models import shards
from base_models.config import TTA_VIEWS
from base_models.data import Normalizer, eval_transform, use_channels_last
from base_models.device_decode import EvalOnDevice, decode_files, reason
from base_models.images import DECODE_ERRORS, decode, scale_size
from base_models.loop import VIEWS, predict
from base_models.model import MASK_FACTORS, MultiTask, build
from stackkit.contract import schema
from stackkit.contract.errors import StackkitError
from stackkit.contract.store import atomic_path, read_json, write_json
from stackkit.data.factors import factor_sizes

log = logging.getLogger(__name__)

MODEL_FILE = "model.json"
FORMAT = "stackkit-run-models/1"
CHUNK = 512  # images decoded at a time: every fold model predicts a chunk before the next
DEFAULT_BATCH = 64


def fold_file(k: int) -> str:
    return f"fold_{k}.safetensors"


def save_fold_model(folder: Path, fold: int, net: torch.nn.Module, *, model: str, dcfg: dict,
                    classes, n_folds: int, config_hash: str,
                    tta: tuple[str, ...] = TTA_VIEWS, factors: dict | None = None) -> None:  # fmt: skip
    """Write fold ``fold``'s weights and the run's ``model.json`` (each to a temporary name,
    then renamed): the timm name, head (multi-task: its factors and, for a manifest's declared
    ones, ``class_factors``), classes, input size, timm's resolved data config, the size
    images are decoded at, the TTA views and the versions."""
    import timm

    state = {k: v.detach().cpu().clone().contiguous() for k, v in net.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / fold_file(fold)) as tmp:
        save_file(state, tmp, metadata={"format": "pt", "model": model, "fold": str(fold),
                                        "config_hash": config_hash})  # fmt: skip
    info = {
        "format": FORMAT,
        "framework": "timm",
        "model": model,
        "head": "multitask" if isinstance(net, MultiTask) else net.pretrained_cfg.get("classifier"),
        "factors": _factors(net, factors),
        "class_factors": factors if isinstance(net, MultiTask) else None,
        "num_classes": len(classes),
        "classes": list(classes),
        "n_folds": int(n_folds),
        "input_size": list(dcfg["input_size"]),
        "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in dcfg.items()},
        "decode_size": list(scale_size(dcfg["input_size"][1:], dcfg["crop_pct"])),
        "tta": list(tta),
        "config_hash": config_hash,
        "versions": {
            "stackkit": stackkit.__version__,
            "timm": timm.__version__,
            "torch": torch.__version__,
        },
    }
    write_json(info, folder / MODEL_FILE)


def _factors(net: torch.nn.Module, declared: dict | None) -> dict | None:
    if not isinstance(net, MultiTask):
        return None
    return dict(MASK_FACTORS) if declared is None else factor_sizes(declared)


def fold_config_hash(path: Path) -> str | None:
    """The run config a saved fold model was trained with (None: no readable file)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("config_hash")
    except (SafetensorError, OSError, ValueError):
        return None


def read_model_info(folder: Path) -> dict:
    info = read_json(folder / MODEL_FILE, str(folder / MODEL_FILE))
    need = ("model", "num_classes", "n_folds", "data_config", "decode_size", "tta")
    missing = [k for k in need if not isinstance(info, dict) or k not in info]
    if missing:
        raise StackkitError(f"{folder / MODEL_FILE}: missing key(s) {', '.join(missing)}")
    unknown = [v for v in info["tta"] if v not in VIEWS]
    if unknown or not info["tta"]:
        raise StackkitError(f"{folder / MODEL_FILE}: TTA views {info['tta']} are not among "
                            f"this runner's {list(VIEWS)}")  # fmt: skip
    return info


def load_fold_model(folder: Path, fold: int, info: dict) -> torch.nn.Module:
    """Fold ``fold``'s model rebuilt from ``model.json`` and its safetensors file (never
    ``torch.load``); a file whose tensors do not match the model is one StackkitError line."""
    path = folder / fold_file(fold)
    if not path.is_file():
        raise StackkitError(f"{path}: fold model not found ({info['n_folds']} folds expected)")
    try:
        state = load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise StackkitError(f"{path}: not a safetensors file ({exc})") from None
    made_with = fold_config_hash(path)
    if made_with and info.get("config_hash") and made_with != info["config_hash"]:
        raise StackkitError(
            f"{path}: made with config {made_with}, model.json describes {info['config_hash']} "
            "(the fold was retrained without saving its model): retrain it"
        )
    head = "multitask" if info.get("head") == "multitask" else "linear"
    net = build(info["model"], int(info["num_classes"]), head, info.get("class_factors"))
    want = net.state_dict()
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    if missing or extra:
        what = f"lacks tensor {missing[0]!r}" if missing else f"has unknown tensor {extra[0]!r}"
        raise StackkitError(f"{path}: {what} of model.json's {info['model']} "
                            f"({len(missing)} missing, {len(extra)} unknown)")  # fmt: skip
    for k, v in want.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise StackkitError(
                f"{path}: tensor {k!r} has shape {tuple(state[k].shape)}, model.json's "
                f"{info['model']} with {info['num_classes']} classes needs {tuple(v.shape)}"
            )
    net.load_state_dict(state, strict=True)
    return net.eval()


DECODE_MODES = ("cache", "device")


def fold_decoding(folder: Path, n_folds: int) -> tuple[list[str], tuple[int, int] | None]:
    """How each fold's images were decoded (``cache`` or ``device``) and at what scale size, from
    the run's run.json ``decode`` (beside ``folder``): its ``mode``, or when folds differ (a list)
    each fold's shard record; none recorded (a run from before the key): the cache, size None."""
    path = folder.parent / schema.RUN_FILE
    info = read_json(path, str(path)) if path.is_file() else {}
    rec = info.get("decode") if isinstance(info, dict) else None
    if not isinstance(rec, dict):
        return ["cache"] * n_folds, None
    mode, size = rec.get("mode", "cache"), rec.get("scale_size")
    if isinstance(mode, list):
        records = [shards.read_record(folder.parent, k) for k in range(n_folds)]
        lost = [k for k, r in enumerate(records) if r is None]
        if lost:
            raise StackkitError(
                f"{path}: decode.mode {mode} differs between folds and fold {lost[0]}'s shard "
                f"record ({shards.shard_files(folder.parent, lost[0])[2]}) that says which is gone"
            )
        modes = [r.get("decode", "cache") for r in records]
    else:
        modes = [mode] * n_folds
    unknown = sorted({str(m) for m in modes} - set(DECODE_MODES))
    if unknown:
        raise StackkitError(
            f"{path}: decode mode {unknown[0]!r} is not one of {list(DECODE_MODES)}"
        )
    return modes, tuple(int(x) for x in size) if size else None


class _Pixels(torch.utils.data.Dataset):
    def __init__(self, pixels: np.ndarray, transform):
        self.pixels, self.transform = pixels, transform

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.pixels[i])), 0


def predict_run(
    folder: Path,
    paths: list[str],
    *,
    device: str | None = None,
    batch_size: int | None = None,
    skip_bad_images: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(K, m, C) float32 logits of every fold model on ``paths`` (TTA as in the run), and the
    positions of the images that could not be decoded (their logits are 0). Without
    ``skip_bad_images`` an undecodable image is an error naming it."""
    folder = Path(folder)
    info = read_model_info(folder)
    dcfg = info["data_config"]
    dcfg = {k: tuple(v) if isinstance(v, list) else v for k, v in dcfg.items()}
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    k_folds, c = int(info["n_folds"]), int(info["num_classes"])
    nets = [load_fold_model(folder, k, info) for k in range(k_folds)]  # all checked first
    norm = Normalizer(dcfg, dev, use_channels_last(info["model"], dev))
    nets = [n.to(dev, memory_format=norm.memory_format) for n in nets]
    transform = eval_transform(dcfg)
    views = tuple(info["tta"])
    modes, run_size = fold_decoding(folder, k_folds)
    size = run_size or tuple(info["decode_size"])
    interpolation = dcfg.get("interpolation", "bicubic")
    if "device" in modes:
        log.info("%s: decoding JPEGs on %s as the run's decode: device folds did", folder, dev)
    out = np.zeros((k_folds, len(paths), c), dtype=np.float32)
    bad: set[int] = set()
    batch = batch_size or DEFAULT_BATCH

    def unreadable(i: int, why: str) -> None:
        if not skip_bad_images:
            raise StackkitError(f"{paths[i]}: cannot be decoded as an image ({why}); "
                                "pass --skip-bad-images to leave it out")  # fmt: skip
        bad.add(i)

    with tqdm(total=len(paths) * k_folds, desc=f"predict {info['model']}", unit="img",
              disable=None) as bar:  # fmt: skip
        for start in range(0, len(paths), CHUNK):
            chunk = paths[start : start + CHUNK]
            loaders = {}
            if "cache" in modes:  # decoded by PIL as the image cache is, timm's PIL transform
                pixels = np.zeros((len(chunk), *size, 3), dtype=np.uint8)
                for j, p in enumerate(chunk):
                    try:
                        pixels[j] = decode(p, size, interpolation)
                    except DECODE_ERRORS as exc:
                        unreadable(start + j, reason(exc))
                loaders["cache"] = torch.utils.data.DataLoader(_Pixels(pixels, transform),
                                                               batch_size=batch)  # fmt: skip
            if "device" in modes:  # the run's device decoding, its evaluation crop on tensors
                x = decode_files(chunk, size, interpolation, dev,
                                 lambda j, why, at=start: unreadable(at + j, why))  # fmt: skip
                x = EvalOnDevice(dcfg)(x)
                loaders["device"] = [(x[b : b + batch], None) for b in range(0, len(x), batch)]
            for k, net in enumerate(nets):
                out[k, start : start + len(chunk)] = predict(net, loaders[modes[k]], norm, views,
                                                             desc="")  # fmt: skip
                bar.update(len(chunk))
    skipped = np.asarray(sorted(bad), dtype=np.int64)
    out[:, skipped] = 0.0  # as the runner's test logits: a uniform distribution, not a guess
    return out, skipped
