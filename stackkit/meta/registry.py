"""The learners by name: ``make_learner`` (defaults overridden by params, each value checked by
the learner's own scikit-learn parameter constraints) and ``--param`` parsing."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from stackkit.contract.errors import StackkitError
from stackkit.meta.defaults import FACTORS_DEFAULT, SIMPLICITY

if TYPE_CHECKING:
    from sklearn.base import BaseEstimator

log = logging.getLogger(__name__)


def _classes() -> dict[str, type]:
    # imported when a learner is made: the warm leaderboard checks its (empty) --param and
    # resolves factors without importing scikit-learn
    from stackkit.meta.caruana import CaruanaSelection
    from stackkit.meta.knn import KNNLearner
    from stackkit.meta.linear import LRLearner, SVMLearner
    from stackkit.meta.trees import RFLearner, XGBLearner
    from stackkit.meta.vote import VoteLearner

    return {"vote": VoteLearner, "caruana": CaruanaSelection, "lr": LRLearner, "knn": KNNLearner,
            "svm": SVMLearner, "rf": RFLearner, "xgboost": XGBLearner}  # fmt: skip


def make_learner(
    name: str, n_classes: int, params: dict | None = None, n_jobs: int | None = None
) -> BaseEstimator:
    """An unfitted meta learner ``name`` for ``n_classes`` classes, defaults overridden by
    ``params``; ``n_jobs`` (when given) goes to the learners that take it."""
    from sklearn.utils._param_validation import (
        InvalidParameterError,
        validate_parameter_constraints,
    )

    classes = _classes()
    if name not in classes:
        known = [n for n in SIMPLICITY if n in classes]
        raise StackkitError(f"unknown meta learner {name!r} (known: {', '.join(known)})")
    est = classes[name](n_classes=n_classes)
    valid = est.get_params(deep=False)
    params = dict(params or {})
    for key in params:
        if key not in valid or key == "n_classes":
            known = ", ".join(k for k in valid if k != "n_classes")
            raise StackkitError(
                f"--param {name}.{key}: {name} has no parameter {key!r} (known: {known})"
            )
    for key, value in params.items():  # scikit-learn's check of each value, named as given
        try:
            validate_parameter_constraints(
                {key: est._parameter_constraints[key]}, {key: value}, type(est).__name__
            )
        except InvalidParameterError as exc:
            raise StackkitError(f"--param {name}.{key}={_text(value)}: {exc}") from None
    if n_jobs is not None and "n_jobs" in valid and "n_jobs" not in params:
        params["n_jobs"] = n_jobs
    return est.set_params(**params)


def check_params(params: dict | None, metas: list[str], n_train: int | None = None) -> None:
    """Refuse any bad ``--param`` before work starts, for the learners fitted or not; warn about
    parameters of learners that will not be fitted. ``n_train``: the fewest rows any learner is
    fitted on (the smallest meta-level training split), which bounds knn's k."""
    for name, p in (params or {}).items():
        make_learner(name, n_classes=None, params=p)
        if name not in metas:
            log.warning("--param %s.*: %s is not among the learners fitted (%s): ignored",
                        name, name, ", ".join(metas))  # fmt: skip
    k = (params or {}).get("knn", {}).get("n_neighbors")
    if n_train is not None and k is not None and "knn" in metas and k > n_train:
        raise StackkitError(
            f"--param knn.n_neighbors={k}: more neighbours than the {n_train} rows of the "
            "smallest training split of the meta-level CV"
        )


def _text(value) -> str:
    return value if isinstance(value, str) else repr(value)


def _value(text: str):
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_params(items: list[str]) -> dict[str, dict]:
    """``["rf.n_estimators=300", "lr.C=0.5"]`` -> ``{"rf": {"n_estimators": 300}, "lr": {"C": 0.5}}``.

    Values become int, float, bool (true/false), None (none), else str. Each name and value is
    checked here, before any work, by :func:`make_learner` (the learner's own constraints).
    """
    out: dict[str, dict] = {}
    for item in items:
        head, eq, value = item.partition("=")
        learner, dot, key = head.strip().partition(".")
        if not eq or not dot or not learner or not key.strip() or not value.strip():
            raise StackkitError(
                f"--param {item!r}: expected LEARNER.NAME=VALUE, e.g. rf.n_estimators=300"
            )
        if learner not in SIMPLICITY:
            raise StackkitError(
                f"--param {item!r}: unknown meta learner {learner!r} (known: {', '.join(SIMPLICITY)})"
            )
        out.setdefault(learner, {})[key.strip()] = _value(value)
    for learner, p in out.items():
        make_learner(learner, n_classes=None, params=p)
    return out


def resolve_factors(params: dict | None, metas: list[str], data: dict | None) -> dict:
    """``params`` with every ``factors="auto"`` (given, or a learner's default) of the learners
    in ``metas`` made concrete for the data (folds.parquet's ``data`` metadata): the layout's own
    factors where it has them (``mask``: mask x gender x age), a manifest's declared factors as
    class codes (``data.factors``, :mod:`stackkit.data.factors`), else ``"none"``."""
    out = {name: dict(p) for name, p in (params or {}).items()}
    for name in metas:
        if name not in FACTORS_DEFAULT:  # a learner without the option
            continue
        value = out.get(name, {}).get("factors", FACTORS_DEFAULT[name])
        if value == "auto":
            out.setdefault(name, {})["factors"] = _auto_factors(data or {})
    return out


def _auto_factors(data: dict):
    # imported only when some learner asks for "auto": features imports scikit-learn, and the
    # warm leaderboard with the default (``none``) factors must not
    from stackkit.data.factors import class_codes
    from stackkit.meta.features import FACTORS

    layout = data.get("layout")
    if layout in FACTORS:
        return layout
    if data.get("factors"):
        return [list(c) for c in class_codes(data["factors"], where="folds.parquet data.factors")]
    return "none"
