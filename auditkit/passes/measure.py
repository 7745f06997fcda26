"""``auditkit plan --measure``: time a few real passes of the spec's model on this machine and
extrapolate every sampling stage from them.

The rough estimate scales public figures by the denoiser's size; it can be off by 10x or more
(other schedulers, CPU threads, a machine shared with other work). Measuring costs one model
load and about two batches:

* **extraction:** one warm-up call on two units, then one timed call on ``batch_size`` units of
  the plan with the spec's hook, reduction and guidance: seconds per denoiser evaluation;
* **images** (specs with ``captions:``): one timed batch sampled, decoded and read by the spec's
  captioner, as the captioning stage does; the part of it beyond its denoiser evaluations is the
  cost of decoding and reading one image.

Each later pass then costs its denoiser evaluations at the measured rate plus its images at the
measured image cost (:func:`auditkit.passes.cost.later_passes` counts them). The analysis and
the report are not sampled and not included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from auditkit.plan import AuditPlan
from auditkit.spec.audit import AuditSpec


@dataclass(frozen=True)
class MeasuredRates:
    """What one measurement took on this machine."""

    load_seconds: float  # loading the pipeline (and the captioner)
    per_evaluation: float  # seconds per denoiser evaluation, at the spec's batch size
    per_image: float  # seconds to decode and read one image, beyond its denoiser evaluations
    batch: int
    device: str
    seconds: float  # the measurement itself, loading included


def measure_rates(spec: AuditSpec, plan: AuditPlan, cache_dir: Path) -> MeasuredRates:
    """Load ``spec``'s model and time extraction (and image sampling with captions) on real
    units of ``plan``."""
    from auditkit.extract.runner import capture_batch
    from auditkit.models.loading import compile_denoiser, load_pipeline

    started = time.perf_counter()
    loaded = load_pipeline(spec.model, cache_dir=cache_dir)
    if spec.execution.compile:
        compile_denoiser(loaded)
    units = list(plan.units[: spec.batch_size])
    captioner = None
    if spec.captions is not None:
        from auditkit.caption.stage import load_spec_captioner

        captioner = load_spec_captioner(spec.captions.captioner)
    load_seconds = time.perf_counter() - started
    warm_up = time.perf_counter()
    # lazy initialisation, first kernels; a compiled denoiser compiles here, at the spec's
    # batch size, and that is part of every process's start-up
    capture_batch(loaded, [spec], units if spec.execution.compile else units[:2])
    if spec.execution.compile:
        load_seconds += time.perf_counter() - warm_up
    timer = time.perf_counter()
    captured = capture_batch(loaded, [spec], units)
    per_evaluation = (time.perf_counter() - timer) / max(captured.denoiser_samples, 1)
    per_image = 0.0
    if captioner is not None and spec.captions is not None:
        from auditkit.caption.stage import read_batch
        from auditkit.sampling.service import generate_images

        batch = units[: spec.captions.batch_size or spec.batch_size]
        timer = time.perf_counter()
        images = generate_images(loaded, spec, batch)
        read_batch(captioner, batch, images)
        whole = (time.perf_counter() - timer) / len(batch)
        sampled = per_evaluation * captured.denoiser_samples / max(len(units), 1)
        per_image = max(0.0, whole - sampled)
    return MeasuredRates(
        load_seconds=load_seconds,
        per_evaluation=per_evaluation,
        per_image=per_image,
        batch=len(units),
        device=loaded.device,
        seconds=time.perf_counter() - started,
    )
