"""Read and check the files of a run directory (docs/run-directory.md, schema version 1).

Every reader refuses a file written by a newer auditkit (:class:`SchemaVersionError`) and turns a
missing or malformed file into one clear :class:`UsageError`; older versions are read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import yaml

from auditkit import __version__
from auditkit.analyze.tables import TABLE_COLUMNS
from auditkit.errors import SchemaVersionError, UsageError
from auditkit.spec import SPEC_VERSION, AuditSpec, parse_spec

SCHEMA_VERSION = 1
"""The newest run-directory schema version this report reads."""


def read_text(path: Path) -> str:
    """A required file's text, or a UsageError saying the run directory is incomplete."""
    if not path.is_file():
        raise UsageError(
            f"{path} is missing, so {path.parent} is not a complete auditkit run directory.",
            hint="point the report at the folder given to 'auditkit run --out', after the run "
            "has finished its analysis.",
        )
    return path.read_text(encoding="utf-8")


def check_version(version: Any, path: Path) -> None:
    """Refuse a missing or newer ``schema_version``; accept this version and older ones."""
    if not isinstance(version, int) or isinstance(version, bool):
        raise UsageError(
            f"{path} has no integer schema_version, so it was not written by auditkit.",
            hint="rerun the analysis with auditkit to regenerate it.",
        )
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path} has schema_version {version}, newer than this auditkit ({__version__}) "
            f"reads (up to {SCHEMA_VERSION}).",
            hint="upgrade auditkit (pip install -U auditkit) to render this run's report.",
        )


def read_json(path: Path, kind: str) -> dict[str, Any]:
    """A versioned JSON object of the given ``kind`` (``auditkit.manifest``, ...)."""
    text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a JSON object.")
    check_version(data.get("schema_version"), path)
    if data.get("kind") != kind:
        raise UsageError(f"{path} has kind {data.get('kind')!r}, expected {kind!r}.")
    return data


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


def read_table(path: Path, name: str) -> pd.DataFrame | None:
    """A result table, or None when its analysis was not run.

    A ``schema_version`` (or ``auditkit.schema_version``) key in the parquet key-value metadata,
    when present, is checked like the JSON files' field.
    """
    if not path.is_file():
        return None
    metadata = pq.read_schema(path).metadata or {}
    for key in (b"schema_version", b"auditkit.schema_version"):
        if key in metadata:
            try:
                version: Any = int(metadata[key])
            except ValueError:
                version = None
            check_version(version, path)
    frame = pd.read_parquet(path)
    missing = [c for c in TABLE_COLUMNS[name] if c not in frame.columns]
    if missing:
        raise UsageError(
            f"{path} lacks the columns {missing} that schema version {SCHEMA_VERSION} requires.",
            hint="rerun the analysis with this auditkit to regenerate the result tables.",
        )
    return frame
