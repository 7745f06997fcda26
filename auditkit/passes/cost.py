"""What the stages after extraction will sample, counted from the spec (for ``auditkit plan``).

Extraction is counted by :func:`auditkit.estimate.estimate_cost`. The captioning stage reads the
images extraction decodes as it captures their h (one VAE decode and one captioner forward per
image, no denoiser evaluation of its own); the guidance sweep and the causal check sample images
again (U-Net steps plus one decode and one captioner forward per image); discovery extracts the
units of its mined terms, which are known only once captions exist, so it is counted at its upper
bound (``max_terms`` terms). The image-grounded axes read labelled images through the denoiser
(no decode), counted at their upper bound too (``per_group`` images per group of each grounded
axis; an image read for two axes is read once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from auditkit.caption.store import select_caption_units
from auditkit.passes.causal import causal_units
from auditkit.passes.guidance import sweep_units
from auditkit.plan import AuditPlan
from auditkit.spec.audit import AuditSpec


@dataclass(frozen=True)
class SamplingPass:
    """One pass after extraction: images decoded and denoiser evaluations (at most, if bounded)."""

    name: str
    images: int
    denoiser_evaluations: int
    upper_bound: bool = False


def later_passes(spec: AuditSpec, plan: AuditPlan, *, cfg_capable: bool) -> list[SamplingPass]:
    """The passes the spec's ``captions`` and ``grounding`` sections ask for, in stage order.

    ``cfg_capable``: whether the pipeline runs classifier-free guidance as a second batch half
    (not an LCM-style model); then every image sampled at a scale above 1 costs two U-Net
    evaluations per step, at the audit's scale and at each swept one alike.
    """
    steps = spec.model.steps

    def per_image_at(scale: float) -> int:
        return steps * (2 if cfg_capable and scale > 1.0 else 1)

    per_image = per_image_at(spec.model.guidance_scale)
    passes = _caption_passes(spec, plan, per_image, per_image_at)
    grounding = spec.grounding
    if grounding is not None:
        named = grounding.axes
        axes = len(named) if named is not None else sum(len(a.groups) == 2 for a in spec.axes)
        images = 2 * grounding.per_group * axes
        passes.append(SamplingPass("grounding", 0, images * per_image, upper_bound=True))
    return passes


def _caption_passes(
    spec: AuditSpec, plan: AuditPlan, per_image: int, per_image_at: Callable[[float], int]
) -> list[SamplingPass]:
    """The passes of the ``captions`` section (none without it)."""
    if spec.captions is None:
        return []
    passes = []
    captioned = len(select_caption_units(spec, plan))
    passes.append(SamplingPass("captions", captioned, 0))  # decoded by extraction
    swept = len(sweep_units(spec, plan))
    for scale in spec.captions.guidance:
        passes.append(SamplingPass(f"guidance {scale:g}", swept, swept * per_image_at(scale)))
    causal = spec.captions.causal
    if causal is not None:
        named = causal.axes
        axes = len(named) if named is not None else sum(len(a.groups) == 2 for a in spec.axes)
        images = len(causal_units(spec, plan)) * len(causal.alphas) * axes
        passes.append(SamplingPass("causal", images, images * per_image, named is None))
    discovery = spec.captions.discovery
    if discovery is not None:
        units = discovery.max_terms * len(spec.seed_list)
        passes.append(SamplingPass("discovery", 0, units * per_image, upper_bound=True))
    return passes


__all__ = ["SamplingPass", "later_passes"]
