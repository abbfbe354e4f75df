"""On-disk cache of meta-level CV results, keyed by input hashes and parameters (joblib).

The cache lives outside the artifacts folder (which holds no pickles, CONTRACT.md):
``$STACKKIT_CACHE`` if set, else ``~/.cache/stackkit``. Keys carry the folds hash, every run's
content hash, the learner and its parameters and the stackkit version, so a changed input can
never be answered from a stale entry; joblib also invalidates entries when the cached code changes.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pandas as pd
from joblib import Memory

from stackkit import __version__
from stackkit.contract.store import RunSet

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(os.environ.get("STACKKIT_CACHE") or Path.home() / ".cache" / "stackkit")


def memory(enabled: bool = True) -> Memory:
    return Memory(str(cache_dir()) if enabled else None, verbose=0)


def inputs_key(runset: RunSet) -> dict:
    """What identifies a set of inputs: the folds and each run's content.

    The contract's folds hash covers only ``sample_id,fold``; cached arrays also depend on the
    row order and the labels (a moved age boundary changes them), so those are hashed too.
    """
    f = runset.folds.frame
    rows = pd.util.hash_pandas_object(f[["sample_id", "label", "fold"]], index=False)
    return {
        "folds_hash": runset.folds.hash,
        "rows": hashlib.sha256(rows.to_numpy().tobytes()).hexdigest(),
        "runs": [[n, runset.hashes[n]] for n in runset.names],
        "stackkit": __version__,
    }
