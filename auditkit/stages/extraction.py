"""The extraction stage: every pending unit's h into the run's activation store."""

from __future__ import annotations

from typing import Any

from auditkit.errors import UsageError
from auditkit.executors import describe
from auditkit.rundir import Manifest
from auditkit.stages.context import Stages, cuda_version
from auditkit.stages.images import caption_reader


def extract(stages: Stages, previous: Manifest | None) -> None:
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
        check_limits(stages, pending)
    load_model(stages)
    if stages.executor.name != "local":  # the workers' device and dtype, now known
        info = stages.executor.info()
        now = {**now, "device": info.device.split(":")[0], "dtype": info.dtype}
        identity.refuse_mixing(store.root, record, now, len(stored))
    if record is None or record != now:
        identity.write_record(store.root, now)
    reader = caption_reader(stages)
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


def check_limits(stages: Stages, pending: int) -> None:
    """Refuse (exit 2) extraction whose store growth or rough time exceeds the spec's
    ``execution.max_storage_gb`` or ``max_hours``, with the estimate and how to go on."""
    from auditkit.estimate import estimate_cost
    from auditkit.models.loading import existing_model_folder, resolve_device

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


def load_model(stages: Stages) -> None:
    """Load the pipeline (or start the workers) and record its provenance in the manifest."""
    spec, plan = stages.spec, stages.plan
    info = stages.executor.info()
    execution = describe(stages.executor)
    stages.update(
        device=info.device,
        dtype=info.dtype,
        extraction_fingerprint=plan.extraction_fingerprint,
        packages={**stages.manifest.packages, "cuda": cuda_version()},
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
