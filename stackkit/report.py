"""``stackkit report``: one self-contained HTML page about an ensemble, for a person to look at.

    >>> path = build_report(Store("artifacts"))            # the most recently written ensemble
    >>> path = build_report(Store("artifacts"), "lr", out="lr.html")

The page holds the leaderboard with the spread over folds, per-class F1 of every run and of the
ensemble, the ensemble's confusion matrix, how much the runs' errors overlap (clustered), what
the ensemble loses without each run, the meta learner's run weights, a reliability diagram, and
for the 18-class mask layout the mask, gender and age sub-tasks. Plots are matplotlib PNGs
embedded as base64; there is no JavaScript and nothing is fetched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stackkit import __version__, metrics
from stackkit import report_html as H
from stackkit.compare import compare_arrays, ensemble_oof
from stackkit.errors import StackkitError
from stackkit.leaderboard import Leaderboard, leaderboard
from stackkit.report_sections import SECTIONS
from stackkit.store import Store, atomic_path, read_json

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"


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
    found = [p for p in base.iterdir() if not p.name.startswith(".")]
    found = [p for p in found if (p / "ensemble.json").is_file()]
    found.sort(key=lambda p: (p / "ensemble.json").stat().st_mtime, reverse=True)
    return [p.name for p in found]


def resolve_ensemble(store: Store, name: str | None) -> str:
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
    ens = read_json(d / "ensemble.json", f"ensemble {name!r}: ensemble.json")
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
    )


def intro(data: ReportData) -> str:
    ens, s = data.ensemble, data.ensemble["scores"]
    best = data.run_names[data.best_run]
    cmp = compare_arrays(data.y, data.ens_proba, data.run_proba[data.best_run], data.groups,
                         data.name, best)  # fmt: skip
    n, g = len(data.y), len(pd.unique(data.groups))
    text = (
        f"Ensemble {data.name!r} stacks {len(data.run_names)} runs ({', '.join(data.run_names)}) "
        f"with the {ens['meta']} meta learner, over {n} training samples of {g} groups, "
        f"{data.n_classes} classes and {len(np.unique(data.fold_ids))} folds. All scores below "
        "are out-of-fold: each sample is predicted by models that never saw it."
    )
    key = [
        f"Ensemble OOF macro-F1 {s['final_oof_macro_f1']:.4f} (cross-validated "
        f"{s['cv_macro_f1']:.4f} ± {s['cv_macro_f1_std']:.4f} over folds).",
        f"Best single run {best}: {data.board.runs[data.best_run]['oof_macro_f1']:.4f}.",
        f"Ensemble against the best run: {cmp.sentence}",
    ]
    parts = [H.para(text), H.bullets(key, "key")]
    if s.get("nested_macro_f1") is not None:
        parts.append(
            H.para(f"Nested-CV estimate of the whole procedure: {s['nested_macro_f1']:.4f}.")
        )
    if ens.get("bias_offsets") is not None:
        parts.append(H.para("Per-class bias offsets were tuned inside the CV (--tune-bias)."))
    parts += [H.para(note, "note") for note in data.notes]
    return "".join(parts)


def render(data: ReportData) -> str:
    sections = [("intro", "", intro(data))]
    for anchor, label, build in SECTIONS:
        html = build(data)
        if html:
            sections.append((anchor, label, html))
    footer = (
        f"Written by stackkit {__version__} on {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC "
        f"from ensemble {data.name} (created {data.ensemble.get('created', '?')})."
    )
    return H.page(f"stackkit report: {data.name}", "What the ensemble gets right and wrong, "
                  "and why it beats (or not) its runs.", sections, footer)  # fmt: skip


def build_report(store: Store, ensemble: str | None = None, out: str | Path | None = None) -> Path:
    """Write the HTML report of ``ensemble`` (default: the most recently written) to ``out``
    (default: ``ensembles/<name>/report.html``), whole or not at all; return its path."""
    name = resolve_ensemble(store, ensemble)
    data = load(store, name)
    html = render(data)
    out = Path(out) if out is not None else store.ensemble_dir(name) / REPORT_FILE
    with atomic_path(out) as tmp:
        tmp.write_text(html, encoding="utf-8")
    log.info("wrote %s", out)
    return out
