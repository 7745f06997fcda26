"""Sampling the audit's trajectories again, from the loaded pipeline, for the passes after
extraction.

The captioning stage, the guidance sweep and the causal check decode images; discovery extracts
the h of its term prompts. All of them go through :class:`Sampler`, so they share:

* **The inputs.** Every image is sampled with the inputs extraction used
  (:func:`auditkit.extract.runner.pipeline_inputs`: the unit's seeded initial noise and
  generator, the same steps, guidance and resolution), so the image a captioner reads comes from
  the trajectory whose h was stored. A :class:`Draw` may change only the guidance scale (the
  guidance sweep) or add ``alpha * g`` to the hook point's output at every step (the causal
  check, :func:`auditkit.extract.hooks.steer_h`).
* **The pipeline on demand.** It is loaded (``pipeline()``, called once) at the first batch, so
  a pass with nothing missing never loads the diffusion model.
* **The batching.** Draws are sampled in batches of ``captions.batch_size`` (else the audit's
  ``batch_size``), in the order given; a batch never mixes guidance scales or steering
  directions. One progress line per pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from auditkit.models.loading import LoadedPipeline
from auditkit.plan import AuditPlan, WorkUnit
from auditkit.spec.audit import AuditSpec

if TYPE_CHECKING:
    from auditkit.executors import Executor
    from auditkit.extract.runner import ExtractStats
    from auditkit.extract.store import ActivationStore

Item = TypeVar("Item")


@dataclass(frozen=True)
class Steering:
    """``alpha * vector`` added to the hook point's output at every step, in both guidance
    halves; ``key`` names the direction (a batch never mixes two)."""

    key: str
    vector: np.ndarray  # float32, one sample of the hook output's shape, e.g. [C, H, W]
    alpha: float


@dataclass(frozen=True)
class Draw:
    """One image to sample: ``unit``, at the audit's guidance scale or ``guidance_scale``,
    steered or not."""

    unit: WorkUnit
    guidance_scale: float | None = None
    steering: Steering | None = None

    @property
    def batch_key(self) -> tuple[float | None, str | None]:
        """What the draws of one batch share (one pipeline call, one steering hook)."""
        return self.guidance_scale, None if self.steering is None else self.steering.key


def generate_images(
    loaded: LoadedPipeline,
    spec: AuditSpec,
    units: Sequence[WorkUnit],
    *,
    guidance_scale: float | None = None,
) -> np.ndarray:
    """uint8 images [N, H, W, 3] of ``units``, sampled exactly as extraction samples them
    (at ``guidance_scale`` instead of ``model.guidance_scale`` where given)."""
    return _generate(loaded, spec, units, guidance_scale, None)


def generate_steered_images(
    loaded: LoadedPipeline,
    spec: AuditSpec,
    direction: np.ndarray,
    units: Sequence[WorkUnit],
    alphas: Sequence[float],
) -> np.ndarray:
    """uint8 images [N, H, W, 3] of ``units``, sampled as extraction samples them, with
    ``alphas[i] * direction`` added to the hook point's output for unit i at every step."""
    return _generate(loaded, spec, units, None, (direction, alphas))


def sample_draws(loaded: LoadedPipeline, spec: AuditSpec, draws: Sequence[Draw]) -> np.ndarray:
    """uint8 images of one batch of draws (which share their :attr:`Draw.batch_key`)."""
    first = draws[0]
    steering = None
    if first.steering is not None:
        alphas = [d.steering.alpha for d in draws if d.steering is not None]
        steering = (first.steering.vector, alphas)
    return _generate(loaded, spec, [d.unit for d in draws], first.guidance_scale, steering)


