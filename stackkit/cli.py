"""The ``stackkit`` command line: thin wrappers over library functions.

Each command parses its options, calls one library function with the same parameter names,
and prints a short summary. Logging is configured here only; expected failures
(:class:`~stackkit.errors.StackkitError`) print one line on stderr and exit 1.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from stackkit.errors import StackkitError

app = typer.Typer(
    name="stackkit",
    help="Ensemble and stack image classifiers over out-of-fold logits.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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
    """``"a,b, c"`` -> ``["a", "b", "c"]``; None or empty -> None."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    return names or None


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


@app.callback()
def main_callback(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug detail.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(levelname).1s %(name)s: %(message)s", stream=sys.stderr, force=True
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
