"""The ``stackkit`` command line: thin wrappers over library functions.

Each command parses its options, calls one library function with the same parameter names,
and prints a short summary. Logging is configured here only; expected failures
(:class:`~stackkit.contract.errors.StackkitError`) print one line on stderr and exit 1.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from stackkit.contract.errors import StackkitError

app = typer.Typer(
    name="stackkit",
    help="Ensemble and stack image classifiers over out-of-fold logits.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's plain help: typer 0.29's rich panels print a type after every option, flags
    # included (`--force <bool>`, even `--help <bool>`), and ignore a flag's metavar
    rich_markup_mode=None,
)

ArtifactsOpt = Annotated[
    Optional[Path],  # noqa: UP045 (typer needs Optional on 3.10)
    typer.Option(
        "--artifacts",
        envvar="STACKKIT_ARTIFACTS",
        help="Artifacts directory (default ./artifacts).",
        show_default=False,
    ),
]


def split_names(value: str | None) -> list[str] | None:
    """``"a,b, c"`` -> ``["a", "b", "c"]``; None -> None; ``","`` -> ``[]`` (refused later)."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def expected_errors(fn):
    """Turn a StackkitError into one line on stderr and exit code 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StackkitError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now, not the stream it found when it was made: a
    handler that kept a captured stream (a test runner's, a notebook cell's) fails on every later
    log line with "--- Logging error ---" once that stream is closed."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ assigns it; always stderr
        pass

    def emit(self, record: logging.LogRecord) -> None:
        """Through ``tqdm.write`` once tqdm is loaded (a progress bar may be on screen: the line
        then prints above it, not glued onto it); tqdm is not imported for commands that draw no
        bar (it is a tenth of a warm ``leaderboard``'s start)."""
        tqdm = sys.modules.get("tqdm")
        if tqdm is None:
            return super().emit(record)
        try:
            tqdm.tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # logging's own contract: report, never raise
            self.handleError(record)


def configure_logging(level: int) -> None:
    """The one logging set-up of every command line (stackkit's and the runner's)."""
    logging.basicConfig(
        level=level, format="%(levelname).1s %(name)s: %(message)s", handlers=[_StderrHandler()],
        force=True,
    )  # fmt: skip


@app.callback()
def main_callback(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    configure_logging(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    # third-party chatter is not ours to show: matplotlib's font-cache and cache-dir lines
    # ("generated new fontManager", "building the font cache") in `stackkit report`
    logging.getLogger("matplotlib").setLevel(logging.ERROR)


def print_table(rows, columns, title: str | None = None) -> None:
    """A summary table on stdout, drawn by rich as plain text (stackkit.tables)."""
    from stackkit.tables import format_table

    print(format_table(rows, columns, title))


ParamOpt = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option(
        "--param",
        metavar="LEARNER.NAME=VALUE",
        help="A meta learner parameter, LEARNER.NAME=VALUE (repeatable), e.g. rf.n_estimators=300.",
    ),
]
RunsOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--runs", help="Comma-separated run names (default: every complete run)."),
]
ExcludeOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--exclude", help="Comma-separated runs to leave out of the default set."),
]


def _check_n_jobs(n_jobs: int | None) -> None:
    if n_jobs == 0:  # joblib's "no meaning", found only once the CV starts
        raise StackkitError("--n-jobs 0: give a number of processes >= 1, or -1 for every core")


def _params(items: list[str] | None) -> dict:
    from stackkit.meta.registry import parse_params

    return parse_params(items or [])


@app.command("import")
@expected_errors
def import_cmd(
    run: Annotated[str, typer.Argument(help="Name of the run to create.")],
    oof: Annotated[Path, typer.Option("--oof", help="OOF scores: parquet, CSV or .npy.")],
    test: Annotated[Path, typer.Option("--test", help="Test scores: parquet, CSV or .npy.")],
    kind: Annotated[str, typer.Option("--kind", help="logits or proba.")] = "logits",
    oof_ids: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--oof-ids", help="Sample ids for an OOF .npy (one per line, or CSV)."),
    ] = None,
    test_ids: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--test-ids", help="Sample ids for a test .npy (one per line, or CSV)."),
    ] = None,
    model: Annotated[str, typer.Option("--model", help="What produced the scores.")] = "external",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing run.")] = False,
    made_on_these_folds: Annotated[
        bool,
        typer.Option(
            "--made-on-these-folds",
            help="The OOF file has no fold column: declare that each row was predicted by a "
            "model trained without its fold of folds.parquet (recorded in run.json).",
        ),
    ] = False,
    artifacts: ArtifactsOpt = None,
) -> None:
    """Bring logits or probabilities made elsewhere into a run, checked like any other."""
    from stackkit.contract.store import Store
    from stackkit.importer import import_run

    store = Store(artifacts)
    path = import_run(
        store,
        run,
        oof,
        test,
        kind=kind,
        oof_ids=oof_ids,
        test_ids=test_ids,
        model=model,
        force=force,
        made_on_these_folds=made_on_these_folds,
    )
    import json

    m = json.loads((path / "run.json").read_text())["metrics"]
    print(
        f"imported run {run!r} into {path}: OOF macro-F1 {m['oof_macro_f1']:.4f}, "
        f"accuracy {m['oof_accuracy']:.4f}, log loss {m['oof_log_loss']:.4f}"
    )


