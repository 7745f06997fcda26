"""Stage 3: run the pipeline over pending work units and store their h.

Each unit's initial noise comes from its own seeded CPU generator, and that same generator then
feeds any noise the scheduler draws between steps (LCM's multi-step sampling), so a unit's result
does not depend on the batch size, on which units share its batch, or on torch's global RNG. The
VAE decode is skipped (``output_type="latent"``): only the denoiser's internals are needed,
except in a batch holding units whose images the captioning stage will read. Such a batch is
decoded in the same pipeline call and its images handed to that stage's reader
(:class:`ImageReader`), so the caption reads the very trajectory whose h was stored and the
stage need not sample it again. :func:`pipeline_inputs` is shared with the passes that sample
again (the captioning stage for units extraction did not decode, the guidance sweep, the causal
check).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from auditkit.extract.encode_once import encode_once
from auditkit.extract.hooks import HookSession, SamplingDone, StopWhenRead, capture_h
from auditkit.extract.store import ActivationStore
from auditkit.models.adapters import ModelAdapter, for_pipeline_class
from auditkit.models.adapters.base import GENERIC
from auditkit.models.loading import LoadedPipeline
from auditkit.plan import AuditPlan, WorkUnit
from auditkit.spec.audit import AuditSpec

if TYPE_CHECKING:
    from auditkit.executors import Executor


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


def as_uint8(images: object) -> np.ndarray:
    """The pipeline's float images in [0, 1] as uint8 [N, H, W, 3]."""
    return (np.clip(np.asarray(images), 0.0, 1.0) * 255).round().astype(np.uint8)


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


class ImageReader(Protocol):
    """Who reads the images of some units as extraction samples them (the captioning stage's
    :class:`auditkit.caption.stage.CaptionReader`)."""

    wanted: set[str]
    """Unit ids whose images are wanted (shrinks as they are read)."""

    def hand_over(self, units: Sequence[WorkUnit], images: np.ndarray) -> None:
        """Read the uint8 images [N, H, W, 3] of ``units``; a failure to read them must not
        stop extraction (the reader's own stage reports it)."""


def pending_units(plan: AuditPlan, store: ActivationStore) -> list[WorkUnit]:
    """Units of ``plan`` not yet in ``store``, in plan order."""
    done = store.completed()
    return [u for u in plan.units if u.unit_id not in done]


def extract_activations(
    source: LoadedPipeline | Executor,
    spec: AuditSpec,
    plan: AuditPlan,
    store: ActivationStore,
    *,
    show_progress: bool = True,
    also: Sequence[tuple[AuditSpec, AuditPlan, ActivationStore]] = (),
    images: ImageReader | None = None,
) -> ExtractStats:
    """Capture h for every pending unit of ``plan``; finished units are never redone.

    ``source``: the loaded pipeline, or the executor whose workers sample (batches are cut
    here, in plan order, so every executor runs the same batches; results are written here, as
    they come back in order, so a batch a dead worker left is retried and still stored once).
    ``also``: more (spec, plan, store) targets that differ only in the hook point (a layer
    sweep); each sampled trajectory is read at every target's hook in the same pass, and each
    store gets the units it lacks. The stats are ``plan``'s.
    ``images``: a reader of the images of some units (:class:`ImageReader`); a batch holding
    one of them is decoded too, and the wanted units' images are handed over once its h is
    stored.
    """
    from auditkit.executors import Task, as_executor

    executor = as_executor(source)
    targets = [(spec, plan, store), *also]
    done = [t[2].completed() for t in targets]
    units_of = [{(u.prompt_id, u.seed): u for u in t[1].units} for t in targets]
    pairs = list(zip(units_of, done, strict=True))
    todo = [
        u for u in plan.units if any(m[(u.prompt_id, u.seed)].unit_id not in d for m, d in pairs)
    ]
    started = time.perf_counter()
    skipped = sum(1 for u in plan.units if u.unit_id in done[0])
    stats = ExtractStats(len(plan.units), 0, skipped, 0, 0, 0.0, [])
    if not todo:
        return stats
    specs = [t[0] for t in targets]
    batches = [todo[i : i + spec.batch_size] for i in range(0, len(todo), spec.batch_size)]
    decoded = images.wanted if images is not None else set()
    decode = [any(u.unit_id in decoded for u in batch) for batch in batches]
    tasks = [
        Task(capture_batch, (specs, batch, d), len(batch))
        for batch, d in zip(batches, decode, strict=True)
    ]
    results = executor.map(tasks, "extract", show_progress=show_progress)
    for batch, captured in zip(batches, results, strict=True):
        for k, ((_spec, _plan, t_store), units, d) in enumerate(
            zip(targets, units_of, done, strict=True)
        ):
            mine = [units[(u.prompt_id, u.seed)] for u in batch]
            wanted = [i for i, u in enumerate(mine) if u.unit_id not in d]
            write_captured(specs[k], captured, k, [mine[i] for i in wanted], wanted, t_store)
            d.update(mine[i].unit_id for i in wanted)
            if t_store is store:
                stats.units_run += len(wanted)
                stats.h_shape = list(captured.h[k].shape[2:])
        stats.denoiser_evaluations += captured.denoiser_samples
        stats.forward_passes += captured.denoiser_calls
        if images is not None and captured.images is not None:
            rows = [i for i, u in enumerate(batch) if u.unit_id in images.wanted]
            images.hand_over([batch[i] for i in rows], captured.images[rows])
    for _spec, _plan, t_store in targets:
        t_store.compact()
    stats.seconds = round(time.perf_counter() - started, 3)
    return stats


