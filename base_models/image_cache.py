"""One decoded image cache per (images, size, preprocessing), shared by every run that needs it.

    <artifacts>/cache/images/<key>/images.npy    N x H x W x 3 uint8, train rows then test rows
    <artifacts>/cache/images/<key>/cache.json    what the key was made of, the unreadable rows
    <artifacts>/cache/images/<key>/readers.lock  a shared lock held by every run reading it
    <artifacts>/cache/images/.<key>.lock         held while the cache is built or removed

The key is a hash of the ordered image paths with each file's size and modification time, the
cached H x W, the interpolation and the resize rule (:data:`base_models.images.RESIZE_RULE`): two
runs of different backbones at the same input size and crop share one cache, a different size or
crop gets its own, and an edited image makes a new one. The first run to need a cache builds it
under the key's lock (a second one waits, then reuses it), into a temporary folder renamed into
place when whole, after checking the disk has room (:func:`base_models.images.check_disk`).

Lifetime: a cache stays until removed with ``python -m base_models cache clean`` (it is what the
next run at that size reads), never by a run. A run holds ``readers.lock`` (shared) while it reads;
``clean`` skips a cache some run holds, so no run loses its pixels mid-training. A build killed
midway leaves only its hidden temporary folder: the next build of that key removes it, and so
does ``clean`` (unless a build holds that key's lock).

    >>> with open_cache(paths, cache_root("artifacts"), (585, 438), "bicubic", False, 2) as c:
    ...     pixels = c.array()
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from base_models.images import (
    GIB,
    RESIZE_RULE,
    cache_bytes,
    check_bad,
    check_disk,
    decode_all,
)
from stackkit.contract.errors import StackkitError
from stackkit.contract.locks import hold, in_use, lock_path, reading
from stackkit.contract.store import atomic_dir, remove_stale, write_json

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the files of a cache change
PIXELS, META, READERS = "images.npy", "cache.json", "readers.lock"
WAIT_S = 5.0  # a run polls this often while another builds the cache it needs
LEFTOVER = re.compile(r"\.([0-9a-f]{16})\.[0-9a-f]{12}\.(tmp|old)")  # store.atomic_dir's names


@dataclass
class ImageCache:
    path: Path  # the .npy file
    size: tuple[int, int]  # (H, W) of the cached pixels
    bad: np.ndarray  # positions whose file could not be decoded (zero pixels)
    key: str = ""

    def array(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r", allow_pickle=False)


def cache_root(artifacts: str | os.PathLike) -> Path:
    return Path(artifacts) / "cache" / "images"


def files_hash(paths: list[str]) -> str:
    """The ordered paths with each file's size and modification time (-1 for a missing file)."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\t-1\t-1\n".encode())
    return h.hexdigest()


def key_record(paths: list[str], size, interpolation: str) -> dict:
    return {
        "format": FORMAT, "rule": RESIZE_RULE, "size": [int(size[0]), int(size[1])],
        "interpolation": interpolation, "n_images": len(paths), "files_sha256": files_hash(paths),
    }  # fmt: skip


