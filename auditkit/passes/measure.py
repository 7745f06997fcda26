"""``auditkit plan --measure``: time a few real passes of the spec's model on this machine and
extrapolate every sampling stage from them.

The rough estimate scales public figures by the denoiser's size; it can be off by 10x or more
(other schedulers, CPU threads, a machine shared with other work). Measuring costs one model
load and about two batches:

* **extraction:** one warm-up call on two units, then one timed call on ``batch_size`` units of
  the plan with the spec's hook, reduction and guidance: seconds per denoiser evaluation;
* **images** (specs with ``captions:``): the same units sampled again, decoded and read by the
  spec's captioner, as extraction and the later passes do; the part of it beyond the timed
  call's is the cost of decoding and reading one image.

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
        from auditkit.caption.stage import load_spec_captioner, read_batch

        captioner = load_spec_captioner(spec.captions.captioner)
    load_seconds = time.perf_counter() - started
    warm_up = time.perf_counter()
    # lazy initialisation, first kernels (the VAE's and the reader's too, with captions); a
    # compiled denoiser compiles here, at the spec's batch size, and that is part of every
    # process's start-up
    first = units if spec.execution.compile else units[:2]
    warm = capture_batch(loaded, [spec], first, decode=captioner is not None)
    if captioner is not None:
        assert warm.images is not None
        read_batch(captioner, first, warm.images)
    if spec.execution.compile:
        load_seconds += time.perf_counter() - warm_up
    timer = time.perf_counter()
    captured = capture_batch(loaded, [spec], units)
    plain = time.perf_counter() - timer
    per_evaluation = plain / max(captured.denoiser_samples, 1)
    per_image = 0.0
    if captioner is not None:
        # the same units again, decoded and read: what an image costs beyond its denoiser
        # evaluations (the decode, the reader, and the final step's blocks after the hook
        # point, which a call that decodes nothing skips)
        timer = time.perf_counter()
        decoded = capture_batch(loaded, [spec], units, decode=True)
        assert decoded.images is not None
        read_batch(captioner, units, decoded.images)
        per_image = max(0.0, (time.perf_counter() - timer - plain) / len(units))
    return MeasuredRates(
        load_seconds=load_seconds,
        per_evaluation=per_evaluation,
        per_image=per_image,
        batch=len(units),
        device=loaded.device,
        seconds=time.perf_counter() - started,
    )
