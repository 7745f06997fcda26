"""``auditkit export``: a run's results in other documents' formats (model cards) and in
experiment trackers (MLflow, Weights & Biases)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from auditkit.cli.common import handle_errors
from auditkit.cli.options import path_option, run_dir_argument

if TYPE_CHECKING:
    from auditkit.tracking import TrackingRecord


@click.group()
def export() -> None:
    """Export a run's results for other documents (model cards) and experiment trackers."""


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


def _record_of(run_dir: Path | str, command: str) -> TrackingRecord:
    """The tracking record of a finished, complete, intact run (exit 2 otherwise)."""
    from auditkit.cli.common import require_results
    from auditkit.rundir.remote import local_path
    from auditkit.tracking import tracking_record

    local = local_path(run_dir)
    require_results(local, f"'auditkit export {command}'")
    return tracking_record(local)


@export.command("mlflow")
@run_dir_argument
@click.option(
    "--tracking-uri",
    help="MLflow tracking URI: http(s)://server, databricks, sqlite:///file.db or "
    "file:/folder. Default: MLFLOW_TRACKING_URI, else MLflow's default local store "
    "(sqlite:///mlflow.db here). This option always wins.",
)
@click.option(
    "--experiment",
    help="Experiment to log into, created if missing (default: the audit's name).",
)
@click.option("--run-name", help="Name of the MLflow run (default: AUDIT-RUN_ID).")
@handle_errors
def export_mlflow(
    run_dir: Path | str, tracking_uri: str | None, experiment: str | None, run_name: str | None
) -> None:
    """Log RUN_DIR to MLflow: gate values and headline numbers as metrics, settings as params,
    gate outcomes as tags, the summary, manifest, spec and report as artifacts."""
    from auditkit.inert import terminal_text
    from auditkit.tracking import log_to_mlflow

    record = _record_of(run_dir, "mlflow")
    landed = log_to_mlflow(
        record, tracking_uri=tracking_uri, experiment=experiment, run_name=run_name
    )
    click.echo(
        f"mlflow: run {landed.run_id} ({terminal_text(landed.run_name)}) in experiment "
        f"{terminal_text(landed.experiment)!r} (id {landed.experiment_id}); gates: {record.status}"
    )
    click.echo(f"tracking URI: {terminal_text(landed.tracking_uri)}")
    click.echo(f"artifacts: {terminal_text(landed.artifact_uri)}")
    if landed.url:
        click.echo(f"page: {terminal_text(landed.url)}")


@export.command("wandb")
@run_dir_argument
@click.option("--project", help="W&B project (default: the audit's name).")
@path_option(
    "--dir",
    "folder",
    file_okay=False,
    help="Where W&B writes its wandb/ folder (default: WANDB_DIR, else the working directory).",
)
@click.option(
    "--mode",
    type=click.Choice(["offline", "online"]),
    default="offline",
    show_default=True,
    help="offline: no network, no login; upload later with 'wandb sync'. online: needs "
    "'wandb login' or WANDB_API_KEY.",
)
@click.option("--run-name", help="Name of the W&B run (default: AUDIT-RUN_ID).")
@handle_errors
def export_wandb(
    run_dir: Path | str, project: str | None, folder: Path | None, mode: str, run_name: str | None
) -> None:
    """Log RUN_DIR to Weights & Biases (offline by default): headline numbers and gate outcomes
    in the run's summary, settings as its config, the summary, manifest, spec and report as an
    artifact and the report among the run's files."""
    from auditkit.inert import terminal_text
    from auditkit.tracking import log_to_wandb

    record = _record_of(run_dir, "wandb")
    landed = log_to_wandb(record, project=project, folder=folder, mode=mode, run_name=run_name)
    click.echo(
        f"wandb: {landed.mode} run {landed.run_id} ({terminal_text(landed.run_name)}) in "
        f"project {terminal_text(landed.project)!r}; gates: {record.status}"
    )
    click.echo(f"folder: {landed.folder}")
    if landed.url:
        click.echo(f"page: {terminal_text(landed.url)}")
    else:
        click.echo(f"upload it with: wandb sync {landed.folder}")
