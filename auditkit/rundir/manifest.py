"""The run manifest as a typed, frozen model: provenance written first and sealed last.

A run updates its manifest by making a new one (:meth:`Manifest.evolve`,
:meth:`Manifest.with_stage`) and writing it whole (``RunDir.write_manifest``). Non-finite
numbers follow the one JSON rule of :mod:`auditkit.rundir.storage` (written as null). Fields a
newer minor writer adds are kept (``extra="allow"``), so reading and rewriting loses nothing.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from auditkit.rundir.storage import json_safe

MANIFEST_VERSION = 1
Status = Literal["running", "complete", "failed", "interrupted"]


def weights_hash(model: dict[str, Any] | None) -> str | None:
    """One sha256 over the sorted ``path:sha256`` of every weight file a manifest's ``model``
    record lists (None when it lists none): the checkpoint's identity in one line."""
    files = (model or {}).get("files") or []
    pairs = sorted(f"{f.get('path')}:{f.get('sha256')}" for f in files if f.get("sha256"))
    if not pairs:
        return None
    return hashlib.sha256("\n".join(pairs).encode()).hexdigest()


class Manifest(BaseModel):
    """``manifest.json`` (docs/run-directory.md, "manifest.json")."""

    model_config = ConfigDict(frozen=True, extra="allow")

    schema_version: int = MANIFEST_VERSION
    kind: Literal["auditkit.manifest"] = "auditkit.manifest"
    run_id: str
    status: Status
    auditkit_version: str
    git: dict[str, Any] = {}
    spec_hash: str
    plan_hash: str
    packages: dict[str, str | None] = {}
    device: str | None = None
    dtype: str | None = None
    seeds: list[int] = []
    model: dict[str, Any] | None = None
    captioner: dict[str, Any] | None = None
    started_utc: str | None = None
    finished_utc: str | None = None
    stages: dict[str, dict[str, Any]] = {}
    host: dict[str, Any] = {}
    extraction_fingerprint: dict[str, Any] | None = None
    execution: dict[str, Any] | None = None
    """Where the sampling ran when not in the driver's process (a Ray cluster's workers)."""
    libraries: list[dict[str, Any]] | None = None
    """The prompt-library versions (name, version, sha256, where used) the spec's concept sets
    and axes were taken from; absent when it names none."""
    error: str | None = None
    failed_stage: str | None = None
    """The stage that raised, when ``status`` is failed or interrupted."""
    files: dict[str, str] | None = None
    """sha256 of every sealed file (:mod:`auditkit.rundir.integrity`), set when complete."""
    seal: str | None = None
    """sha256 of this manifest's canonical JSON without this field, set when complete."""

    def evolve(self, **update: Any) -> Manifest:
        """A copy with ``update`` applied (validated like a read)."""
        return Manifest.model_validate({**self.to_json(), **json_safe(update)})

    def with_stage(self, name: str, record: dict[str, Any]) -> Manifest:
        """A copy whose ``stages[name]`` is ``record``."""
        return self.evolve(stages={**self.stages, name: record})

    def to_json(self) -> dict[str, Any]:
        """The JSON object, in field order, extra fields last; ``error`` only when set."""
        data = self.model_dump(mode="json")
        if data.get("error") is None:
            data.pop("error", None)
        for optional in (
            "extraction_fingerprint", "execution", "libraries", "failed_stage", "files", "seal"
        ):  # fmt: skip
            if data.get(optional) is None:
                data.pop(optional, None)
        return dict(json_safe(data))
