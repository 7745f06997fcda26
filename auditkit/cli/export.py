"""``auditkit export``: a run's results in other documents' formats (model cards)."""

from __future__ import annotations

from pathlib import Path

import click

from auditkit.cli.common import handle_errors
from auditkit.cli.options import path_option, run_dir_argument


@click.group()
def export() -> None:
    """Export a run's results for other documents (model cards)."""


@export.command("model-card")
@run_dir_argument
@path_option(
    "--out",
    help="Where to write the card (default: RUN_DIR/report/model-card.md).",
)
@handle_errors
def export_model_card(run_dir: Path | str, out: Path | None) -> None:
    """Write a model-card section with model-index evaluation results for RUN_DIR."""
    from auditkit.cli.common import require_results
    from auditkit.export import write_model_card
    from auditkit.rundir import RunDir
    from auditkit.rundir.lock import RunLock
    from auditkit.rundir.remote import display, local_path

    run_dir = local_path(run_dir)
    run = RunDir(run_dir)
    require_results(run_dir, "'auditkit export model-card'")
    if run.report_html.is_file():
        run.read_checked(run.report_html)  # the card certifies the report's sha256
    target = Path(out) if out is not None else run.model_card
    if target.resolve().is_relative_to(run.root.resolve()):
        with RunLock(run_dir, "export"):
            path = write_model_card(run_dir, target)
            run.reseal()
    else:
        path = write_model_card(run_dir, target)
    click.echo(f"model card: {display(path)}")
