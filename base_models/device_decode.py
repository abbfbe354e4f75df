"""Decoding on the accelerator (``decode: gpu``): no image cache, no disk.

Loader workers only read each file's bytes; the device decodes the
batch's JPEGs in one call (``torchvision.io.decode_jpeg(list, device=...)``, nvJPEG on CUDA),
resizes each image by the cache's rule (cover the evaluation scale size keeping the aspect ratio,
centre crop: :func:`base_models.images.decode`), then applies the model's transform as tensors:

- evaluation: timm's eval transform on an image already at the scale size is its centre crop
  (``ResizeKeepRatio`` to the same size changes nothing), so :class:`EvalOnDevice` is that crop;
- training: :class:`TrainOnDevice` is timm's ``RandomResizedCropAndInterpolation`` (the same
  sampling of the box), horizontal flip and colour jitter, drawn per image from torch's RNG.

Out comes the same uint8 NCHW batch the cache path's loaders give, already on the device, for
:class:`base_models.data.Normalizer`. The same code runs with ``device="cpu"`` (tested in CI).
``stackkit predict`` decodes a device-decoded run's images with it too (:func:`decode_files`).
A file that is not a JPEG (PNG, …) is decoded with PIL in the loader worker, by the cache's own
:func:`base_models.images.decode`. Unreadable files are found before training by reading every
header (:func:`scan`); a JPEG whose data turns out broken mid-training stops the run naming the
file (``decode: cache`` finds those up front, and ``--skip-bad-images`` trains without them).

Pixels differ from the cache path's by PIL's versus torch's resampling: on the CPU at most 2
levels of 255 (mean under 0.01) where the target is more than half the source on a side, and up
to 8 (mean under 1) at half or below, where PIL lets the JPEG decoder shrink the image first
(its draft mode); ``tests/test_device_decode.py`` pins both. nvJPEG's IDCT on CUDA may add a
level or two: not measured yet. torchvision 0.29 deprecates its image decoders in favour of
TorchCodec (not installed here); ``decode_jpeg`` is the one call to port when they go.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode, v2

from base_models.images import DECODE_ERRORS, decode
from stackkit.contract.errors import StackkitError

JPEG_MAGIC = b"\xff\xd8\xff"
MODES = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}
RATIO = (3 / 4, 4 / 3)  # timm's default aspect-ratio range for RandomResizedCrop


def is_jpeg(data: torch.Tensor) -> bool:
    return bytes(data[:3].tolist()) == JPEG_MAGIC


def scan(paths: list[str], threads: int) -> np.ndarray:
    """Positions whose file PIL cannot open (its header only: fast, and no pixels decoded)."""

    def bad(path: str) -> bool:
        try:
            with Image.open(path) as im:
                return im.width < 1 or im.height < 1
        except DECODE_ERRORS:
            return True

    with ThreadPoolExecutor(max(1, threads)) as pool:
        flags = list(pool.map(bad, paths, chunksize=256))
    return np.flatnonzero(np.asarray(flags, dtype=bool)).astype(np.int64)


class RawImages(torch.utils.data.Dataset):
    """Item ``i``: (the file's bytes as a 1-D uint8 tensor if a JPEG, else its pixels decoded by
    PIL at ``size`` as 3 x H x W, zeros for an unusable row; its table position; its label)."""

    def __init__(self, paths, positions, labels, usable, size, interpolation: str):
        self.paths = paths
        self.positions = np.asarray(positions, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.usable = usable
        self.size = tuple(size)
        self.interpolation = interpolation

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int):
        pos = int(self.positions[i])
        if not self.usable[pos]:
            return torch.zeros((3, *self.size), dtype=torch.uint8), pos, int(self.labels[i])
        with open(self.paths[pos], "rb") as f:
            data = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
        if not is_jpeg(data):
            try:
                pixels = decode(self.paths[pos], self.size, self.interpolation)
            except DECODE_ERRORS:  # a header that reads, data that does not: the bytes go on,
                return data, pos, int(self.labels[i])  # and DeviceDecoder names the file
            data = torch.from_numpy(pixels.copy()).permute(2, 0, 1)
        return data, pos, int(self.labels[i])


def reason(exc: BaseException) -> str:
    """An exception's first line (its type when it has no message)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def decode_files(paths, size, interpolation: str, device, on_bad) -> torch.Tensor:
    """Every file of ``paths`` as the runner's loaders decode them for ``decode: device`` (each
    read by :class:`RawImages`, the JPEGs decoded on ``device`` in one call): uint8 (N, 3, H, W)
    at ``size`` on ``device``. A file that cannot be decoded is zeros after ``on_bad(position,
    reason)`` (which may raise)."""
    n = len(paths)
    ds = RawImages(paths, np.arange(n), np.zeros(n), np.ones(n, bool), size, interpolation)
    items = []
    for i in range(n):
        try:
            items.append(ds[i])
        except DECODE_ERRORS as exc:  # not a JPEG, and PIL cannot decode it either
            on_bad(i, reason(exc))
            items.append((torch.zeros((3, *ds.size), dtype=torch.uint8), i, 0))
    raw, _ = collate(items)
    return DeviceDecoder(paths, size, interpolation, device, on_bad)(raw)


def collate(items):
    """A list of raw items -> ((list of tensors, positions), labels)."""
    data, pos, labels = zip(*items)
    return (list(data), torch.tensor(pos)), torch.tensor(labels)


