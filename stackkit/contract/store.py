"""The artifacts directory: where each file lives, and reading/writing it whole or not at all.

Every write goes to a temporary name in the same folder and is renamed into place, so a reader
never sees half a file; a run's ``run.json`` is written last and marks the run complete. Every
read goes through the validators of :mod:`stackkit.contract.schema`.

    >>> store = Store("artifacts")
    >>> folds = store.read_folds()
    >>> runs = store.load_runs(["convnext", "nfnet"], folds)   # a validated RunSet
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stackkit.contract import schema
from stackkit.contract.errors import ContractError, StackkitError
from stackkit.contract.locks import hold, lock_path
from stackkit.contract.names import check_name, is_valid_name

if TYPE_CHECKING:  # only the writers and the full validation handle frames: reading runs needs none
    import pandas as pd

log = logging.getLogger(__name__)
_BLOCK = 2048  # rows moved at once from a run's (C, rows) columns into (rows, C): stays in cache
_HASHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stackkit-hash")  # load_runs

ENV_VAR = "STACKKIT_ARTIFACTS"
DEFAULT_ROOT = "artifacts"


def cache_dir() -> Path:
    """stackkit's cache folder, outside the artifacts: ``$STACKKIT_CACHE`` if set, else
    ``~/.cache/stackkit`` (CV results, run scores, which run files passed validation)."""
    return Path(os.environ.get("STACKKIT_CACHE") or Path.home() / ".cache" / "stackkit")


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$STACKKIT_ARTIFACTS``, else ``./artifacts``."""
    return Path(root if root is not None else os.environ.get(ENV_VAR) or DEFAULT_ROOT)


# --------------------------------------------------------------------------------------------
# atomic file I/O


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file is created with mode 0666 less the umask, as ``open`` would (not
    ``mkstemp``'s 0600), so the umask decides who can read what is written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh(path, "tmp", lambda p: os.close(os.open(p, _CREATE, 0o666)))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` whole.

    The swap is one atomic exchange (Linux ``renameat2(RENAME_EXCHANGE)``), so a reader sees
    the old folder or the new one, never none, and writers racing for the same path each swap
    in turn (the last one wins) and remove what they swapped out: nothing is left behind. The
    folder is created with mode 0777 less the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh(path, "tmp", lambda p: os.mkdir(p, 0o777))
    try:
        yield tmp
        _swap_in(tmp, path)
    finally:
        _remove(tmp)


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL


def _fresh(path: Path, tag: str, make) -> Path:
    """A new hidden name beside ``path`` (``.<name>.<random>.<tag>``), created by ``make``."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.{tag}")
        try:
            make(tmp)
            return tmp
        except FileExistsError:
            continue


def _swap_in(tmp: Path, path: Path) -> None:
    """Put folder ``tmp`` at ``path``; what was at ``path`` ends at ``tmp`` (removed after)."""
    while True:
        if os.path.lexists(path):
            swapped = _exchange(tmp, path)
            if swapped is None:  # no atomic exchange here: move the old folder aside first
                _swap_aside(tmp, path)
                return
            if swapped:
                return
        else:
            try:
                os.rename(tmp, path)
                return
            except OSError as exc:  # another writer put a folder there first: exchange with it
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise


def _swap_aside(tmp: Path, path: Path) -> None:
    """The fallback where ``renameat2`` is missing (not Linux, some network filesystems): a
    reader may see no folder for an instant."""
    old = _fresh(path, "old", lambda p: None)
    while True:
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, old)
        try:
            os.rename(tmp, path)
            break
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    _remove(old)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_renameat2 = None
with contextlib.suppress(OSError, AttributeError):
    _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2


def _exchange(a: Path, b: Path) -> bool | None:
    """Swap two existing paths atomically: True if done, False if ``b`` vanished meanwhile,
    None where the system cannot."""
    if _renameat2 is None:
        return None
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.ENOENT:
        return False
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return None
    raise OSError(err, os.strerror(err), str(b))


def _remove(path: Path) -> None:
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def remove_stale(path: str | os.PathLike) -> list[Path]:
    """Remove what a killed writer left beside ``path`` (``.<name>.*.tmp`` and ``.old``); call
    it only while holding ``path``'s lock, when no other writer can be using them."""
    path = Path(path)
    mine = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{12}}\.(tmp|old)")
    stale = [p for p in path.parent.glob(f".{path.name}.*") if mine.fullmatch(p.name)]
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    if stale:
        log.info("removed %d stale temporary file(s) beside %s", len(stale), path)
    return stale


