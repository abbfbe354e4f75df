"""From cached pixels to normalised batches on the device.

Preprocessing comes from the model: ``timm.data.resolve_model_data_config(model)`` (input size
and crop overridable) into ``timm.data.create_transform(**cfg, is_training=...)``. The transforms
run in loader workers with ``use_prefetcher=True``, so they return uint8 tensors (a quarter of
the bytes of float32 to pin and copy); the mean/std of that same config normalise them on the
device.

    >>> cfg = data_config(net, img_size=(512, 384), crop_pct=None)
    >>> loader = make_loader(cache, positions, labels, train_transform(cfg, aug), ...)
    >>> norm = Normalizer(cfg, device)
    >>> for x, y in loader: logits = net(norm(x))
"""

from __future__ import annotations

import numpy as np
import timm.data
import torch
from PIL import Image
from torch.utils.data import DataLoader

PREFETCH_BATCHES = 4  # per worker: smooths out slow batches without holding much memory


def data_config(model: torch.nn.Module, img_size=None, crop_pct=None) -> dict:
    """timm's resolved data config, with the input size and crop fraction overridden if given."""
    cfg = dict(timm.data.resolve_model_data_config(model))
    if img_size is not None:
        cfg["input_size"] = (3, int(img_size[0]), int(img_size[1]))
    if crop_pct is not None:
        cfg["crop_pct"] = float(crop_pct)
    return cfg


def train_transform(cfg: dict, aug: dict):
    return timm.data.create_transform(
        **cfg, is_training=True, use_prefetcher=True,
        scale=tuple(aug["scale"]), hflip=aug["hflip"], color_jitter=aug["color_jitter"],
    )  # fmt: skip


def eval_transform(cfg: dict):
    return timm.data.create_transform(**cfg, is_training=False, use_prefetcher=True)


class CachedImages(torch.utils.data.Dataset):
    """Rows of the uint8 cache through a PIL transform; the memory map opens lazily, once per
    worker process, so workers share its pages."""

    def __init__(self, cache_path, positions: np.ndarray, labels: np.ndarray, transform):
        self.cache_path = str(cache_path)
        self.positions = np.asarray(positions, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self._pixels = None

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int):
        if self._pixels is None:
            self._pixels = np.load(self.cache_path, mmap_mode="r", allow_pickle=False)
        img = Image.fromarray(np.ascontiguousarray(self._pixels[self.positions[i]]))
        return self.transform(img), int(self.labels[i])


def make_loader(
    dataset: CachedImages,
    batch: int,
    *,
    train: bool,
    workers: int,
    device: torch.device,
    seed: int,
    collate=None,
) -> DataLoader:
    """Shuffled (seeded) batches for training; ordered ones for prediction."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch,
        shuffle=train,
        drop_last=train and len(dataset) > batch,  # no 1-image batch for batch norm
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=PREFETCH_BATCHES if workers > 0 else None,
        generator=generator,
        collate_fn=collate,
    )


NO_CHANNELS_LAST = ("nfnet", "dm_nfnet", "eca_nfnet", "nf_")  # model-name prefixes
# timm's training benchmark (RTX 3090, AMP): nfnet_f0 266 img/s with channels_last, 634 without;
# efficientnet_b3 572 with, 457 without. NF-nets' weight-standardised convs lose, the rest gain.


def use_channels_last(model: str, device: torch.device, setting: str | bool = "auto") -> bool:
    """Whether batches go channels_last: never on the CPU; on CUDA ``setting`` (true/false), or
    for ``auto`` every model family except the NF-nets (``NO_CHANNELS_LAST``)."""
    if device.type != "cuda":
        return False
    if isinstance(setting, bool):
        return setting
    return not model.split("/")[-1].startswith(NO_CHANNELS_LAST)


class Normalizer:
    """uint8 NCHW batch -> float, (x/255 - mean)/std of the model's data config, on the device,
    channels_last where it helps (``channels_last``; None: on CUDA)."""

    def __init__(self, cfg: dict, device: torch.device, channels_last: bool | None = None):
        self.device = device
        self.mean = torch.tensor(cfg["mean"], device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(cfg["std"], device=device).view(1, -1, 1, 1) * 255
        if channels_last is None:
            channels_last = device.type == "cuda"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).float()
        return x.sub_(self.mean).div_(self.std).contiguous(memory_format=self.memory_format)
