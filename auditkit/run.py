"""Run every stage of an audit into a run directory, resuming what is already there."""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from auditkit.analyses.checks import check_spec, load_checked_spec
from auditkit.analyses.stage import analyze_run
from auditkit.errors import AuditkitError, UsageError
from auditkit.executors import Executor, describe, make_executor
from auditkit.layout import resolve_spec
from auditkit.plan import AuditPlan, plan_audit
from auditkit.provenance import new_manifest, utc_now
from auditkit.rundir import Manifest, RunDir, json_safe, storage, write_bytes_atomic
from auditkit.rundir.lock import RunLock
from auditkit.rundir.remote import local_path
from auditkit.spec import AuditSpec, dump_spec, spec_hash

if TYPE_CHECKING:
    from auditkit.caption import Captioner
    from auditkit.caption.stage import CaptionReader
    from auditkit.models.loading import LoadedPipeline
    from auditkit.passes.grounding import GroundingSelection

T = TypeVar("T")


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
    stages = _Stages(spec, plan, run, manifest, cache_dir, show_progress, hook_left=hook_left)
    stages.save()  # first: from now on the folder is known as a run of auditkit's
    write_bytes_atomic(run.spec, dump_spec(spec).encode())
    plan.write(run.plan)
    stages.given = loaded
    stages.force = force
    stages.executor = make_executor(spec, stages.load, cache_dir=cache_dir, hook_left=hook_left)
    reports: list[Path] = []
    try:
        stages.current = "grounding"
        stages.grounding = _grounding_images(spec)  # checked before anything is sampled
        stages.current = "extract"
        _extract(stages, previous)
        stages.current = "caption"
        captioned = _caption(stages)
        if captioned is not None:
            stages.current = "guidance"
            _guidance(stages, *captioned)
            stages.current = "causal"
            _causal(stages, *captioned)
        stages.current = "discovery"
        _discover(stages)
        stages.current = "grounding"
        _ground(stages)
        stages.current = "analyze"
        _analyze(stages, None if damaged else previous)
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


@dataclass
class _Stages:
    """What the stages of one run share: spec and plan, the run folder and its manifest, and
    the pipeline once a stage has loaded it (so that it is loaded at most once per run)."""

    spec: AuditSpec
    plan: AuditPlan
    run: RunDir
    manifest: Manifest
    cache_dir: Path
    show_progress: bool
    given: LoadedPipeline | None = None
    """A pipeline the caller loaded for this model, used instead of loading it again."""
    hook_left: bool = False
    """Whether the spec left the hook point to the model's family (resolved before loading)."""
    executor: Executor = field(init=False)
    """Where every stage's sampling runs (one executor per run: the pipeline loads once)."""
    current: str = "start"
    """The stage running now (recorded as ``failed_stage`` when one raises)."""
    force: bool = False
    """Run even when the plan exceeds the spec's storage or time limit."""
    grounding: GroundingSelection | None = None
    """The image-grounded axes' labelled images, loaded and checked before extraction."""
    captioner: tuple[Captioner, dict[str, Any]] | None = None
    """The spec's captioner and its record, once a stage has made them."""

    @property
    def run_dir(self) -> Path:
        return self.run.root

    def save(self) -> None:
        self.run.write_manifest(self.manifest)

    def update(self, **fields: Any) -> None:
        """Replace manifest fields and write the manifest."""
        self.manifest = self.manifest.evolve(**fields)
        self.save()

    def load(self) -> LoadedPipeline:
        """Load the pipeline in this process (the local executor's, at its first batch)."""
        from auditkit.models.loading import check_resolved_hook, compile_denoiser, load_pipeline

        loaded = self.given or load_pipeline(self.spec.model, cache_dir=self.cache_dir)
        if self.hook_left:
            check_resolved_hook(self.spec, loaded, self.cache_dir)
        if self.spec.execution.compile and self.given is None:
            compile_denoiser(loaded)
        return loaded

    def sample_and_read(
        self,
        stage: Callable[..., T],
        captioner: Captioner,
        record: dict[str, Any],
        *extra: Any,
    ) -> tuple[T, int]:
        """Run a stage that samples images and reads them into the run's captions folder:
        ``stage(CaptionedPass(...), *extra)``. Returns its stats and the executor's batch count
        before it (for :meth:`record`)."""
        from auditkit.caption.stage import CaptionedPass

        mark = self.executor.batches
        inputs = CaptionedPass(
            self.spec, self.plan, self.run.captions, captioner, record, self.executor,
            self.show_progress,
        )  # fmt: skip
        return stage(inputs, *extra), mark

    def record(self, name: str, stats: dict[str, Any], mark: int, **extra: Any) -> None:
        """Record a finished stage (its stats, where it ran if it sampled anything since the
        executor ran ``mark`` batches, and ``extra``) in the manifest."""
        where = self.executor.where() if self.executor.batches > mark else {}
        self.manifest = self.manifest.with_stage(name, {**stats, **where, **extra})
        self.save()


