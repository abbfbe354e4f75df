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
from pathlib import Path

import numpy as np
import pandas as pd

from stackkit import __version__
from stackkit.compare import compare_arrays
from stackkit.contract.store import Store, atomic_path
from stackkit.cv.estimate import below_best_run
from stackkit.report import html as H
from stackkit.report.data import ReportData, load, resolve_ensemble
from stackkit.report.sections import SECTIONS

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"


def intro(data: ReportData) -> str:
    ens, s = data.ensemble, data.ensemble["scores"]
    best = data.run_names[data.best_run]
    best_f1 = data.board.runs[data.best_run]["oof_macro_f1"]
    honest = data.estimate is not None
    cmp = compare_arrays(data.y, data.estimate if honest else data.ens_proba,
                         data.run_proba[data.best_run], data.groups, data.name, best,
                         reselect_a=data.reselect)  # fmt: skip
    n, g = len(data.y), len(pd.unique(data.groups))
    text = (
        f"Ensemble {data.name!r} stacks {len(data.run_names)} runs ({', '.join(data.run_names)}) "
        f"with the {ens['meta']} meta learner, over {n} training samples of {g} groups, "
        f"{data.n_classes} classes and {len(np.unique(data.fold_ids))} folds. All scores below "
        "are out-of-fold: each sample is predicted by models that never saw it."
    )
    key = []
    if honest:
        key.append(
            f"Honest estimate of the whole procedure on new samples: macro-F1 "
            f"{s['estimate_macro_f1']:.4f} (each fold's choice among candidates, blend weights "
            "and bias offsets made without that fold)."
        )
    key += [
        f"The pick's own OOF macro-F1 {s['final_oof_macro_f1']:.4f} (cross-validated "
        f"{s['cv_macro_f1']:.4f} ± {s['cv_macro_f1_std']:.4f} over folds"
        + ("; the best of several candidates on these rows, so optimistic)." if honest else ")."),
        f"Best single run {best}: {best_f1:.4f}.",
        f"Ensemble against the best run: {cmp.sentence}"
        + (" The ensemble enters with the predictions behind its honest estimate." if honest
           else ""),
    ]  # fmt: skip
    note = below_best_run(s["estimate_macro_f1"], [_run(best, best_f1)]) if honest else None
    if note:
        key.append(note)
    parts = [H.para(text), H.bullets(key, "key")]
    if s.get("nested_macro_f1") is not None:
        parts.append(
            H.para(f"Nested-CV estimate of the whole procedure: {s['nested_macro_f1']:.4f}.")
        )
    if ens.get("bias_offsets") is not None:
        parts.append(H.para("Per-class bias offsets were tuned inside the CV (--tune-bias)."))
    parts += [H.para(note, "note") for note in data.notes]
    return "".join(parts)


def _run(name: str, f1: float):
    from stackkit.cv.result import CVResult

    return CVResult(f"run:{name}", np.zeros((0, 0)), {"macro_f1": f1}, 0.0)


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
