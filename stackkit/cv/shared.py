"""The meta features, shared with the worker processes through memory-mapped ``.npy`` files.

The fold fits run in joblib's worker processes; an array argument reaches them pickled, a copy
per worker (joblib memory-maps arrays above its ``max_nbytes`` only after hashing and dumping
each one, while the parent keeps its own copy). Here the features are written once into a
``.npy`` file in a scratch folder under the cache folder (``$STACKKIT_CACHE``) and opened
read-only with ``mmap_mode="r"``: the parent and every worker map the same pages (joblib sends an
``np.memmap`` as its file name, offset and shape), and each fit indexes its rows there.

    >>> with scratch() as folder:
    ...     X = share(features(runset), folder)      # np.memmap, or X itself when small
    ...     run_tasks(tasks, ests, X, y, n_jobs=-1)  # workers read X's pages, no copy
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Arrays from this size on are shared through a file (joblib's own memmapping threshold is 1 MB;
# below a few MB a pickled copy per worker costs less than a file).
SHARE_FROM_BYTES = 4 * 2**20


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A fresh folder for shared arrays under the cache folder (the system's temporary folder
    when that cannot be written), removed with its files at exit. Arrays opened from it stay
    readable after that in the processes that mapped them (the pages live while mapped).

    The folder is named for this process and host (``<pid>@<host>-<random>``): a process killed
    before its exit leaves its folder behind, and the next ``scratch`` on the same host removes
    the folders of processes that no longer exist."""
    from stackkit.cv.cache import cache_dir

    owner = f"{os.getpid()}@{socket.gethostname()}"
    try:
        root = cache_dir() / "shared"
        root.mkdir(parents=True, exist_ok=True)
        remove_orphans(root)
        folder = Path(tempfile.mkdtemp(prefix=f"{owner}-", dir=root))
    except OSError:
        folder = Path(tempfile.mkdtemp(prefix="stackkit-shared-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_orphans(root: Path) -> list[Path]:
    """Remove the scratch folders under ``root`` left by processes of this host that no longer
    exist; returns them. Another host's folders (a cache folder shared over the network) are
    never touched: their processes cannot be asked."""
    host, gone = socket.gethostname(), []
    for folder in root.iterdir():
        pid, _, rest = folder.name.partition("@")
        if pid.isdigit() and rest.rsplit("-", 1)[0] == host and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            gone.append(folder)
    if gone:
        log.info("removed %d scratch folder(s) of processes gone: %s", len(gone), root)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        return True
    return True


def empty(folder: Path, name: str, shape: tuple, dtype=np.float32) -> np.memmap:
    """A new ``folder/name.npy`` of ``shape``, mapped for writing: fill it, then :func:`reopen`."""
    return np.lib.format.open_memmap(folder / f"{name}.npy", "w+", dtype=dtype, shape=shape)


def reopen(a: np.memmap) -> np.memmap:
    """A filled array from :func:`empty`, flushed and mapped again read-only."""
    a.flush()
    return np.load(a.filename, mmap_mode="r", allow_pickle=False)


def allocate(shape: tuple, folder: Path | None, name: str, dtype=np.float32) -> np.ndarray:
    """A new array to fill: in memory, or with ``folder`` a file there (:func:`empty`)."""
    return np.empty(shape, dtype) if folder is None else empty(folder, name, shape, dtype)


def finish(a: np.ndarray) -> np.ndarray:
    """A filled array from :func:`allocate`: itself, or its file mapped again read-only."""
    return reopen(a) if is_shared(a) else a


def spill(a: np.ndarray, folder: Path, name: str) -> np.memmap:
    """``a`` written to ``folder/name.npy`` with plain writes (not through a mapping) and mapped
    back read-only: for an array needed again only in part, its pages become file pages that
    the kernel may write out and drop (anonymous memory it cannot: no swap here), and a part
    read again (one run's rows) comes back alone."""
    path = folder / f"{name}.npy"
    np.save(path, a, allow_pickle=False)
    return np.load(path, mmap_mode="r", allow_pickle=False)


def is_shared(a) -> bool:
    return isinstance(a, np.memmap) and getattr(a, "filename", None) is not None


def share(a: np.ndarray | None, folder: Path, name: str | None = None):
    """``a`` as a read-only memmap of a file in ``folder``: ``a`` itself when it is None, already
    a file's memmap, or smaller than ``SHARE_FROM_BYTES``."""
    if a is None or is_shared(a) or a.nbytes < SHARE_FROM_BYTES:
        return a
    out = empty(folder, name or f"a{len(list(folder.iterdir()))}", a.shape, a.dtype)
    out[...] = a
    log.debug("shared %s %s (%.0f MB) through %s", a.dtype, a.shape, a.nbytes / 2**20, folder)
    return reopen(out)
