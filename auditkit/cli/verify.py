"""``auditkit verify``: check a run directory's files against their checksums."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from auditkit.cli.common import handle_errors
from auditkit.cli.options import run_dir_argument


@click.command()
@run_dir_argument
@handle_errors
def verify(run_dir: Path | str) -> None:
    """Check RUN_DIR without recomputing: the manifest's seal, every sealed file, every
    activation shard and the store's index. Exit 3 naming each bad file."""
    from auditkit.errors import UsageError
    from auditkit.rundir.remote import local_path, with_urls
    from auditkit.verify import verify_run

    run_dir = local_path(run_dir)
    if not Path(run_dir).is_dir():
        raise UsageError(f"{str(run_dir)!r} is not a folder.", hint="pass a run directory.")
    found = verify_run(run_dir)
    for note in found.notes:
        click.echo(f"note: {with_urls(note)}", err=True)
    for problem in found.problems:
        click.echo(f"BAD  {with_urls(problem.line())}")
    if found.ok:
        click.echo(f"ok: {found.files} sealed files and {found.shards} activation shards verified")
        return
    click.echo(
        f"auditkit: {len(found.problems)} problem(s) in {run_dir}. Rerun 'auditkit run SPEC "
        f"--out {run_dir}' to recompute what is damaged (finished units are kept).",
        err=True,
    )
    sys.exit(3)
