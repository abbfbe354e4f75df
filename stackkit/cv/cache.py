"""On-disk cache of meta-level CV results: plain ``.npy`` arrays and JSON, never a pickle.

The cache lives outside the artifacts folder: ``$STACKKIT_CACHE`` if set, else
``~/.cache/stackkit``. An entry is two files named by the sha256 of its key (the folds hash, the
row order and labels, every run's content hash, the learner, its parameters, the stackkit
version and this module's format): ``cv/<digest>.npy`` (the OOF probabilities, read with
``allow_pickle=False``) and ``cv/<digest>.json`` (the key itself, the scores, and the sha256 of
the ``.npy`` bytes), each written to a temporary name and renamed. The JSON is written last, so
an entry without a matching JSON is not an entry.

Nothing in the cache is trusted: an entry whose JSON does not parse, whose key differs from the
one asked for, whose array does not match its recorded hash, shape and dtype, or that is not
finite (a corrupt, foreign or planted file) is ignored with a warning and recomputed; nothing
read here can run code. Deleting the cache is always safe.

    >>> cache = CVCache()
    >>> key = entry_key(inputs_key(runset), "lr", {"C": 1.0})
    >>> cache.get(key, n_rows, n_classes) or cache.put(key, computed)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from stackkit import __version__
from stackkit.contract.store import RunSet, atomic_path, cache_dir
from stackkit.cv.result import CVResult

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 1 was joblib's pickles (never read now); bump when an entry's layout changes


def inputs_key(runset: RunSet) -> dict:
    """What identifies a set of inputs: the folds and each run's content.

    The contract's folds hash covers only ``sample_id,fold``; cached arrays also depend on the
    row order and the labels (a moved age boundary changes them), so those are hashed too.
    """
    return {
        "folds_hash": runset.folds.hash,
        "rows": runset.folds.rows_hash,
        "runs": [[n, runset.hashes[n]] for n in runset.names],
        "stackkit": __version__,
    }


def entry_key(inputs: dict, meta: str, params: dict) -> dict:
    """The whole key of one candidate's CV result, as a JSON-able dict: ``params`` are the ones
    given; every learner's defaults (``meta.defaults.LEARNER_DEFAULTS``) are in the key too, so
    changing a default recomputes what was cached under the old one (a blend's members
    included) instead of reading it back as if computed now."""
    from stackkit.meta.defaults import LEARNER_DEFAULTS

    return _plain({"format": CACHE_FORMAT, "inputs": inputs, "meta": meta, "params": params,
                   "defaults": LEARNER_DEFAULTS})  # fmt: skip


def _plain(o):
    """``o`` as it reads back from JSON (tuples become lists, numpy scalars Python ones)."""
    return json.loads(json.dumps(o, sort_keys=True, default=_default))


def _default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return repr(o)


def digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


class CVCache:
    """Get and put CV results by key; ``enabled=False`` reads and writes nothing."""

    def __init__(self, enabled: bool = True, root: str | os.PathLike | None = None):
        self.enabled = enabled
        self.root = Path(root) if root is not None else cache_dir() / "cv"

    def paths(self, key: dict) -> tuple[Path, Path]:
        d = digest(key)
        return self.root / f"{d}.npy", self.root / f"{d}.json"

    def get(self, key: dict, n_rows: int, n_classes: int) -> CVResult | None:
        """The cached result for ``key``, or None (absent, or not a valid entry: see module)."""
        if not self.enabled:
            return None
        npy, js = self.paths(key)
        if not js.is_file():
            return None
        try:
            return self._read(key, npy, js, n_rows, n_classes)
        except Exception as exc:  # anything wrong with an entry means: recompute it
            log.warning("ignoring cache entry %s (%s): it will be recomputed", js.name, exc)
            return None

    def _read(self, key, npy: Path, js: Path, n_rows: int, n_classes: int) -> CVResult:
        entry = json.loads(js.read_text(encoding="utf-8"))
        if not isinstance(entry, dict) or entry.get("key") != key:
            raise ValueError("its key is not the one asked for")
        raw = npy.read_bytes()
        if hashlib.sha256(raw).hexdigest() != entry.get("npy_sha256"):
            raise ValueError(f"{npy.name} does not match the hash its entry records")
        proba = np.load(io.BytesIO(raw), allow_pickle=False)
        if proba.dtype != np.float64 or proba.shape != (n_rows, n_classes):
            raise ValueError(f"array {proba.dtype} {proba.shape}, expected ({n_rows}, {n_classes})")
        if not np.isfinite(proba).all():
            raise ValueError("array holds non-finite values")
        scores, params, extra = entry["scores"], entry["params"], entry.get("extra") or {}
        if not (isinstance(scores, dict) and isinstance(params, dict)):
            raise ValueError("scores or params are not objects")
        return CVResult(entry["meta"], proba, scores, float(entry["seconds"]), params, None, extra)

    def put(self, key: dict, result: CVResult) -> None:
        """Write the entry (array first, JSON last, each atomically); a failure only warns."""
        if not self.enabled:
            return
        npy, js = self.paths(key)
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(result.oof_proba, dtype=np.float64), allow_pickle=False)
        raw = buf.getvalue()
        entry = {
            "key": key,
            "meta": result.meta,
            "scores": result.scores,
            "seconds": result.seconds,
            "params": result.params,
            "extra": result.extra,
            "npy_sha256": hashlib.sha256(raw).hexdigest(),
        }
        try:
            with atomic_path(npy) as tmp:
                tmp.write_bytes(raw)
            with atomic_path(js) as tmp:
                tmp.write_text(json.dumps(_plain(entry), sort_keys=True), encoding="utf-8")
        except OSError as exc:
            log.warning("could not write cache entry %s (%s): continuing without", js.name, exc)

    def get_value(self, key: dict):
        """A small JSON value cached under ``key`` (``put_value``), or None."""
        if not self.enabled:
            return None
        js = self.root / f"{digest(key)}.value.json"
        try:
            entry = json.loads(js.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring cache entry %s (%s): it will be recomputed", js.name, exc)
            return None
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        return entry.get("value")

    def put_value(self, key: dict, value) -> None:
        """Cache a small JSON value (a run's own scores, say) under ``key``; a failure only warns."""
        if not self.enabled:
            return
        js = self.root / f"{digest(key)}.value.json"
        try:
            with atomic_path(js) as tmp:
                tmp.write_text(json.dumps(_plain({"key": key, "value": value}), sort_keys=True),
                               encoding="utf-8")  # fmt: skip
        except OSError as exc:
            log.warning("could not write cache entry %s (%s): continuing without", js.name, exc)

    def get_or_compute(self, key: dict, n_rows: int, n_classes: int, compute) -> CVResult:
        """The cached result, or ``compute()`` cached (without its refit) and returned."""
        found = self.get(key, n_rows, n_classes)
        if found is not None:
            return found
        res = compute()
        self.put(key, replace(res, refit=None))
        return res
