"""The run directory's one owner: paths, versioned readers and writers, the manifest model and
the table registry (docs/run-directory.md). Nobody else spells a run file's name or parses it.

- :class:`RunDir`: every path of a run directory, and ``table``/``write_table``,
  ``read_json``/``write_json``, ``read_manifest``/``write_manifest``.
- :data:`REGISTRY`: every table, its folder, version and columns (type, unit, meaning).
- :class:`Manifest`: the typed, frozen manifest.
- :func:`write_bytes_atomic`, :func:`write_json_atomic`: the atomic writes every run file goes
  through (they follow the user's umask; non-finite floats become null in JSON).
"""

from auditkit.rundir.columns import REGISTRY, RESULTS_VERSION
from auditkit.rundir.folder import JSON_FILES, RunDir, as_run_dir
from auditkit.rundir.manifest import MANIFEST_VERSION, Manifest, weights_hash
from auditkit.rundir.registry import Column, Table
from auditkit.rundir.storage import json_safe, write_bytes_atomic, write_json_atomic
from auditkit.rundir.versioned import (
    VERSION_KEY,
    check_version,
    load_json,
    newer_error,
    parquet_bytes,
    read_versioned_json,
    read_versioned_parquet,
)

__all__ = [
    "JSON_FILES",
    "MANIFEST_VERSION",
    "REGISTRY",
    "RESULTS_VERSION",
    "VERSION_KEY",
    "Column",
    "Manifest",
    "RunDir",
    "Table",
    "as_run_dir",
    "check_version",
    "json_safe",
    "load_json",
    "newer_error",
    "parquet_bytes",
    "read_versioned_json",
    "read_versioned_parquet",
    "weights_hash",
    "write_bytes_atomic",
    "write_json_atomic",
]
