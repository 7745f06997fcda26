"""Versioned files of a run directory, outside any layout: a file's schema version read,
checked and stamped (parquet schema metadata, a JSON ``schema_version``), and the one message
for a file written by a newer auditkit. :class:`auditkit.rundir.RunDir` reads and writes
through these."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditkit import __version__
from auditkit.errors import SchemaVersionError, UsageError
from auditkit.rundir import storage

if TYPE_CHECKING:
    import pandas as pd

VERSION_KEY = b"auditkit_schema_version"
"""The one parquet schema-metadata key that carries a table's schema version."""

META_PREFIX = "auditkit_"
"""Prefix of every auditkit entry in a parquet table's schema metadata."""


def newer_error(path: object, found: int, newest: int) -> SchemaVersionError:
    """The one message for a file written by a newer auditkit."""
    return SchemaVersionError(
        f"{path} has schema_version {found}, newer than this auditkit ({__version__}) reads "
        f"(up to {newest}).",
        hint="upgrade auditkit (pip install -U auditkit) to read this run directory.",
    )


def check_version(version: Any, newest: int, path: object) -> int:
    """``version`` as an int when this auditkit reads it; a missing or non-integer version is a
    UsageError, a newer one a SchemaVersionError."""
    if not isinstance(version, int) or isinstance(version, bool):
        raise UsageError(
            f"{path} has no integer schema_version, so it was not written by auditkit.",
            hint="rerun the analysis with auditkit to regenerate it.",
        )
    if version > newest:
        raise newer_error(path, version, newest)
    return version


def parquet_bytes(frame: pd.DataFrame, version: int, meta: dict[str, str] | None = None) -> bytes:
    """A DataFrame as parquet bytes with its schema version and ``auditkit_<key>`` entries for
    ``meta`` in the schema metadata."""
    import pyarrow as pa

    return arrow_parquet_bytes(pa.Table.from_pandas(frame, preserve_index=False), version, meta)


def arrow_parquet_bytes(table: Any, version: int, meta: dict[str, str] | None = None) -> bytes:
    """:func:`parquet_bytes` of a pyarrow table (built without a DataFrame where that is
    cheaper: the activation store's index parts)."""
    import pyarrow.parquet as pq

    metadata = dict(table.schema.metadata or {})
    metadata[VERSION_KEY] = str(version).encode()
    metadata.update({f"{META_PREFIX}{k}".encode(): v.encode() for k, v in (meta or {}).items()})
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(metadata), buffer)
    return buffer.getvalue()


def parquet_version(path: Path, *, default: int = 1) -> int:
    """The schema version stamped in a parquet file (``default`` when it has none: the files
    written before tables were stamped)."""

    raw = (storage.parquet_schema(path).metadata or {}).get(VERSION_KEY)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"{path} has a schema_version that is not an integer ({raw!r}).") from None


def read_versioned_parquet(path: Path, *, newest: int) -> pd.DataFrame:
    """A stamped parquet file outside the table registry (e.g. the activation index, per-unit
    chunks); refuses one newer than ``newest``."""
    version = parquet_version(path)
    if version > newest:
        raise newer_error(path, version, newest)
    import pandas as pd

    return pd.read_parquet(io.BytesIO(storage.read_bytes(path)))


def read_versioned_json(path: Path, *, newest: int, kind: str) -> dict[str, Any]:
    """A JSON object carrying ``schema_version`` (missing counts as 0, the oldest); refuses a
    newer one. ``kind`` names the file in messages."""
    data = load_json(path)
    version = data.get("schema_version", 0)
    if isinstance(version, int) and version > newest:
        raise newer_error(f"{path} ({kind})", version, newest)
    return data


def load_json(path: Path) -> dict[str, Any]:
    """A JSON object from a run file, or a UsageError naming the file."""
    if not storage.exists(path):
        raise UsageError(
            f"{path} is missing, so {path.parent} is not a complete auditkit run directory.",
            hint="point at the folder given to 'auditkit run --out', after the run has finished.",
        )
    try:
        data = json.loads(storage.read_bytes(path).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a JSON object.")
    return data


__all__ = [
    "META_PREFIX",
    "VERSION_KEY",
    "check_version",
    "load_json",
    "newer_error",
    "parquet_bytes",
    "parquet_version",
    "read_versioned_json",
    "read_versioned_parquet",
]