@dataclass
class Captured:
    """What one pipeline call captured: per target hook, h [B, kept steps, ...] on the CPU in
    the store's dtype, its kept steps and timesteps; the denoiser's work; and, when the call
    decoded, its uint8 images [B, H, W, 3]."""

    h: list[torch.Tensor]
    steps: list[list[int]]
    timesteps: list[list[float]]
    denoiser_samples: int
    denoiser_calls: int
    means: list[torch.Tensor | None] = field(default_factory=list)
    mean_steps: list[list[int]] = field(default_factory=list)
    images: np.ndarray | None = None


def capture_batch(
    loaded: LoadedPipeline,
    specs: Sequence[AuditSpec],
    units: Sequence[WorkUnit],
    decode: bool = False,
) -> Captured:
    """Sample ``units`` once (the first spec's inputs; the specs differ only in the hook point)
    and capture h at every spec's hook; with ``decode``, the same call decodes the images (as
    the passes that sample again decode theirs). Runs wherever the executor runs it."""
    from contextlib import ExitStack

    # without images to decode, the call ends once every hook has read its last kept step (the
    # up-blocks of the final step, or every step after the last one a spec keeps, are never
    # run). A compiled denoiser runs to the end: the stop is raised from inside its graph.
    stop = None if decode or specs[0].execution.compile else StopWhenRead(len(specs))
    with torch.inference_mode(), ExitStack() as hooks, encode_once(loaded.pipe):
        sessions = [
            hooks.enter_context(capture_session(loaded, s, len(units), stop)) for s in specs
        ]
        output = "np" if decode else "latent"
        try:
            result = loaded.pipe(**pipeline_inputs(loaded, specs[0], units), output_type=output)
        except SamplingDone:
            result = None
    captured = collect_captured(specs, sessions)
    if decode:
        assert result is not None
        captured.images = as_uint8(result.images)
    return captured


def collect_captured(specs: Sequence[AuditSpec], sessions: Sequence[HookSession]) -> Captured:
    """What the ``capture_session`` of each spec collected in one pipeline call, as stored:
    h at the kept steps [B, steps, ...] and the mean over the kept steps, on the CPU."""
    out = Captured([], [], [], sessions[0].denoiser_samples, sessions[0].denoiser_calls)
    for spec, session in zip(specs, sessions, strict=True):
        captures = session.by_step(spec.probe.guidance_half)
        if not captures:
            raise RuntimeError(f"hook point {spec.probe.hook!r} was never called")
        out.h.append(torch.stack([c.tensor for c in captures], dim=1).cpu())
        out.steps.append([c.step for c in captures])
        out.timesteps.append([c.timestep for c in captures])
        mean = session.mean(spec.probe.guidance_half, getattr(torch, spec.probe.dtype_stored))
        out.means.append(None if mean is None else mean.cpu())
        out.mean_steps.append(list(session.summed_steps) if mean is not None else [])
    return out


def capture_session(
    loaded: LoadedPipeline, spec: AuditSpec, batch: int, stop: StopWhenRead | None = None
) -> Any:
    """The capture of ``spec``'s hook point for one pipeline call of ``batch`` units (the
    kept steps, the stored ones and the mean over them, as the store keeps them); with
    ``stop``, it ends the call once its last kept step is read (with every other capture's)."""
    steps = spec.model.steps
    keep = None if spec.probe.steps == "all" else {s for s in spec.probe.steps if s < steps}
    if keep is not None and not keep:
        keep = {steps - 1}
    chosen = spec.probe.step_h_stored
    snapshots = keep if chosen == "all" else {s for s in chosen if keep is None or s in keep}
    everything = set(range(steps)) if keep is None else keep
    if snapshots is not None and not snapshots:
        snapshots = {max(everything)}
    mean_over = None if chosen == "all" or snapshots == everything else everything
    return capture_h(
        loaded.pipe.components,
        spec.probe.hook,
        expected_batch=batch,
        keep_steps=snapshots,
        halves=(spec.probe.guidance_half,),
        spatial_pool=spec.probe.spatial_pool,
        store_dtype=getattr(torch, spec.probe.dtype_stored),
        adapter=loaded.adapter,
        tokens=spec.probe.tokens,
        mean_over=mean_over,
        stop=None if stop is None else (stop, steps, max(everything)),
    )


def write_captured(
    spec: AuditSpec,
    captured: Captured,
    target: int,
    units: Sequence[WorkUnit],
    rows_of: Sequence[int],
    store: ActivationStore,
) -> None:
    """Write the captured h of ``units`` (rows ``rows_of`` of the batch, at ``target``'s hook)
    to ``store`` (an audit's activation store, or the image-grounded axes' own)."""
    if not units:
        return
    stacked = captured.h[target]
    kept_steps = json.dumps(captured.steps[target])
    timesteps = json.dumps(captured.timesteps[target])
    tensors = {u.unit_id: stacked[i].clone() for u, i in zip(units, rows_of, strict=True)}
    mean = captured.means[target] if captured.means else None
    means = (
        {u.unit_id: mean[i].clone() for u, i in zip(units, rows_of, strict=True)}
        if mean is not None
        else {}
    )
    mean_steps = json.dumps(captured.mean_steps[target]) if mean is not None else ""
    rows = [
        {
            "unit_id": u.unit_id,
            "prompt_id": u.prompt_id,
            "seed": int(u.seed),
            "shape": json.dumps(list(stacked.shape[1:])),
            "steps": kept_steps,
            "timesteps": timesteps,
            "dtype": spec.probe.dtype_stored,
            "mean_steps": mean_steps,
        }
        for u in units
    ]
    store.write_batch(tensors, rows, means)
