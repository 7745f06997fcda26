"""The image-grounded axes' stage: labelled images read through the denoiser."""

from __future__ import annotations

from typing import TYPE_CHECKING

from auditkit.spec import AuditSpec
from auditkit.stages.context import Stages

if TYPE_CHECKING:
    from auditkit.passes.grounding import GroundingSelection


def grounding_images(spec: AuditSpec) -> GroundingSelection | None:
    """The image-grounded axes' labelled images, loaded and checked (a UsageError naming each
    problem), or None without ``grounding:``."""
    if spec.grounding is None:
        return None
    from auditkit.passes.grounding import grounding_selection

    return grounding_selection(spec)


def ground(stages: Stages) -> None:
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