@app.command("fit")
@expected_errors
def fit_cmd(
    meta: Annotated[
        str,
        typer.Option(
            "--meta",
            help="auto (all seven, then blend), or comma-separated: vote,caruana,lr,svm,knn,rf,xgboost,blend.",
        ),
    ] = "auto",
    runs: RunsOpt = None,
    exclude: ExcludeOpt = None,
    name: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--name", help="Ensemble name (default: the --meta value)."),
    ] = None,
    param: ParamOpt = None,
    tune_bias: Annotated[
        bool,
        typer.Option("--tune-bias", help="Per-class offsets maximising macro-F1, fitted in CV."),
    ] = False,
    nested: Annotated[
        bool, typer.Option("--nested", help="Also estimate the whole selection with nested CV.")
    ] = False,
    n_jobs: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            "--n-jobs", help="Folds fitted in parallel (default: all cores on large inputs)."
        ),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ignore cached CV results.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing ensemble of that name.")
    ] = False,
    artifacts: ArtifactsOpt = None,
    engine: Annotated[
        str,
        typer.Option(
            "--engine", help="local, or ray: the CV fits on a Ray cluster (RAY_ADDRESS or local)."
        ),
    ] = "local",
) -> None:
    """Cross-validate meta learners over the stored runs, pick one, write ensembles/NAME/."""
    from stackkit.contract.store import Store
    from stackkit.fit import fit_ensemble
    from stackkit.leaderboard import candidate_columns

    _check_n_jobs(n_jobs)
    res = fit_ensemble(
        Store(artifacts),
        meta=meta,
        runs=split_names(runs),
        name=name,
        params=_params(param),
        tune_bias=tune_bias,
        nested=nested,
        n_jobs=n_jobs,
        use_cache=not no_cache,
        command=sys.argv,
        engine=engine,
        force=force,
        exclude=split_names(exclude),
    )
    rows = [dict(r.row(), pick="<- picked" if r is res.selected else "") for r in res.candidates]
    print(
        f"honest estimate of this procedure on new samples: macro-F1 "
        f"{res.estimate.macro_f1:.4f} (each fold's choice, blend weights and bias offsets made "
        "without that fold)"
    )
    print(f"{len(res.runset.names)} runs: {', '.join(res.runset.names)}")
    print_table(rows, candidate_columns("pick"))
    line = f"picked {res.selected.meta}: CV macro-F1 {res.selected.scores['macro_f1']:.4f}"
    if len(res.candidates) > 1:
        line += f" (the best of {len(res.candidates)} on the same rows: optimistic by selection)"
    if res.bias_offsets is not None:
        line += f", after bias tuning {res.final_scores['macro_f1']:.4f}"
    elif res.bias_cv_macro_f1 is not None:
        line += f" (bias tuning would give {res.bias_cv_macro_f1:.4f} in CV: not applied)"
    if res.nested_macro_f1 is not None:
        line += f"; nested estimate of the whole procedure {res.nested_macro_f1:.4f}"
    print(line)
    if res.note:
        print(res.note)
    print(f"wrote {res.path}")


