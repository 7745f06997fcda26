"""Real images through the denoiser: ``feed_latents`` replaces the denoiser's latent input, at
every call, by given images' latents noised to that step's timestep (the image-grounded axes),
so that a :func:`~auditkit.extract.hooks.capture_h` opened with it reads h of real images
through the ordinary pipeline call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from auditkit.extract.hooks import resolve_hook_point, run_eagerly
from auditkit.models.adapters.base import GENERIC, ModelAdapter


@dataclass
class FeedSession:
    """What a ``feed_latents`` block did: the denoiser calls whose latent input it replaced,
    and the scheduler timestep each was noised to."""

    denoiser_calls: int = 0
    timesteps: list[float] = field(default_factory=list)


@contextmanager
def feed_latents(
    components: dict[str, Any],
    hook: str,
    clean: torch.Tensor,
    noise: torch.Tensor,
    *,
    adapter: ModelAdapter = GENERIC,
) -> Iterator[FeedSession]:
    """Feed the denoiser ``clean`` latents noised to each step's timestep, in place of the
    pipeline's own latent, for one pipeline call of ``clean.shape[0]`` samples.

    ``clean`` and ``noise`` ([N, ...] float32, on the device) are in the form the pipeline's
    ``latents=`` takes (the family's adapter encodes images into it:
    :meth:`~auditkit.models.adapters.base.ModelAdapter.encode_images`). At the k-th denoiser call
    the scheduler's k-th timestep t_k is read from ``components["scheduler"]`` (the pipeline has
    set it), ``clean`` is noised to t_k with ``noise`` by the scheduler and scaled as the
    pipeline scales its latent (:meth:`~auditkit.models.adapters.base.ModelAdapter.fed_latent`),
    repeated for both guidance halves when the batch is doubled, and put in place of the
    denoiser's latent argument. The denoiser is the component ``hook`` starts with, validated
    as :func:`capture_h` validates it; the hook is removed in ``finally``. The pipeline's own
    trajectory goes on from the denoiser's outputs and is thrown away: only h is read.
    """
    denoiser, _module = resolve_hook_point(components, hook)
    scheduler = components.get("scheduler")
    if scheduler is None or not hasattr(scheduler, "timesteps"):
        raise RuntimeError("the pipeline has no scheduler whose timesteps the images follow")
    n = int(clean.shape[0])
    if tuple(noise.shape) != tuple(clean.shape):
        raise RuntimeError(
            f"noise of shape {list(noise.shape)} for latents of shape {list(clean.shape)}"
        )
    session = FeedSession()

    def before_denoiser(
        _mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        step = session.denoiser_calls
        timesteps = scheduler.timesteps
        if timesteps is None or step >= len(timesteps):
            raise RuntimeError(
                f"denoiser call {step + 1} has no scheduler timestep (the scheduler has "
                f"{0 if timesteps is None else len(timesteps)}): choose a scheduler that calls "
                "the denoiser once per step"
            )
        current = adapter.latent_input(args, kwargs)
        if not isinstance(current, torch.Tensor):
            raise RuntimeError("the denoiser was called without a latent tensor to replace")
        t = timesteps[step]
        latent = adapter.fed_latent(scheduler, clean, noise, t)
        if current.shape[0] == 2 * n:  # classifier-free guidance: the same image in each half
            latent = torch.cat([latent, latent])
        elif current.shape[0] != n:
            raise RuntimeError(
                f"the denoiser saw batch {current.shape[0]}, expected {n} or {2 * n}"
            )
        if tuple(latent.shape[1:]) != tuple(current.shape[1:]):
            raise RuntimeError(
                f"the images' latents have shape {list(latent.shape[1:])} per sample, the "
                f"denoiser's input {list(current.shape[1:])}"
            )
        session.denoiser_calls += 1
        session.timesteps.append(float(torch.as_tensor(t).flatten()[0].item()))
        fed = latent.to(device=current.device, dtype=current.dtype)
        return adapter.with_latent_input(args, kwargs, fed)

    handle = denoiser.register_forward_pre_hook(
        run_eagerly(denoiser, before_denoiser), with_kwargs=True
    )
    try:
        yield session
    finally:
        handle.remove()
