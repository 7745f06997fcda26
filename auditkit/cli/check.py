"""``auditkit check``: the spec's gates on a run's stored results, as an exit code for CI."""

from __future__ import annotations

from pathlib import Path

import click

from auditkit.cli.common import exit_on_gates, handle_errors, require_results
from auditkit.cli.options import path_option, run_dir_argument


@click.command()
@run_dir_argument
@path_option(
    "--junit",
    help="Also write the JUnit XML here (default: RUN_DIR/results/junit.xml only).",
)
@path_option(
    "--json",
    "json_out",
    help="Also write the gates JSON here (default: RUN_DIR/results/gates.json only).",
)
@handle_errors
def check(run_dir: Path | str, junit: Path | None, json_out: Path | None) -> None:
    """Evaluate the gates of RUN_DIR's spec on its results; exit 1 if one fails."""
    import shutil

    from auditkit.analyses import gate_measures, slice_tables
    from auditkit.analyze.summary import read_results
    from auditkit.errors import UsageError
    from auditkit.gates import evaluate_gates, write_gate_files
    from auditkit.rundir.remote import local_path
    from auditkit.spec import load_run_spec

    run_dir = local_path(run_dir)

    spec = load_run_spec(run_dir)
    require_results(run_dir)
    if not spec.gates:
        raise UsageError(
            f"{run_dir / 'spec.yaml'}: the audit has no gates to check.",
            hint="add a 'gates:' list to the spec (see 'auditkit schema') and run it again.",
        )
    results, summary = read_results(run_dir, slice_tables())
    outcomes = evaluate_gates(spec, results.tables, gate_measures())
    json_path, xml_path = write_gate_files(
        run_dir, outcomes, suite=spec.name, run_id=str(summary.get("run_id"))
    )
    for target, source in ((junit, xml_path), (json_out, json_path)):
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    exit_on_gates(run_dir)
