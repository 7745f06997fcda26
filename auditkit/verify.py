"""``auditkit verify``: check a run directory against its own checksums, recomputing nothing.

It reads the manifest's seal and every file the seal lists, the activation store's index and
every shard against the checksum its index part recorded, and the plan against the store (every
planned unit stored). Each problem names its file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from auditkit.errors import AuditkitError
from auditkit.rundir import RunDir, integrity, load_json
from auditkit.rundir.integrity import Problem


@dataclass
class Verification:
    """What ``auditkit verify`` found."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: int = 0
    shards: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_run(run_dir: str | Path) -> Verification:
    """Every check of ``auditkit verify`` on one run directory."""
    from auditkit.extract.store import ActivationStore

    run = RunDir(run_dir)
    out = Verification()
    try:
        data = load_json(run.manifest)
    except AuditkitError as exc:
        out.problems.append(Problem(run.manifest.as_posix(), exc.message))
        data = {}
    if data:
        if not integrity.seal_matches(data):
            out.problems.append(
                Problem(run.manifest.as_posix(), "its content does not match its seal (edited)")
            )
        if data.get("status") != "complete":
            out.problems.append(
                Problem(
                    run.manifest.as_posix(),
                    f"the run is not complete (status {data.get('status')!r}"
                    + (f", failed in {data['failed_stage']}" if data.get("failed_stage") else "")
                    + ")",
                )
            )
    sealed = data.get("files") if data.get("seal") else None
    if sealed is None and data:
        out.notes.append(
            "manifest.json carries no seal (a run written before runs were sealed, or not "
            "finished): only the activation store was checked"
        )
    out.files = len(sealed or {})
    out.problems += integrity.damaged(run.root, sealed or {})
    if sealed is not None:
        listed = set(sealed)
        for path in integrity.sealed_paths(run.root):
            if path.relative_to(run.root).as_posix() not in listed:
                out.problems.append(
                    Problem(path.as_posix(), "not listed in the seal (written after the run)")
                )
    store = ActivationStore(run.activations)
    out.problems += store.problems()
    if run.grounding_activations.is_dir():  # the image-grounded axes' h of labelled images
        out.problems += ActivationStore(run.grounding_activations).problems()
    try:
        out.shards = store.index()["shard"].nunique()
        stored = store.completed()
    except AuditkitError:
        stored = set()
    if run.plan.is_file():
        try:
            planned = {u["unit_id"] for u in run.read_json("plan").get("units", [])}
        except (AuditkitError, TypeError, KeyError):
            planned = set()
            out.problems.append(Problem(run.plan.as_posix(), "not a readable plan"))
        missing = planned - stored
        if missing and data.get("status") == "complete":
            out.problems.append(
                Problem(run.activations.as_posix(), f"{len(missing)} planned units are not stored")
            )
    for path in sorted(run.root.rglob(f"*{integrity.QUARANTINE_SUFFIX}")):
        out.notes.append(f"{path}: set aside as corrupt by an earlier run (not read)")
    return out
