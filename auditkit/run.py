"""Run every stage of an audit into a run directory, resuming what is already there."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditkit.errors import UsageError
from auditkit.plan import AuditPlan, plan_audit
from auditkit.provenance import (
    hash_model_files,
    new_manifest,
    read_manifest,
    utc_now,
    write_bytes_atomic,
    write_json_atomic,
)
from auditkit.spec import AuditSpec, dump_spec, load_spec, spec_hash

if TYPE_CHECKING:
    from auditkit.caption import Captioner
    from auditkit.models.loading import LoadedPipeline


@dataclass
class RunOutcome:
    """Where a run wrote its results and what extraction did."""

    run_dir: Path
    manifest: dict[str, Any]
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
) -> RunOutcome:
    """Plan, extract (skipping finished units), caption when the spec asks (skipping captioned
    units), run the causal check when the spec asks (skipping done jobs), analyze and report
    into ``out_dir``."""
    if not isinstance(spec, AuditSpec):
        spec = load_spec(spec)
    run_dir = Path(out_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out {str(run_dir)!r} exists and is not a folder.")
    run_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = cache_dir or default_cache_dir()
    plan = plan_audit(spec)
    s_hash = spec_hash(spec)
    previous = _previous_manifest(run_dir)
    run_id = _run_id(s_hash, plan.plan_hash)
    write_bytes_atomic(run_dir / "spec.yaml", dump_spec(spec).encode())
    plan.write(run_dir / "plan.json")
    manifest = new_manifest(
        run_id=run_id, spec_hash=s_hash, plan_hash=plan.plan_hash, seeds=spec.seed_list
    )
    write_json_atomic(run_dir / "manifest.json", manifest)
    stages = _Stages(spec, plan, run_dir, manifest, cache_dir, show_progress)
    try:
        _extract(stages, previous)
        captioned = _caption(stages)
        if captioned is not None:
            _guidance(stages, *captioned)
            _causal(stages, *captioned)
        _discover(stages)
        _analyze(spec, plan, run_dir, manifest)
    except BaseException as exc:
        manifest["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        manifest["error"] = str(exc) or type(exc).__name__
        manifest["finished_utc"] = utc_now()
        write_json_atomic(run_dir / "manifest.json", manifest)
        raise
    manifest["status"] = "complete"
    manifest["finished_utc"] = utc_now()
    write_json_atomic(run_dir / "manifest.json", manifest)
    # The report is rendered from the sealed run; if rendering fails, 'auditkit report' redoes it.
    reports = _render(run_dir, spec) if render else []
    return RunOutcome(run_dir, manifest, reports)


def _run_id(s_hash: str, plan_hash: str) -> str:
    return hashlib.sha256(f"{s_hash}:{plan_hash}".encode()).hexdigest()[:12]


def _previous_manifest(run_dir: Path) -> dict[str, Any] | None:
    if not (run_dir / "manifest.json").is_file():
        return None
    try:
        return read_manifest(run_dir)
    except (ValueError, OSError):
        return None


@dataclass
class _Stages:
    """What the stages of one run share: spec and plan, the run folder and its manifest, and
    the pipeline once a stage has loaded it (so that it is loaded at most once per run)."""

    spec: AuditSpec
    plan: AuditPlan
    run_dir: Path
    manifest: dict[str, Any]
    cache_dir: Path
    show_progress: bool
    pipe: LoadedPipeline | None = None

    def save(self) -> None:
        write_json_atomic(self.run_dir / "manifest.json", self.manifest)

    def pipeline(self) -> _OnDemand:
        """The pipeline for the next stage: the loaded one, or loaded at its first call."""
        return _OnDemand(self.spec, self.pipe, self.cache_dir)

    def record(self, name: str, stats: dict[str, Any], used: _OnDemand, **extra: Any) -> None:
        """Record a finished stage (its stats, where it ran if it used the pipeline, and
        ``extra``) in the manifest, and keep the pipeline it may have loaded."""
        self.manifest["stages"][name] = {**stats, **used.where(), **extra}
        self.pipe = used.current
        self.save()


def _extract(stages: _Stages, previous: dict[str, Any] | None) -> None:
    """Extract pending units, loading the pipeline only if some are pending."""
    from auditkit.extract.store import ActivationStore

    spec, plan, manifest = stages.spec, stages.plan, stages.manifest
    store = ActivationStore(stages.run_dir / "activations")
    pending = len(plan.units) - len(store.completed() & {u.unit_id for u in plan.units})
    reusable = (
        previous is not None
        and previous.get("model") is not None
        and previous.get("extraction_fingerprint") == plan.extraction_fingerprint
    )
    if pending == 0 and reusable and previous is not None:
        # Nothing to compute: keep the provenance of the run that computed the activations.
        for key in ("model", "device", "dtype"):
            manifest[key] = previous[key]
        manifest["extraction_fingerprint"] = plan.extraction_fingerprint
        manifest["stages"]["extract"] = {
            "units_total": len(plan.units),
            "units_run": 0,
            "units_skipped": len(plan.units),
            "unet_evaluations": 0,
            "forward_passes": 0,
            "seconds": 0.0,
            "model_loaded": False,
        }
        stages.save()
        return

    from auditkit.extract.runner import extract_activations

    stages.pipe = _load_model(stages)
    stats = extract_activations(stages.pipe, spec, plan, store, show_progress=stages.show_progress)
    manifest["stages"]["extract"] = {**stats.to_json(), "model_loaded": True}
    stages.save()


def _load_model(stages: _Stages) -> LoadedPipeline:
    """Load the pipeline and record its provenance in the manifest."""
    from auditkit.models.loading import load_pipeline

    spec, plan, manifest = stages.spec, stages.plan, stages.manifest
    loaded = load_pipeline(spec.model, cache_dir=stages.cache_dir)
    manifest["device"] = loaded.device
    manifest["dtype"] = loaded.dtype
    manifest["extraction_fingerprint"] = plan.extraction_fingerprint
    manifest["packages"]["cuda"] = _cuda_version()
    manifest["model"] = {
        "id": spec.model.id,
        "revision": spec.model.revision,
        "pipeline_class": loaded.pipeline_class,
        "kind": loaded.kind,
        "uses_cfg": loaded.uses_cfg,
        "files": _model_files(loaded.model_dir, spec),
    }
    stages.save()
    return loaded


class _OnDemand:
    """The diffusion pipeline for a stage: the one already loaded, or loaded at the stage's
    first call (only a stage with missing work calls it)."""

    def __init__(self, spec: AuditSpec, loaded: LoadedPipeline | None, cache_dir: Path) -> None:
        self.spec, self.loaded, self.cache_dir = spec, loaded, cache_dir
        self.used: LoadedPipeline | None = None

    def __call__(self) -> LoadedPipeline:
        if self.used is None:
            from auditkit.models.loading import load_pipeline

            self.used = self.loaded or load_pipeline(self.spec.model, cache_dir=self.cache_dir)
        return self.used

    @property
    def current(self) -> LoadedPipeline | None:
        """The pipeline in memory after the stage (for the next one), if any."""
        return self.used or self.loaded

    def where(self) -> dict[str, Any]:
        """Device and dtype for the manifest, when the stage used the pipeline."""
        return {"device": self.used.device, "dtype": self.used.dtype} if self.used else {}


def _caption(stages: _Stages) -> tuple[Captioner, dict[str, Any]] | None:
    """Caption the selected units; the pipeline is loaded only if some are missing.

    Returns the captioner and its record (for the guidance sweep and the causal check), or None
    without a captions section."""
    from auditkit.caption import stage

    spec = stages.spec
    if spec.captions is None:
        return None
    captioner = stage.load_spec_captioner(spec.captions.captioner, deferred=True)
    record = stage.captioner_record(spec.captions.captioner, captioner)
    stages.manifest["captioner"] = record
    stages.save()
    # When extraction was already complete the manifest keeps the provenance of the run that
    # did it (same extraction fingerprint); where this pass ran is in stages.caption.
    pipeline = stages.pipeline()
    stats = stage.caption_images(
        spec,
        stages.plan,
        stages.run_dir / "captions",
        captioner,
        record,
        pipeline=pipeline,
        show_progress=stages.show_progress,
    )
    stages.record("caption", stats.to_json(), pipeline, captioner_key=record["key"])
    return captioner, record


def _guidance(stages: _Stages, captioner: Captioner, record: dict[str, Any]) -> None:
    """The guidance sweep (captions.guidance); the pipeline is loaded only if some image at some
    scale is missing."""
    from auditkit.caption.guidance import run_guidance_sweep

    pipeline = stages.pipeline()
    stats = run_guidance_sweep(
        stages.spec,
        stages.plan,
        stages.run_dir / "captions",
        captioner,
        record,
        pipeline=pipeline,
        show_progress=stages.show_progress,
    )
    if stats["scales"]:
        stages.record("guidance", stats, pipeline)


def _causal(stages: _Stages, captioner: Captioner, record: dict[str, Any]) -> None:
    """The causal check (dose-response per axis); the pipeline is loaded only if some steered
    image is missing."""
    from auditkit.caption.causal import read_causal, run_causal_check
    from auditkit.extract.store import ActivationStore

    spec, captions = stages.spec, stages.run_dir / "captions"
    if spec.captions is None or spec.captions.causal is None:
        return
    pipeline = stages.pipeline()
    stats = run_causal_check(
        spec,
        stages.plan,
        captions,
        ActivationStore(stages.run_dir / "activations"),
        captioner,
        record,
        pipeline=pipeline,
        show_progress=stages.show_progress,
    )
    axes = read_causal(captions)["causal_axes"]
    keys = ("axis", "positive_group", "effect", "rho", "monotone", "slope")
    summary = [{k: _plain(row[k]) for k in keys} for row in axes.to_dict("records")]
    stages.record("causal", stats.to_json(), pipeline, captioner_key=record["key"], axes=summary)


def _plain(value: Any) -> Any:
    """A table cell as plain JSON: numpy scalars unboxed, NaN as null."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and value != value else value