@app.command("leaderboard")
@expected_errors
def leaderboard_cmd(
    runs: RunsOpt = None,
    exclude: ExcludeOpt = None,
    meta: Annotated[str, typer.Option("--meta", help="Candidates: auto or a comma list.")] = "auto",
    param: ParamOpt = None,
    no_loro: Annotated[
        bool, typer.Option("--no-loro", help="Skip the leave-one-run-out column.")
    ] = False,
    n_jobs: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            "--n-jobs", help="Folds fitted in parallel (default: all cores on large inputs)."
        ),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ignore cached CV results.")] = False,
    compare: Annotated[
        Optional[tuple[str, str]],  # noqa: UP045
        typer.Option(
            "--compare",
            help="Only compare two ensembles or runs, A B: macro-F1 of A minus B with a 95% "
            "interval from a paired bootstrap over groups.",
            metavar="A B",
        ),
    ] = None,
    artifacts: ArtifactsOpt = None,
) -> None:
    """Every run and every meta candidate over the chosen runs, with leave-one-run-out."""
    from stackkit.contract.store import Store
    from stackkit.leaderboard import candidate_columns, leaderboard, run_columns

    _check_n_jobs(n_jobs)
    if compare is not None:
        from stackkit.compare import compare as compare_fn

        print(compare_fn(Store(artifacts), *compare).sentence)
        return
    board = leaderboard(
        Store(artifacts),
        runs=split_names(runs),
        meta=meta,
        params=_params(param),
        loro=not no_loro,
        n_jobs=n_jobs,
        use_cache=not no_cache,
        exclude=split_names(exclude),
    )
    print_table(board.runs, run_columns(board.loro_meta), "runs (own OOF predictions)")
    print()
    rows = [dict(r.row(), pick="<- best" if r is board.best else "") for r in board.candidates]
    print_table(
        rows, candidate_columns("pick"), "meta candidates (cross-validated over the stored folds)"
    )
    if len(board.candidates) > 1:
        print(
            f"an ensemble fitted on these candidates: honest estimate {board.estimate.macro_f1:.4f}"
            f" (the best CV score, {board.best.scores['macro_f1']:.4f}, is optimistic by "
            "selection)"
        )


@app.command("runs")
@expected_errors
def runs_cmd(artifacts: ArtifactsOpt = None) -> None:
    """Every folder under runs/: complete, folds done of K, made on other folds, or not a run."""
    from stackkit.contract.inventory import survey
    from stackkit.contract.store import Store

    store = Store(artifacts)
    states = survey(store, store.read_folds())
    if not states:
        print(f"no runs in {store.root / 'runs'}")
        return
    rows = [
        {"run": s.name, "state": s.state, "folds": s.folds_text, "detail": s.detail,
         "size": human_size(s.size)}
        for s in states
    ]  # fmt: skip
    columns = [("run", "run", ""), ("state", "state", ""), ("folds", "folds", ""),
               ("size", "size", ""), ("detail", "", "")]  # fmt: skip
    print_table(rows, columns)
    usable = sum(s.usable for s in states)
    print(f"{usable} of {len(states)} run folders are complete runs on folds.parquet")


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


@app.command("report")
@expected_errors
def report_cmd(
    ensemble: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--ensemble", help="Ensemble name (default: the most recently written)."),
    ] = None,
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--out", help="HTML file (default: ensembles/NAME/report.html)."),
    ] = None,
    artifacts: ArtifactsOpt = None,
) -> None:
    """One self-contained HTML page about an ensemble: plots, per-class scores, diversity."""
    from stackkit.contract.store import Store
    from stackkit.report.build import build_report

    print(build_report(Store(artifacts), ensemble=ensemble, out=out))


@app.command()
@expected_errors
def folds(
    data: Annotated[Path, typer.Option("--data", help="Data folder (mask or manifest layout).")],
    artifacts: ArtifactsOpt = None,
    n_folds: Annotated[int, typer.Option("--n-folds", help="Number of folds.")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the fold assignment.")] = 42,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a folds.parquet that runs were made on.")
    ] = False,
    age_boundary: Annotated[
        int, typer.Option("--age-boundary", help="Mask layout: first age of the oldest class.")
    ] = 60,
    label_fix: Annotated[
        Optional[Path],  # noqa: UP045 (typer needs Optional on 3.10)
        typer.Option("--label-fix", help="Mask layout: CSV of target,field,value corrections."),
    ] = None,
    factors: Annotated[
        Optional[str],  # noqa: UP045 (typer needs Optional on 3.10)
        typer.Option(
            "--factors",
            help="Manifest layout: train.csv columns whose values make each class, e.g. "
            "label_mask,label_gender,label_age (for head: multitask and the meta stage's "
            "factors=auto).",
        ),
    ] = None,
) -> None:
    """Assign train samples to folds (stratified, groups kept whole): writes folds.parquet."""
    from stackkit.data.layouts import folds_for_data

    result = folds_for_data(
        data, artifacts=artifacts, n_folds=n_folds, seed=seed, force=force,
        age_boundary=age_boundary, label_fix=label_fix, factors=factors,
    )  # fmt: skip
    frame = result.frame
    sizes = frame["fold"].value_counts().sort_index().tolist()
    typer.echo(
        f"{len(frame)} samples, {frame['group'].nunique()} groups, {result.n_classes} classes "
        f"-> {result.n_folds} folds of {sizes} samples ({result.meta['data']['layout']} layout)"
    )
    declared = result.meta["data"].get("factors")
    if declared:
        sizes = " x ".join(f"{c} {len(v)}" for c, v in zip(declared["columns"], declared["values"]))
        typer.echo(f"factors: {sizes} ({result.n_classes} classes)")


