"""The resolved training configuration:
default.yaml < configs/<model>.yaml < ``--config FILE`` (an experiment's own YAML) < command line.

Training defaults live in ``configs/default.yaml`` (each with its reason); the machine-level
defaults that do not change results (device, loader workers, threads) live here. A config file
with a key that default.yaml does not have is refused.

    >>> cfg = resolve_config("resnet18", {"epochs": 3, "img_size": "512x384"})
    >>> cfg["lr"], cfg["img_size"]
    (0.001, [512, 384])
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import yaml

from stackkit.contract.errors import StackkitError

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_SEED = 42  # the same default as `stackkit folds --seed`
TTA_VIEWS = ("identity", "hflip")  # the default views (default.yaml's tta)
TTA_CHOICES = ("identity", "hflip", "zoom90", "zoom90_hflip")  # base_models.loop.VIEWS
CHOICES = {
    "optimizer": ("adamw", "sgd"),
    "loss": ("ce", "focal"),
    "epoch_selection": ("fixed", "inner"),
    "head": ("linear", "multitask"),  # base_models.model.HEADS
    "decode": ("auto", "cache", "device"),  # base_models.runner.decode_mode
}


def cpu_count() -> int:
    """Cores this process may use (the container's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(device_type: str) -> int:
    """Loader processes: on CUDA enough to keep the GPU fed (decode is cached, so augmentation is
    all they do); on the CPU none, since the model already uses every core."""
    return min(12, max(1, cpu_count() - 2)) if device_type == "cuda" else 0


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise StackkitError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise StackkitError(f"{path}: must be a mapping of key: value")
    return data


def defaults() -> dict:
    return _read_yaml(CONFIG_DIR / "default.yaml")


def model_config_path(model: str) -> Path:
    """``configs/<model>.yaml``, a pretrained tag (``resnet18.a1_in1k``) ignored."""
    return CONFIG_DIR / f"{model.split('.')[0]}.yaml"


def parse_img_size(value) -> list[int] | None:
    """``"512x384"`` (H x W), ``"224"``, ``224``, ``[512, 384]`` -> ``[H, W]``."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.lower().replace(" ", "").split("x")
        if not all(p.isdigit() for p in parts) or len(parts) not in (1, 2):
            raise StackkitError(
                f"--img-size must be HxW (e.g. 512x384) or one integer, got {value!r}"
            )
        value = [int(p) for p in parts]
    if isinstance(value, int):
        value = [value, value]
    value = [int(v) for v in value]
    if len(value) == 1:
        value = value * 2
    if len(value) != 2 or min(value) < 8:
        raise StackkitError(f"img_size must be [H, W] with both at least 8, got {value!r}")
    return value


def resolve_config(model: str, overrides: dict, config_file: str | Path | None = None) -> dict:
    """Merge the layers, refusing unknown keys and bad choices."""
    cfg = defaults()
    path = model_config_path(model)
    layers = [(str(path), _read_yaml(path))] if path.is_file() else []
    if config_file is not None:
        config_file = Path(config_file)
        if not config_file.is_file():
            raise StackkitError(f"{config_file}: config file not found")
        layers.append((str(config_file), _read_yaml(config_file)))
    layers.append(("the command line", {k: v for k, v in overrides.items() if v is not None}))
    for where, layer in layers:
        unknown = sorted(set(layer) - set(cfg))
        if unknown:
            raise StackkitError(
                f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(cfg))})"
            )
        cfg.update(layer)
    cfg["img_size"] = parse_img_size(cfg["img_size"])
    for key, allowed in CHOICES.items():
        if cfg[key] not in allowed:
            raise StackkitError(f"{key} must be one of {', '.join(allowed)}, got {cfg[key]!r}")
    for key in ("epochs", "batch"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise StackkitError(f"{key} must be a positive integer, got {cfg[key]!r}")
    cfg["lr"] = float(cfg["lr"])
    frac = cfg["inner_fraction"]
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
        raise StackkitError(f"inner_fraction must be a number in (0, 1), got {frac!r}")
    cfg["inner_fraction"] = float(frac)
    _check_recipes(cfg)
    return cfg


def _number(cfg: dict, key: str, lo: float, hi: float, hi_open: bool = False) -> float:
    v = cfg[key]
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi
    if not ok or (hi_open and v == hi):
        raise StackkitError(
            f"{key} must be a number in [{lo:g}, {hi:g}{')' if hi_open else ']'}, got {v!r}"
        )
    return float(v)


def _check_recipes(cfg: dict) -> None:
    """Mixup/CutMix, EMA, TTA and head keys (issue 15), each refused in one line when out of range."""
    for key in ("mixup_alpha", "cutmix_alpha"):
        cfg[key] = _number(cfg, key, 0, 100)
    cfg["mix_prob"] = _number(cfg, "mix_prob", 0, 1)
    cfg["ema_decay"] = _number(cfg, "ema_decay", 0, 1, hi_open=True)
    off = cfg["mix_off_epoch"]
    if isinstance(off, bool) or not isinstance(off, int) or off < 0:
        raise StackkitError(f"mix_off_epoch must be an integer >= 0 (0: never), got {off!r}")
    tta = cfg["tta"]
    if isinstance(tta, str):
        tta = [tta]
    if not isinstance(tta, list) or not tta or any(v not in TTA_CHOICES for v in tta):
        raise StackkitError(
            f"tta must be a list of views among {', '.join(TTA_CHOICES)}, got {cfg['tta']!r}"
        )
    cfg["tta"] = list(dict.fromkeys(tta))
    if cfg["channels_last"] not in ("auto", True, False):
        raise StackkitError(
            f"channels_last must be auto, true or false, got {cfg['channels_last']!r}"
        )
    w = cfg["head_weights"]
    ok = isinstance(w, list) and len(w) > 0
    if not ok or any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in w):
        raise StackkitError(
            f"head_weights must be a list of numbers >= 0, one per factor (mask, gender, age on "
            f"the mask layout), got {w!r}"
        )
    cfg["head_weights"] = [float(v) for v in w]


def head_weights_for(cfg: dict, factors: list[str]) -> list[float]:
    """``head_weights`` for these factors: one number per factor, or numbers all equal (the
    default's 1, 1, 1), which mean equal weights for any number of factors."""
    w = cfg["head_weights"]
    if len(w) == len(factors):
        return list(w)
    if len(set(w)) == 1:
        return [w[0]] * len(factors)
    raise StackkitError(
        f"head_weights {w} has {len(w)} numbers for the {len(factors)} factors "
        f"{', '.join(factors)}: give one per factor"
    )


def config_hash(obj: dict) -> str:
    """What a fold shard is keyed on: everything that changes its numbers."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