def write_parquet(df: pd.DataFrame, path: str | os.PathLike, meta: dict | None = None) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    if meta is not None:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), schema.META_KEY: schema.meta_json(meta)}
        )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _parquet(source) -> pa.Table:
    """One parquet file (a path or a buffer), whole: ``pq.ParquetFile``, not ``pq.read_table``,
    whose dataset layer imports ``pyarrow.dataset`` and with it pandas (0.35 s of a warm
    ``leaderboard``, more than reading 10 runs' logits)."""
    with pq.ParquetFile(source) as f:
        return f.read()


def read_parquet(path: str | os.PathLike, where: str) -> tuple[pd.DataFrame, dict | None]:
    """Read a parquet file and its ``stackkit`` metadata; any failure is one ContractError line."""
    table, meta = read_table(path, where)
    return table.to_pandas(), meta


def read_table(path: str | os.PathLike, where: str) -> tuple[pa.Table, dict | None]:
    """:func:`read_parquet` as a pyarrow table (no pandas)."""
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{where}: file not found ({path})")
    try:
        table = _parquet(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ContractError(f"{where}: not a readable parquet file ({msg})") from None
    raw = (table.schema.metadata or {}).get(schema.META_KEY)
    meta = None
    if raw is not None:
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError:
            raise ContractError(f"{where}: schema metadata 'stackkit' is not valid JSON") from None
    return table, meta


def write_json(obj, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike, where: str):
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"{where}: file not found ({path})")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ContractError(f"{where}: not valid JSON ({exc})") from None


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def file_sha256(*paths: str | os.PathLike) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# runs as arrays for the meta stage


@dataclass
class _RowKeys:
    """What a run's two files must repeat, column for column, to be read without validating
    their ids and folds again: the first run's schemas and id and fold columns (validated in
    full), and where its rows went (``pos`` into folds order; ``tfold``, ``tpos`` for test)."""

    schemas: tuple
    columns: tuple  # ((sample_id, fold) of oof.parquet, the same of test.parquet)
    pos: np.ndarray
    tfold: np.ndarray
    tpos: np.ndarray

    @classmethod
    def of(cls, d: Path, pos, tfold, tpos) -> _RowKeys:
        tables = [_parquet(d / f) for f in (schema.OOF_FILE, schema.TEST_FILE)]
        return cls(
            tuple(t.schema.remove_metadata() for t in tables),
            tuple((t.column("sample_id"), t.column("fold")) for t in tables),
            pos,
            tfold,
            tpos,
        )

    @cached_property
    def digest(self) -> str:
        """sha256 of the id and fold columns of both files, in order: a run whose files give
        the same digest puts every row where this one does."""
        rows = [[column.to_pylist() for column in pair] for pair in self.columns]
        return hashlib.sha256(json.dumps(rows).encode("utf-8")).hexdigest()

    @cached_property
    def oof_rows(self) -> np.ndarray | None:
        """Where each oof.parquet row goes in folds order; None when in that order already."""
        return None if np.array_equal(self.pos, np.arange(len(self.pos))) else self.pos

    @cached_property
    def test_rows(self) -> np.ndarray | None:
        """Where each test.parquet row goes in (fold, sorted test id) order, flattened; None
        when in that order already. The test ids are this run's own (every id in every fold),
        so their number is ``tpos.max() + 1``."""
        m = int(self.tpos.max()) + 1 if len(self.tpos) else 0
        flat = self.tfold * m + self.tpos
        return None if np.array_equal(flat, np.arange(len(flat))) else flat

    def same(self, table: pa.Table, i: int) -> bool:
        if not table.schema.remove_metadata().equals(self.schemas[i]):
            return False
        ids, fold = self.columns[i]
        return table.column("sample_id").equals(ids) and table.column("fold").equals(fold)

    @staticmethod
    def logits(table: pa.Table, cols: list[str], out: np.ndarray, rows: np.ndarray | None) -> bool:
        """Write the logit columns as float32 into ``out`` (``rows``: where each file row goes in
        ``out``, None when in the same order); False (``out`` partly written) if one is null,
        not a float or not finite once stored as float32.

        Each column is copied whole into a (C, rows) buffer, then moved into ``out`` by blocks of
        rows: writing a column straight into ``out`` strides over every row and took 6x longer."""
        buf = np.empty((len(cols), table.num_rows), np.float32)
        for j, name in enumerate(cols):
            col = table.column(name)
            if col.null_count or not pa.types.is_floating(col.type):
                return False
            with np.errstate(over="ignore"):
                buf[j] = schema.numbers(col)
        if not np.isfinite(buf).all():
            return False
        for start in range(0, table.num_rows, _BLOCK):
            block = buf[:, start : start + _BLOCK].T
            if rows is None:
                out[start : start + _BLOCK] = block
            else:
                out[rows[start : start + _BLOCK]] = block
        return True


