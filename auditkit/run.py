"""Run every stage of an audit into a run directory, resuming what is already there."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditkit.analyses.checks import check_spec, load_checked_spec
from auditkit.errors import AuditkitError, UsageError
from auditkit.executors import describe, make_executor
from auditkit.layout import resolve_spec
from auditkit.plan import plan_audit
from auditkit.provenance import new_manifest, utc_now
from auditkit.rundir import Manifest, RunDir, storage, write_bytes_atomic
from auditkit.rundir.lock import RunLock
from auditkit.rundir.remote import local_path
from auditkit.spec import AuditSpec, dump_spec, spec_hash
from auditkit.stages import (
    Stages,
    analyze,
    caption,
    causal,
    discover,
    extract,
    ground,
    grounding_images,
    guidance,
)

if TYPE_CHECKING:
    from auditkit.models.loading import LoadedPipeline


@dataclass
class RunOutcome:
    """Where a run wrote its results and what extraction did."""

    run_dir: Path
    manifest: dict[str, Any]
    """The sealed manifest's JSON object."""
    report_paths: list[Path]


def default_cache_dir() -> Path:
    """Where builtin models are built: ``~/.cache/auditkit``."""
    return Path.home() / ".cache" / "auditkit"


def run_audit(
    spec: AuditSpec | str | Path,
    out_dir: str | Path,
    *,
    cache_dir: Path | None = None,
    show_progress: bool = True,
    render: bool = True,
    loaded: LoadedPipeline | None = None,
    execution: dict[str, Any] | None = None,
    force: bool = False,
) -> RunOutcome:
    """Plan, extract (skipping finished units), caption when the spec asks (skipping captioned
    units), run the causal check when the spec asks (skipping done jobs), analyze and report
    into ``out_dir``. ``loaded``: a pipeline already loaded for this spec's model (a layer
    sweep runs one audit per hook on one pipeline). ``execution``: fields of the spec's
    ``execution`` section to override (the CLI's --executor, --ray-address, --workers).
    ``force``: run even when the plan exceeds ``execution.max_storage_gb`` or ``max_hours``."""
    if not isinstance(spec, AuditSpec):
        spec = load_checked_spec(spec)
    if execution:
        spec = _with_execution(spec, execution)
    check_spec(spec)
    run_dir = local_path(out_dir)
    RunDir(run_dir).claim(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = RunDir(run_dir)
    with RunLock(run_dir, "run"):
        return _run_locked(
            spec, run, cache_dir or default_cache_dir(), show_progress, render, loaded, force
        )


def _run_locked(
    spec: AuditSpec,
    run: RunDir,
    cache_dir: Path,
    show_progress: bool,
    render: bool,
    loaded: LoadedPipeline | None,
    force: bool = False,
) -> RunOutcome:
    """:func:`run_audit`'s work, with the run folder's lock held."""
    run_dir = run.root
    storage.remove_temporaries(run_dir)  # left by a killed run: nobody else writes here now
    hook_left = not spec.probe.hook_given
    spec = resolve_spec(spec, cache_dir)
    plan = plan_audit(spec)
    s_hash = spec_hash(spec)
    previous = _previous_manifest(run)
    damaged = run.set_aside_damaged(previous) if previous is not None else []
    for problem in damaged:
        print(f"auditkit: {problem.line()}; it is recomputed.", file=sys.stderr)
    run_id = _run_id(s_hash, plan.plan_hash)
    manifest = new_manifest(
        run_id=run_id, spec_hash=s_hash, plan_hash=plan.plan_hash, seeds=spec.seed_list,
        libraries=[use.model_dump(mode="json") for use in spec.libraries],
    )  # fmt: skip
    stages = Stages(spec, plan, run, manifest, cache_dir, show_progress, hook_left=hook_left)
    stages.save()  # first: from now on the folder is known as a run of auditkit's
    write_bytes_atomic(run.spec, dump_spec(spec).encode())
    plan.write(run.plan)
    stages.given = loaded
    stages.force = force
    stages.executor = make_executor(spec, stages.load, cache_dir=cache_dir, hook_left=hook_left)
    reports: list[Path] = []
    try:
        stages.current = "grounding"
        stages.grounding = grounding_images(spec)  # checked before anything is sampled
        stages.current = "extract"
        extract(stages, previous)
        stages.current = "caption"
        captioned = caption(stages)
        if captioned is not None:
            stages.current = "guidance"
            guidance(stages, *captioned)
            stages.current = "causal"
            causal(stages, *captioned)
        stages.current = "discovery"
        discover(stages)
        stages.current = "grounding"
        ground(stages)
        stages.current = "analyze"
        analyze(stages, None if damaged else previous)
        stages.current = "report"
        finished = stages.manifest.evolve(status="complete", finished_utc=utc_now())
        reports = _render(run_dir, spec, finished) if render else []
    except BaseException as exc:
        stages.update(
            status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
            error=str(exc) or type(exc).__name__,
            failed_stage=stages.current,
            finished_utc=utc_now(),
        )
        raise
    finally:
        if stages.executor.model_loaded and stages.executor.name != "local":
            stages.update(execution=describe(stages.executor))
        stages.executor.close()
    # Sealed last: 'complete' means every file the run wrote, its report included, is in
    # place, and the seal lists their checksums.
    stages.manifest = run.seal(
        stages.manifest.evolve(status="complete", finished_utc=finished.finished_utc)
    )
    return RunOutcome(run_dir, stages.manifest.to_json(), reports)


def _with_execution(spec: AuditSpec, fields: dict[str, Any]) -> AuditSpec:
    """``spec`` with ``fields`` of its execution section replaced (validated)."""
    from pydantic import ValidationError

    from auditkit.spec.execution import ExecutionSpec

    try:
        execution = ExecutionSpec.model_validate({**spec.execution.model_dump(), **fields})
    except ValidationError as exc:
        raise UsageError(f"execution: {exc.errors()[0]['msg']}") from None
    return spec.model_copy(update={"execution": execution})


def _run_id(s_hash: str, plan_hash: str) -> str:
    return hashlib.sha256(f"{s_hash}:{plan_hash}".encode()).hexdigest()[:12]


def _previous_manifest(run: RunDir) -> Manifest | None:
    if not run.manifest.is_file():
        return None
    try:
        return run.read_manifest()
    except (ValueError, OSError, AuditkitError):
        return None


def _render(run_dir: Path, spec: AuditSpec, finished: Manifest) -> list[Path]:
    """The report, showing the manifest the run is about to seal."""
    from auditkit.report import render_report

    return render_report(run_dir, list(spec.report.formats), finished.to_json())


__all__ = ["RunOutcome", "default_cache_dir", "run_audit"]
