"""Who works on a run folder right now: file locks (the ``filelock`` package) in ``runs/<run>/``.

    runs/<run>/.lock              held while train, prepare or assemble works on the run, and
                                  while a run-fold job builds or checks the image cache
    runs/<run>/.lock.fold_<k>     held while fold k is trained (by train or a run-fold job)
    <lock>.holder                 JSON: pid, host, command and start of the holder

A command that finds a lock held fails at once, in one line naming the holder (a run-fold job
waits for the run lock instead: another job may be decoding the cache it needs). A lock whose
holder died is released by the operating system, so the next command simply takes it.

    >>> with locked(run_dir / RUN_LOCK, "run nfnet_f0"):
    ...     train_the_folds()
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from filelock import FileLock, Timeout

from stackkit.contract.errors import StackkitError
from stackkit.contract.store import write_json

log = logging.getLogger(__name__)

RUN_LOCK = ".lock"


def fold_lock(fold: int) -> str:
    return f".lock.fold_{fold}"


def _holder_path(lock: Path) -> Path:
    return lock.with_name(lock.name + ".holder")


def holder(lock: Path) -> str:
    """Who holds ``lock``, in words, from its holder file."""
    try:
        h = json.loads(_holder_path(lock).read_text())
        return f"pid {h['pid']} on {h['host']} (since {h['since']}: {h['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def locked(lock: str | os.PathLike, what: str, wait: bool = False) -> Iterator[None]:
    """Hold ``lock`` for the block; if another process holds it, fail (or, with ``wait``, wait)."""
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fl = FileLock(str(lock))
    try:
        fl.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise StackkitError(
                f"{what} is in use by {holder(lock)} ({lock}); wait for it or stop it"
            ) from None
        log.info("%s is in use by %s; waiting for it", what, holder(lock))
        fl.acquire()
    try:
        write_json(
            {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
             "since": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")},
            _holder_path(lock),
        )  # fmt: skip
        yield
    finally:
        _holder_path(lock).unlink(missing_ok=True)
        fl.release()
