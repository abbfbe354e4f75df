"""``python -m base_models``: thin command lines over :mod:`base_models.runner`.

    python -m base_models --model M [--model M2 …] --data D [--engine local|ray] [options]
    python -m base_models prepare  --model M --data D [options]   # decode the image cache once
    python -m base_models run-fold --model M --fold K --data D [options]   # one fold job
    python -m base_models assemble --model M --data D [options]   # the run, from its shards
    python -m base_models cache list|clean [--key KEY]   # the shared image caches

The first trains every fold (``app``); ``cache`` lists or removes the image caches runs share
(``cache_app``, over :mod:`base_models.image_cache`); the others (``jobs_app``) are the pieces a scheduler
(a SLURM array, a Kubernetes indexed job) runs one at a time; ``__main__`` picks by the first
word. Every training option (epochs, img-size, batch, lr, pretrained, pseudo, skip-bad-images,
label-fix, age-boundary, seed) changes the config hash, so give each piece the same ones;
device, workers and threads are run-fold's alone.
Logging is configured here only; an expected failure prints ``error: …`` and exits 1.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from stackkit.cli import ArtifactsOpt, configure_logging, expected_errors
from stackkit.contract.errors import StackkitError

# rich_markup_mode=None: click's plain help, where a flag reads `--force`, not `--force <bool>`
# (typer 0.29's rich panels print a type after every option; as stackkit.cli)
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
jobs_app = typer.Typer(
    add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
    help="One piece of a run at a time: for schedulers that run each fold as its own job.",
    rich_markup_mode=None,
)  # fmt: skip
JOB_COMMANDS = ("prepare", "run-fold", "assemble")
cache_app = typer.Typer(
    add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
    help="The decoded image caches runs share (<artifacts>/cache/images/): list, clean.",
    rich_markup_mode=None,
)  # fmt: skip

Opt = Optional

ModelOpt = Annotated[str, typer.Option("--model", help="timm model name, e.g. resnet18.")]
DataOpt = Annotated[Path, typer.Option("--data", help="Data folder (mask or manifest layout).")]
RunOpt = Annotated[Opt[str], typer.Option("--run", help="Run name (default: the model).")]
EpochsOpt = Annotated[Opt[int], typer.Option("--epochs", help="Epochs per fold.")]
ImgSizeOpt = Annotated[Opt[str], typer.Option("--img-size", help="Input size HxW, e.g. 512x384.")]
BatchOpt = Annotated[Opt[int], typer.Option("--batch", help="Training batch size.")]
LrOpt = Annotated[Opt[float], typer.Option("--lr", help="Peak learning rate.")]
PretrainedOpt = Annotated[
    Opt[Path], typer.Option("--pretrained", help="Local state dict to start from.")
]
PseudoOpt = Annotated[
    Opt[str], typer.Option("--pseudo", help="Pseudo-label set to add to training.")
]
DeviceOpt = Annotated[
    Opt[str], typer.Option("--device", help="cpu, cuda, cuda:1 (default: cuda if present).")
]
WorkersOpt = Annotated[
    Opt[int], typer.Option("--workers", help="Loader processes (default: by device).")
]
ThreadsOpt = Annotated[
    Opt[int], typer.Option("--threads", help="CPU threads (default: all cores).")
]
SkipBadOpt = Annotated[bool, typer.Option("--skip-bad-images", help="Skip unreadable images.")]
LabelFixOpt = Annotated[
    Opt[Path], typer.Option("--label-fix", help="Mask layout: label corrections CSV.")
]
AgeBoundaryOpt = Annotated[
    Opt[int], typer.Option("--age-boundary", help="Mask layout: first age of 60+ class.")
]
SeedOpt = Annotated[Opt[int], typer.Option("--seed", help="Training seed (default 42).")]
ConfigOpt = Annotated[
    Opt[Path],
    typer.Option("--config", help="A YAML of training settings over the model's own config."),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo finished folds / replace a run.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log per-epoch detail.")]
SaveModelsOpt = Annotated[
    bool,
    typer.Option(
        "--save-models/--no-save-models",
        help="Keep each fold's model in runs/<run>/models/ (safetensors) to predict new images.",
    ),
]


def _logging(verbose: bool) -> None:
    configure_logging(logging.DEBUG if verbose else logging.INFO)


@app.command()
@expected_errors
def main_command(
    model: Annotated[
        list[str],
        typer.Option("--model", help="timm model name, e.g. resnet18 (repeat for several)."),
    ],
    data: DataOpt,
    artifacts: ArtifactsOpt = None,
    run: RunOpt = None,
    epochs: EpochsOpt = None,
    img_size: ImgSizeOpt = None,
    batch: BatchOpt = None,
    lr: LrOpt = None,
    pretrained: PretrainedOpt = None,
    pseudo: PseudoOpt = None,
    folds: Annotated[
        Opt[str], typer.Option("--folds", help="Folds to train now, e.g. 0,1 (default all).")
    ] = None,
    device: DeviceOpt = None,
    workers: WorkersOpt = None,
    threads: ThreadsOpt = None,
    skip_bad_images: SkipBadOpt = False,
    label_fix: LabelFixOpt = None,
    age_boundary: AgeBoundaryOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    force: ForceOpt = False,
    save_models: SaveModelsOpt = True,
    engine: Annotated[
        str,
        typer.Option("--engine", help="local (this machine, one fold after another) or ray."),
    ] = "local",
    cpus: Annotated[
        int, typer.Option("--cpus", help="Ray: CPUs per fold job (its whole request without GPUs).")
    ] = 1,
    verbose: VerboseOpt = False,
) -> None:
    """Train timm backbones on every fold of folds.parquet and write their runs.

    One piece at a time, for schedulers (same options): `python -m base_models prepare` (decode the image cache once), `python -m base_models run-fold --fold K` (one fold job), `python -m base_models assemble` (the run, from its shards); each takes --help.
    """
    _logging(verbose)
    from stackkit.cv.engine import check_engine

    options = dict(
        epochs=epochs, img_size=img_size, batch=batch, lr=lr, pretrained=pretrained, pseudo=pseudo,
        folds=folds, device=device, workers=workers, threads=threads,
        skip_bad_images=skip_bad_images, label_fix=label_fix, age_boundary=age_boundary,
        seed=seed, force=force, config=config, save_models=save_models,
    )  # fmt: skip
    if check_engine(engine) == "ray":
        from base_models.engine_ray import train_on_ray

        results = train_on_ray(model, data, artifacts=artifacts, run=run, cpus=cpus, **options)
    else:
        if run is not None and len(model) > 1:
            raise StackkitError("--run names one run: leave it out when training several models")
        from base_models.runner import train

        results = [train(m, data, artifacts=artifacts, run=run, **options) for m in model]
    for result in results:
        state = "complete" if result.complete else "incomplete (more folds to train)"
        typer.echo(
            f"run {result.run_dir.name}: {state}; trained folds {result.trained or 'none'}, "
            f"skipped {result.skipped or 'none'} -> {result.run_dir}"
        )


@jobs_app.command("run-fold")
@expected_errors
def run_fold_command(
    model: ModelOpt,
    fold: Annotated[int, typer.Option("--fold", help="The fold to train (0 … K-1).")],
    data: DataOpt,
    artifacts: ArtifactsOpt = None,
    run: RunOpt = None,
    epochs: EpochsOpt = None,
    img_size: ImgSizeOpt = None,
    batch: BatchOpt = None,
    lr: LrOpt = None,
    pretrained: PretrainedOpt = None,
    pseudo: PseudoOpt = None,
    device: DeviceOpt = None,
    workers: WorkersOpt = None,
    threads: ThreadsOpt = None,
    skip_bad_images: SkipBadOpt = False,
    label_fix: LabelFixOpt = None,
    age_boundary: AgeBoundaryOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    force: ForceOpt = False,
    save_models: SaveModelsOpt = True,
    verbose: VerboseOpt = False,
) -> None:
    """One fold job: train fold K and commit its shard (skipped if committed with this config)."""
    _logging(verbose)
    from base_models.runner import run_fold

    res = run_fold(
        model, data, fold, artifacts=artifacts, run=run, force=force, epochs=epochs,
        img_size=img_size, batch=batch, lr=lr, pretrained=pretrained, pseudo=pseudo,
        device=device, workers=workers, threads=threads, skip_bad_images=skip_bad_images,
        label_fix=label_fix, age_boundary=age_boundary, seed=seed, config=config,
        save_models=save_models,
    )  # fmt: skip
    state = "trained and committed" if res.trained else "already committed, skipped"
    typer.echo(f"run {res.run_dir.name} fold {res.fold}: {state} (config {res.config_hash})")


@jobs_app.command("prepare")
@expected_errors
def prepare_command(
    model: ModelOpt,
    data: DataOpt,
    artifacts: ArtifactsOpt = None,
    run: RunOpt = None,
    epochs: EpochsOpt = None,
    img_size: ImgSizeOpt = None,
    batch: BatchOpt = None,
    lr: LrOpt = None,
    pretrained: PretrainedOpt = None,
    pseudo: PseudoOpt = None,
    skip_bad_images: SkipBadOpt = False,
    label_fix: LabelFixOpt = None,
    age_boundary: AgeBoundaryOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Decode the run's image cache once, before its fold jobs start (optional)."""
    _logging(verbose)
    from base_models.runner import prepare

    h = prepare(
        model, data, artifacts=artifacts, run=run, epochs=epochs, img_size=img_size, batch=batch,
        lr=lr, pretrained=pretrained, pseudo=pseudo, device="cpu",
        skip_bad_images=skip_bad_images, label_fix=label_fix, age_boundary=age_boundary, seed=seed,
        config=config,
    )  # fmt: skip
    typer.echo(f"run {run or model.replace('/', '_')}: image cache ready (config {h})")


