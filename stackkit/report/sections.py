"""The sections of ``stackkit report``: each takes the loaded ReportData and returns HTML
(or "" when it does not apply, e.g. diversity with a single run)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from stackkit.leaderboard import candidate_columns, run_columns
from stackkit.report import html as H
from stackkit.report import plots as P
from stackkit.report import stats as S

if TYPE_CHECKING:
    from stackkit.report.data import ReportData


def _preds(data: ReportData) -> tuple[list[str], np.ndarray]:
    """Model names (runs, then the ensemble) and their (M, n) predictions."""
    names = [*data.run_names, f"ensemble ({data.ensemble['meta']})"]
    preds = np.vstack([data.run_proba.argmax(2), data.ens_proba.argmax(1)[None]])
    return names, preds


def leaderboard(data: ReportData) -> str:
    sel = data.board_json["selected"]
    cands = [dict(c, picked="selected" if c["meta"] == sel else "") for c in
             data.board_json["candidates"]]  # fmt: skip
    names, preds = _preds(data)
    per_fold = [S.per_fold_macro_f1(data.y, p, data.fold_ids, data.n_classes) for p in preds]
    whole = [*(r["oof_macro_f1"] for r in data.board.runs),
             data.ensemble["scores"]["final_oof_macro_f1"]]  # fmt: skip
    return H.section(
        "leaderboard", "Leaderboard",
        "Runs are scored on their own OOF predictions, meta learners by cross-validation over "
        "the same folds; '± folds' is the standard deviation of the per-fold macro-F1.",
        "<h3>Runs</h3>", H.table(data.board.runs, run_columns(data.board.loro_meta)),
        "<h3>Meta learners tried</h3>", H.table(cands, candidate_columns("picked"), pick_key="picked"),
        H.img(P.fold_spread(names, per_fold, whole), "macro-F1 per fold"),
        H.para("How to read: each dot is one fold's macro-F1, the bar is the score on the whole "
               "OOF vector; dots far apart mean a score that depends on which people were "
               "held out."),
    )  # fmt: skip


def per_class(data: ReportData) -> str:
    names, preds = _preds(data)
    f1 = np.column_stack([S.per_class_f1(data.y, p, data.n_classes) for p in preds])
    support = np.bincount(data.y, minlength=data.n_classes)
    numbers = H.matrix_table(data.classes, names, f1.tolist(), ".3f", ("samples", support))
    return H.section(
        "per-class", "F1 per class",
        "How to read: one row per class, one column per run with the ensemble last; dark cells "
        "are the classes a model gets wrong. A class that is dark in every column is hard for "
        "all runs, and stacking cannot fix it.",
        H.img(P.class_f1_heatmap(data.classes, names, f1), "F1 per class"),
        H.details("the same numbers as a table (best of each row in bold)", numbers),
    )  # fmt: skip


def confusion(data: ReportData) -> str:
    pred = data.ens_proba.argmax(1)
    cm = S.normalised_confusion(data.y, pred, data.n_classes)
    wrong = data.y != pred
    pairs = data.y[wrong] * data.n_classes + pred[wrong]
    counts = np.bincount(pairs, minlength=data.n_classes**2)
    rows = []
    for k in np.argsort(-counts, kind="stable")[:6]:
        if counts[k] > 0:
            i, j = divmod(int(k), data.n_classes)
            rows.append({"true": data.classes[i], "predicted": data.classes[j],
                         "share": cm[i, j], "samples": int(counts[k])})  # fmt: skip
    cols = [("true", "true class", ""), ("predicted", "predicted as", ""),
            ("share", "share of the true class", ".3f"), ("samples", "samples", "d")]  # fmt: skip
    return H.section(
        "confusion", "Confusion matrix of the ensemble",
        "How to read: row = true class, column = predicted class, each row sums to 1; the "
        "diagonal is recall, anything off it is where that class goes instead.",
        H.img(P.confusion(data.classes, cm), "confusion matrix"),
        "<h3>Most frequent mistakes</h3>", H.table(rows, cols),
    )  # fmt: skip


def diversity(data: ReportData) -> str:
    if len(data.run_names) < 2:
        return ""
    preds = data.run_proba.argmax(2)
    corr = S.error_correlation(preds != data.y)
    dis = S.disagreement(preds)
    order = S.cluster_order(corr)
    names = [data.run_names[i] for i in order]
    png = P.diversity(names, corr[np.ix_(order, order)], dis[np.ix_(order, order)])
    iu = np.triu_indices(len(corr), 1)
    k = int(np.argmax(corr[iu]))
    a, b = data.run_names[iu[0][k]], data.run_names[iu[1][k]]
    return H.section(
        "diversity", "Run diversity",
        "How to read: left, the correlation of the runs' per-sample mistakes (1 = they fail on "
        "the same samples); right, how often two runs predict different classes. Runs are "
        "ordered by hierarchical clustering, so redundant runs sit together in warm blocks.",
        H.img(png, "error correlation and disagreement"),
        H.para(f"Most alike: {a} and {b} (error correlation {corr[iu][k]:.2f}, disagreement "
               f"{dis[iu][k]:.3f}). Runs that fail together add little to a stack."),
    )  # fmt: skip


def loro(data: ReportData) -> str:
    rows = [r for r in data.board.runs if r.get("loro_delta") is not None]
    if not rows:
        return ""
    png = P.bars([r["run"] for r in rows], [r["loro_delta"] for r in rows],
                 f"CV macro-F1 lost when the run is dropped ({data.board.loro_meta})")  # fmt: skip
    return H.section(
        "loro", "Leave one run out",
        "How to read: how much CV macro-F1 the ensemble's meta learner loses when each run is "
        "left out and the stack refitted. Large: the run carries the ensemble; near zero or "
        "negative: the run is redundant or hurts.",
        H.img(png, "leave-one-run-out"),
    )  # fmt: skip


def weights(data: ReportData) -> str:
    w = data.ensemble.get("run_weights")
    meta = data.ensemble["meta"]
    if not w:
        return H.section("weights", f"What the {meta} learner uses", "",
                         H.para(f"The {meta} meta learner reports no per-run weights."))  # fmt: skip
    names = [n for n in data.run_names if n in w]
    png = P.bars(names, [w[n] for n in names], f"weight or importance of each run ({meta})", ".3f")
    return H.section(
        "weights", f"What the {meta} learner uses",
        "How to read: the share of the final prediction each run carries, as the fitted meta "
        "learner reports it (weights, coefficient norms or importances).",
        H.img(png, "run weights"),
    )  # fmt: skip


def calibration(data: ReportData) -> str:
    best = data.best_run
    curves = {
        f"ensemble ({data.ensemble['meta']})": S.reliability(data.y, data.ens_proba),
        f"best run {data.run_names[best]}": S.reliability(data.y, data.run_proba[best]),
    }
    return H.section(
        "calibration", "Calibration",
        "How to read: samples are binned by the probability given to the predicted class; a "
        "well calibrated model lies on the dashed diagonal (points below it are over-confident). "
        "ECE is the average gap, weighted by how many samples each bin holds.",
        H.img(P.reliability(curves), "reliability diagram"),
    )  # fmt: skip


def subtasks(data: ReportData) -> str:
    if data.n_classes != 18 or not S.is_mask_layout(data.classes, data.folds_meta):
        return ""
    names, preds = _preds(data)
    rows = []
    for name, p in zip(names, preds):
        row = {"model": name}
        for task, s in S.subtask_scores(data.y, p).items():
            row.update({f"{task}_acc": s["accuracy"], f"{task}_f1": s["macro_f1"]})
        rows.append(row)
    cols = [("model", "model", "")] + [
        (f"{t}_{m}", f"{t} {label}", ".4f")
        for t in S.SUBTASKS for m, label in (("acc", "accuracy"), ("f1", "macro-F1"))
    ]  # fmt: skip
    return H.section(
        "subtasks", "Mask, gender and age",
        "How to read: the 18 classes are mask x gender x age; each column reads one part off "
        "the 18-class prediction (mask = label // 6, gender = label // 3 mod 2, age = label mod "
        "3). The weakest sub-task is where more data or a dedicated model would pay off.",
        H.table(rows, cols),
    )  # fmt: skip


SECTIONS = [  # (anchor, navigation label, builder), in page order
    ("leaderboard", "leaderboard", leaderboard),
    ("per-class", "per class", per_class),
    ("confusion", "confusion", confusion),
    ("diversity", "diversity", diversity),
    ("loro", "leave one out", loro),
    ("weights", "weights", weights),
    ("calibration", "calibration", calibration),
    ("subtasks", "sub-tasks", subtasks),
]
