"""One writer at a time: a lock file beside what is being written, and who holds it.

Two commands that write the same ensemble (or train the same run) would otherwise race: the
second to finish silently replaces the first, or deletes what the first still reads. The lock is
an operating-system file lock (``filelock``: ``flock`` on Unix), so it is released when its holder
exits, even by SIGKILL: a lock is never left stale. Beside it, ``<lock>.holder`` says who holds it
(host, process id, user, command, since when), so the one refused can be told whom it waits for.

    >>> with hold(store.root / "ensembles" / ".auto.lock", "ensemble 'auto'"):
    ...     ...  # write ensembles/auto/

Readers of something that stays (a shared image cache) hold a *shared* lock on a file inside it
for as long as they read (:func:`reading`); whoever would delete it first checks that no reader
holds one (:func:`in_use`). Both are ``flock`` too, so a reader that dies stops counting.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from stackkit.contract.errors import StackkitError


def lock_path(folder: Path) -> Path:
    """The lock file of ``folder``: ``.<name>.lock`` beside it (never inside: the folder itself
    is replaced whole)."""
    return folder.with_name(f".{folder.name}.lock")


def holder() -> dict:
    """Who this process is, as the lock's ``.holder`` file records it."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name (some containers): the uid says enough
        user = str(os.getuid()) if hasattr(os, "getuid") else "?"
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "user": user,
        "command": " ".join(sys.argv),
        "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def describe(info: dict | None) -> str:
    if not info:
        return "another process (it has not said who yet)"
    return (
        f"process {info.get('pid')} of {info.get('user')} on {info.get('host')} since "
        f"{info.get('since')} ({info.get('command')})"
    )


@contextlib.contextmanager
def hold(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold the lock at ``path`` for the block, or raise at once, naming the holder.

    The lock file (and its folder, if this made it) is removed on release, while still held, so
    a refused or finished command leaves nothing behind. A contender that opened the file just
    before it went away finds, once it holds it, that the path no longer names that file, and
    starts again on the new one: two holders are impossible."""
    path = Path(path)
    made = not path.parent.exists()
    note = path.with_name(path.name + ".holder")
    lock = _acquire(path, what, note)
    try:
        tmp = note.with_name(f"{note.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(holder()) + "\n")
        os.replace(tmp, note)
        yield
    finally:
        note.unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        lock.release()
        if made:
            with contextlib.suppress(OSError):  # not empty: someone else is using it
                path.parent.rmdir()


class _Replaced(Exception):
    """The file locked is no longer the one at the lock's path."""


def _acquire(path: Path, what: str, note: Path) -> FileLock:
    def same_file(fd: int) -> None:
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return
        except FileNotFoundError:
            pass
        raise _Replaced

    for _ in range(100):
        lock = FileLock(path, timeout=0, on_acquired=same_file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire()
            return lock
        except Timeout:
            raise StackkitError(
                f"{what} is being written by {describe(_read(note))}; lock file {path}. Wait for "
                "it to finish (the lock goes when that process ends, however it ends)"
            ) from None
        except (_Replaced, FileNotFoundError, FileExistsError):  # its holder just released it
            # (and maybe removed its folder, made anew meanwhile): try again on the new one
            continue
    raise StackkitError(f"{what}: lock file {path} keeps changing; is something deleting it?")


@contextlib.contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
    """Hold a shared lock on ``path`` (created if missing, never removed) for the block: any
    number of readers at once; :func:`in_use` is True while one holds it."""
    import fcntl  # Unix only, as flock

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while in_use() probes (an instant)
        yield
    finally:
        os.close(fd)  # releases the lock


def in_use(path: str | os.PathLike) -> bool:
    """Whether some process holds :func:`reading` on ``path`` now (False if there is no file)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _read(note: Path) -> dict | None:
    try:
        info = json.loads(note.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None
