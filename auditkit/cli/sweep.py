"""``auditkit sweep-hooks``: one audit per hook point, and how each depth recovers the answer."""

from __future__ import annotations

from pathlib import Path

import click

from auditkit.cli.common import handle_errors
from auditkit.cli.options import cache_dir_option, spec_argument


@click.command("sweep-hooks")
@spec_argument
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the per-hook run directories, sweep.csv and sweep.png.",
)
@click.option(
    "--hooks",
    default="",
    help="Comma-separated hook points (default: every block the model family sweeps).",
)
@cache_dir_option
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@handle_errors
def sweep_hooks(
    spec: Path, out_dir: Path, hooks: str, cache_dir: Path | None, no_progress: bool
) -> None:
    """Audit SPEC's vocabulary at every hook point of its model from one sampling pass: per
    hook and axis, the mean |lean| and, for a model that ships planted rates, Spearman's rho
    of the leans against them."""
    from auditkit.analyses.checks import load_checked_spec
    from auditkit.sweep import markdown_table
    from auditkit.sweep import sweep_hooks as sweep

    chosen = [h.strip() for h in hooks.split(",") if h.strip()]
    outcome = sweep(
        load_checked_spec(spec),
        out_dir,
        hooks=chosen or None,
        cache_dir=cache_dir,
        show_progress=not no_progress,
    )
    click.echo(markdown_table(outcome.rows))
    click.echo(f"table: {outcome.table.resolve()}")
    if outcome.chart is not None:
        click.echo(f"chart: {outcome.chart.resolve()}")
