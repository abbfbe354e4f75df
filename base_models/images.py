"""Decode images into uint8 pixels at the evaluation scale size, the same way on every path.

Images are stored at the evaluation *scale* size (``img_size / crop_pct``), resized keeping their
aspect ratio to cover it and centre-cropped to it (:data:`RESIZE_RULE`), which is what timm's
evaluation transform does before its final centre crop; the training transform (random resized
crop) starts from the same image. :func:`decode_all` writes N such images into one ``.npy``
(N x H x W x 3, uint8), read as a memory map so loader workers share its pages; where that file
lives and who shares it is :mod:`base_models.image_cache`. Decoding on the accelerator, with no
file at all, is :mod:`base_models.device_decode` (the same rule in torch).
"""

from __future__ import annotations

import logging
import math
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from stackkit.contract.errors import StackkitError
from stackkit.contract.store import atomic_path

log = logging.getLogger(__name__)

INTERPOLATION = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def scale_size(img_size: tuple[int, int], crop_pct: float) -> tuple[int, int]:
    """timm's evaluation resize target for a centre crop of ``crop_pct``."""
    return tuple(math.floor(x / crop_pct) for x in img_size)


RESIZE_RULE = "cover-centre-crop/1"  # the rule of decode(); part of the image cache's key


def decode(path: str, size: tuple[int, int], interpolation: str = "bicubic") -> np.ndarray:
    """(H, W, 3) uint8: cover-resize keeping the aspect ratio, then centre-crop to ``size``."""
    h, w = size
    with Image.open(path) as im:
        im.draft("RGB", (w, h))  # JPEG: let the decoder downscale (never below the target)
        im = im.convert("RGB")
        s = max(h / im.height, w / im.width)
        rw, rh = max(w, round(im.width * s)), max(h, round(im.height * s))
        im = im.resize((rw, rh), INTERPOLATION.get(interpolation, Image.BICUBIC))
        left, top = (rw - w) // 2, (rh - h) // 2
        return np.asarray(im.crop((left, top, left + w, top + h)), dtype=np.uint8)


GIB = 2**30


def cache_bytes(n: int, size: tuple[int, int]) -> int:
    """What the cache of ``n`` images at ``size`` (H, W) takes on disk (uint8 RGB + header)."""
    return n * size[0] * size[1] * 3 + 128


def check_disk(folder: Path, needed: int) -> None:
    """Refuse, with the numbers, a cache that does not fit on ``folder``'s disk (checked on the
    nearest existing parent, before anything is written)."""
    probe = Path(folder).resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise StackkitError(
            f"{folder}: the image cache needs {needed / GIB:.2f} GiB, the disk has "
            f"{free / GIB:.2f} GiB free; free some space (python -m base_models cache clean removes "
            "image caches no run is reading), or train at a smaller --img-size"
        )


def decode_all(paths, npy: Path, size, interpolation: str, threads: int) -> np.ndarray:
    """Decode ``paths`` into the new file ``npy`` (written under a temporary name, renamed when
    whole); return the positions that could not be decoded (their pixels are zeros)."""
    bad = []
    with atomic_path(npy) as tmp:
        arr = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.uint8, shape=(len(paths), *size, 3)
        )

        def one(i: int) -> None:
            try:
                arr[i] = decode(paths[i], size, interpolation)
            except DECODE_ERRORS as exc:
                arr[i] = 0
                bad.append((i, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))

        with ThreadPoolExecutor(max(1, threads)) as pool:  # PIL releases the GIL while decoding
            it = pool.map(one, range(len(paths)), chunksize=64)
            for _ in tqdm(
                it, total=len(paths), desc=f"caching images {size[0]}x{size[1]}", disable=None
            ):
                pass
        arr.flush()
    bad.sort()
    for i, why in bad[:5]:
        log.warning("cannot decode %s (%s)", paths[i], why)
    return np.asarray([i for i, _ in bad], dtype=np.int64)


def check_bad(bad: np.ndarray, paths: list[str], skip_bad: bool) -> None:
    if len(bad) and not skip_bad:
        raise StackkitError(
            f"{paths[int(bad[0])]}: cannot be decoded as an image ({len(bad)} unreadable file(s) "
            "in all; pass --skip-bad-images to train without them)"
        )
    if len(bad):
        log.warning("skipping %d unreadable image(s); their logits are written as zeros", len(bad))
