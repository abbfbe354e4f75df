"""What a report is drawn from: an ensemble's files, its runs and folds, loaded and aligned once."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from stackkit import metrics
from stackkit.compare import Reselect, ensemble_oof, ensemble_side
from stackkit.contract import schema
from stackkit.contract.errors import StackkitError
from stackkit.contract.names import check_name, is_valid_name
from stackkit.contract.store import Store, read_json
from stackkit.leaderboard import Leaderboard, leaderboard

log = logging.getLogger(__name__)


@dataclass
class ReportData:
    """Everything the sections draw from, loaded and aligned once."""

    name: str
    ensemble: dict  # ensemble.json
    board_json: dict  # leaderboard.json
    board: Leaderboard  # run rows (with loro_delta) over the ensemble's runs
    y: np.ndarray
    fold_ids: np.ndarray
    groups: np.ndarray
    classes: list[str]
    folds_meta: dict
    run_proba: np.ndarray  # (R, n, C) softmax of the runs' OOF logits
    ens_proba: np.ndarray  # (n, C) oof_proba.parquet in folds.parquet order
    notes: list[str]
    estimate: np.ndarray | None = None  # (n, C) estimate_oof_proba.parquet (None: older fit)
    reselect: Reselect | None = None  # what the estimate chose from (for the comparison)

    @property
    def run_names(self) -> list[str]:
        return self.board.runset.names

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def best_run(self) -> int:
        return int(np.argmax([r["oof_macro_f1"] for r in self.board.runs]))


def ensemble_names(store: Store) -> list[str]:
    """Ensembles present, most recently written first."""
    base = store.root / "ensembles"
    if not base.is_dir():
        return []
    found = [p for p in base.iterdir() if is_valid_name(p.name)]
    found = [p for p in found if (p / "ensemble.json").is_file()]
    found.sort(key=lambda p: (p / "ensemble.json").stat().st_mtime, reverse=True)
    return [p.name for p in found]


def resolve_ensemble(store: Store, name: str | None) -> str:
    if name is not None:
        check_name(name, "ensemble")
    have = ensemble_names(store)
    if not have:
        raise StackkitError(
            f"{store.root / 'ensembles'}: no ensembles to report on (write one with `stackkit fit`)"
        )
    if name is None:
        return have[0]
    if name not in have:
        raise StackkitError(f"ensemble {name!r} not found (ensembles: {', '.join(have)})")
    return name


def load(store: Store, name: str) -> ReportData:
    d = store.ensemble_dir(name)
    where = f"ensemble {name!r}: ensemble.json"
    ens = schema.validate_ensemble_info(read_json(d / "ensemble.json", where), where)
    board_json = read_json(d / "leaderboard.json", f"ensemble {name!r}: leaderboard.json")
    folds = store.read_folds()
    notes = []
    if ens["inputs"]["folds_hash"] != folds.hash:
        raise StackkitError(f"ensemble {name!r} was fitted on another folds.parquet; refit it")
    runs = [r["run"] for r in ens["inputs"]["runs"]]
    for r in ens["inputs"]["runs"]:
        if r["run"] in store.run_names() and store.run_hash(r["run"]) != r["hash"]:
            notes.append(f"Run {r['run']} changed after the ensemble was fitted; refit to compare.")
    board = leaderboard(store, runs=runs, meta=ens["meta"], params=ens.get("cli_params") or None)
    side = ensemble_side(store, name, name, folds)
    for note in notes:
        log.warning("%s", note)
    return ReportData(
        name=name,
        ensemble=ens,
        board_json=board_json,
        board=board,
        y=folds.labels,
        fold_ids=folds.fold_ids,
        groups=folds.frame["group"].to_numpy(dtype=object),
        classes=list(folds.classes),
        folds_meta=folds.meta,
        run_proba=metrics.softmax(board.runset.oof),
        ens_proba=ensemble_oof(store, name, folds),
        notes=notes,
        estimate=side.proba if side.reselect is not None else None,
        reselect=side.reselect,
    )