class DeviceDecoder:
    """Raw items -> uint8 (N, 3, H, W) on ``device`` at the scale size ``size``. A JPEG neither
    the device nor PIL can decode stops the run naming it, or with ``on_bad`` (``on_bad(position,
    reason)``, which may raise) its pixels are zeros."""

    def __init__(self, paths, size, interpolation: str, device: torch.device, on_bad=None):
        self.paths = paths
        self.size = tuple(int(s) for s in size)
        self.interpolation = interpolation
        self.mode = MODES.get(interpolation, InterpolationMode.BICUBIC)
        self.device = torch.device(device)
        self.on_bad = on_bad

    def __call__(self, raw) -> torch.Tensor:
        data, pos = raw
        out = torch.empty((len(data), 3, *self.size), dtype=torch.uint8, device=self.device)
        jpeg = [i for i, d in enumerate(data) if d.ndim == 1]
        for i in set(range(len(data))) - set(jpeg):  # decoded by PIL in the worker
            out[i] = data[i].to(self.device, non_blocking=True)
        for i, img in zip(jpeg, self._decode([data[i] for i in jpeg], pos[jpeg].tolist())):
            out[i] = self.cover(img)
        return out

    def _decode(self, blobs: list[torch.Tensor], pos: list[int]) -> list[torch.Tensor]:
        if not blobs:
            return []
        try:
            return decode_jpeg(blobs, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:  # one bad file fails the batch: find it, one image at a time
            return [self._one(b, p) for b, p in zip(blobs, pos)]

    def _one(self, blob: torch.Tensor, pos: int) -> torch.Tensor:
        try:
            return decode_jpeg(blob, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:  # e.g. a CMYK JPEG nvJPEG refuses: PIL's decoder, already resized
            try:
                pixels = decode(self.paths[pos], self.size, self.interpolation)
            except DECODE_ERRORS as exc:
                if self.on_bad is None:
                    raise StackkitError(
                        f"{self.paths[pos]}: cannot be decoded ({reason(exc)}); decode: cache "
                        "finds every unreadable file before training (then pass "
                        "--skip-bad-images to train without them)"
                    ) from None
                self.on_bad(pos, reason(exc))
                return torch.zeros((3, *self.size), dtype=torch.uint8, device=self.device)
            return torch.from_numpy(pixels.copy()).permute(2, 0, 1).to(self.device)

    def cover(self, img: torch.Tensor) -> torch.Tensor:
        """The cache's resize rule on one 3 x h x w image: cover ``size``, centre crop."""
        h, w = self.size
        if tuple(img.shape[-2:]) == (h, w):
            return img
        ih, iw = img.shape[-2:]
        s = max(h / ih, w / iw)
        rw, rh = max(w, round(iw * s)), max(h, round(ih * s))
        img = TF.resize(img, [rh, rw], interpolation=self.mode, antialias=True)
        left, top = (rw - w) // 2, (rh - h) // 2
        return img[:, top : top + h, left : left + w]


class EvalOnDevice:
    """timm's evaluation transform on images already at the scale size: the centre crop."""

    def __init__(self, dcfg: dict):
        self.size = list(dcfg["input_size"][1:])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return TF.center_crop(x, self.size)


def crop_box(h: int, w: int, scale, ratio=RATIO) -> tuple[int, int, int, int]:
    """timm's ``RandomResizedCropAndInterpolation.get_params`` on torch's RNG: (top, left, h, w)."""
    area = h * w
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(2).tolist()
        target = (scale[0] + (scale[1] - scale[0]) * u[0]) * area
        aspect = math.exp(lo + (hi - lo) * u[1])
        tw, th = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if tw <= w and th <= h:
            top = int(torch.randint(0, h - th + 1, ()).item())
            left = int(torch.randint(0, w - tw + 1, ()).item())
            return top, left, th, tw
    in_ratio = w / h  # fallback: the central crop at the nearest allowed ratio
    tw, th = w, h
    if in_ratio < min(ratio):
        th = round(w / min(ratio))
    elif in_ratio > max(ratio):
        tw = round(h * max(ratio))
    return (h - th) // 2, (w - tw) // 2, th, tw


class TrainOnDevice:
    """timm's training transform (random resized crop, flip, colour jitter) per image, on
    tensors: the ``scale``, ``hflip`` and ``color_jitter`` of the config."""

    def __init__(self, dcfg: dict, aug: dict):
        self.size = list(dcfg["input_size"][1:])
        self.mode = MODES.get(dcfg["interpolation"], InterpolationMode.BICUBIC)
        self.scale = tuple(aug["scale"])
        self.hflip = float(aug["hflip"])
        cj = float(aug["color_jitter"] or 0)
        self.jitter = v2.ColorJitter(cj, cj, cj) if cj > 0 else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = []
        for img in x:
            top, left, ch, cw = crop_box(h, w, self.scale)
            img = TF.resized_crop(img, top, left, ch, cw, self.size, self.mode, antialias=True)
            if self.hflip > 0 and torch.rand(()).item() < self.hflip:
                img = TF.horizontal_flip(img)
            if self.jitter is not None:
                img = self.jitter(img)
            out.append(img)
        return torch.stack(out)


class OnDevice:
    """A loader of raw batches seen as (uint8 NCHW on the device, labels), as the training loop
    and ``loop.predict`` expect."""

    def __init__(self, loader, decoder: DeviceDecoder, transform):
        self.loader, self.decoder, self.transform = loader, decoder, transform

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for raw, y in self.loader:
            yield self.transform(self.decoder(raw)), y
