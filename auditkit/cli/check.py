"""``auditkit check``: the spec's gates on a run's stored results, as an exit code for CI."""

from __future__ import annotations

from pathlib import Path

import click

from auditkit.cli.common import echo_gates, handle_errors, require_results
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
    import os

    from auditkit.analyses import gate_measures, slice_tables
    from auditkit.analyze.summary import read_results
    from auditkit.errors import UsageError
    from auditkit.gates import evaluate_gates, gates_summary, junit_xml, write_gate_files
    from auditkit.rundir import RunDir, storage
    from auditkit.rundir.lock import RunLock
    from auditkit.rundir.remote import display, local_path
    from auditkit.spec import load_run_spec

    run_dir = local_path(run_dir)

    run = RunDir(run_dir)
    spec = load_run_spec(run_dir)
    require_results(run_dir, "'auditkit check'")
    if not spec.gates:
        raise UsageError(
            f"{run_dir / 'spec.yaml'}: the audit has no gates to check.",
            hint="add a 'gates:' list to the spec (see 'auditkit schema') and run it again.",
        )
    results, summary = read_results(run_dir, slice_tables())
    outcomes = evaluate_gates(spec, results.tables, gate_measures())
    run_id = str(summary.get("run_id"))
    record = {**gates_summary(outcomes), "run_id": run_id}
    xml = junit_xml(outcomes, suite=spec.name, run_id=run_id)
    unchanged = (
        run.gates.is_file()
        and run.junit.is_file()
        and run.gates.read_bytes() == storage.json_text(record).encode()
        and run.junit.read_bytes() == xml
    )
    if unchanged:
        pass  # an archived run's files already say this: nothing to write
    elif os.access(run.results, os.W_OK) and os.access(run.root, os.W_OK):
        with RunLock(run_dir, "check"):
            write_gate_files(run_dir, outcomes, suite=spec.name, run_id=run_id)
            run.reseal()
    else:
        click.echo(
            f"auditkit: {display(run.results)} is read-only: the gates were evaluated without "
            "updating gates.json and junit.xml there.",
            err=True,
        )
    for target, data in ((junit, xml), (json_out, storage.json_text(record).encode())):
        if target is not None:
            storage.write_bytes_atomic(Path(target), data)
    echo_gates(record["gates"])
    if unchanged or os.access(run.results, os.W_OK):
        click.echo(f"junit: {display(run.junit)}")
    if not record["passed"]:
        click.echo(f"auditkit: {record['failed']} of {record['total']} gates failed.", err=True)
        raise SystemExit(1)