PSEUDO_COLUMNS = [
    ("class", "class", ""),
    ("candidates", "candidates", "d"),
    ("chosen", "chosen", "d"),
    ("mean_confidence", "mean confidence", ".3f"),
]


@app.command("pseudo-label")
@expected_errors
def pseudo_label_cmd(
    ensemble: Annotated[
        str, typer.Option("--ensemble", help="Ensemble under ensembles/ to label with.")
    ],
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold", help="Keep test samples whose top probability is at least this."
        ),
    ] = 0.9,
    max_per_class: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--max-per-class", help="At most N samples per class (the most confident)."),
    ] = None,
    class_threshold: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--class-threshold",
            metavar="CLASS=T",
            help="CLASS=T: this class's own threshold (repeatable).",
        ),
    ] = None,
    balance: Annotated[
        bool,
        typer.Option("--balance", help="Cap each class at its train share of the samples chosen."),
    ] = False,
    name: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--name", help="Pseudo-label set name (default: the ensemble's)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing pseudo-label set of that name.")
    ] = False,
    artifacts: ArtifactsOpt = None,
) -> None:
    """Choose confident test samples of an ensemble: writes pseudo/NAME/pseudo.parquet."""
    from stackkit.contract.store import Store
    from stackkit.pseudo import parse_class_thresholds, pseudo_label

    res = pseudo_label(
        Store(artifacts),
        ensemble,
        threshold=threshold,
        max_per_class=max_per_class,
        class_thresholds=parse_class_thresholds(class_threshold),
        balance=balance,
        name=name,
        force=force,
    )
    print_table(res.table.to_dict("records"), PSEUDO_COLUMNS)
    per_fold = ", ".join(
        f"fold {f}: {n}" for f, n in zip(res.per_fold["fold"], res.per_fold["chosen"])
    )
    print(f"rows chosen per fold (each trains only its own fold's model): {per_fold}")
    print(
        f"chose {len(res.frame)} rows over {len(res.per_fold)} folds from {res.meta['n_test']} "
        f"test samples (mean confidence {res.frame['confidence'].mean():.3f}); wrote {res.path}"
    )


@app.command("demo-data")
@expected_errors
def demo_data_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dataset into.")],
    people: Annotated[int, typer.Option("--people", help="Train people (7 images each).")] = 200,
    eval_people: Annotated[
        int, typer.Option("--eval-people", help="Eval people (7 images each, shuffled).")
    ] = 200,
    size: Annotated[
        str, typer.Option("--size", help="Image size HxW, as the runner's --img-size.")
    ] = "64x48",
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same files).")] = 0,
) -> None:
    """Write drawn demo faces in the mask competition's layout (train/, eval/, eval/answers.csv)."""
    import time

    from stackkit.data.demo import make_demo_data, parse_size

    t0 = time.perf_counter()
    res = make_demo_data(
        out, people=people, eval_people=eval_people, size=parse_size(size), seed=seed
    )
    print(
        f"wrote {res.n_train_images} train images ({res.n_train_people} people) and "
        f"{res.n_eval_images} eval images ({res.n_eval_people} people) at "
        f"{res.size[1]}x{res.size[0]} (HxW) under {res.root} in {time.perf_counter() - t0:.1f}s"
    )


# --- stackkit predict ------------------------------------------------------------------------
@app.command("predict")
@expected_errors
def predict_cmd(
    ensemble: Annotated[str, typer.Option("--ensemble", help="Ensemble to predict with.")],
    data: Annotated[
        Path,
        typer.Option(
            "--data", help="The mask layout's eval/ (or DATA), a folder with test.csv, or images."
        ),
    ],
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--out",
            help="Submission CSV (the probabilities go beside it as .parquet); default "
            "<artifacts>/predictions/<ensemble>/submission.csv.",
            show_default=False,
        ),
    ] = None,
    skip_bad_images: Annotated[
        bool, typer.Option("--skip-bad-images", help="Leave undecodable images out.")
    ] = False,
    device: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--device", help="cpu or cuda (default: cuda when present)."),
    ] = None,
    batch_size: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--batch-size", help="Images per batch (default 64)."),
    ] = None,
    artifacts: ArtifactsOpt = None,
) -> None:
    """Predict new images with a fitted ensemble: every run's saved fold models, then its meta
    learner (a hidden test set, a second eval batch)."""
    from stackkit.contract.store import Store
    from stackkit.predict import predict_images

    res = predict_images(Store(artifacts), ensemble, data, out, skip_bad_images=skip_bad_images,
                         device=device, batch_size=batch_size)  # fmt: skip
    skipped = f" (skipped {len(res.skipped)} undecodable)" if res.skipped else ""
    print(f"predicted {res.n_images} images{skipped}: {res.submission_path}, {res.proba_path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
