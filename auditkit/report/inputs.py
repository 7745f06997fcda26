"""What the report reads from a run directory, through its owner :class:`~auditkit.rundir.RunDir`
(docs/run-directory.md): the manifest, the summary, the resolved spec and the result tables.

Every reader refuses a file written by a newer auditkit (:class:`SchemaVersionError`) and turns a
missing or malformed file into one clear :class:`UsageError`; older versions are migrated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from auditkit.analyses import slice_tables
from auditkit.analyze.tables import ANALYSIS_TABLES
from auditkit.errors import SchemaVersionError, UsageError
from auditkit.rundir import RunDir
from auditkit.spec import SPEC_VERSION, AuditSpec, parse_spec


@dataclass(frozen=True)
class RunInputs:
    """A finished run, read for its report."""

    run: RunDir
    manifest: dict[str, Any]
    summary: dict[str, Any]
    spec_text: str
    spec: AuditSpec
    tables: dict[str, pd.DataFrame | None]
    """Every analysis table by name; None where the run did not make it."""


def read_run(run_dir: Path | RunDir, manifest: dict[str, Any] | None = None) -> RunInputs:
    """Read everything the report needs from a run directory. ``manifest``: the manifest the
    run is about to seal (a run renders its report before sealing), instead of the one on disk."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    manifest = manifest if manifest is not None else run.read_json("manifest")
    summary = run.read_json("summary")
    if not run.spec.is_file():
        raise UsageError(
            f"{run.spec} is missing, so {run.root} is not a complete auditkit run directory.",
            hint="point the report at the folder given to 'auditkit run --out', after the run "
            "has finished its analysis.",
        )
    spec_text = run.spec.read_text(encoding="utf-8")
    spec = read_spec(spec_text, run.spec)
    tables = {name: run.table(name) for name in (*ANALYSIS_TABLES, *slice_tables())}
    return RunInputs(run, manifest, summary, spec_text, spec, tables)


def read_spec(text: str, path: Path) -> AuditSpec:
    """Validate the resolved spec; a newer spec_version is a schema error, not a spec error."""
    raw = yaml.safe_load(text)
    version = raw.get("spec_version") if isinstance(raw, dict) else None
    if isinstance(version, int) and version > SPEC_VERSION:
        raise SchemaVersionError(
            f"{path} has spec_version {version}, newer than this auditkit reads "
            f"(up to {SPEC_VERSION}).",
            hint="upgrade auditkit (pip install -U auditkit) to render this run's report.",
        )
    return parse_spec(text, source=str(path))
