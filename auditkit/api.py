"""A small Python API that mirrors the CLI, for notebooks.

>>> import auditkit.api as ak
>>> run = ak.run("audits/tiny-demo.yaml", "runs/tiny-demo")   # doctest: +SKIP
>>> run.tables["lean"].head()                                  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from auditkit.errors import UsageError
from auditkit.layout import resolve_spec
from auditkit.plan import AuditPlan, plan_audit
from auditkit.rundir import RunDir
from auditkit.spec import AuditSpec, load_spec, parse_spec

__all__ = ["AuditRun", "load_spec", "open_run", "parse_spec", "plan", "run"]


@dataclass
class AuditRun:
    """A finished (or partly finished) run directory, read back."""

    run_dir: Path
    spec: AuditSpec
    manifest: dict[str, Any]
    summary: dict[str, Any]
    tables: dict[str, pd.DataFrame]

    @property
    def report_html(self) -> Path | None:
        """The HTML report, if rendered."""
        path = RunDir(self.run_dir).report_html
        return path if path.is_file() else None


def plan(spec: AuditSpec | str | Path, *, cache_dir: str | Path | None = None) -> AuditPlan:
    """Expand a spec (object or YAML path) into its plan (``probe.hook: auto`` resolved to the
    model family's default, as a run does)."""
    from auditkit.analyses.checks import check_spec, load_checked_spec
    from auditkit.run import default_cache_dir

    checked = check_spec(spec) if isinstance(spec, AuditSpec) else load_checked_spec(spec)
    return plan_audit(resolve_spec(checked, Path(cache_dir) if cache_dir else default_cache_dir()))


def run(
    spec: AuditSpec | str | Path,
    out_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    show_progress: bool = True,
    render: bool = True,
) -> AuditRun:
    """Run (or resume) an audit into ``out_dir`` (a folder or a URL) and read the results
    back."""
    from auditkit.run import run_audit

    outcome = run_audit(
        spec,
        out_dir,
        cache_dir=Path(cache_dir) if cache_dir else None,
        show_progress=show_progress,
        render=render,
    )
    return open_run(outcome.run_dir)


def open_run(run_dir: str | Path) -> AuditRun:
    """Read a run directory (a folder or a URL such as ``s3://bucket/runs/a``): spec, manifest,
    summary and every result table."""
    from auditkit.analyses import slice_tables
    from auditkit.analyze.summary import read_results
    from auditkit.rundir.remote import local_path
    from auditkit.spec import load_run_spec

    run_dir = local_path(run_dir)
    spec = load_run_spec(run_dir)
    run = RunDir(run_dir)
    if not run.is_finished():
        raise UsageError(
            f"{str(run_dir)!r} has no results yet.",
            hint="run the audit (auditkit run SPEC --out RUN_DIR) to finish it.",
        )
    results, summary = read_results(run, slice_tables())
    return AuditRun(run_dir, spec, run.read_json("manifest"), summary, dict(results.tables))