def cache_key(record: dict) -> str:
    text = json.dumps(record, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _valid(folder: Path, key: str) -> dict | None:
    """The cache's record if ``folder`` holds a whole cache of ``key``, else None."""
    try:
        meta = json.loads((folder / META).read_text())
        n, h, w = meta["n_images"], *meta["size"]
        if meta.get("key") != key or np.load(
            folder / PIXELS, mmap_mode="r", allow_pickle=False
        ).shape != (n, h, w, 3):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return meta


@contextlib.contextmanager
def _key_lock(folder: Path) -> Iterator[None]:
    """The key's lock, waiting while another process builds or removes that cache."""
    said = False
    while True:
        try:
            with hold(lock_path(folder), f"image cache {folder.name}"):
                yield
            return
        except StackkitError as exc:
            if "is being written by" not in str(exc):
                raise
            if not said:
                log.info("%s; waiting for it", exc)
                said = True
            time.sleep(WAIT_S)


def fits(paths: list[str], root: Path, size, interpolation: str) -> bool:
    """Whether the cache is there already or would fit on the disk now."""
    key = cache_key(key_record(paths, size, interpolation))
    if _valid(root / key, key) is not None:
        return True
    try:
        check_disk(root, cache_bytes(len(paths), size))
    except StackkitError:
        return False
    return True


def _ensure(paths, root: Path, size, interpolation: str, threads: int) -> ImageCache:
    """Reuse or build the cache; call it holding the key's lock."""
    record = key_record(paths, size, interpolation)
    key = cache_key(record)
    folder = root / key
    remove_stale(folder)  # a build killed midway left only a temporary folder
    meta = _valid(folder, key)
    if meta is not None:
        log.info("reusing image cache %s (%d images at %dx%d)", folder, len(paths), *size)
    else:
        need = cache_bytes(len(paths), size)
        check_disk(root, need)
        others = sum(c["bytes"] for c in list_caches(root) if c["key"] != key)
        if others:
            log.info("other image caches in %s take %.1f GiB (python -m base_models cache list)",
                     root, others / GIB)  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)  # a cache of the key that does not read whole
        with atomic_dir(folder) as tmp:
            bad = decode_all(paths, tmp / PIXELS, size, interpolation, threads)
            meta = {
                **record, "key": key, "bad": bad.tolist(), "bytes": need,
                "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            }  # fmt: skip
            write_json(meta, tmp / META)
            (tmp / READERS).touch()
    return ImageCache(folder / PIXELS, tuple(size), np.asarray(meta["bad"], np.int64), key)


def build_cache(paths, root: Path, size, interpolation: str, threads: int) -> ImageCache:
    """The cache of ``paths`` at ``size`` under ``root``, built now unless it is there; nothing
    holds it afterwards (``clean`` may remove it): runs read through :func:`open_cache`."""
    folder = root / cache_key(key_record(paths, size, interpolation))
    with _key_lock(folder):
        return _ensure(paths, root, size, interpolation, threads)


@contextlib.contextmanager
def open_cache(
    paths, root: Path, size, interpolation: str, skip_bad: bool, threads: int
) -> Iterator[ImageCache]:
    """The cache (built now unless it is there), held against removal for the block; refuses
    unreadable images unless ``skip_bad``."""
    folder = root / cache_key(key_record(paths, size, interpolation))
    with contextlib.ExitStack() as stack:
        with _key_lock(folder):
            cache = _ensure(paths, root, size, interpolation, threads)
            stack.enter_context(reading(folder / READERS))  # before the key's lock goes
        os.utime(folder / READERS)  # "last used", for `cache list`
        check_bad(cache.bad, paths, skip_bad)
        yield cache


def list_caches(root: str | os.PathLike) -> list[dict]:
    """Every whole cache under ``root``: key, size, images, bytes, created, last used, in use."""
    root = Path(root)
    out = []
    for folder in sorted(root.glob("[0-9a-f]*")) if root.is_dir() else []:
        meta = _valid(folder, folder.name)
        if meta is None:
            continue
        used = folder / READERS
        out.append({
            "key": folder.name, "size": meta["size"], "n_images": meta["n_images"],
            "bytes": (folder / PIXELS).stat().st_size, "created": meta["created"],
            "last_used": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(used.stat().st_mtime))
            if used.exists() else None,
            "in_use": in_use(used), "path": str(folder),
        })  # fmt: skip
    return out


def remove_caches(root: str | os.PathLike, keys: list[str] | None = None) -> dict:
    """Remove the caches ``keys`` (all by default) that no run is reading; return what was
    removed, what was kept because a run reads it, and the bytes freed."""
    root = Path(root)
    have = {c["key"]: c for c in list_caches(root)}
    unknown = sorted(set(keys or []) - set(have))
    if unknown:
        raise StackkitError(
            f"{root}: no image cache {', '.join(unknown)} (python -m base_models cache list)"
        )
    removed, kept, freed = [], [], 0
    for key in keys or sorted(have):
        folder = root / key
        with _key_lock(folder):  # no run starts reading it meanwhile
            if in_use(folder / READERS):
                kept.append(key)
                continue
            old = folder.with_name(f".{key}.{secrets.token_hex(6)}.old")  # remove_stale's name
            os.rename(folder, old)  # gone whole at once; a kill mid-delete leaves only .old
            shutil.rmtree(old, ignore_errors=True)
            removed.append(key)
            freed += have[key]["bytes"]
    if keys is None:
        freed += _remove_leftovers(root)
    return {"removed": removed, "in_use": kept, "bytes_freed": freed}


def _remove_leftovers(root: Path) -> int:
    """Remove the temporary folders killed builds left (``.<key>.<hex>.tmp`` or ``.old``) of
    every key no process is building now; return the bytes freed."""
    found: dict[str, list[Path]] = {}
    for p in root.glob(".*") if root.is_dir() else []:
        m = LEFTOVER.fullmatch(p.name)
        if m:
            found.setdefault(m.group(1), []).append(p)
    freed = 0
    for key, paths in sorted(found.items()):
        try:
            with hold(lock_path(root / key), f"image cache {key}"):  # refused: a build is on
                size = sum(f.stat().st_size for p in paths for f in [p, *p.rglob("*")]
                           if f.is_file())  # fmt: skip
                remove_stale(root / key)
                freed += size
        except StackkitError:
            continue
    return freed
