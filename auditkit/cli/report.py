"""``auditkit report``: render a run's report again from its stored results."""

from __future__ import annotations

from pathlib import Path

import click

from auditkit.cli.common import handle_errors, require_results
from auditkit.cli.options import formats_option, run_dir_argument


@click.command()
@run_dir_argument
@formats_option(help="Formats to render (default: the spec's).")
@handle_errors
def report(run_dir: Path | str, formats: tuple[str, ...]) -> None:
    """Re-render the report of RUN_DIR from its stored results."""
    from auditkit.provenance import utc_now
    from auditkit.report import render_report
    from auditkit.rundir import RunDir
    from auditkit.rundir.lock import RunLock
    from auditkit.rundir.remote import display, local_path
    from auditkit.spec import load_run_spec

    run_dir = local_path(run_dir)

    spec = load_run_spec(run_dir)
    require_results(run_dir, "'auditkit report'", report=True)
    run = RunDir(run_dir)
    with RunLock(run_dir, "report"):
        paths = render_report(run_dir, list(formats) or list(spec.report.formats))
        manifest = run.read_manifest()
        if manifest.status != "complete":  # the run failed only in rendering: now it is done
            finished = manifest.evolve(
                status="complete", error=None, failed_stage=None, finished_utc=utc_now()
            )
            run.seal(finished)
        else:
            run.reseal()
    for path in paths:
        click.echo(f"report: {display(path)}")