def _model_files(folder: Path | None, spec: AuditSpec) -> list[dict[str, Any]]:
    if folder is None:
        try:
            from huggingface_hub import snapshot_download

            folder = Path(
                snapshot_download(
                    spec.model.id, revision=spec.model.revision, local_files_only=True
                )
            )
        except Exception:  # the hub cache layout is not ours to validate
            return []
    return hash_model_files(folder)


def _cuda_version() -> str | None:
    import torch

    return torch.version.cuda if torch.cuda.is_available() else None


def _discover(stages: _Stages) -> None:
    """Open-vocabulary discovery (results/discovery.parquet); the pipeline is loaded only if
    some term prompt's units are not in the activation store."""
    from auditkit.caption.discovery import run_discovery

    spec = stages.spec
    if spec.captions is None or spec.captions.discovery is None:
        return
    pipeline = stages.pipeline()
    stats = run_discovery(
        spec, stages.plan, stages.run_dir, pipeline=pipeline, show_progress=stages.show_progress
    )
    stages.record("discovery", stats.to_json(), pipeline)


def _analyze(spec: AuditSpec, plan: AuditPlan, run_dir: Path, manifest: dict[str, Any]) -> None:
    from auditkit.analyze.latents import load_latents
    from auditkit.analyze.summary import read_extra_tables, summarize, write_results
    from auditkit.analyze.tables import analyze
    from auditkit.extract.store import ActivationStore

    latents = load_latents(ActivationStore(run_dir / "activations"), plan, spec.probe.aggregation)
    readings = None
    if spec.captions is not None and (run_dir / "captions" / "readings.parquet").is_file():
        from auditkit.caption.stage import read_captions

        readings = read_captions(run_dir / "captions")[1]
    from auditkit.caption.guidance import read_guidance_readings

    swept = read_guidance_readings(run_dir / "captions") if spec.captions is not None else None
    results = analyze(spec, plan, latents, readings, swept)
    _drop_stale_results(spec, results.tables, run_dir)
    summary = summarize(
        spec,
        results,
        run_id=manifest["run_id"],
        spec_hash=manifest["spec_hash"],
        plan_hash=manifest["plan_hash"],
        extra=read_extra_tables(run_dir),
    )
    if spec.gates:
        from auditkit.gates import evaluate_gates, gates_summary, write_gate_files

        outcomes = evaluate_gates(spec, results.tables)
        summary["gates"] = gates_summary(outcomes)
        write_results(results, summary, run_dir / "results")
        write_gate_files(
            run_dir / "results", outcomes, suite=spec.name, run_id=str(manifest["run_id"])
        )
        return
    write_results(results, summary, run_dir / "results")


