"""Sampling again from the loaded pipeline: the one service the passes after extraction share.

The captioning stage, the guidance sweep, the causal check and discovery never call the
diffusion pipeline themselves; they hand :class:`Sampler` the draws they need (a work unit, at
another guidance scale or steered along a direction) and get back the images sampled exactly as
extraction sampled those units (see :mod:`auditkit.sampling.service`).
"""

from auditkit.sampling.service import (
    Draw,
    Sampler,
    Steering,
    generate_images,
    generate_steered_images,
)

__all__ = ["Draw", "Sampler", "Steering", "generate_images", "generate_steered_images"]
