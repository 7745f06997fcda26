"""Stage 3: run the pipeline over pending work units and store their h.

Each unit's initial noise comes from its own seeded CPU generator, and that same generator then
feeds any noise the scheduler draws between steps (LCM's multi-step sampling), so a unit's result
does not depend on the batch size, on which units share its batch, or on torch's global RNG. The
VAE decode is skipped (``output_type="latent"``): only the denoiser's internals are needed.
:func:`pipeline_inputs` is shared with the captioning stage, which samples the same trajectories
again and decodes them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from auditkit.extract.hooks import capture_h
from auditkit.extract.store import ActivationStore
from auditkit.models.adapters import ModelAdapter, for_pipeline_class
from auditkit.models.adapters.base import GENERIC
from auditkit.models.loading import LoadedPipeline
from auditkit.plan import AuditPlan, WorkUnit
from auditkit.progress import Progress
from auditkit.spec.audit import AuditSpec


@dataclass
class ExtractStats:
    """What one extraction pass did (recorded in the manifest)."""

    units_total: int
    units_run: int
    units_skipped: int
    denoiser_evaluations: int
    forward_passes: int
    seconds: float
    h_shape: list[int]

    def to_json(self) -> dict[str, Any]:
        """Manifest form."""
        return dict(self.__dict__)


def unit_noise(
    pipe: Any, seed: int, resolution: int, adapter: ModelAdapter | None = None
) -> tuple[torch.Tensor, torch.Generator]:
    """The unit's starting latent (float32, in the shape the pipeline's ``latents=`` takes per
    sample: [C, h, w], or FLUX's packed tokens) and its CPU generator, left positioned just
    after that latent so the scheduler's own noise continues the same seeded stream. The
    family's adapter draws it (found from the pipeline's class when not given)."""
    return (adapter or adapter_of(pipe)).noise(pipe, seed, resolution)


def adapter_of(pipe: Any) -> ModelAdapter:
    """The adapter of ``pipe``'s family (the generic conventions when none serves it)."""
    return for_pipeline_class(type(pipe).__name__) or GENERIC


def initial_noise(pipe: Any, seed: int, resolution: int) -> torch.Tensor:
    """The unit's starting latent, from its own CPU generator (float32)."""
    return unit_noise(pipe, seed, resolution)[0]


def pipeline_inputs(
    loaded: LoadedPipeline, spec: AuditSpec, units: Sequence[WorkUnit]
) -> dict[str, Any]:
    """Keyword arguments of one pipeline call over ``units``, all but ``output_type``.

    Extraction and captioning both call the pipeline with exactly these, so the image a
    caption reads comes from the trajectory whose h was stored. One generator per unit (a
    list, which diffusers splits per sample) keeps step noise independent of the batch.
    """
    pipe = loaded.pipe
    pairs = [unit_noise(pipe, u.seed, spec.model.resolution, loaded.adapter) for u in units]
    latents = torch.stack([noise for noise, _ in pairs])
    return {
        **loaded.adapter.call_kwargs(pipe),
        "prompt": [u.prompt for u in units],
        "latents": latents.to(device=loaded.device, dtype=getattr(torch, loaded.dtype)),
        "generator": [generator for _, generator in pairs],
        "num_inference_steps": spec.model.steps,
        "guidance_scale": spec.model.guidance_scale,
        "height": spec.model.resolution,
        "width": spec.model.resolution,
    }


def pending_units(plan: AuditPlan, store: ActivationStore) -> list[WorkUnit]:
    """Units of ``plan`` not yet in ``store``, in plan order."""
    done = store.completed()
    return [u for u in plan.units if u.unit_id not in done]


def extract_activations(
    loaded: LoadedPipeline,
    spec: AuditSpec,
    plan: AuditPlan,
    store: ActivationStore,
    *,
    show_progress: bool = True,
) -> ExtractStats:
    """Capture h for every pending unit of ``plan``; finished units are never redone."""
    pipe = loaded.pipe
    todo = pending_units(plan, store)
    started = time.perf_counter()
    stats = ExtractStats(len(plan.units), 0, len(plan.units) - len(todo), 0, 0, 0.0, [])
    if not todo:
        return stats
    steps = spec.model.steps
    keep = None if spec.probe.steps == "all" else {s for s in spec.probe.steps if s < steps}
    if keep is not None and not keep:
        keep = {steps - 1}
    store_dtype = getattr(torch, spec.probe.store_dtype)
    progress = Progress("extract", len(todo), enabled=show_progress)
    for start in range(0, len(todo), spec.batch_size):
        batch = todo[start : start + spec.batch_size]
        with (
            torch.inference_mode(),
            capture_h(
                pipe.components,
                spec.probe.hook,
                expected_batch=len(batch),
                keep_steps=keep,
                halves=(spec.probe.guidance_half,),
                spatial_pool=spec.probe.spatial_pool,
                store_dtype=store_dtype,
                adapter=loaded.adapter,
                tokens=spec.probe.tokens,
            ) as session,
        ):
            pipe(**pipeline_inputs(loaded, spec, batch), output_type="latent")
        captures = session.by_step(spec.probe.guidance_half)
        if not captures:
            raise RuntimeError(f"hook point {spec.probe.hook!r} was never called")
        stacked = torch.stack([c.tensor for c in captures], dim=1).cpu()  # [B, S, ...]
        kept_steps = [c.step for c in captures]
        timesteps = [c.timestep for c in captures]
        tensors = {u.unit_id: stacked[i].clone() for i, u in enumerate(batch)}
        rows = [
            {
                "unit_id": u.unit_id,
                "prompt_id": u.prompt_id,
                "seed": int(u.seed),
                "shape": json.dumps(list(stacked.shape[1:])),
                "steps": json.dumps(kept_steps),
                "timesteps": json.dumps(timesteps),
                "dtype": spec.probe.store_dtype,
            }
            for u in batch
        ]
        store.write_batch(tensors, rows)
        stats.units_run += len(batch)
        stats.denoiser_evaluations += session.denoiser_samples
        stats.forward_passes += session.denoiser_calls
        stats.h_shape = list(stacked.shape[2:])
        progress.advance(len(batch))
    store.compact()
    stats.seconds = round(time.perf_counter() - started, 3)
    return stats