def _drop_stale_results(spec: AuditSpec, tables: dict[str, Any], run_dir: Path) -> None:
    """Remove result files an earlier run in this folder wrote and this spec no longer makes
    (a dropped analysis, captions section, causal check, discovery or gates), so that nothing
    downstream (summary, report, gates, diff) reads them as this run's."""
    results, captions = run_dir / "results", run_dir / "captions"
    keep = {f"{name}.parquet" for name in tables}
    section = spec.captions
    if section is not None and section.discovery is not None:
        keep |= {"discovery.parquet", "discovered_terms.parquet"}
    stale = [p for p in results.glob("*.parquet") if p.name not in keep]
    if not spec.gates:
        stale += [results / "gates.json", results / "junit.xml"]
    if section is None or section.causal is None:
        stale += [captions / f"{n}.parquet" for n in ("causal", "causal_curve", "causal_axes")]
    if section is None:
        stale.append(captions / "exemplars.parquet")
    if section is None or not section.guidance:
        stale.append(captions / "guidance_readings.parquet")
    for path in stale:
        path.unlink(missing_ok=True)


def _render(run_dir: Path, spec: AuditSpec) -> list[Path]:
    from auditkit.report import render_report

    return render_report(run_dir, list(spec.report.formats))


def load_run_spec(run_dir: Path) -> AuditSpec:
    """The spec a run directory was made with."""
    path = run_dir / "spec.yaml"
    if not path.is_file():
        raise UsageError(
            f"{str(run_dir)!r} is not an auditkit run directory (no spec.yaml in it).",
            hint="pass the folder given to 'auditkit run --out'.",
        )
    return load_spec(path)


__all__ = ["RunOutcome", "default_cache_dir", "load_run_spec", "run_audit"]
