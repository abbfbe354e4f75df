"""``python -m base_models``: a thin command line over :func:`base_models.train`.

Logging is configured here only; an expected failure prints ``error: …`` and exits 1.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from stackkit.cli import ArtifactsOpt
from stackkit.errors import StackkitError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

Opt = Optional


@app.command()
def main_command(
    model: Annotated[str, typer.Option("--model", help="timm model name, e.g. resnet18.")],
    data: Annotated[Path, typer.Option("--data", help="Data folder (mask or manifest layout).")],
    artifacts: ArtifactsOpt = None,
    run: Annotated[Opt[str], typer.Option("--run", help="Run name (default: the model).")] = None,
    epochs: Annotated[Opt[int], typer.Option("--epochs", help="Epochs per fold.")] = None,
    img_size: Annotated[
        Opt[str], typer.Option("--img-size", help="Input size HxW, e.g. 512x384.")
    ] = None,
    batch: Annotated[Opt[int], typer.Option("--batch", help="Training batch size.")] = None,
    lr: Annotated[Opt[float], typer.Option("--lr", help="Peak learning rate.")] = None,
    pretrained: Annotated[
        Opt[Path], typer.Option("--pretrained", help="Local state dict to start from.")
    ] = None,
    pseudo: Annotated[
        Opt[str], typer.Option("--pseudo", help="Pseudo-label set to add to training.")
    ] = None,
    folds: Annotated[
        Opt[str], typer.Option("--folds", help="Folds to train now, e.g. 0,1 (default all).")
    ] = None,
    device: Annotated[
        Opt[str], typer.Option("--device", help="cpu, cuda, cuda:1 (default: cuda if present).")
    ] = None,
    workers: Annotated[
        Opt[int], typer.Option("--workers", help="Loader processes (default: by device).")
    ] = None,
    threads: Annotated[
        Opt[int], typer.Option("--threads", help="CPU threads (default: all cores).")
    ] = None,
    skip_bad_images: Annotated[
        bool, typer.Option("--skip-bad-images", help="Skip unreadable images.")
    ] = False,
    label_fix: Annotated[
        Opt[Path], typer.Option("--label-fix", help="Mask layout: label corrections CSV.")
    ] = None,
    age_boundary: Annotated[
        Opt[int], typer.Option("--age-boundary", help="Mask layout: first age of 60+ class.")
    ] = None,
    seed: Annotated[Opt[int], typer.Option("--seed", help="Training seed (default 42).")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Redo finished folds / replace a run.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log per-epoch detail.")] = False,
) -> None:
    """Train a timm backbone on every fold of folds.parquet and write its run."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname).1s %(name)s: %(message)s", stream=sys.stderr, force=True,
    )  # fmt: skip
    from base_models.runner import train

    try:
        result = train(
            model, data, artifacts=artifacts, run=run, epochs=epochs, img_size=img_size, batch=batch,
            lr=lr, pretrained=pretrained, pseudo=pseudo, folds=folds, device=device, workers=workers,
            threads=threads,
            skip_bad_images=skip_bad_images, label_fix=label_fix, age_boundary=age_boundary,
            seed=seed, force=force,
        )  # fmt: skip
    except StackkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    state = "complete" if result.complete else "incomplete (more folds to train)"
    typer.echo(
        f"run {result.run_dir.name}: {state}; trained folds {result.trained or 'none'}, "
        f"skipped {result.skipped or 'none'} -> {result.run_dir}"
    )


def main() -> None:
    app()
