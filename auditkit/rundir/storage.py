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

import errno
import fnmatch
import json
import math
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

from auditkit.errors import RuntimeFailure
from auditkit.rundir import remote

TEMP_SUFFIX = ".tmp"
"""Every temporary file of an atomic write is ``.<name>.<random>.tmp`` beside its target."""

CRASH_ENV = "AUDITKIT_CRASH_AT"
"""Fault injection for the crash tests (RELIABILITY.md): ``PATTERN[@N]`` kills this process with
SIGKILL halfway through the N-th (default first) atomic write whose run-relative path matches the
glob PATTERN, after half its bytes reached the temporary file and before the rename."""

_crash_count = 0


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
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        with os.fdopen(fd, "wb") as fh:
            if os.environ.get(CRASH_ENV):
                _maybe_crash(path, fh, data)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise write_error(path, exc) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def write_error(path: Path, exc: OSError) -> RuntimeFailure:
    """The one message for a run file that could not be written (a full disk, a read-only or
    foreign folder): the file, the system's reason, and what to do."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        hint = "free space on that disk (or give --out on another one) and rerun the same command"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = "give --out a folder you can write to, or fix its permissions, and rerun"
    else:
        hint = "fix the cause and rerun the same command"
    return RuntimeFailure(
        f"could not write {path}: {reason}. Completed work is kept; nothing was marked "
        "complete that is not.",
        hint=f"{hint}: finished units are not redone.",
    )


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _maybe_crash(path: Path, fh: Any, data: bytes) -> None:
    """The crash tests' kill point (:data:`CRASH_ENV`)."""
    global _crash_count
    pattern, _, nth = os.environ[CRASH_ENV].partition("@")
    rel = path.as_posix()
    if not (fnmatch.fnmatch(rel, f"*/{pattern}") or fnmatch.fnmatch(rel, pattern)):
        return
    _crash_count += 1
    if _crash_count == int(nth or 1):
        fh.write(data[: len(data) // 2])
        fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def temporaries(root: Path) -> list[Path]:
    """Temporary files of atomic writes under ``root`` (left by a killed process)."""
    found = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                found.append(Path(folder) / name)
    return sorted(found)


def remove_temporaries(root: Path) -> int:
    """Delete what :func:`temporaries` finds (call only while holding the run's lock)."""
    found = temporaries(root)
    for path in found:
        path.unlink(missing_ok=True)
    return len(found)


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


def is_remote(path: Path) -> bool:
    """Whether ``path`` belongs to the working copy of a remote run directory."""
    return remote.mirror_of(path) is not None


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