@jobs_app.command("assemble")
@expected_errors
def assemble_command(
    model: ModelOpt,
    data: DataOpt,
    artifacts: ArtifactsOpt = None,
    run: RunOpt = None,
    epochs: EpochsOpt = None,
    img_size: ImgSizeOpt = None,
    batch: BatchOpt = None,
    lr: LrOpt = None,
    pretrained: PretrainedOpt = None,
    pseudo: PseudoOpt = None,
    skip_bad_images: SkipBadOpt = False,
    label_fix: LabelFixOpt = None,
    age_boundary: AgeBoundaryOpt = None,
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    force: ForceOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write the run from its committed shards, validated; refuses while a fold is missing."""
    _logging(verbose)
    from base_models.runner import assemble

    res = assemble(
        model, data, artifacts=artifacts, run=run, force=force, epochs=epochs, img_size=img_size,
        batch=batch, lr=lr, pretrained=pretrained, pseudo=pseudo, device="cpu",
        skip_bad_images=skip_bad_images, label_fix=label_fix, age_boundary=age_boundary, seed=seed,
        config=config,
    )  # fmt: skip
    typer.echo(f"run {res.run_dir.name}: complete -> {res.run_dir}")


@cache_app.command("list")
@expected_errors
def cache_list_command(artifacts: ArtifactsOpt = None, verbose: VerboseOpt = False) -> None:
    """Every image cache: key, size, images, disk, last used, and whether a run reads it now."""
    _logging(verbose)
    from base_models.image_cache import cache_root, list_caches
    from stackkit.contract.store import Store

    root = cache_root(Store(artifacts).root)
    caches = list_caches(root)
    if not caches:
        typer.echo(f"no image caches in {root}")
        return
    typer.echo(f"{'key':16}  {'HxW':>9}  {'images':>7}  {'GiB':>7}  {'last used':23}  in use")
    for c in caches:
        hw = "x".join(map(str, c["size"]))
        typer.echo(
            f"{c['key']:16}  {hw:>9}  {c['n_images']:7d}  {c['bytes'] / 2**30:7.2f}  "
            f"{c['last_used'] or '-':23}  {'yes' if c['in_use'] else 'no'}"
        )
    typer.echo(
        f"{len(caches)} cache(s), {sum(c['bytes'] for c in caches) / 2**30:.2f} GiB in {root}"
    )


@cache_app.command("clean")
@expected_errors
def cache_clean_command(
    key: Annotated[
        Opt[list[str]], typer.Option("--key", help="A cache to remove (repeat; default: all).")
    ] = None,
    artifacts: ArtifactsOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Remove image caches (all, or --key ones) that no run is reading; those read are kept.
    Without --key, also what killed builds left behind."""
    _logging(verbose)
    from base_models.image_cache import cache_root, remove_caches
    from stackkit.contract.store import Store

    res = remove_caches(cache_root(Store(artifacts).root), key or None)
    for k in res["in_use"]:
        typer.echo(f"kept {k}: a run is reading it")
    typer.echo(
        f"removed {len(res['removed'])} cache(s), {res['bytes_freed'] / 2**30:.2f} GiB freed"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "cache":
        cache_app(args=sys.argv[2:], prog_name="python -m base_models cache")
    elif len(sys.argv) > 1 and sys.argv[1] in JOB_COMMANDS:
        jobs_app()
    else:
        app()
