"""The ``skybench`` command line: one command per pipeline stage."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Reproducible benchmarks and challenges for deep learning in astronomy.")


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command()
def simulate(track: str, out: Annotated[Path, typer.Option(help="release folder to write")],
             profile: str = "demo", seed: int = 0,
             size: Annotated[int | None, typer.Option(help="number of test cut-outs (scales the rest)")] = None,
             backend: Annotated[str, typer.Option(help="auto, numpy, torch-cpu or torch-cuda")] = "auto") -> None:
    """Simulate a track into a versioned release (manifest, public/ and hidden/)."""
    from .simulate import simulate_release

    try:
        path = simulate_release(track, out, profile=profile, seed=seed, size=size, backend=backend,
                                progress=sys.stderr.isatty())
    except (FileNotFoundError, KeyError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"wrote {path}")


@app.command()
def verify(release: Path) -> None:
    """Re-hash a release and name every file that does not match its manifest."""
    from .release import ReleaseError, verify_release

    try:
        problems = verify_release(release)
    except ReleaseError as exc:
        _fail(str(exc))
    for p in problems:
        typer.echo(p, err=True)
    if problems:
        _fail(f"{release}: {len(problems)} file(s) do not match the manifest")
    typer.echo(f"{release}: all files match the manifest")


@app.command()
def report(releases: Annotated[Path, typer.Option(help="folder holding the releases")] = Path("releases")) -> None:
    """Summarise what the pipeline produced."""
    from .report import print_report

    print_report(releases)


def main() -> None:  # pragma: no cover
    app()
