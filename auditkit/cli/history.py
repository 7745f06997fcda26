"""``auditkit history``: the run registry of model lines, and their trends (docs/history.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from auditkit.cli.common import handle_errors
from auditkit.cli.options import RunLocation, path_option

F = TypeVar("F", bound=Callable[..., Any])

REGISTRY_ENV = "AUDITKIT_HISTORY"
"""As :data:`auditkit.history.REGISTRY_ENV` (the CLI starts without importing the library)."""

registry_option = path_option(
    "--registry",
    envvar=REGISTRY_ENV,
    show_envvar=True,
    help="The run registry (a DuckDB file; default: auditkit-history.duckdb in the current "
    "folder).",
)
"""``--registry``, or the environment variable, or the default file."""


def model_line_option(help: str) -> Callable[[F], F]:
    return click.option("--model-line", default=None, help=help)


@click.group()
def history() -> None:
    """The history of a model line: register finished runs, then show or report their trends
    across checkpoints."""


@history.command("add")
@click.argument("run_dirs", nargs=-1, required=True, type=RunLocation())
@registry_option
@model_line_option("The model line the runs belong to (default: each run's spec name).")
@click.option(
    "--checkpoint",
    default=None,
    help="The checkpoint's label (default: the model id, or its folder's name).",
)
@click.option(
    "--step",
    type=click.IntRange(min=0),
    default=None,
    help="The training step: orders the line (default: ordered by each run's start time).",
)
@handle_errors
def add(
    run_dirs: tuple[Path | str, ...],
    registry: Path | None,
    model_line: str | None,
    checkpoint: str | None,
    step: int | None,
) -> None:
    """Register finished runs (RUN_DIR: a folder or a URL); adding a run again updates it."""
    from auditkit.errors import UsageError
    from auditkit.history import describe_run, open_registry, registry_path
    from auditkit.inert import terminal_text

    if (checkpoint is not None or step is not None) and len(run_dirs) > 1:
        raise UsageError(
            f"--checkpoint and --step label one run, but {len(run_dirs)} were given.",
            hint="add the runs one at a time, each with its own --checkpoint and --step.",
        )
    entries = [
        describe_run(given, model_line=model_line, checkpoint=checkpoint, step=step)
        for given in run_dirs
    ]  # every run is checked before the registry is touched
    path = registry_path(registry)
    with open_registry(path, create=True) as runs:
        for entry in entries:
            new = runs.add(entry)
            run = entry.run
            where = f"step {run['step']}" if run["step"] is not None else run["started_utc"]
            click.echo(
                f"{'added' if new else 'updated'}: {terminal_text(run['model_line'])} / "
                f"{terminal_text(run['checkpoint'])} ({where}), run {run['run_id']}, "
                f"{len(entry.gates)} gates: {terminal_text(run['location'])}"
            )
    click.echo(f"registry: {path.resolve()}")


@history.command("show")
@registry_option
@model_line_option("Show only this model line (default: every line).")
@handle_errors
def show(registry: Path | None, model_line: str | None) -> None:
    """The runs of each model line in order, with their gate outcomes and headline numbers."""
    from auditkit.history import line_history, open_registry, registry_path
    from auditkit.history.table import history_table

    with open_registry(registry_path(registry)) as runs:
        lines = [runs.resolve_line(model_line)] if model_line is not None else runs.model_lines()
        for index, line in enumerate(lines):
            if index:
                click.echo("")
            click.echo(history_table(line_history(runs, line)))


@history.command("report")
@path_option("--out", "out_dir", required=True, help="Folder for history.html.")
@registry_option
@model_line_option("The model line (needed when the registry holds several).")
@handle_errors
def report(out_dir: Path, registry: Path | None, model_line: str | None) -> None:
    """An HTML trend report of a model line: leans, output shares and gates across checkpoints
    (works offline)."""
    from auditkit.history import line_history, open_registry, registry_path
    from auditkit.history.report import render_history
    from auditkit.inert import terminal_text

    with open_registry(registry_path(registry)) as runs:
        history = line_history(runs, runs.resolve_line(model_line))
        path = render_history(history, out_dir)
    for failure in history.first_failures():
        when = failure["first_failed"]
        said = f"first failed at {when}" if when is not None else "never failed"
        click.echo(f"gate {terminal_text(failure['name'])}: {terminal_text(said)}")
    click.echo(f"wrote: {path.resolve()}")