@dataclass
class RunSet:
    """Validated runs aligned on one sample order, ready for the meta stage.

    ``oof``: (R, n_train, C) logits in folds.parquet row order. ``test``: (R, K, n_test, C) logits,
    test samples in sorted sample_id order. Runs are sorted by name, so listing them in another
    order changes nothing downstream.
    """

    names: list[str]
    folds: schema.Folds
    oof: np.ndarray
    test_ids: np.ndarray
    test: np.ndarray
    hashes: dict[str, str]
    infos: dict[str, dict]

    @property
    def n_runs(self) -> int:
        return len(self.names)

    def subset(self, names: Sequence[str]) -> RunSet:
        idx = [self.names.index(n) for n in sorted(names)]
        return RunSet(
            [self.names[i] for i in idx],
            self.folds,
            self.oof[idx],
            self.test_ids,
            self.test[idx],
            {n: self.hashes[n] for n in names},
            {n: self.infos[n] for n in names},
        )


# --------------------------------------------------------------------------------------------
# the store


class Store:
    """One artifacts directory (CONTRACT.md)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = resolve_root(root)

    # paths ----------------------------------------------------------------------------------
    @property
    def folds_path(self) -> Path:
        return self.root / schema.FOLDS_FILE

    def run_dir(self, run: str) -> Path:
        return self._child("runs", run, "run")

    def ensemble_dir(self, name: str) -> Path:
        return self._child("ensembles", name, "ensemble")

    def pseudo_dir(self, name: str) -> Path:
        return self._child("pseudo", name, "pseudo set")

    def _child(self, folder: str, name: str, kind: str) -> Path:
        """``root/folder/name`` once ``name`` obeys the name rule and the path stays inside the
        artifacts folder (a symlink to elsewhere is refused): every path to a run, ensemble or
        pseudo set is made here, so no name reaches the filesystem unchecked."""
        path = self.root / folder / check_name(name, kind)
        if path.is_symlink() and not is_inside(path, self.root):
            raise StackkitError(
                f"{kind} {name!r}: {path} is a symbolic link to {path.resolve()}, outside the "
                f"artifacts folder {self.root}; refused"
            )
        return path

    def refuse_to_replace(self, path: Path, what: str, force: bool) -> None:
        """Raise unless ``path`` is free or ``force`` says to replace it (checked before any work)."""
        if not force and (path.exists() or path.is_symlink()):
            raise StackkitError(
                f"{what} already exists ({self.rel(path)}); pass --force to replace it"
            )

    @contextlib.contextmanager
    def writing(self, path: Path, what: str, force: bool = False) -> Iterator[None]:
        """Be the one writer of ``path`` for the block: hold its lock (another writer is refused
        at once, naming itself), refuse to replace it without ``force``, and clear what a killed
        writer left beside it."""
        self.refuse_to_replace(path, what, force)  # before the lock file is made
        with hold(lock_path(path), what):
            self.refuse_to_replace(path, what, force)  # another writer may just have finished
            remove_stale(path)
            yield

    def rel(self, path: Path) -> str:
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    # folds ----------------------------------------------------------------------------------
    def read_folds(self) -> schema.Folds:
        if not self.folds_path.is_file():
            raise StackkitError(
                f"{self.folds_path}: not found; write one with `stackkit folds --data DATA` "
                f"(or point --artifacts / ${ENV_VAR} at the right folder)"
            )
        table, meta = read_table(self.folds_path, schema.FOLDS_FILE)
        folds = schema.folds_from_table(table, meta, schema.FOLDS_FILE)
        if folds is None:  # something is off: the full validation names it
            folds = schema.validate_folds(table.to_pandas(), meta, schema.FOLDS_FILE)
        return folds

    def write_folds(self, folds: schema.Folds, *, force: bool = False) -> Path:
        """Write folds.parquet; refuse to replace one that existing runs were made on."""
        folds = schema.validate_folds(folds.frame, folds.metadata(), "new folds")
        if self.folds_path.exists() and not force:
            try:
                old = self.read_folds()
            except StackkitError:
                old = None
            if old is not None and old.hash != folds.hash:
                made_on = [r for r in self.run_names(include_incomplete=True)]
                if made_on:
                    raise StackkitError(
                        f"{self.folds_path}: {len(made_on)} run(s) ({', '.join(made_on[:3])}"
                        f"{', …' if len(made_on) > 3 else ''}) were made on the current fold "
                        "assignment; replacing it would orphan them (pass --force to replace anyway)"
                    )
        df = folds.frame.astype(schema.FOLDS_COLUMNS)
        write_parquet(df, self.folds_path, folds.metadata())
        log.info("wrote %s (%d samples, %d folds)", self.folds_path, len(df), folds.n_folds)
        return self.folds_path

    # runs -----------------------------------------------------------------------------------
    def run_names(self, *, include_incomplete: bool = False) -> list[str]:
        """Runs present (sorted). A run is complete once its run.json exists. Folders whose name
        breaks the name rule, or that link outside the artifacts folder, are no runs (``stackkit
        runs`` lists them, with the reason)."""
        base = self.root / "runs"
        if not base.is_dir():
            return []
        return sorted(
            p.name
            for p in base.iterdir()
            if is_valid_name(p.name)
            and p.is_dir()
            and is_inside(p, self.root)
            and (include_incomplete or (p / schema.RUN_FILE).is_file())
        )

    def read_run(self, run: str, folds: schema.Folds) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
        """Validated (oof, test, info) of one run."""
        d = self.run_dir(run)
        if not d.is_dir():
            have = ", ".join(self.run_names()) or "none"
            raise StackkitError(f"run {run!r}: {self.rel(d)} does not exist (runs present: {have})")
        where = lambda f: f"run {run!r}: {self.rel(d / f)}"  # noqa: E731
        if not (d / schema.RUN_FILE).is_file():
            raise ContractError(f"{where(schema.RUN_FILE)}: missing; the run is incomplete")
        info = schema.validate_run_info(
            read_json(d / schema.RUN_FILE, where(schema.RUN_FILE)), folds, where(schema.RUN_FILE)
        )
        oof = schema.validate_oof(
            read_parquet(d / schema.OOF_FILE, where(schema.OOF_FILE))[0],
            folds,
            where(schema.OOF_FILE),
        )
        test = schema.validate_test(
            read_parquet(d / schema.TEST_FILE, where(schema.TEST_FILE))[0],
            folds,
            where(schema.TEST_FILE),
        )
        return oof, test, info

    def run_hash(self, run: str) -> str:
        d = self.run_dir(run)
        return file_sha256(d / schema.OOF_FILE, d / schema.TEST_FILE)

    def write_run(
        self, run: str, oof: pd.DataFrame, test: pd.DataFrame, info: dict, folds: schema.Folds
    ) -> Path:
        """Validate and write a run; run.json goes last, so a run is complete or absent."""
        where = lambda f: f"run {run!r}: {f} (to be written)"  # noqa: E731
        info = dict(info, run=run)
        schema.validate_run_info(info, folds, where(schema.RUN_FILE))
        oof = schema.validate_oof(oof, folds, where(schema.OOF_FILE))
        test = schema.validate_test(test, folds, where(schema.TEST_FILE))
        d = self.run_dir(run)
        d.mkdir(parents=True, exist_ok=True)
        (d / schema.RUN_FILE).unlink(missing_ok=True)  # incomplete until rewritten
        write_parquet(oof, d / schema.OOF_FILE)
        write_parquet(test, d / schema.TEST_FILE)
        write_json(info, d / schema.RUN_FILE)
        log.info("wrote run %s (%d OOF rows, %d test rows)", run, len(oof), len(test))
        return d

    def load_runs(self, names: Sequence[str] | None, folds: schema.Folds) -> RunSet:
        """Read, validate and align several runs; test ids must agree between them."""
        if names is None:
            names = self.run_names()
        names = list(dict.fromkeys(names))
        if not names:
            raise StackkitError(
                f"{self.root / 'runs'}: no runs to use (write some with `make base` or `stackkit import`)"
            )
        names = sorted(names)
        n, k, c = folds.n_samples, folds.n_folds, folds.n_classes
        oof = np.empty((len(names), n, c), np.float32)
        test = None
        test_ids = None
        hashes, infos = {}, {}
        keys = None  # the first run's validated id and fold columns, and where its rows go
        for r, name in enumerate(names):
            if keys is None:
                known = self._read_run_known(name, folds, oof[r], len(names))
                if known is not None:  # these very bytes passed the full validation before
                    keys, test_ids, test, infos[name], hashes[name] = known
                    first = name
                    continue
            else:
                fast = self._read_run_fast(name, folds, keys, oof[r], test[r])
                if fast is not None:  # the same rows as the first run, finite logits
                    infos[name], hashes[name] = fast
                    continue
            import pandas as pd  # the full validation works on frames

            o, t, info = self.read_run(name, folds)
            pos = folds.index.get_indexer(o["sample_id"].to_numpy(dtype=object))
            oof[r, pos] = o[schema.logit_columns(c)].to_numpy()
            ids = np.sort(t["sample_id"].unique().to_numpy(dtype=object))
            if test_ids is None:
                test_ids, first = ids, name
                test = np.empty((len(names), k, len(ids), c), np.float32)
            elif len(ids) != len(test_ids) or (ids != test_ids).any():
                _test_id_mismatch(
                    t,
                    test_ids,
                    f"run {name!r}: {self.rel(self.run_dir(name) / schema.TEST_FILE)}",
                    first,
                )
            tpos = pd.Index(test_ids).get_indexer(t["sample_id"].to_numpy(dtype=object))
            test[r, t["fold"].to_numpy(dtype=np.int64), tpos] = t[
                schema.logit_columns(c)
            ].to_numpy()
            hashes[name] = self.run_hash(name)
            infos[name] = info
            if keys is None:
                keys = _RowKeys.of(self.run_dir(name), pos, t["fold"].to_numpy(np.int64), tpos)
                _Validated(folds).remember(hashes[name], keys.digest)
        pa.default_memory_pool().release_unused()  # the tables read are gone: give back their pages
        return RunSet(names, folds, oof, test_ids, test, hashes, infos)

    def _read_run_known(self, name, folds, oof: np.ndarray, n_runs: int):
        """The first run read without its full validation when its two files, byte for byte,
        passed it before on these folds (``_Validated``): (row keys, test ids, test array for
        ``n_runs`` runs with this run's rows in slot 0, info, hash). None when they did not, or
        anything is off (the caller then validates in full, which names the problem)."""
        d = self.run_dir(name)
        if not (d / schema.RUN_FILE).is_file():
            return None
        tables, h = _read_hashed(d)
        if tables is None or not _Validated(folds).knows(h):
            return None
        t_ids = tables[1].column("sample_id").to_pylist()  # to_numpy would import pandas
        test_ids = np.array(sorted(set(t_ids)), dtype=object)
        pos = folds.positions(tables[0].column("sample_id").to_pylist())
        tfold = schema.numbers(tables[1].column("fold")).astype(np.int64)
        where_test = {s: i for i, s in enumerate(test_ids.tolist())}
        tpos = np.fromiter((where_test[s] for s in t_ids), np.int64, len(t_ids))
        if (pos < 0).any() or (tpos < 0).any():
            return None
        keys = _RowKeys(
            tuple(t.schema.remove_metadata() for t in tables),
            tuple((t.column("sample_id"), t.column("fold")) for t in tables),
            pos, tfold, tpos,
        )  # fmt: skip
        k, c = folds.n_folds, folds.n_classes
        test = np.empty((n_runs, k, len(test_ids), c), np.float32)
        cols = schema.logit_columns(c)
        if not (keys.logits(tables[0], cols, oof, keys.oof_rows) and keys.logits(
                tables[1], cols, test[0].reshape(-1, c), keys.test_rows)):  # fmt: skip
            return None
        where = f"run {name!r}: {self.rel(d / schema.RUN_FILE)}"
        info = schema.validate_run_info(read_json(d / schema.RUN_FILE, where), folds, where)
        return keys, test_ids, test, info, h

    def _read_run_fast(self, name, folds, keys: _RowKeys, oof: np.ndarray, test: np.ndarray):
        """(info, hash) of a run whose files hold the same columns, ids and folds, row for row,
        as the first run's (validated in full): each file read once (hashed from the same
        bytes), only its logit columns converted, straight into ``oof`` (n, C) and ``test``
        (K, m, C). Files whose bytes were found so before (``_Validated.rows``, by their
        remembered hash) are read for their logit columns alone. None when anything differs or
        a logit is not finite: the caller then validates the run in full, which names the
        problem."""
        d = self.run_dir(name)
        if not (d / schema.RUN_FILE).is_file():
            return None
        cols = schema.logit_columns(folds.n_classes)
        validated = _Validated(folds)
        h = _HashMemo(_run_files(d)).get()
        tables = None
        if h is not None and validated.rows(h) == keys.digest:  # these bytes were checked before
            tables = _read_logits(d, cols, keys.schemas)
        checked = tables is None  # read whole, its ids and folds compared with the first run's
        if checked:
            tables, h = _read_hashed(d)
            if tables is None or not (keys.same(tables[0], 0) and keys.same(tables[1], 1)):
                return None
        k, m, c = test.shape
        if not (keys.logits(tables[0], cols, oof, keys.oof_rows)
                and keys.logits(tables[1], cols, test.reshape(k * m, c), keys.test_rows)):  # fmt: skip
            return None
        where = f"run {name!r}: {self.rel(d / schema.RUN_FILE)}"
        info = schema.validate_run_info(read_json(d / schema.RUN_FILE, where), folds, where)
        if checked:  # next time only its logits are read
            validated.remember(h, keys.digest)
        return info, h

    # pseudo-label sets ----------------------------------------------------------------------
    def read_pseudo(self, name: str, folds: schema.Folds) -> tuple[pd.DataFrame, dict]:
        path = self.pseudo_dir(name) / schema.PSEUDO_FILE
        where = f"pseudo set {name!r}: {self.rel(path)}"
        df, meta = read_parquet(path, where)
        df = schema.validate_pseudo(df, meta, folds.n_classes, where, folds.n_folds)
        if meta["folds_hash"] != folds.hash:
            raise ContractError(
                f"{where}: made on another fold assignment (folds_hash {meta['folds_hash'][:12]}… "
                f"!= {folds.hash[:12]}… of folds.parquet)"
            )
        return df, meta

    def write_pseudo(self, name: str, df: pd.DataFrame, meta: dict, n_classes: int) -> Path:
        path = self.pseudo_dir(name) / schema.PSEUDO_FILE
        meta = dict(meta, version=schema.CONTRACT_VERSION)
        df = schema.validate_pseudo(df, meta, n_classes, f"pseudo set {name!r} (to be written)")
        write_parquet(df.astype({c: schema.PSEUDO_COLUMNS[c] for c in df.columns}), path, meta)
        return path


def _run_files(d: Path) -> list[Path]:
    return [d / schema.OOF_FILE, d / schema.TEST_FILE]


def _read_logits(d: Path, cols: list[str], schemas: tuple) -> list[pa.Table] | None:
    """Only the logit columns of a run's two files, when each file's schema is ``schemas``'
    (the first run's); None when it is not or a file cannot be read."""
    tables = []
    try:
        for path, want in zip(_run_files(d), schemas):
            with pq.ParquetFile(path) as f:
                if not f.schema_arrow.remove_metadata().equals(want):
                    return None
                tables.append(f.read(columns=cols))
    except (pa.ArrowException, OSError, ValueError):
        return None
    return tables


def _read_hashed(d: Path) -> tuple[list[pa.Table] | None, str]:
    """A run folder's oof and test tables and the sha256 of their bytes (``Store.run_hash``);
    (None, "") when a file cannot be read. The hash comes from ``_HashMemo`` when the two files'
    size, mtime, ctime and inode are those it was last computed for; else each file is read once
    and hashed while it is decoded (both release the GIL: 2 cores, one pass each)."""
    paths = _run_files(d)
    memo = _HashMemo(paths)
    known = memo.get()
    h = hashlib.sha256()
    tables = []
    for path in paths:
        try:
            if known:
                tables.append(_parquet(path))
                continue
            data = path.read_bytes()
            hashing = _HASHER.submit(h.update, data)
            try:
                tables.append(_parquet(pa.BufferReader(data)))
            finally:
                hashing.result()
        except (pa.ArrowException, OSError, ValueError):
            return None, ""
    if known:
        return tables, known
    memo.put(h.hexdigest())
    return tables, h.hexdigest()


class _HashMemo:
    """The sha256 of a run's files, remembered by what ``stat`` says of them (size, mtime and
    ctime in ns, inode, device), as git's index does: hashing is a fifth of a warm
    ``leaderboard``'s reading. Any write to a file changes its ctime (which no user can set), so
    a file changed since is hashed again. A cache file per pair of files; never fatal."""

    def __init__(self, paths: list[Path]):
        try:
            stats = [p.stat() for p in paths]
        except OSError:
            self.path = None
            return
        key = "|".join(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:"
                       f"{st.st_ino}:{st.st_dev}" for p, st in zip(paths, stats))  # fmt: skip
        self.key = key
        self.path = cache_dir() / "hashes" / f"{hashlib.sha256(key.encode()).hexdigest()}.json"

    def get(self) -> str | None:
        if self.path is None:
            return None
        try:
            entry = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        ok = isinstance(entry, dict) and entry.get("stat") == self.key
        h = entry.get("sha256") if ok else None
        return h if isinstance(h, str) and len(h) == 64 else None

    def put(self, sha256: str) -> None:
        if self.path is None:
            return
        try:
            write_json({"stat": self.key, "sha256": sha256}, self.path)
        except OSError as exc:
            log.debug("could not remember a run's hash (%s)", exc)


class _Validated:
    """Which run files (by the sha256 of their bytes) passed the full validation on these folds
    (their rows: ids, labels, folds, in order), under this stackkit and contract version, and
    the digest of their id and fold columns (``_RowKeys.digest``): a file per (run content,
    folds) in the cache folder, written after a full validation succeeds, or after a run's
    columns were found equal to such a run's. A warm ``load_runs`` then reads its first run as
    it reads the others (the full validation was a tenth of a warm ``leaderboard``), and the
    others' logit columns alone (decoding their ids was a fifth of reading them); any other
    bytes, folds or version are checked again."""

    def __init__(self, folds: schema.Folds):
        from stackkit import __version__

        self.folds = folds
        self.version = __version__
        self.root = cache_dir() / "validated"

    def _path(self, run_hash: str) -> Path:
        key = f"{run_hash}|{self.folds.rows_hash}|{self.version}|{schema.CONTRACT_VERSION}"
        return self.root / f"{hashlib.sha256(key.encode()).hexdigest()}.json"

    def _entry(self, run_hash: str) -> dict | None:
        try:
            entry = json.loads(self._path(run_hash).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        ok = isinstance(entry, dict) and entry.get("run_hash") == run_hash and entry.get(
            "folds_rows") == self.folds.rows_hash  # fmt: skip
        return entry if ok else None

    def knows(self, run_hash: str) -> bool:
        return self._entry(run_hash) is not None

    def rows(self, run_hash: str) -> str | None:
        """The digest of the run's id and fold columns (``_RowKeys.digest``) when its bytes
        passed; None when they did not, or were recorded without it."""
        entry = self._entry(run_hash)
        return entry.get("rows") if entry is not None else None

    def remember(self, run_hash: str, rows: str) -> None:
        try:
            write_json(
                {"run_hash": run_hash, "folds_rows": self.folds.rows_hash, "rows": rows},
                self._path(run_hash),
            )
        except OSError as exc:  # a cache: never fatal
            log.debug("could not record validated run files (%s)", exc)


def is_inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether ``path``, symlinks resolved, lies inside ``root`` (resolved too)."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def _test_id_mismatch(t: pd.DataFrame, ref_ids: np.ndarray, where: str, ref_run: str) -> None:
    import pandas as pd

    ids = t["sample_id"].to_numpy(dtype=object)
    extra = ~pd.Index(ref_ids).isin(ids)
    unknown = ~pd.Index(ids).isin(ref_ids)
    if unknown.any():
        r = int(np.argmax(unknown))
        raise ContractError(
            f"{where}: row {r} (sample_id {ids[r]!r}): not among the test ids of run {ref_run!r}"
        )
    first = ref_ids[int(np.argmax(extra))]
    raise ContractError(f"{where}: lacks test sample_id {first!r} that run {ref_run!r} has")
