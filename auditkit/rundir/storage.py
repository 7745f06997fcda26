"""Where run-directory bytes go: atomic writes that follow the user's umask, and the one JSON rule.

Every file of a run directory is written through :func:`write_bytes_atomic`, so readers see the
old file or the whole new one, never a torn write. The temporary file is created private (as
``tempfile`` does) and given the mode a plain ``open()`` would have given it (0666 less the
umask) before it is renamed into place: teams share run directories and reports.

JSON has no NaN or infinity. The one rule, applied by :func:`write_json_atomic` to every JSON file
of a run: a non-finite float is written as ``null`` and read back as ``None``.

This module is the only one that writes a run directory. A run directory given as a URL
(``s3://…``, :mod:`auditkit.rundir.remote`) is worked on in a local working copy: every write
and removal here goes to the URL first, and :func:`ensure_local` fetches a file that is read
without having been downloaded (an activation shard).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from auditkit.rundir import remote


def umask() -> int:
    """The process's current umask (read without changing it for longer than one call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a file created by ``open(path, "w")`` gets: 0666 less the umask."""
    return 0o666 & ~umask()


def write_bytes_atomic(path: Path, data: bytes, *, create_only: bool = False) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one; the file
    gets the user's default mode (0666 less the umask), not the temporary file's 0600.

    In a remote run directory the bytes go to the URL first; ``create_only`` makes that write a
    create-if-absent commit (refused when another writer committed the file already)."""
    mirror = remote.mirror_of(path)
    if mirror is not None:
        mirror.put(path, data, create_only=create_only)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by None, recursively; numpy
    scalars become Python numbers."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    import numpy as np  # here, not at import: the CLI starts without numpy

    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_text(payload: Any) -> str:
    """JSON text as every run file is written: 2-space indent, UTF-8, non-finite as null."""
    return json.dumps(json_safe(payload), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON (2-space indent, UTF-8, non-finite floats as null) atomically."""
    write_bytes_atomic(path, json_text(payload).encode())


def exists(path: Path) -> bool:
    """Whether a run-directory file exists."""
    return path.is_file()


def read_bytes(path: Path) -> bytes:
    """A run-directory file's bytes."""
    return path.read_bytes()


def listing(folder: Path, pattern: str) -> list[Path]:
    """The files in ``folder`` whose names match ``pattern``, sorted (none when it is absent)."""
    return sorted(p for p in folder.glob(pattern) if p.is_file())


def remove(path: Path) -> None:
    """Delete a file if it is there (at the URL too, in a remote run directory)."""
    mirror = remote.mirror_of(path)
    if mirror is not None:
        mirror.delete(path)
    path.unlink(missing_ok=True)


def ensure_local(path: Path) -> Path:
    """``path``, downloaded first when it belongs to a remote run directory and has not been
    read yet (activation shards are fetched only when read)."""
    mirror = remote.mirror_of(path)
    if mirror is not None:
        mirror.fetch(path)
    return path


def parquet_schema(path: Path) -> Any:
    """A parquet file's schema (its footer only)."""
    import pyarrow.parquet as pq

    return pq.read_schema(path)
