"""h of labelled images, through extraction's own path (the image-grounded axes).

Each image is encoded with the model's VAE (its family's adapter:
:meth:`~auditkit.models.adapters.base.ModelAdapter.encode_images`), and the ordinary pipeline
call of the audit runs (its steps, guidance scale and resolution; the grounding prompt), with
one change: at every denoiser call the latent input is the image's latent noised to that step's
timestep by the scheduler (:func:`auditkit.extract.feed.feed_latents`), the same latent in both
guidance halves. The hook point therefore sees h(noised image at t_k, t_k, prompt) at every step
k, and the capture, its reduction, the mean over the kept steps and the store are extraction's
(:func:`auditkit.extract.runner.capture_session`, :func:`~auditkit.extract.runner.
write_captured`). Each image's noise is drawn from its own seeded CPU generator, as a unit's
starting noise is, so an image's h does not depend on its batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from auditkit.extract.feed import feed_latents
from auditkit.extract.runner import (
    Captured,
    ExtractStats,
    capture_session,
    collect_captured,
    write_captured,
)
from auditkit.extract.store import ActivationStore
from auditkit.models.loading import LoadedPipeline
from auditkit.plan import WorkUnit
from auditkit.spec.audit import AuditSpec

if TYPE_CHECKING:
    from auditkit.executors import Executor


@dataclass(frozen=True)
class ImageUnit:
    """One labelled image to read: its store unit (``unit.seed`` seeds its noise, and
    ``unit.prompt`` is the text the denoiser is conditioned on) and its row in the images."""

    unit: WorkUnit
    row: int


def pixels_of(images: np.ndarray) -> torch.Tensor:
    """uint8 images [N, H, W, 3] as the VAE takes them: float32 [N, 3, H, W] in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def capture_images_batch(
    loaded: LoadedPipeline,
    spec: AuditSpec,
    images: np.ndarray,
    seeds: Sequence[int],
    prompt: str,
) -> Captured:
    """h of ``images`` (uint8 [N, H, W, 3] at ``model.resolution``) at ``spec``'s hook, each
    noised with the noise of its seed, conditioned on ``prompt``. Runs wherever the executor
    runs it."""
    from contextlib import ExitStack

    pipe, adapter = loaded.pipe, loaded.adapter
    resolution = spec.model.resolution
    if images.shape[1:3] != (resolution, resolution):
        raise ValueError(f"images of {images.shape[1:3]} px; the audit samples {resolution} px")
    pairs = [adapter.noise(pipe, int(seed), resolution) for seed in seeds]
    noise = torch.stack([n for n, _ in pairs]).to(loaded.device)
    with torch.inference_mode(), ExitStack() as hooks:
        clean = adapter.encode_images(pipe, pixels_of(images)).to(loaded.device)
        if tuple(clean.shape) != tuple(noise.shape):
            raise RuntimeError(
                f"the VAE encodes {resolution} px images to latents of shape "
                f"{list(clean.shape[1:])}, the pipeline starts from {list(noise.shape[1:])}"
            )
        session = hooks.enter_context(capture_session(loaded, spec, len(seeds)))
        hooks.enter_context(
            feed_latents(pipe.components, spec.probe.hook, clean, noise, adapter=adapter)
        )
        pipe(
            **adapter.call_kwargs(pipe),
            prompt=[prompt] * len(seeds),
            latents=noise.to(dtype=getattr(torch, loaded.dtype)),
            generator=[generator for _, generator in pairs],
            num_inference_steps=spec.model.steps,
            guidance_scale=spec.model.guidance_scale,
            height=resolution,
            width=resolution,
            output_type="latent",
        )
    return collect_captured([spec], [session])


def extract_images(
    source: LoadedPipeline | Executor,
    spec: AuditSpec,
    units: Sequence[ImageUnit],
    images: np.ndarray,
    store: ActivationStore,
    *,
    show_progress: bool = True,
) -> ExtractStats:
    """Capture and store the h of every unit of ``units`` not yet in ``store`` (rows of
    ``images``), in batches of ``batch_size``; finished units are never redone, and a run with
    none pending does not load the pipeline."""
    from auditkit.executors import Task, as_executor

    executor = as_executor(source)
    done = store.completed()
    todo = [u for u in units if u.unit.unit_id not in done]
    stats = ExtractStats(len(units), 0, len(units) - len(todo), 0, 0, 0.0, [])
    if not todo:
        return stats
    started = time.perf_counter()
    size = spec.batch_size
    batches = [todo[i : i + size] for i in range(0, len(todo), size)]
    tasks = [
        Task(
            capture_images_batch,
            (
                spec,
                images[[u.row for u in batch]],
                [u.unit.seed for u in batch],
                batch[0].unit.prompt,
            ),
            len(batch),
        )
        for batch in batches
    ]
    results = executor.map(tasks, "grounding", show_progress=show_progress)
    for batch, captured in zip(batches, results, strict=True):
        write_captured(spec, captured, 0, [u.unit for u in batch], range(len(batch)), store)
        stats.units_run += len(batch)
        stats.h_shape = list(captured.h[0].shape[2:])
        stats.denoiser_evaluations += captured.denoiser_samples
        stats.forward_passes += captured.denoiser_calls
    store.compact()
    stats.seconds = round(time.perf_counter() - started, 3)
    return stats


__all__ = ["ImageUnit", "capture_images_batch", "extract_images", "pixels_of"]
