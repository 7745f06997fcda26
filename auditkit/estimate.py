"""What running a plan will take: the work and storage counted exactly, and the time estimated
roughly from the denoiser's size (:func:`estimate_cost`) or from an earlier run's measured rate
(:func:`measured_rate`). ``auditkit plan --measure`` times real passes instead
(:mod:`auditkit.passes.measure`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from auditkit.errors import UsageError
from auditkit.layout import REFERENCE_PARAMS, StoredLayout, model_geometry, stored_layout
from auditkit.plan import AuditPlan
from auditkit.spec.audit import AuditSpec


@dataclass(frozen=True)
class CostEstimate:
    """What running the plan will take; time is a rough figure for the named device."""

    prompts: int
    units: int
    images: int
    denoiser_evaluations: int
    forward_passes: int
    activation_bytes: int
    h_shape: tuple[int, ...]
    seconds: float
    device: str
    basis: str
    uses_cfg: bool = True
    seconds_per_evaluation: float = 0.0
    cfg_capable: bool = True
    layout: StoredLayout | None = None


# Seconds per U-Net sample-evaluation of an SD 1.5-sized U-Net (860 M parameters) at a 64x64
# latent, at a large batch. Rough public figures; the estimate scales them by model size and
# latent area. Real rates are recorded in the manifest of every run.
_REFERENCE_SECONDS = {"cuda": 0.02, "mps": 0.25, "cpu": 4.0}
_REFERENCE_LATENT_AREA = 64 * 64


def estimate_cost(
    spec: AuditSpec, plan: AuditPlan, *, device: str, model_dir: Path | None = None
) -> CostEstimate:
    """Count work and storage exactly; estimate time from the denoiser's size (local models),
    through the model family's adapter (:func:`model_geometry`)."""
    info = model_geometry(spec, model_dir)
    steps = spec.model.steps
    layout = stored_layout(spec, info.h_shape)
    units = len(plan.units)
    doubled = 2 if info.cfg_capable and spec.model.guidance_scale > 1.0 else 1
    evaluations = units * steps * doubled
    forwards = -(-units // spec.batch_size) * steps
    kind = device.split(":")[0]
    scale = (info.params / REFERENCE_PARAMS) * (info.latent_area / _REFERENCE_LATENT_AREA)
    per_evaluation = _REFERENCE_SECONDS.get(kind, 4.0) * scale
    seconds = evaluations * per_evaluation
    basis = "denoiser size read from the model folder" if info.known else "SD 1.5-sized U-Net"
    return CostEstimate(
        prompts=len({p.prompt_id for p in plan.prompts}),
        units=units,
        images=units,
        denoiser_evaluations=evaluations,
        forward_passes=forwards,
        activation_bytes=units * layout.bytes_per_unit,
        layout=layout,
        h_shape=info.h_shape,
        seconds=seconds,
        device=device,
        basis=basis,
        uses_cfg=doubled == 2,
        seconds_per_evaluation=per_evaluation,
        cfg_capable=info.cfg_capable,
    )


def measured_rate(run_dir: Path, spec: AuditSpec, device: str) -> float:
    """Seconds per denoiser evaluation that the extraction of an earlier run of the same model on
    the same kind of device took (its manifest), for a time estimate better than the rough one.

    Raises :class:`UsageError` when the run cannot tell: no manifest, another model or device
    kind, or an extraction that computed nothing (a rerun keeps no rate)."""
    from auditkit.rundir import MANIFEST_VERSION, RunDir, read_versioned_json

    where = f"--rate-from {str(run_dir)!r}"
    try:  # only the fields below are needed, so an incomplete manifest is read as far as it goes
        manifest = read_versioned_json(
            RunDir(run_dir).manifest, newest=MANIFEST_VERSION, kind="manifest"
        )
    except (OSError, ValueError, UsageError) as exc:
        raise UsageError(f"{where}: no readable manifest.json there ({exc}).") from exc
    model = (manifest.get("model") or {}).get("id")
    if model != spec.model.id:
        raise UsageError(
            f"{where}: that run audited model {model!r}, this spec {spec.model.id!r}; a rate "
            "only carries over for the same model."
        )
    ran_on = str(manifest.get("device") or "").split(":")[0]
    if ran_on != device.split(":")[0]:
        raise UsageError(
            f"{where}: that run extracted on {ran_on or 'an unrecorded device'}, the estimate "
            f"is for {device}; pass --device {ran_on} or a run made on {device}."
        )
    extract = (manifest.get("stages") or {}).get("extract") or {}
    # runs made before the model adapters named the count after the U-Net
    evaluations = extract.get("denoiser_evaluations", extract.get("unet_evaluations")) or 0
    seconds = extract.get("seconds") or 0.0
    if evaluations <= 0 or seconds <= 0:
        raise UsageError(
            f"{where}: its extraction computed nothing (a rerun over finished units), so it "
            "has no measured rate; use a run that extracted."
        )
    return float(seconds) / float(evaluations)
