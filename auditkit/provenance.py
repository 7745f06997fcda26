"""Provenance: what a run records about where its numbers came from (git, packages, model files,
host), gathered into a new :class:`~auditkit.rundir.Manifest`."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from auditkit import __version__
from auditkit.rundir import Manifest
from auditkit.rundir.integrity import sha256_path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".json", ".txt", ".model")


def utc_now() -> str:
    """Current UTC time, ISO 8601 with a Z suffix, second resolution."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


sha256_file = sha256_path
"""sha256 of a file's bytes (the run directory's own hash function)."""


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
    *, run_id: str, spec_hash: str, plan_hash: str, seeds: list[int],
    libraries: list[dict[str, Any]] | None = None,
) -> Manifest:  # fmt: skip
    """A manifest with status 'running', before any model is loaded; ``libraries``: the
    prompt-library versions the spec took terms from (recorded only when there are some)."""
    return Manifest(
        run_id=run_id,
        status="running",
        auditkit_version=__version__,
        git=git_state(Path(__file__).resolve().parent),
        spec_hash=spec_hash,
        plan_hash=plan_hash,
        packages=package_versions(),
        seeds=seeds,
        started_utc=utc_now(),
        host={"platform": platform.platform(), "cpu_count": os.cpu_count()},
        **({"libraries": libraries} if libraries else {}),
    )
