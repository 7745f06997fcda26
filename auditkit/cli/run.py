"""``auditkit run``: every stage of a spec into a run directory."""

from __future__ import annotations

from pathlib import Path

import click

from auditkit.cli.common import exit_on_gates, handle_errors
from auditkit.cli.options import cache_dir_option, run_location_option, spec_argument


@click.command()
@spec_argument
@run_location_option(
    "--out",
    "out_dir",
    required=True,
    help="Run directory, a folder or an fsspec URL such as s3://bucket/runs/a (created; an "
    "existing one is resumed).",
)
@cache_dir_option
@click.option("--no-progress", is_flag=True, help="Do not print progress.")
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default=None,
    help="Where the sampling runs (overrides execution.executor): this process, or a Ray "
    "cluster's workers.",
)
@click.option(
    "--ray-address",
    default=None,
    metavar="auto|HOST:PORT|ray://HOST:PORT",
    help="Ray cluster to join (overrides execution.address; implies --executor ray).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Ray workers to start (overrides execution.workers).",
)
@click.option(
    "--compile",
    "compile_denoiser",
    is_flag=True,
    default=None,
    help="torch.compile the denoiser (overrides execution.compile): slower to start, faster "
    "per step on a GPU.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Run even when the plan exceeds execution.max_storage_gb or execution.max_hours.",
)
@handle_errors
def run(
    spec: Path,
    out_dir: Path | str,
    cache_dir: Path | None,
    no_progress: bool,
    executor: str | None,
    ray_address: str | None,
    workers: int | None,
    compile_denoiser: bool | None,
    force: bool,
) -> None:
    """Run every stage of SPEC into RUN_DIR; completed units are never redone."""
    from auditkit.run import run_audit
    from auditkit.rundir.remote import display, local_path

    out_dir = local_path(out_dir)

    execution: dict[str, object] = {}
    if executor or ray_address:
        execution["executor"] = executor or "ray"
    if ray_address:
        execution["address"] = ray_address
    if workers:
        execution["workers"] = workers
    if compile_denoiser:
        execution["compile"] = True
    outcome = run_audit(
        spec,
        out_dir,
        cache_dir=cache_dir,
        show_progress=not no_progress,
        execution=execution,
        force=force,
    )
    extract = outcome.manifest["stages"].get("extract", {})
    evaluations = extract.get("denoiser_evaluations", extract.get("unet_evaluations", 0))
    click.echo(
        f"extracted {extract.get('units_run', 0)} units, reused "
        f"{extract.get('units_skipped', 0)} ({evaluations} denoiser evaluations)"
    )
    for path in outcome.report_paths:
        click.echo(f"report: {display(path)}")
    from auditkit.rundir import RunDir

    click.echo(f"results: {display(RunDir(outcome.run_dir).results)}")
    exit_on_gates(outcome.run_dir)
