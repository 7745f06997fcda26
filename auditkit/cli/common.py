"""What every command shares: errors as one paragraph and an exit code, and the lines that
several commands print about a run directory."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from auditkit.errors import AuditkitError, UsageError

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int) -> None:
    from auditkit.rundir.remote import with_urls

    click.echo(f"auditkit: error: {with_urls(message)}", err=True)
    sys.exit(code)


def handle_errors(func: F) -> F:
    """Turn auditkit errors into one paragraph and an exit code (traceback with --debug)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(click.get_current_context().find_root().params.get("debug"))
        try:
            return func(*args, **kwargs)
        except AuditkitError as exc:
            if debug:
                traceback.print_exc()
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted. Completed work is kept; run the same command to resume.", 130)
        except BrokenPipeError:  # the reader went away (`auditkit models | head`): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except MemoryError:
            _fail("out of memory. Lower batch_size in the spec and rerun to resume.", 3)
        except Exception as exc:
            if debug:
                traceback.print_exc()
            _fail(
                f"unexpected {type(exc).__name__}: {exc}. Completed work is kept in the run "
                "directory; rerun with --debug for a traceback and report it if it persists.",
                3,
            )

    return wrapper  # type: ignore[return-value]


def require_results(run_dir: Path, what: str = "this command", *, report: bool = False) -> None:
    """Refuse (exit 2) a run directory whose analysis has not finished, or whose run did not
    complete (its results may be stale: a failed rerun leaves the older results in place).
    ``report``: also accept a run that failed only in rendering its report."""
    from auditkit.rundir import RunDir

    run = RunDir(run_dir)
    if not run.is_finished():
        raise UsageError(
            f"{str(run_dir)!r} has no results yet: not a finished auditkit run (it did not finish "
            "its analysis).",
            hint=f"run 'auditkit run SPEC --out {run_dir}' to resume it.",
        )
    manifest = run.read_manifest()
    if report and manifest.status == "failed" and manifest.failed_stage == "report":
        return
    run.require_complete(what)


def exit_on_gates(run_dir: Path) -> None:
    """Print every gate's outcome; exit 1 when one failed."""
    from auditkit.rundir import RunDir

    run = RunDir(run_dir)
    if not run.gates.is_file():
        return
    record = run.read_json("gates")
    echo_gates(record["gates"])
    from auditkit.rundir.remote import display

    click.echo(f"junit: {display(run.junit)}")
    if not record["passed"]:
        click.echo(f"auditkit: {record['failed']} of {record['total']} gates failed.", err=True)
        sys.exit(1)


def echo_gates(gates: list[dict[str, Any]]) -> None:
    """One line per gate: PASS or FAIL, then its message (controls shown, never sent)."""
    from auditkit.inert import terminal_text

    for gate in gates:
        click.echo(("PASS  " if gate["passed"] else "FAIL  ") + terminal_text(gate["message"]))