def analysis_inputs(stages: _Stages) -> str:
    """A digest of everything the analysis reads: the resolved spec and the plan (their
    hashes), the units in the activation store and in the grounding store (a unit's h is fixed
    by its content id), the bytes of every table the captioning, guidance, causal, discovery
    and grounding passes wrote, and the source of auditkit itself (so a changed analysis is
    never skipped)."""
    import auditkit
    from auditkit.extract.store import ActivationStore

    run = stages.run
    digest = hashlib.sha256()
    digest.update(f"{stages.manifest.spec_hash}:{stages.manifest.plan_hash}".encode())
    for unit in sorted(ActivationStore(run.activations).completed()):
        digest.update(unit.encode())
    digest.update(b"\0grounding\0")
    for unit in sorted(ActivationStore(run.grounding_activations).completed()):
        digest.update(unit.encode())
    passes = [
        *run.files(run.captions, "*.parquet"),
        *run.files(run.results, "discover*.parquet"),
        *run.files(run.grounding, "*.parquet"),
    ]
    for path in passes:
        digest.update(path.name.encode() + hashlib.sha256(path.read_bytes()).digest())
    digest.update(_source_digest(Path(auditkit.__file__).parent).encode())
    return digest.hexdigest()


def _source_digest(package: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted([*package.rglob("*.py"), *package.rglob("*.yaml")]):
        digest.update(str(path.relative_to(package)).encode() + path.read_bytes())
    return digest.hexdigest()


def _analyze(stages: _Stages, previous: Manifest | None) -> None:
    """Analyze, unless a finished earlier run in this folder analyzed exactly these inputs and
    its results are all still there (a rerun of a finished audit then takes seconds)."""
    started = time.perf_counter()
    spec, run = stages.spec, stages.run
    inputs = analysis_inputs(stages)
    before = (previous.stages.get("analyze") or {}) if previous is not None else {}
    kept = [run.summary, *([run.gates] if spec.gates else [])]
    if (
        previous is not None
        and previous.status == "complete"
        and before.get("inputs") == inputs
        and all(path.is_file() for path in kept)
    ):
        record = {"inputs": inputs, "reused": True, "seconds": 0.0}
        stages.record("analyze", record, stages.executor.batches)
        return
    analyze_run(spec, stages.plan, run, stages.manifest)
    seconds = round(time.perf_counter() - started, 3)
    record = {"inputs": inputs, "reused": False, "seconds": seconds}
    stages.record("analyze", record, stages.executor.batches)


def _extract(stages: _Stages, previous: Manifest | None) -> None:
    """Extract pending units, loading the pipeline only if some are pending. Shards or index
    files found damaged are set aside first (their units are extracted again), and stored units
    are reused only when they were computed with this model's weights, device type and dtype."""
    import sys

    from auditkit.extract import identity
    from auditkit.extract.store import ActivationStore

    spec, plan = stages.spec, stages.plan
    store = ActivationStore(stages.run.activations)
    for line in store.heal():
        print(f"auditkit: {line}", file=sys.stderr)
    stored = store.completed() & {u.unit_id for u in plan.units}
    pending = len(plan.units) - len(stored)
    record = identity.read_record(store.root)
    local = stages.spec.execution.executor == "local"
    now = identity.for_spec(stages.spec.model, stages.cache_dir, stages.given, local, record)
    identity.refuse_mixing(store.root, record, now, len(stored))
    reusable = (
        previous is not None
        and previous.model is not None
        and previous.extraction_fingerprint == plan.extraction_fingerprint
    )
    if pending == 0 and reusable and previous is not None:
        store.compact()  # index parts an interrupted run left unmerged
        # Nothing to compute: keep the provenance of the run that computed the activations.
        stages.manifest = stages.manifest.evolve(
            model=previous.model,
            device=previous.device,
            dtype=previous.dtype,
            extraction_fingerprint=plan.extraction_fingerprint,
        ).with_stage(
            "extract",
            {
                "units_total": len(plan.units),
                "units_run": 0,
                "units_skipped": len(plan.units),
                "denoiser_evaluations": 0,
                "forward_passes": 0,
                "seconds": 0.0,
                "model_loaded": False,
            },
        )
        stages.save()
        return

    from auditkit.extract.runner import extract_activations

    if not stages.force:
        _check_limits(stages, pending)
    _load_model(stages)
    if stages.executor.name != "local":  # the workers' device and dtype, now known
        info = stages.executor.info()
        now = {**now, "device": info.device.split(":")[0], "dtype": info.dtype}
        identity.refuse_mixing(store.root, record, now, len(stored))
    if record is None or record != now:
        identity.write_record(store.root, now)
    reader = _caption_reader(stages)
    stats = extract_activations(
        stages.executor, spec, plan, store, show_progress=stages.show_progress, images=reader
    )
    read: dict[str, Any] = {}
    if reader is not None:
        read["images_read"] = reader.read
        if reader.error is not None:  # the captioning stage meets it again, in its place
            read["images_error"] = reader.error
    stages.manifest = stages.manifest.with_stage(
        "extract", {**stats.to_json(), **read, "model_loaded": True}
    )
    stages.save()


def _check_limits(stages: _Stages, pending: int) -> None:
    """Refuse (exit 2) extraction whose store growth or rough time exceeds the spec's
    ``execution.max_storage_gb`` or ``max_hours``, with the estimate and how to go on."""
    from auditkit.models.loading import existing_model_folder, resolve_device
    from auditkit.plan import estimate_cost

    spec, plan = stages.spec, stages.plan
    local = spec.execution.executor == "local"
    device = resolve_device(spec.model.device) if local else "cuda"
    folder = existing_model_folder(spec.model, stages.cache_dir)
    cost = estimate_cost(spec, plan, device=device, model_dir=folder)
    share = pending / max(len(plan.units), 1)
    gigabytes = cost.activation_bytes * share / 1e9
    hours = cost.seconds * share / 3600
    limits = spec.execution
    over = []
    if gigabytes > limits.max_storage_gb:
        over.append(
            f"its activation store would grow by {gigabytes:,.3g} GB "
            f"(limit execution.max_storage_gb: {limits.max_storage_gb:g})"
        )
    if hours > limits.max_hours:
        over.append(
            f"extraction is estimated at {hours:,.3g} hours on {device} "
            f"(limit execution.max_hours: {limits.max_hours:g}; a rough estimate, see "
            "'auditkit plan --measure')"
        )
    if over:
        raise UsageError(
            f"the plan exceeds a limit: {'; '.join(over)}, for {pending:,} units still to "
            "extract. Nothing was extracted.",
            hint="shrink the plan (fewer seeds, terms or stored steps: see 'auditkit plan'), "
            "raise the limit in the spec's execution section, or pass --force.",
        )


def _load_model(stages: _Stages) -> None:
    """Load the pipeline (or start the workers) and record its provenance in the manifest."""
    spec, plan = stages.spec, stages.plan
    info = stages.executor.info()
    execution = describe(stages.executor)
    stages.update(
        device=info.device,
        dtype=info.dtype,
        extraction_fingerprint=plan.extraction_fingerprint,
        packages={**stages.manifest.packages, "cuda": _cuda_version()},
        model={
            "id": spec.model.id,
            "revision": spec.model.revision,
            "pipeline_class": info.pipeline_class,
            "kind": info.kind,
            "uses_cfg": info.uses_cfg,
            "files": info.files,
        },
        **({"execution": execution} if stages.executor.name != "local" else {}),
    )


def _captioner(stages: _Stages) -> tuple[Captioner, dict[str, Any]] | None:
    """The spec's captioner (loaded when it first reads) and its record, made once per run;
    None without a captions section."""
    from auditkit.caption import stage

    captions = stages.spec.captions
    if captions is None:
        return None
    if stages.captioner is None:
        captioner = stage.load_spec_captioner(captions.captioner, deferred=True)
        stages.captioner = (captioner, stage.captioner_record(captions.captioner, captioner))
        stages.update(captioner=stages.captioner[1])
    return stages.captioner


def _caption_reader(stages: _Stages) -> CaptionReader | None:
    """The captioning stage's reader of the images extraction decodes (the selected units not
    yet read), or None without a captions section."""
    from auditkit.caption.stage import CaptionedPass, CaptionReader

    made = _captioner(stages)
    if made is None:
        return None
    return CaptionReader(
        CaptionedPass(stages.spec, stages.plan, stages.run.captions, *made, stages.executor)
    )


def _caption(stages: _Stages) -> tuple[Captioner, dict[str, Any]] | None:
    """Caption the selected units extraction did not read; the pipeline is loaded only if
    some are missing.

    Returns the captioner and its record (for the guidance sweep and the causal check), or None
    without a captions section."""
    from auditkit.caption import stage

    spec = stages.spec
    made = _captioner(stages)
    if made is None or spec.captions is None:
        return None
    captioner, record = made
    if spec.captions.calibration is not None:
        from auditkit.passes.calibration import calibrate_run

        stages.current = "calibrate"
        stages.record(
            "calibrate",
            calibrate_run(spec, captioner, record, stages.run.captions),
            stages.executor.batches,
        )
        stages.current = "caption"
    # When extraction was already complete the manifest keeps the provenance of the run that
    # did it (same extraction fingerprint); where this pass ran is in stages.caption.
    stats, mark = stages.sample_and_read(stage.caption_images, captioner, record)
    stages.record("caption", stats.to_json(), mark, captioner_key=record["key"])
    return captioner, record


def _guidance(stages: _Stages, captioner: Captioner, record: dict[str, Any]) -> None:
    """The guidance sweep (captions.guidance); the pipeline is loaded only if some image at some
    scale is missing."""
    from auditkit.passes.guidance import run_guidance_sweep

    stats, mark = stages.sample_and_read(run_guidance_sweep, captioner, record)
    if stats["scales"]:
        stages.record("guidance", stats, mark)


def _causal(stages: _Stages, captioner: Captioner, record: dict[str, Any]) -> None:
    """The causal check (dose-response per axis); the pipeline is loaded only if some steered
    image is missing."""
    from auditkit.analyze.causal import read_causal
    from auditkit.extract.store import ActivationStore
    from auditkit.passes.causal import run_causal_check

    spec = stages.spec
    if spec.captions is None or spec.captions.causal is None:
        return
    store = ActivationStore(stages.run.activations)
    stats, mark = stages.sample_and_read(run_causal_check, captioner, record, store)
    axes = read_causal(stages.run.captions)["causal_axes"]
    keys = ("axis", "positive_group", "effect", "rho", "monotone", "slope")
    summary = [json_safe({k: row[k] for k in keys}) for row in axes.to_dict("records")]
    stages.record("causal", stats.to_json(), mark, captioner_key=record["key"], axes=summary)


def _cuda_version() -> str | None:
    import torch

    return torch.version.cuda if torch.cuda.is_available() else None


def _discover(stages: _Stages) -> None:
    """Open-vocabulary discovery (results/discovery.parquet); the pipeline is loaded only if
    some term prompt's units are not in the activation store."""
    from auditkit.passes.discovery import run_discovery

    spec = stages.spec
    if spec.captions is None or spec.captions.discovery is None:
        return
    mark = stages.executor.batches
    stats = run_discovery(
        spec, stages.plan, stages.run_dir, pipeline=stages.executor,
        show_progress=stages.show_progress,
    )  # fmt: skip
    stages.record("discovery", stats.to_json(), mark)


def _grounding_images(spec: AuditSpec) -> GroundingSelection | None:
    """The image-grounded axes' labelled images, loaded and checked (a UsageError naming each
    problem), or None without ``grounding:``."""
    if spec.grounding is None:
        return None
    from auditkit.passes.grounding import grounding_selection

    return grounding_selection(spec)


def _ground(stages: _Stages) -> None:
    """The image-grounded axes: the labelled images read through the denoiser into the
    grounding store; the pipeline is loaded only if some image is not stored. Stored images are
    reused only when they were read with this model's weights, device type and dtype."""
    from auditkit.extract import identity
    from auditkit.extract.store import ActivationStore
    from auditkit.passes.grounding import run_grounding

    selection = stages.grounding
    if selection is None:
        return
    root = stages.run.grounding_activations
    record = identity.read_record(root)
    local = stages.spec.execution.executor == "local"
    now = identity.for_spec(stages.spec.model, stages.cache_dir, stages.given, local, record)
    identity.refuse_mixing(root, record, now, len(ActivationStore(root).completed()))
    mark = stages.executor.batches
    stats = run_grounding(
        stages.spec, selection, stages.run, stages.executor, show_progress=stages.show_progress
    )
    if stats.units_run:
        if stages.executor.name != "local":
            info = stages.executor.info()
            now = {**now, "device": info.device.split(":")[0], "dtype": info.dtype}
        identity.write_record(root, now)
    stages.record("grounding", stats.to_json(), mark)


def _render(run_dir: Path, spec: AuditSpec, finished: Manifest) -> list[Path]:
    """The report, showing the manifest the run is about to seal."""
    from auditkit.report import render_report

    return render_report(run_dir, list(spec.report.formats), finished.to_json())


__all__ = ["RunOutcome", "default_cache_dir", "run_audit"]
