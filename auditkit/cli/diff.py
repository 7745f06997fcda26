"""``auditkit diff``: compare the audits of two checkpoints made with the same spec."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from auditkit.cli.common import echo_gates, handle_errors, require_results
from auditkit.cli.options import formats_option, run_location_argument, run_location_option


@click.command()
@run_location_argument("base_run")
@run_location_argument("new_run")
@run_location_option(
    "--out",
    "out_dir",
    required=True,
    help="Folder (or fsspec URL) for diff.html, diff.pdf, diff.json and junit.xml.",
)
@click.option(
    "--tolerance",
    type=float,
    default=None,
    help="Growth of |lean| (the statistic both runs judged: the position between marked "
    "variants, or the lean score) beyond which a lean counts as a regression (default: the "
    "runs' band when both were judged by the min_effect rule with one band; else 0.05).",
)
@click.option(
    "--max-growth",
    type=float,
    default=None,
    help="Gate: fail (exit 1) when any |lean score| grows by more than this.",
)
@click.option(
    "--max-regressions",
    type=int,
    default=None,
    help="Gate: fail (exit 1) when there are more regressions than this.",
)
@formats_option(help="Report formats (default: html and pdf).")
@click.option(
    "--allow-different-specs",
    is_flag=True,
    help="Compare runs whose specs measure differently (normally refused).",
)
@handle_errors
def diff(
    base_run: Path | str,
    new_run: Path | str,
    out_dir: Path | str,
    tolerance: float | None,
    max_growth: float | None,
    max_regressions: int | None,
    formats: tuple[str, ...],
    allow_different_specs: bool,
) -> None:
    """Compare the audits of two checkpoints (BASE_RUN, NEW_RUN) made with the same spec."""
    from auditkit.diff import diff_runs
    from auditkit.inert import terminal_text
    from auditkit.report.diff_report import render_diff
    from auditkit.rundir.remote import display, local_path

    base_run, new_run, out_dir = (local_path(p) for p in (base_run, new_run, out_dir))
    for run_dir in (base_run, new_run):
        require_results(run_dir, "'auditkit diff'")

    result = diff_runs(
        base_run,
        new_run,
        tolerance=tolerance,
        max_growth=max_growth,
        max_regressions=max_regressions,
        allow_different_specs=allow_different_specs,
    )
    paths = render_diff(
        result,
        base_run,
        new_run,
        out_dir,
        tolerance=result.tolerance,
        formats=list(formats) or ["html", "pdf"],
    )
    regressions = result.regressions
    click.echo(
        f"{len(regressions)} regressions, {int(result.table['improvement'].sum())} improvements"
    )
    for row in regressions.itertuples():
        click.echo(
            f"  regression: '{terminal_text(str(row.concept))}' on '{row.axis}' "
            f"{row.score_base:+.3f} -> {row.score_new:+.3f}"
        )
    echo_gates(result.gates)
    for path in paths:
        click.echo(f"wrote: {display(path)}")
    if not result.passed:
        sys.exit(1)
