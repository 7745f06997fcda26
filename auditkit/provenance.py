"""Provenance: the run manifest, written first and sealed last, and atomic file writes."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from auditkit import __version__
from auditkit.errors import SchemaVersionError

MANIFEST_SCHEMA_VERSION = 1
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".json", ".txt", ".model")


def utc_now() -> str:
    """Current UTC time, ISO 8601 with a Z suffix, second resolution."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON (sorted keys off, 2-space indent, UTF-8) atomically."""
    text = json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    write_bytes_atomic(path, text.encode())


def read_versioned_json(path: Path, *, newest: int, kind: str) -> dict[str, Any]:
    """Read a JSON file carrying ``schema_version``; refuse versions newer than ``newest``."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    version = int(data.get("schema_version", 0))
    if version > newest:
        raise SchemaVersionError(
            f"{path} ({kind}) has schema_version {version}, newer than this auditkit reads "
            f"({newest}).",
            hint="upgrade auditkit to read this run directory.",
        )
    return data


PARQUET_VERSION_KEY = b"auditkit_schema_version"
"""Parquet schema-metadata key that carries a table's schema version."""


def versioned_parquet_bytes(frame: Any, version: int, meta: dict[str, str] | None = None) -> bytes:
    """A DataFrame as parquet bytes with its schema version (and ``auditkit_<key>`` entries for
    ``meta``) in the schema metadata, ready for :func:`write_bytes_atomic`."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[PARQUET_VERSION_KEY] = str(version).encode()
    metadata.update({f"auditkit_{k}".encode(): v.encode() for k, v in (meta or {}).items()})
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(metadata), buffer)
    return buffer.getvalue()


def read_versioned_parquet(path: Path, *, newest: int) -> Any:
    """Read a parquet table written by :func:`versioned_parquet_bytes` (a missing version counts
    as 1); refuse one newer than ``newest``."""
    import pandas as pd
    import pyarrow.parquet as pq

    version = int((pq.read_schema(path).metadata or {}).get(PARQUET_VERSION_KEY, b"1"))
    if version > newest:
        raise SchemaVersionError(
            f"{path} has schema_version {version}; this auditkit reads up to {newest}.",
            hint="upgrade auditkit to read this run directory.",
        )
    return pd.read_parquet(path)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def results_hash(results_dir: Path) -> str:
    """A content hash of a run's result tables (sorted names and bytes of every parquet)."""
    digest = hashlib.sha256()
    for path in sorted(results_dir.glob("*.parquet")):
        digest.update(path.name.encode() + b"\0" + sha256_file(path).encode() + b"\n")
    return digest.hexdigest()


def hash_model_files(folder: Path) -> list[dict[str, Any]]:
    """sha256 and size of every weight and config file in a local model folder."""
    files = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in WEIGHT_SUFFIXES and ".cache" not in path.parts:
            files.append(
                {
                    "path": path.relative_to(folder).as_posix(),
                    "sha256": sha256_file(path),
                    "bytes": path.stat().st_size,
                }
            )
    return files


def git_state(start: Path) -> dict[str, Any]:
    """Commit and dirty flag of the checkout containing ``start``, or nulls outside one."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=start, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=start,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    """Versions of the packages that shape the numbers."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers", "numpy", "safetensors"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def new_manifest(
    *, run_id: str, spec_hash: str, plan_hash: str, seeds: list[int]
) -> dict[str, Any]:
    """A manifest with status 'running', before any model is loaded."""
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "kind": "auditkit.manifest",
        "run_id": run_id,
        "status": "running",
        "auditkit_version": __version__,
        "git": git_state(Path(__file__).resolve().parent),
        "spec_hash": spec_hash,
        "plan_hash": plan_hash,
        "packages": package_versions(),
        "device": None,
        "dtype": None,
        "seeds": seeds,
        "model": None,
        "captioner": None,
        "started_utc": utc_now(),
        "finished_utc": None,
        "stages": {},
        "host": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
    }


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's manifest (schema-checked)."""
    return read_versioned_json(
        run_dir / "manifest.json", newest=MANIFEST_SCHEMA_VERSION, kind="manifest"
    )
