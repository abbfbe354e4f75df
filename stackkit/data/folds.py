"""The one fold assignment every run uses: stratified group K-fold.

Groups (people) never straddle folds; label strata are balanced as well as whole groups allow
(scikit-learn's ``StratifiedGroupKFold`` with a fixed seed, so the same data and seed always
give the same assignment).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from stackkit.contract import schema
from stackkit.contract.errors import StackkitError

log = logging.getLogger(__name__)


def make_folds(
    sample_ids: Sequence[str],
    groups: Sequence[str] | None,
    labels: Sequence[int],
    classes: Sequence[str],
    n_folds: int = 5,
    seed: int = 42,
    extra_meta: dict | None = None,
) -> schema.Folds:
    """Assign every sample to one of ``n_folds`` folds, whole groups at a time."""
    ids = np.asarray(sample_ids, dtype=object)
    groups = ids if groups is None else np.asarray(groups, dtype=object)
    y = np.asarray(labels, dtype=np.int64)
    n_groups = len(pd.unique(groups))
    if n_folds < 2:
        raise StackkitError(f"--n-folds must be at least 2, got {n_folds}")
    if n_groups < n_folds:
        raise StackkitError(f"--n-folds {n_folds} exceeds the number of groups ({n_groups})")
    fold = np.full(len(ids), -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    rare = np.flatnonzero(
        (np.bincount(y, minlength=len(classes)) > 0)
        & (np.bincount(y, minlength=len(classes)) < n_folds)
    )
    if len(rare):  # said once, in our words, instead of scikit-learn's warning
        log.warning(
            "%d class(es) have fewer samples than the %d folds (%s): some folds will lack them",
            len(rare), n_folds, ", ".join(str(classes[c]) for c in rare[:5]),
        )  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for k, (_, val) in enumerate(splitter.split(np.zeros(len(ids)), y, groups)):
            fold[val] = k
    frame = pd.DataFrame({"sample_id": ids, "group": groups, "label": y, "fold": fold})
    meta = dict(extra_meta or {})
    meta.update(version=schema.CONTRACT_VERSION, classes=list(classes), n_folds=n_folds, seed=seed)
    folds = schema.validate_folds(frame, meta, "new folds")
    sizes = np.bincount(fold, minlength=n_folds)
    log.info(
        "%d samples, %d groups -> %d folds of %s samples",
        len(ids),
        n_groups,
        n_folds,
        sizes.tolist(),
    )
    return folds