def _generate(
    loaded: LoadedPipeline,
    spec: AuditSpec,
    units: Sequence[WorkUnit],
    guidance_scale: float | None,
    steering: tuple[np.ndarray, Sequence[float]] | None,
) -> np.ndarray:
    """One pipeline call over ``units`` with extraction's inputs, decoded to uint8 pixels."""
    import torch

    from auditkit.extract.encode_once import encode_once
    from auditkit.extract.hooks import steer_h
    from auditkit.extract.runner import as_uint8, pipeline_inputs

    steer: AbstractContextManager[Any] = nullcontext()
    if steering is not None:
        direction, alphas = steering
        g = torch.from_numpy(np.ascontiguousarray(direction, dtype=np.float32)).to(loaded.device)
        scale = torch.tensor([float(a) for a in alphas], dtype=torch.float32)
        components, hook = loaded.pipe.components, spec.probe.hook
        steer = steer_h(
            components, hook, g, scale, expected_batch=len(units), adapter=loaded.adapter
        )
    with torch.inference_mode(), steer, encode_once(loaded.pipe):
        inputs = pipeline_inputs(loaded, spec, units)
        if guidance_scale is not None:
            inputs["guidance_scale"] = float(guidance_scale)
        images = loaded.pipe(**inputs, output_type="np").images
    return as_uint8(images)


def batched(
    items: Sequence[Item], size: int, key: Callable[[Item], object]
) -> Iterator[list[Item]]:
    """Consecutive items of equal ``key`` in batches of at most ``size``, in order."""
    start = 0
    while start < len(items):
        end = start + 1
        while end < len(items) and end - start < size and key(items[end]) == key(items[start]):
            end += 1
        yield list(items[start:end])
        start = end


class Sampler:
    """Every way a pass after extraction runs the pipeline, through one executor.

    ``source`` is the :class:`~auditkit.executors.Executor` (or a pipeline, or a callable that
    loads one, run locally); the pipeline is loaded, or the workers started, at the first
    batch, and :attr:`model_loaded` says whether that happened.
    """

    def __init__(
        self,
        spec: AuditSpec,
        source: Executor | LoadedPipeline | Callable[[], LoadedPipeline],
        *,
        show_progress: bool = True,
    ) -> None:
        from auditkit.executors import as_executor

        self.spec = spec
        self.executor = as_executor(source)
        self.show_progress = show_progress
        self._mark = self.executor.batches

    @property
    def model_loaded(self) -> bool:
        """Whether this sampler ran the pipeline (so loaded it, or started the workers)."""
        return self.executor.batches > self._mark

    @property
    def batch_size(self) -> int:
        """Images per pipeline call: ``captions.batch_size``, else the audit's ``batch_size``."""
        captions = self.spec.captions
        return (captions.batch_size if captions is not None else None) or self.spec.batch_size

    def sample(
        self, items: Sequence[Item], draw: Callable[[Item], Draw], label: str
    ) -> Iterator[tuple[list[Item], np.ndarray]]:
        """Sample the image ``draw(item)`` of every item, in batches; yields each batch of
        items with its uint8 images [N, H, W, 3], in order. Loads the pipeline only if there
        are items."""
        from auditkit.executors import Task

        draws = [draw(item) for item in items]
        chosen = list(batched(range(len(items)), self.batch_size, lambda i: draws[i].batch_key))
        tasks = [Task(sample_draws, (self.spec, [draws[i] for i in c]), len(c)) for c in chosen]
        results = self.executor.map(tasks, label, show_progress=self.show_progress)
        for batch, images in zip(chosen, results, strict=True):
            yield [items[i] for i in batch], images

    def extract(self, plan: AuditPlan, store: ActivationStore) -> ExtractStats:
        """Capture and store the h of every pending unit of ``plan``
        (:func:`auditkit.extract.runner.extract_activations`); loads the pipeline."""
        from auditkit.extract.runner import extract_activations

        return extract_activations(
            self.executor, self.spec, plan, store, show_progress=self.show_progress
        )


__all__ = [
    "Draw",
    "Sampler",
    "Steering",
    "batched",
    "generate_images",
    "generate_steered_images",
    "sample_draws",
]
