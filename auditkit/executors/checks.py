"""One truth of provenance on a cluster: what a worker must share with the driver (package
versions) and with every other worker (the model files' sha256), and why a worker is refused."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CHECKED_PACKAGES = ("torch", "diffusers", "transformers", "auditkit")
"""Packages whose version must be the driver's on every worker."""


def versions() -> dict[str, str | None]:
    """This process's versions of :data:`CHECKED_PACKAGES`."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in CHECKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def weights_digest(files: Sequence[dict[str, Any]]) -> str:
    """One sha256 over the (path, sha256) of every model file."""
    import hashlib

    joined = "\n".join(f"{f['path']} {f['sha256']}" for f in sorted(files, key=lambda f: f["path"]))
    return hashlib.sha256(joined.encode()).hexdigest()


def refusal(
    worker: dict[str, Any], driver: dict[str, str | None], reference: str | None
) -> str | None:
    """Why ``worker`` (its :meth:`PipelineWorker.info`) may not serve this run, or None."""
    theirs = worker["versions"]
    for name in CHECKED_PACKAGES:
        if theirs.get(name) != driver.get(name):
            return f"{name} {theirs.get(name)} there, {driver.get(name)} on the driver"
    digest = weights_digest(worker["model"]["files"])
    if reference is not None and digest != reference:
        return f"its model files hash to {digest[:12]}, not {reference[:12]}"
    return None


__all__ = ["CHECKED_PACKAGES", "refusal", "versions", "weights_digest"]
